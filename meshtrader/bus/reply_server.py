"""REP: decodes a tagged request, calls the handler, always answers (an ErrorReply if need be)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import zmq

from meshtrader.bus.curve import Curve
from meshtrader.bus.frames import drain
from meshtrader.bus.policy import DRAIN_LIMIT, RCVHWM, REQ_REP_HWM, SNDHWM
from meshtrader.runtime.log import Logger
from meshtrader.runtime.metrics import ServiceMetrics
from meshtrader.wire.codec import DecodeError, decoder_for, encode
from meshtrader.wire.messages import ErrorReply, Reply


class RepServer:
    """Answers every request, malformed ones with an ErrorReply, so REQ peers never hang."""

    def __init__(self, ctx: zmq.Context, endpoint: str, request_schema: Any,
                 handler: Callable[[Any], Reply], metrics: ServiceMetrics, log: Logger,
                 after_reply: Callable[[], None] | None = None, curve: Curve | None = None) -> None:
        self.after_reply = after_reply  # work that must not delay the answer (publishing, journaling)
        self.socket = ctx.socket(zmq.REP)
        self.socket.setsockopt(SNDHWM, REQ_REP_HWM)
        self.socket.setsockopt(RCVHWM, REQ_REP_HWM)
        self.socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.server(self.socket)
        self.socket.bind(endpoint)
        self.decoder = decoder_for(request_schema)
        self.handler = handler
        self.metrics = metrics
        self.log = log

    def on_readable(self) -> None:
        for frames in drain(self.socket, DRAIN_LIMIT):
            self.socket.send(encode(self._answer(frames)), 0)
            if self.after_reply is not None:
                self.after_reply()

    def _answer(self, frames: list[bytes]) -> Reply:
        if len(frames) != 1:
            return self._reject(f"expected one frame, got {len(frames)}")
        try:
            request = self.decoder.decode(frames[0])
        except DecodeError as error:
            return self._reject(f"malformed request: {error}")
        self.metrics.message_in("req")
        started = time.perf_counter()
        try:
            return self.handler(request)
        except Exception as error:
            self.log.error("request_failed", trace_id=getattr(request, "tid", None), error=repr(error))
            return ErrorReply(error=f"internal error: {error}")
        finally:
            self.metrics.handler_latency("req", time.perf_counter() - started)

    def _reject(self, problem: str) -> Reply:
        self.metrics.decode_error("req")
        self.log.warning_once(("req", problem[:40]), "malformed_request_rejected", problem=problem[:200])
        return ErrorReply(error=problem)

    def close(self) -> None:
        self.socket.close()
