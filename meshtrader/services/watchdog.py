"""Watchdog: supervisord's event listener for the deaths of the mesh's processes.

A killed process leaves nothing behind itself (kill -9 runs no handler), and supervisord restarts it
within a second, so nothing polling the mesh (heartbeats, start counts in Redis) is sure to see it: a
start count is lost with Redis, a heartbeat outlives a fast restart. supervisord is the parent that
reaps the process, so its PROCESS_STATE events see every exit, and its log says how (exit status or
signal). This listener turns them into journal entries (`agent_events`, service `watchdog`) that the
narrator tells and alerts on: `died` once the process is RUNNING again (with how long that took), and
`crash_loop` when a program exited CRASH_LOOP_EXITS times within CRASH_LOOP_WINDOW_S or supervisord
gave up on it (FATAL). A crash loop is also kept in Redis (`crash_loop:<program>`, for the window) so
`mesh status` shows it.

It speaks supervisord's eventlistener protocol on stdin/stdout, so it logs to stderr only.
"""
from __future__ import annotations

import json
import re
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from supervisor import childutils

from meshtrader.persistence.hotstate import CRASH_LOOP_KEY, HotState
from meshtrader.persistence.store import Store
from meshtrader.runtime.config import Settings, load_settings
from meshtrader.runtime.supervise import UNREACHABLE, WATCHDOG, Supervisor

CRASH_LOOP_EXITS = 3  # this many unexpected exits of one program ...
CRASH_LOOP_WINDOW_S = 120.0  # ... within this many seconds is a crash loop
JOURNAL = "watchdog"  # the agent_events service name the narrator reads
LOG_TAIL_BYTES = 20000  # what is read of supervisord's log to find how a process exited


@dataclass
class Death:
    """An exit not yet followed by RUNNING again."""

    at: float
    how: str
    pid: int | None


@dataclass
class Watchdog:
    """What the listener does with each event; `journal` records, `how_it_exited` asks supervisord."""

    journal: Callable[[str, dict[str, Any]], None]
    how_it_exited: Callable[[str], str]
    mark_crash_loop: Callable[[str], None]
    pending: dict[str, Death] = field(default_factory=dict)
    exits: dict[str, deque[float]] = field(default_factory=dict)
    looping: set[str] = field(default_factory=set)

    def on_event(self, event: str, payload: dict[str, str], now: float) -> None:
        name = payload.get("processname", "")
        if name == WATCHDOG:
            return
        if event == "PROCESS_STATE_EXITED" and payload.get("expected") == "0":
            self.exited(name, self.how_it_exited(name), int(payload["pid"]), now)
        elif event == "PROCESS_STATE_BACKOFF":  # exited before startsecs: a failed start
            self.exited(name, self.how_it_exited(name), None, now)
        elif event == "PROCESS_STATE_RUNNING" and name in self.pending:
            death = self.pending.pop(name)
            self.journal("died", {"program": name, "how": death.how, "pid": death.pid,
                                  "restarted_in_s": round(now - death.at, 3)})
        elif event == "PROCESS_STATE_FATAL":
            death = self.pending.pop(name, None)
            self.looping.add(name)
            self.mark_crash_loop(name)
            self.journal("crash_loop", {"program": name, "how": death.how if death else "failed to start",
                                        "exits": len(self.exits.get(name, ())), "gave_up": True})

    def exited(self, name: str, how: str, pid: int | None, now: float) -> None:
        self.pending.setdefault(name, Death(now, how, pid))
        exits = self.exits.setdefault(name, deque())
        exits.append(now)
        while exits and now - exits[0] > CRASH_LOOP_WINDOW_S:
            exits.popleft()
        if len(exits) < CRASH_LOOP_EXITS:
            self.looping.discard(name)  # a later loop is news again
        elif name not in self.looping:
            self.looping.add(name)
            self.mark_crash_loop(name)
            self.journal("crash_loop", {"program": name, "how": how, "exits": len(exits),
                                        "window_s": CRASH_LOOP_WINDOW_S, "gave_up": False})


def exit_reason(log_tail: str, name: str) -> str:
    """How supervisord's log says `name` last exited ('terminated by SIGKILL', 'exit status 1')."""
    found = re.findall(rf"exited: {re.escape(name)} \(([^;)]*)", log_tail)
    return found[-1] if found else "exit status unknown"


class Journal:
    """The watchdog's records in the store; what a write could not store (the store busy) is kept and
    tried again with the next event (supervisord sends TICK_5 every 5 s)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.outbox: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, detail: dict[str, Any]) -> None:
        self.outbox.append((event, detail))
        self.flush()

    def flush(self) -> None:
        if not self.outbox:
            return
        try:
            store = Store(self.settings.store_location)
            try:
                while self.outbox:
                    store.agent_event(JOURNAL, *self.outbox[0])
                    self.outbox.pop(0)
            finally:
                store.close()
        except Exception as error:  # never let the listener die of it: supervisord would stall its events
            log("journal_failed", error=repr(error), waiting=len(self.outbox))


def log(event: str, **fields: Any) -> None:
    """A structured line on stderr (stdout is supervisord's protocol channel)."""
    print(json.dumps({"ts": time.time(), "service": WATCHDOG, "event": event, **fields}), file=sys.stderr,
          flush=True)


def listen(watchdog: Watchdog, journal: Journal, stdin: TextIO, stdout: TextIO) -> None:
    while True:
        headers, payload = childutils.listener.wait(stdin, stdout)
        try:
            journal.flush()
            if headers["eventname"].startswith("PROCESS_STATE"):
                watchdog.on_event(headers["eventname"], childutils.get_headers(payload), time.time())
        except Exception as error:  # one bad event must not stop the next from being heard
            log("event_failed", error=repr(error), event=headers.get("eventname"))
        childutils.listener.ok(stdout)


def main() -> None:
    settings = load_settings(recorded=True)
    supervisor = Supervisor(settings)
    hot = HotState(settings.effective_redis_url, settings.redis_prefix)

    def how_it_exited(name: str) -> str:
        try:
            return exit_reason(supervisor.proxy.supervisor.readLog(-LOG_TAIL_BYTES, 0), name)
        except UNREACHABLE:
            return "exit status unknown"

    journal = Journal(settings)
    watchdog = Watchdog(journal, how_it_exited,
                        lambda name: hot.put(CRASH_LOOP_KEY + name, time.time(), ttl_s=int(CRASH_LOOP_WINDOW_S)))
    log("watchdog_started")
    listen(watchdog, journal, sys.stdin, sys.stdout)


if __name__ == "__main__":
    main()
