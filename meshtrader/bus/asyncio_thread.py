"""An asyncio program in a thread of its own, feeding the single-threaded service loop over inproc PUSH."""
from __future__ import annotations

import asyncio
import threading

import zmq


class AsyncioThread:
    """An asyncio program (ccxt.pro streams) in a thread of its own, handing what it gets to the owning
    service's loop over an inproc PUSH socket (the service binds the PULL end and adds it as a reader):
    the service stays single-threaded. Subclasses write `run_async`, and check `stopping`."""

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
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(self.push_endpoint)
        try:
            asyncio.run(self.run_async())
        finally:
            self.push.close()

    async def run_async(self) -> None:
        raise NotImplementedError

    async def until_stopped(self) -> None:
        while not self.stopping:
            await asyncio.sleep(0.2)
