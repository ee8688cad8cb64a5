"""Who steered the mesh, and when: the operators' controls as durable records.

Controls are journal entries in `agent_events` (service = the service that acted, event = the control), so
no new table: their detail carries who asked, the market time and what changed. The risk guard also keeps
its trading-state history in `risk_events`; this is the record of the people behind it."""
from __future__ import annotations

import json

from meshtrader.persistence.store import Store
from meshtrader.wire.messages import RESET_KINDS

# The journal's events that are an operator's controls (close_all: the executor records it itself).
CONTROLS = ("kill_switch", "pause", "limit_change", *(f"reset_{kind}" for kind in RESET_KINDS), "close_all", "validate")
COMMON_KEYS = ("by", "event_time", "change")  # the fields every control record of this module has


def record_control(store: Store, service: str, control: str, by: str, change: str, event_time: int | None) -> None:
    """Journal one control: `change` says what it changed, in words ("daily_loss_pct 0.05 -> 0.03")."""
    store.agent_event(service, control, {"by": by, "event_time": event_time, "change": change})


def control_history(store: Store, n: int) -> list[dict]:
    """The latest `n` controls, newest first: {"at" (unix s), "event_time" (market ms, None if unknown),
    "control", "by", "detail" (what changed, in words), "service" (which acted on it)}."""
    marks = ",".join("?" * len(CONTROLS))
    rows = store.query(f"SELECT service, event, detail, created_at FROM agent_events WHERE event IN ({marks}) "
                       "ORDER BY id DESC LIMIT ?", (*CONTROLS, n))
    return [_entry(row["service"], row["event"], row["detail"], row["created_at"]) for row in rows]


def _entry(service: str, control: str, raw: str | None, at: float) -> dict:
    try:
        detail = json.loads(raw) if raw else {}
    except ValueError:
        detail = {"change": raw}
    if not isinstance(detail, dict):
        detail = {"change": str(detail)}
    # records written before `change` existed (the executor's close_all) are told by their other fields
    said = detail.get("change") or ", ".join(f"{k} {v}" for k, v in detail.items() if k not in COMMON_KEYS and v != "")
    return {"at": at, "event_time": detail.get("event_time"), "control": control, "by": detail.get("by"),
            "detail": said, "service": service}
