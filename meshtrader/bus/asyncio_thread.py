"""An asyncio program in a thread of its own, feeding the single-threaded service loop over inproc PUSH."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import uvloop
import zmq

from meshtrader.bus.frames import drain
from meshtrader.bus.policy import INBOX_HWM, RCVHWM, SNDHWM

INBOX_BATCH = 1000  # messages read per turn of the service loop, so its other sockets get theirs


class AsyncioThread:
    """An asyncio program (ccxt.pro streams) in a thread of its own, handing what it gets to the owning
    service's loop over an inproc PUSH socket (the service binds the PULL end: `Inbox`): the service
    stays single-threaded. Subclasses write `run_async`, and check `stopping`."""

    # uvloop: a WebSocket message arriving on its own costs this thread 1.2-1.4x less CPU on its way to the
    # PUSH socket (e.g. 59 against 75 us); in bursts they are even, 0.93-1.16x (bench/asyncio_loops.py, ws_*)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = staticmethod(uvloop.new_event_loop)

    def __init__(self, name: str, ctx: zmq.Context, push_endpoint: str) -> None:
        self.ctx, self.push_endpoint = ctx, push_endpoint
        self.thread = threading.Thread(target=self._thread_main, name=name, daemon=True)
        self.stopping = False

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(timeout=5)

    def _thread_main(self) -> None:
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(SNDHWM, INBOX_HWM)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(self.push_endpoint)
        try:
            with asyncio.Runner(loop_factory=self.loop_factory) as runner:
                runner.run(self.run_async())
        finally:
            self.push.close()

    async def run_async(self) -> None:
        raise NotImplementedError

    async def until_stopped(self) -> None:
        while not self.stopping:
            await asyncio.sleep(0.2)


class Inbox:
    """The service's end of an `AsyncioThread`: an inproc PULL socket in the service loop. When it is
    readable, `handler` gets the waiting multipart messages as an iterator, read without blocking."""

    def __init__(self, ctx: zmq.Context, endpoint: str, handler: Callable[[Iterator[list[bytes]]], None]) -> None:
        self.socket = ctx.socket(zmq.PULL)
        self.socket.setsockopt(RCVHWM, INBOX_HWM)
        self.socket.bind(endpoint)
        self.endpoint, self.handler = endpoint, handler

    def on_readable(self) -> None:
        self.handler(self.waiting())

    def waiting(self) -> Iterator[list[bytes]]:
        """At most INBOX_BATCH messages: the loop polls level-triggered, so the rest come next turn."""
        return drain(self.socket, INBOX_BATCH)

    def close(self) -> None:
        self.socket.close()
