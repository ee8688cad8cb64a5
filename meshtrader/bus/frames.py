"""Reading what a socket has queued without blocking, at the least cost per message.

pyzmq's `recv_multipart` asks the socket `RCVMORE` after every part, and `get(EVENTS)` asks whether
anything is queued: each a getsockopt that pyzmq wraps in an enum (several microseconds under load, three
per message in the old SUB loop, which then did ~9k msg/s under cProfile). A frame received with
copy=False carries its own `more` flag, and one failed NOBLOCK receive ends a drain, so a message costs
two receives and nothing else (bench/bus.py)."""
from __future__ import annotations

from collections.abc import Iterator

import zmq

from meshtrader.bus.policy import NOBLOCK


def drain(socket: zmq.Socket, limit: int) -> Iterator[list[bytes]]:
    """Up to `limit` queued messages, each as the list of its parts. The caller's poll is level-triggered:
    what is left past the limit makes the socket readable again at the next turn of the loop."""
    recv = socket.recv
    for _ in range(limit):
        try:
            frame = recv(NOBLOCK, copy=False)
        except zmq.Again:
            return
        parts = [frame.bytes]
        while frame.more:
            frame = recv(NOBLOCK, copy=False)
            parts.append(frame.bytes)
        yield parts
