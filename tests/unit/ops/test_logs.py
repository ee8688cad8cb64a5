"""Service logs, restarts and last errors, and the controls' record, read the way the dashboard reads them:
from log files as supervisord writes them (JSON lines, a crash's traceback, a rotated file) and a real store."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from meshtrader.ops import logs
from meshtrader.persistence.audit import control_history, record_control
from meshtrader.persistence.store import Store
from meshtrader.runtime.config import Settings

TRACEBACK = ["Traceback (most recent call last):",
             '  File "/app/meshtrader/services/risk.py", line 50, in setup',
             "    self.book = RiskBook.from_json(self.store.get_state(BOOK_KEY))",
             "ValueError: boom"]


def line(ts: float, level: str, event: str, trace_id: str | None = None, **fields) -> str:
    return json.dumps({"ts": ts, "level": level, "service": "risk", "event": event, "trace_id": trace_id, **fields})


@pytest.fixture
def settings(tmp_path) -> Settings:
    settings = Settings(home=tmp_path, strategies=["momentum", "macd"])
    settings.prepare_home()
    return settings


def write(settings: Settings, name: str, lines: list[str]) -> None:
    (settings.log_dir / name).write_text("".join(f"{text}\n" for text in lines))


@pytest.fixture
def risk_log(settings):
    write(settings, "risk.log.1", [line(1.0, "INFO", "service_started"), line(2.0, "ERROR", "old_error", error="x")])
    write(settings, "risk.log", [
        line(10.0, "INFO", "risk_book_loaded"),
        line(11.0, "INFO", "order_rejected", trace_id="00000000000000ab", rule="max_order_size"),
        line(12.0, "WARNING", "kill_switch", by="cli:alice"),
        line(13.0, "ERROR", "request_failed", error="ValueError('bad')"),
        *TRACEBACK,
        "{not json at all",
        line(20.0, "INFO", "service_started", pid=42),
        line(21.0, "DEBUG", "tick"),
    ])


def test_lines_newest_first_with_raw_lines_kept_and_the_rotated_file_read(settings, risk_log):
    got = logs.service_logs(settings, "risk")
    assert got["service"] == "risk" and got["file"].endswith("logs/risk.log") and got["scanned"] == 13
    events = [r.get("event") or r["message"] for r in got["lines"]]
    assert events[:4] == ["tick", "service_started", "{not json at all", "ValueError: boom"]
    assert events[-2:] == ["old_error", "service_started"]  # the rotated file's, oldest last
    assert got["lines"][2] == {"level": "RAW", "message": "{not json at all"}


def test_filters_by_level_substring_and_trace_id(settings, risk_log):
    warnings = logs.service_logs(settings, "risk", level="warning")["lines"]
    assert [r.get("event", "RAW") for r in warnings] == ["RAW"] * 5 + ["request_failed", "kill_switch", "old_error"]
    assert [r["event"] for r in logs.service_logs(settings, "risk", contains="ALICE")["lines"]] == ["kill_switch"]
    traced = logs.service_logs(settings, "risk", trace_id="00000000000000AB")["lines"]
    assert [r["event"] for r in traced] == ["order_rejected"] and traced[0]["rule"] == "max_order_size"
    assert len(logs.service_logs(settings, "risk", limit=3)["lines"]) == 3


def test_bad_requests_are_clear_errors_and_a_missing_log_is_empty(settings):
    with pytest.raises(ValueError, match="no service 'nope'; one of redis, feed, strategy_momentum, strategy_macd"):
        logs.service_logs(settings, "nope")
    with pytest.raises(ValueError, match="no log level 'LOUD'; one of DEBUG, INFO, WARNING, ERROR"):
        logs.service_logs(settings, "risk", level="LOUD")
    with pytest.raises(ValueError, match="limit must be 1 to 2000"):
        logs.service_logs(settings, "risk", limit=0)
    assert logs.service_logs(settings, "strategy_macd")["lines"] == []


def test_only_the_tail_of_a_big_log_is_read(settings):
    write(settings, "feed.log", [line(float(i), "INFO", "tick", n=i) for i in range(20_000)])
    lines = logs.tail_lines(settings.log_dir / "feed.log", max_bytes=10_000)
    assert 0 < len(lines) < 200 and json.loads(lines[-1])["n"] == 19_999
    assert all(text.startswith("{") and text.endswith("}") for text in lines)  # no partial first line


def test_last_error_is_the_latest_error_line_or_crash(settings, risk_log):
    lines = logs.tail_lines(settings.log_dir / "risk.log")
    crash = logs.last_error(lines)
    assert crash == {"ts": 13.0, "event": "traceback", "message": "ValueError: boom"}  # ts: the line before it
    assert logs.last_error(lines[:6]) == {"ts": 13.0, "event": "request_failed", "message": "ValueError('bad')"}
    assert logs.last_error([line(1.0, "ERROR", "fork_failed", fork="f1", why="disk full")]) == \
        {"ts": 1.0, "event": "fork_failed", "message": "fork=f1, why=disk full"}
    assert logs.last_error([line(1.0, "INFO", "fine")]) is None
    chained = [*TRACEBACK, "", "During handling of the above exception, another exception occurred:", "",
               "Traceback (most recent call last):", '  File "x.py", line 1, in <module>', "RuntimeError: worse"]
    assert logs.last_error(chained)["message"] == "RuntimeError: worse"


def test_service_history_counts_restarts_and_finds_last_errors(settings, risk_log):
    hot = SimpleNamespace(starts=lambda: {"risk": (3, 1_700_000_000.5), "feed": (1, 1_699_999_999.0)})
    history = logs.service_history(settings, hot)
    assert list(history) == settings.service_names()
    assert history["risk"] == {"starts": 3, "restarts": 2, "last_start": 1_700_000_000.5,
                               "last_error": {"ts": 13.0, "event": "traceback", "message": "ValueError: boom"}}
    assert history["feed"] == {"starts": 1, "restarts": 0, "last_start": 1_699_999_999.0, "last_error": None}
    assert history["strategy_macd"] == {"starts": 0, "restarts": 0, "last_start": None, "last_error": None}


def test_control_history_newest_first_with_who_when_and_what(settings):
    assert logs.control_log(settings, 10) == []  # no store yet
    store = Store(settings.db_path)
    try:
        record_control(store, "risk", "limit_change", "cli:alice", "daily_loss_pct 0.05 -> 0.03 by cli:alice",
                       1_746_000_000_000)
        store.agent_event("executor", "started", {"pid": 1})  # a service's journal, not a control
        store.agent_event("executor", "close_all", {"by": "dashboard", "reason": "", "positions": 2, "filled": 2})
        record_control(store, "risk", "pause", "dashboard", "trading paused by dashboard (ACTIVE -> REDUCING)", None)
        history = control_history(store, 10)
    finally:
        store.close()
    assert [(h["control"], h["by"], h["service"]) for h in history] == [
        ("pause", "dashboard", "risk"), ("close_all", "dashboard", "executor"), ("limit_change", "cli:alice", "risk")]
    assert history[1]["detail"] == "positions 2, filled 2" and history[1]["event_time"] is None
    assert history[2]["detail"] == "daily_loss_pct 0.05 -> 0.03 by cli:alice"
    assert history[2]["event_time"] == 1_746_000_000_000 and history[2]["at"] > 1_700_000_000
    assert logs.control_log(settings, 1) == history[:1]
    with pytest.raises(ValueError, match="n must be 1 to 2000"):
        logs.control_log(settings, 0)
