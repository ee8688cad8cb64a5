"""Hot state in Redis: heartbeats, account snapshot, allocation, trading state.

A Redis round trip costs 70-170 µs, so writers never touch Redis on the message loop: `put` only
records the latest value per key, and a background thread writes them in one pipeline.
"""
from __future__ import annotations

import json
import threading
from typing import Any

import msgspec
import redis

from meshtrader.runtime.log import Logger

FLUSH_INTERVAL_S = 0.2
STARTS, LAST_START = "starts:", "last_start:"  # + a service's name: how often it started, and when last
CRASH_LOOP_KEY = "crash_loop:"  # + a program's name: kept by the watchdog while the program is in a crash loop


def client(url: str, timeout_s: float = 1.0) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                decode_responses=True)


class HotState:
    def __init__(self, url: str, prefix: str, log: Logger | None = None) -> None:
        self.prefix = prefix
        self.redis = client(url)
        self.log = log
        self._pending: dict[str, tuple[str, int | None]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.connected = False

    # ----- writing (any thread; never blocks on Redis) -----------------------------------------
    def put(self, key: str, value: Any, ttl_s: int | None = None) -> None:
        with self._lock:
            self._pending[key] = (json.dumps(value, default=str), ttl_s)
        if self._thread is None:
            self._thread = threading.Thread(target=self._writer, name="hotstate", daemon=True)
            self._thread.start()

    def _writer(self) -> None:
        while not self._closed:
            self._wake.wait(FLUSH_INTERVAL_S)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for key, (value, ttl) in batch.items():
                pipe.set(self.prefix + key, value, ex=ttl)
            pipe.execute()
            if not self.connected and self.log:
                self.log.info("redis_connected")
            self.connected = True
        except redis.RedisError as error:
            with self._lock:  # keep the values for the next attempt, unless newer ones arrived
                for key, item in batch.items():
                    self._pending.setdefault(key, item)
            if self.connected and self.log:
                self.log.warning("redis_unavailable", error=str(error))
            self.connected = False

    def record_start(self, service: str, at: float) -> int | None:
        """Count a service's start and keep its time; its count of starts, or None without Redis. One round
        trip, made at once (a process that crashes a moment later is still counted): for start-up only,
        never a message loop."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(self.prefix + STARTS + service)
            pipe.set(self.prefix + LAST_START + service, json.dumps(at))
            return int(pipe.execute()[0])
        except redis.RedisError as error:
            if self.log:
                self.log.warning("redis_unavailable", error=str(error))
            return None

    def starts(self) -> dict[str, tuple[int, float | None]]:
        """(times started, last start in unix s) by service, as `record_start` kept them."""
        counts, times = self.get_many(STARTS + "*"), self.get_many(LAST_START + "*")
        return {key[len(STARTS):]: (int(count), times.get(LAST_START + key[len(STARTS):]))
                for key, count in counts.items()}

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=2)
        self.flush()

    # ----- reading (CLI, dashboard, start-up) ---------------------------------------------------
    def put_account(self, snapshot: Any, event_time: int) -> None:
        """The executor's account snapshot as the dashboard and `mesh status` read it (money as strings; the
        futures fields, margin, margin ratio, funding, liquidation price, with it)."""
        self.put("account", {"market": snapshot.market, "equity": str(snapshot.equity), "cash": str(snapshot.cash),
                             "exposure": str(snapshot.exposure), "trades": snapshot.trades, "event_time": event_time,
                             "accounts": msgspec.to_builtins(snapshot.accounts)})

    def get(self, key: str) -> Any:
        try:
            raw = self.redis.get(self.prefix + key)
        except redis.RedisError:
            return None
        return json.loads(raw) if raw else None

    def get_many(self, pattern: str) -> dict[str, Any]:
        """All keys under a pattern (e.g. 'hb:*'), without the prefix."""
        try:
            keys = list(self.redis.scan_iter(self.prefix + pattern, count=500))
            values = self.redis.mget(keys) if keys else []
        except redis.RedisError:
            return {}
        return {k[len(self.prefix):]: json.loads(v) for k, v in zip(keys, values, strict=True) if v}

    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False
