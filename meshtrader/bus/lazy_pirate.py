"""REQ with the ZeroMQ Guide's Lazy Pirate pattern: timeout, retry, socket reset; None means "no answer"."""
from __future__ import annotations

from typing import Any

import zmq

from meshtrader.bus.curve import CurveKeys
from meshtrader.bus.policy import NOBLOCK, POLLIN, RCVHWM, REQ_REP_HWM, SNDHWM
from meshtrader.runtime.log import Logger
from meshtrader.wire.codec import DecodeError, decoder_for, encode
from meshtrader.wire.messages import ErrorReply, Reply, Request


def wait_for_reply(socket: zmq.Socket, timeout_ms: int) -> bool:
    """zmq_poll on the one socket: no Poller object made per request (and, for a profile, the time spent
    waiting for the peer apart from the time spent working)."""
    return bool(zmq.zmq_poll([(socket, POLLIN)], timeout_ms))


class ReqClient:
    """Lazy Pirate: send, wait `timeout_ms`, on silence close the socket, reconnect and retry."""

    def __init__(self, ctx: zmq.Context, endpoint: str, reply_schema: Any, timeout_ms: int,
                 retries: int, log: Logger, curve: CurveKeys | None = None) -> None:
        self.ctx = ctx
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
            if wait_for_reply(self.socket, self.timeout_ms):
                data = self.socket.recv(NOBLOCK)
                try:
                    return self.decoder.decode(data)
                except DecodeError as error:
                    return ErrorReply(error=f"malformed reply: {error}")
            self.log.warning("request_timeout", endpoint=self.endpoint, attempt=attempt,
                             timeout_ms=self.timeout_ms, trace_id=message.tid)
            self.socket.close()
            self.socket = self._connect()
        return None

    def close(self) -> None:
        self.socket.close()
