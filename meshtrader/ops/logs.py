"""What the services said and what operators did: log lines, restarts and last errors, the controls' record.

supervisord writes each program's stdout and stderr to $MESH_HOME/logs/<program>.log (rotated to .1, .2,
...): the structured JSON lines of meshtrader.runtime.log, and anything else a process printed (a Python
traceback from a crash). Only the tail of a log is read, so a view costs the same on a log of any size."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from meshtrader.ops.status import reading
from meshtrader.persistence.audit import control_history
from meshtrader.persistence.hotstate import HotState
from meshtrader.runtime.config import Settings
from meshtrader.runtime.log import LEVELS

TAIL_BYTES = 1 << 20  # what is read of a log: its last MiB (and the end of the rotated file when it is shorter)
MAX_LINES = 2000  # the most lines one request returns
RAW = "RAW"  # a line that is not the structured logger's: stderr, a traceback; it passes every level filter
ENVELOPE = ("ts", "level", "service", "event", "trace_id")  # what every structured line has besides its own fields
ERROR_MARK = '"level": "ERROR"'  # how an ERROR line reads (runtime.log's json.dumps): only those are parsed
TRACEBACK = "Traceback (most recent call last)"



class UnknownService(ValueError):
    """A name that is none of the mesh's programs."""


def log_file(settings: Settings, program: str) -> Path:
    """Where supervisord writes a program's output (runtime/supervise.py names it after the program)."""
    return settings.log_dir / f"{program}.log"


def known_programs(settings: Settings) -> list[str]:
    """The programs with a log: the mesh's services (a strategy worker is `strategy_<name>`) and Redis."""
    return [p.name for p in settings.programs(with_redis=settings.redis_url is None)]


def tail_lines(path: Path, max_bytes: int = TAIL_BYTES) -> list[str]:
    """The last lines of a log within `max_bytes`, oldest first, continued from the rotated `.1` file when
    the current one is shorter (just rotated); a partial first line is dropped, a missing file is empty."""
    lines = _tail(path, max_bytes)
    size = sum(len(line) + 1 for line in lines)
    if size < max_bytes:
        lines = _tail(path.with_name(path.name + ".1"), max_bytes - size) + lines
    return lines


def _tail(path: Path, max_bytes: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            start = max(0, end - max_bytes)
            handle.seek(start)
            data = handle.read(end - start)
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[1:] if start and lines else lines


def parse_line(line: str) -> dict[str, Any]:
    """A structured log line as its object; anything else as {"level": "RAW", "message": line}."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and "level" in record:
            return record
    return {"level": RAW, "message": line}


def service_logs(settings: Settings, service: str, level: str | None = None, contains: str | None = None,
                 trace_id: str | None = None, limit: int = 200) -> dict[str, Any]:
    """A program's recent log lines, newest first, filtered: `level` is a minimum (DEBUG, INFO, WARNING,
    ERROR; RAW lines pass it), `contains` a case-insensitive substring of the line, `trace_id` the trace id
    of the structured lines. Raises ValueError for an unknown program or level, or a limit out of range;
    a program that has not logged yet has no lines. Returns {"service", "file", "lines", "scanned"}."""
    programs = known_programs(settings)
    if service not in programs:
        raise UnknownService(f"no service {service[:40]!r}; one of {', '.join(programs)}")
    threshold = 0
    if level is not None:
        if level.upper() not in LEVELS:
            raise ValueError(f"no log level {level[:20]!r}; one of {', '.join(LEVELS)}")
        threshold = LEVELS[level.upper()]
    if not 1 <= limit <= MAX_LINES:
        raise ValueError(f"limit must be 1 to {MAX_LINES}, got {limit}")
    needle = contains.lower() if contains else None
    trace = trace_id.strip().lower().removeprefix("0x") if trace_id else None
    path = log_file(settings, service)
    lines = tail_lines(path)
    found: list[dict[str, Any]] = []
    for line in reversed(lines):
        if needle is not None and needle not in line.lower():
            continue
        record = parse_line(line)
        if record["level"] != RAW and LEVELS.get(record["level"], 0) < threshold:
            continue
        if trace is not None and str(record.get("trace_id") or "").lower() != trace:
            continue
        found.append(record)
        if len(found) == limit:
            break
    return {"service": service, "file": str(path), "lines": found, "scanned": len(lines)}


def last_error(lines: list[str]) -> dict[str, Any] | None:
    """The latest error in a log's lines (oldest first): an ERROR line, or a Python traceback (a crash), as
    {"ts", "event", "message"}. A traceback has no time of its own: its ts is the last logged line's before it."""
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if line.startswith(TRACEBACK):
            return {"ts": _time_before(lines, i), "event": "traceback", "message": _exception_line(lines, i)}
        if ERROR_MARK in line and (record := parse_line(line))["level"] == "ERROR":
            fields = {k: v for k, v in record.items() if k not in ENVELOPE}
            message = fields.pop("error", None) or ", ".join(f"{k}={v}" for k, v in fields.items())
            return {"ts": record.get("ts"), "event": record.get("event"), "message": str(message)}
    return None


def _exception_line(lines: list[str], start: int) -> str:
    """The exception a traceback ends with ("ValueError: boom"): its first line that is not indented."""
    for line in lines[start + 1:]:
        if line and not line[0].isspace():
            return line
    return lines[start]


def _time_before(lines: list[str], index: int) -> float | None:
    for line in reversed(lines[:index]):
        record = parse_line(line)
        if record["level"] != RAW:
            return record.get("ts")
    return None


def service_history(settings: Settings, hot: HotState) -> dict[str, dict[str, Any]]:
    """Each service's starts since the mesh's Redis started, restarts (starts after the first), last start
    (unix s) and last error: {service: {"starts", "restarts", "last_start", "last_error"}}."""
    starts = hot.starts()
    history = {}
    for name in settings.service_names():
        count, last_start = starts.get(name, (0, None))
        history[name] = {"starts": count, "restarts": max(count - 1, 0), "last_start": last_start,
                         "last_error": last_error(tail_lines(log_file(settings, name)))}
    return history


def control_log(settings: Settings, n: int = 50) -> list[dict]:
    """The operators' latest controls, newest first (persistence.audit.control_history); none without a store."""
    if not 1 <= n <= MAX_LINES:
        raise ValueError(f"n must be 1 to {MAX_LINES}, got {n}")
    with reading(settings) as store:
        return control_history(store, n) if store is not None else []
