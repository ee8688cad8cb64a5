"""The service loop: one thread, poll-then-drain over every socket, plus timers. A per-message
`await recv()` tops out near 30k msg/s on this machine; draining a ready socket with NOBLOCK does 180k+."""
from __future__ import annotations

import cProfile
import heapq
import itertools
import math
import time
from collections.abc import Callable
from pathlib import Path

import zmq

from meshtrader.runtime.log import Logger


class Loop:
    """Poll-then-drain over registered sockets, with timers; handler errors are logged, never fatal."""

    MAX_WAIT_MS = 200

    def __init__(self, log: Logger) -> None:
        self.log = log
        self.poller = zmq.Poller()
        self.readers: dict[zmq.Socket, Callable[[], None]] = {}
        self._timers: list[tuple[float, int, float, Callable[[], None]]] = []
        self._ids = itertools.count()
        self._stop_requested = False
        self._cancelled: set[int] = set()

    def add_reader(self, socket: zmq.Socket, callback: Callable[[], None]) -> None:
        self.readers[socket] = callback
        self.poller.register(socket, zmq.POLLIN)

    def every(self, interval_s: float, callback: Callable[[], None], first_in: float | None = None) -> int:
        """Call `callback` every `interval_s`; returns a handle for `cancel`."""
        due = time.monotonic() + (interval_s if first_in is None else first_in)
        ident = next(self._ids)
        heapq.heappush(self._timers, (due, ident, interval_s, callback))
        return ident

    def cancel(self, ident: int) -> None:
        self._cancelled.add(ident)

    def stop(self) -> None:
        """Safe from a signal handler, and before `run` (a SIGTERM during start-up is not lost)."""
        self._stop_requested = True

    @property
    def stopping(self) -> bool:
        """`stop` was asked: long work on the loop's thread (a validation) checks it to end early."""
        return self._stop_requested

    def run(self, profile_to: Path | None = None) -> None:
        """Until `stop`. With `profile_to`, under cProfile, whose stats are written there at the end
        (what the latency bench breaks a hop's time down with)."""
        if profile_to is None:
            return self._run()
        profiler = cProfile.Profile()
        try:
            profiler.runcall(self._run)
        finally:
            profile_to.parent.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(profile_to)

    def _run(self) -> None:
        while not self._stop_requested:
            now = time.monotonic()
            wait_ms = self.MAX_WAIT_MS
            if self._timers:
                # Round up: a timer due in 0.3 ms must not turn the poll into a busy spin.
                wait_ms = max(0, min(wait_ms, math.ceil((self._timers[0][0] - now) * 1000)))
            if self.readers:
                for socket, _ in self.poller.poll(wait_ms):
                    self._guard(self.readers[socket])
            else:  # zmq_poll on no sockets returns at once: sleep instead of spinning
                time.sleep(wait_ms / 1000)
            self._run_due_timers()

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            due, ident, interval, callback = heapq.heappop(self._timers)
            if ident in self._cancelled:
                self._cancelled.discard(ident)
                continue
            self._guard(callback)
            heapq.heappush(self._timers, (max(due + interval, now), ident, interval, callback))

    def _guard(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception as error:
            self.log.error("callback_failed", callback=getattr(callback, "__qualname__", "?"), error=repr(error))
