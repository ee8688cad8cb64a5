"""What every mesh process shares: settings, logs, metrics, the loop, heartbeats, clean shutdown.

A service's settings are the running mesh's, as `mesh up` recorded them in $MESH_HOME/settings.json
(credentials from the environment or .env); without that file (a service started by hand, a test),
the environment's. Whether it runs in the background (niceness) is the topology table's word."""
from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import zmq

from meshtrader.bus import Loop, Publisher, RepServer, ReqClient, Subscriber
from meshtrader.bus.asyncio_thread import Inbox
from meshtrader.bus.curve import Curve, CurveKeys
from meshtrader.persistence.hotstate import HotState
from meshtrader.persistence.store import Store
from meshtrader.runtime import topology
from meshtrader.runtime.config import ConfigError, Settings, load_settings
from meshtrader.runtime.log import Logger
from meshtrader.runtime.metrics import ServiceMetrics
from meshtrader.runtime.topology import BACKGROUND_NICENESS
from meshtrader.wire.messages import Heartbeat

__all__ = ["BACKGROUND_NICENESS", "Service", "main"]


class SignalWakeup:
    """A socket CPython's own signal handler writes to (signal.set_wakeup_fd), on whichever thread the signal
    lands: a loop polling it wakes when a signal arrives, and its Python handler then runs."""

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        for end in (self._read, self._write):
            end.setblocking(False)
        self._previous = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)

    def fileno(self) -> int:
        return self._read.fileno()

    def drain(self) -> None:
        self._read.recv(4096)

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous)
        self._read.close()
        self._write.close()


