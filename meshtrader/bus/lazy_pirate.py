"""REQ with the ZeroMQ Guide's Lazy Pirate pattern: timeout, retry, socket reset; None means "no answer"."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import zmq

from meshtrader.bus.curve import CurveKeys
from meshtrader.bus.policy import NOBLOCK, POLLIN, RCVHWM, REQ_REP_HWM, SNDHWM
from meshtrader.runtime.log import Logger
from meshtrader.wire.codec import DecodeError, decoder_for, encode
from meshtrader.wire.messages import ErrorReply, Reply, Request

POLL_SLICE_MS = 100  # how often a long wait asks whether its service is stopping


def wait_for_reply(socket: zmq.Socket, timeout_ms: int, cancelled: Callable[[], bool] | None = None) -> bool:
    """zmq_poll on the one socket: no Poller object made per request (and, for a profile, the time spent
    waiting for the peer apart from the time spent working). With `cancelled`, the wait is polled in
    slices and ends early once it is true: a service told to stop does not sit out a 15 s timeout on a
    peer that has stopped already (supervisord would SIGKILL it after 10 s)."""
    if cancelled is None:
        return bool(zmq.zmq_poll([(socket, POLLIN)], timeout_ms))
    deadline = time.monotonic() + timeout_ms / 1000
    while not cancelled() and (left_ms := (deadline - time.monotonic()) * 1000) > 0:
        if zmq.zmq_poll([(socket, POLLIN)], min(POLL_SLICE_MS, int(left_ms) + 1)):
            return True
    return False


class ReqClient:
    """Lazy Pirate: send, wait `timeout_ms`, on silence close the socket, reconnect and retry."""

    def __init__(self, ctx: zmq.Context, endpoint: str, reply_schema: Any, timeout_ms: int,
                 retries: int, log: Logger, curve: CurveKeys | None = None,
                 cancelled: Callable[[], bool] | None = None) -> None:
        self.ctx = ctx
        self.cancelled = cancelled
        self.curve = curve
        self.endpoint = endpoint
        self.decoder = decoder_for(reply_schema)
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.log = log
        self.socket = self._connect()

    def _connect(self) -> zmq.Socket:
        socket = self.ctx.socket(zmq.REQ)
        socket.setsockopt(SNDHWM, REQ_REP_HWM)
        socket.setsockopt(RCVHWM, REQ_REP_HWM)
        socket.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            self.curve.client(socket)
        socket.connect(self.endpoint)
        return socket

    def request(self, message: Request) -> Reply | None:
        payload = encode(message)
        for attempt in range(1, self.retries + 1):
            self.socket.send(payload, 0)
            if wait_for_reply(self.socket, self.timeout_ms, self.cancelled):
                data = self.socket.recv(NOBLOCK)
                try:
                    return self.decoder.decode(data)
                except DecodeError as error:
                    return ErrorReply(error=f"malformed reply: {error}")
            self.socket.close()  # a REQ that got no answer cannot send again: a fresh one
            self.socket = self._connect()
            if self.cancelled is not None and self.cancelled():
                self.log.info("request_abandoned", endpoint=self.endpoint, why="the service is stopping",
                              trace_id=message.tid)
                return None
            self.log.warning("request_timeout", endpoint=self.endpoint, attempt=attempt,
                             timeout_ms=self.timeout_ms, trace_id=message.tid)
        return None

    def close(self) -> None:
        self.socket.close()
