"""Structured JSON logs: one object per line carrying the service, the event and a trace id."""
from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}


def _default(value: Any) -> str:
    return str(value)


class Logger:
    """Writes `{"ts", "level", "service", "event", "trace_id", ...}` lines; never raises."""

    def __init__(self, service: str, level: str = "INFO", stream: TextIO | None = None) -> None:
        self.service = service
        self.threshold = LEVELS.get(level, 20)
        self.stream = stream or sys.stdout
        self._said_once: set[tuple] = set()

    def enabled(self, level: str) -> bool:
        """Whether a line at `level` would be written: a caller whose fields cost something to build (on a
        hot path) asks first, so a quiet logger costs it nothing."""
        return LEVELS[level] >= self.threshold

    def log(self, level: str, event: str, trace_id: int | str | None = None, **fields: Any) -> None:
        if LEVELS[level] < self.threshold:
            return
        record = {"ts": round(time.time(), 6), "level": level, "service": self.service, "event": event,
                  "trace_id": f"{trace_id:016x}" if isinstance(trace_id, int) else trace_id}
        record.update(fields)
        try:
            self.stream.write(json.dumps(record, default=_default) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def debug(self, event: str, **fields: Any) -> None:
        self.log("DEBUG", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self.log("INFO", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.log("WARNING", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.log("ERROR", event, **fields)

    def warning_once(self, key: tuple, event: str, **fields: Any) -> None:
        """Log a recurring problem (e.g. a malformed frame from one source) once; callers count the rest."""
        if key in self._said_once:
            return
        if len(self._said_once) > 10_000:
            self._said_once.clear()
        self._said_once.add(key)
        self.warning(event, **fields)


class SilentLogger(Logger):
    """A logger that writes nothing: for in-process runs (backtests) whose record is their result."""

    def __init__(self, service: str, level: str = "INFO", stream: TextIO | None = None) -> None:
        super().__init__(service, level, stream)
        self.threshold = max(LEVELS.values()) + 1  # above every level: `enabled` is always False

    def log(self, level: str, event: str, trace_id: int | str | None = None, **fields: Any) -> None:
        pass