class Service:
    """Subclasses create their sockets in `setup` and may clean up in `teardown`."""

    hot_path_store = False  # the executor and the risk guard commit on the order path
    background = False  # not on the tick-to-trade path: yield the CPU to those that are (or: the topology says so)

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        self.source = settings.instance_name(name)  # what its messages are signed with (a ConfigError stops it here)
        self.log = Logger(name, settings.log_level)
        self.metrics = ServiceMetrics(name)
        self.ctx = zmq.Context()
        self.loop = Loop(self.log)
        self.hot = HotState(settings.effective_redis_url, settings.redis_prefix, self.log)
        self.pub: Publisher | None = None
        self.started = time.time()
        self.event_time = 0  # latest market time seen: the mesh's clock
        self._closables: list[Any] = []
        self._store: Store | None = None
        # MESH_CURVE_KEYS: every socket but inproc ones authenticates and encrypts (closed last: after the sockets)
        self.curve_keys = CurveKeys.load(settings.curve_keys) if settings.curve_keys else None
        self.curve = Curve(self.ctx, self.curve_keys, self.metrics, self.log, self.loop) if self.curve_keys else None
        if self.curve is not None:
            self._closables.append(self.curve)

    # ----- building blocks ----------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings.store_location, hot_path=self.hot_path_store)
        return self._store

    def publisher(self, endpoint_name: str) -> Publisher:
        """Binds this machine's instance of the endpoint; signed with the instance's name, so subscribers of a
        program on several hosts check each one's sequence apart."""
        self.pub = Publisher(self.ctx, self.settings.bind_endpoint(endpoint_name), self.source, self.metrics,
                             curve=self.curve)
        self._closables.append(self.pub)
        return self.pub

    def subscribe(self, endpoints: Iterable[str], prefixes: Iterable[bytes],
                  handler: Callable[[bytes, Any], None], wake: bool = True) -> Subscriber:
        """Connects to every instance of each publisher (a strategy worker may run on several hosts: its
        signals are deduplicated by id downstream). With `wake=False` the stream does not wake the service: it
        queues until the service reads it (`subscriber.on_readable()`), e.g. just before the message it needs
        it for."""
        every = [instance for endpoint in endpoints for instance in self.settings.instances(endpoint)]
        subscriber = Subscriber(self.ctx, every, prefixes, handler, self.metrics, self.log, curve=self.curve_keys)
        if wake:
            self.loop.add_reader(subscriber.socket, subscriber.on_readable)
        self._closables.append(subscriber)
        return subscriber

    def serve(self, endpoint_name: str, schema: Any, handler: Callable[[Any], Any],
              after_reply: Callable[[], None] | None = None) -> RepServer:
        server = RepServer(self.ctx, self.settings.bind_endpoint(endpoint_name), schema, handler, self.metrics,
                           self.log, after_reply, curve=self.curve)
        self.loop.add_reader(server.socket, server.on_readable)
        self._closables.append(server)
        return server

    def client(self, endpoint_name: str, reply_schema: Any, timeout_ms: int | None = None,
               retries: int | None = None, stoppable: bool = False) -> ReqClient:
        """A Lazy Pirate client. `stoppable`: its long waits end once the service is told to stop (background
        work; the order path instead finishes what it asked, rather than turn an order down on the way out)."""
        client = ReqClient(self.ctx, self.settings.endpoint(endpoint_name), reply_schema,
                           timeout_ms or self.settings.risk_timeout_ms, retries or self.settings.risk_retries,
                           self.log, curve=self.curve_keys,
                           cancelled=(lambda: self.loop.stopping) if stoppable else None)
        self._closables.append(client)
        return client

    def inbox(self, name: str, handler: Callable[[Iterator[list[bytes]]], None]) -> str:
        """Where an AsyncioThread of this service pushes (the endpoint returned); `handler` gets what it pushed."""
        inbox = Inbox(self.ctx, f"inproc://{name}-{id(self)}", handler)
        self.loop.add_reader(inbox.socket, inbox.on_readable)
        self._closables.append(inbox)
        return inbox.endpoint

    # ----- lifecycle ----------------------------------------------------------------------------
    def setup(self) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        pass

    def heartbeat(self) -> None:
        beat = {"service": self.name, "pid": os.getpid(), "ts": time.time(), "started": self.started,
                "event_time": self.event_time}
        self.hot.put(f"hb:{self.name}", beat, ttl_s=max(5, int(self.settings.heartbeat_s * 5)))
        if self.pub is not None:
            self.pub.publish(b"hb." + self.name.encode(),
                             Heartbeat(service=self.name, pid=os.getpid(), started=self.started, et=self.event_time))

    @property
    def runs_in_background(self) -> bool:
        try:
            declared = topology.program(self.name, self.settings.strategies).service.background
        except KeyError:  # not one of the table's programs (a tool, a test)
            declared = False
        return declared or type(self).background

    def run(self) -> None:
        # counted before anything can fail, so a crash and restart shows however briefly it lasted
        # (ops.logs.service_history); one Redis round trip, at start-up only
        self.hot.record_start(self.name, self.started)
        if self.runs_in_background:
            os.nice(BACKGROUND_NICENESS)
        self.settings.prepare_home()
        self.metrics.serve(self.settings.http_port(self.name), self.settings.bind_address(self.name))
        self._stop_on_signals()
        self.setup()
        # What setup built lives as long as the process: keep the collector from rescanning it, so
        # collections on the message path stay short (they were the p99 outliers).
        gc.collect()
        gc.freeze()
        self.metrics.up.set(1)
        self.loop.every(self.settings.heartbeat_s, self.heartbeat, first_in=0)
        self.log.info("service_started", pid=os.getpid())
        self._journal("started", {"pid": os.getpid()})
        try:
            self.loop.run(self.settings.profile_dir / f"{self.name}.prof" if self.settings.profile_dir else None)
        finally:
            self.log.info("service_stopping")
            self.teardown()
            self._journal("stopped", {"pid": os.getpid()})
            for closable in reversed(self._closables):
                closable.close()
            self.hot.close()
            if self._store is not None:
                self._store.close()
            self.ctx.term()
            self.log.info("service_stopped")

    def _stop_on_signals(self) -> None:
        """SIGTERM and SIGINT stop the loop at once rather than at its poll's next timeout (up to
        Loop.MAX_WAIT_MS, paid program after program when supervisord stops a mesh in priority order)."""
        wakeup = SignalWakeup()
        self._closables.append(wakeup)
        self.loop.add_reader(wakeup.fileno(), wakeup.drain)
        signal.signal(signal.SIGTERM, lambda *_: self.loop.stop())
        signal.signal(signal.SIGINT, lambda *_: self.loop.stop())

    def _journal(self, event: str, detail: dict) -> None:
        try:
            self.store.agent_event(self.name, event, detail)
        except Exception as error:  # the journal is nice to have; never a reason to fail
            self.log.warning("journal_failed", error=repr(error))


def main(factory: Callable[[Settings], Service]) -> None:
    """Entry point of a service module: bad settings end it with one clear line, exit code 2.
    The settings are the running mesh's (recorded by `mesh up`), else the environment's."""
    try:
        settings = load_settings(recorded=True)
        service = factory(settings)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        sys.exit(2)
    service.run()
