"""ZeroMQ socket patterns, one per module: PUB (publisher), SUB (subscriber), REQ with Lazy Pirate
(lazy_pirate), REP (reply_server), the poll-then-drain loop (loop), asyncio threads (asyncio_thread), and
CURVE authentication and encryption between hosts (curve)."""
from meshtrader.bus.asyncio_thread import AsyncioThread
from meshtrader.bus.lazy_pirate import ReqClient
from meshtrader.bus.loop import Loop
from meshtrader.bus.publisher import Publisher
from meshtrader.bus.reply_server import RepServer
from meshtrader.bus.subscriber import Subscriber

__all__ = ["AsyncioThread", "Loop", "Publisher", "RepServer", "ReqClient", "Subscriber"]
