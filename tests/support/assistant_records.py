"""A store holding a small, known history for the assistant's questions: real SQLite through the store's own
schema and writes, with every record's id known, so a test can say which record an answer must cite.

The story (2025-05-12, market time): momentum buys BTC (filled); its ETH entry is refused by max_order_pct;
momentum's drawdown deactivates it; the kill switch goes on and refuses macd's entry; a validation on a fork
reallocates; the regime turns volatile; the narrator tells of it."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NamedTuple

from meshtrader.persistence.store import Store
from meshtrader.services.risk import EVENT_COLUMNS

T0 = 1747029600000  # 2025-05-12 06:00 UTC
MINUTE = 60_000
FILLED_ORDER = "mt0a1b2c3d4e5f60718293a4b5"
REFUSED_ORDER = "mt1f2e3d4c5b6a70819203a4b6"
HALTED_ORDER = "mt2e3d4c5b6a7f8091a2b3c4d7"
FILLED_SIGNAL = f"momentum:BTCUSDT:{T0}:buy"
FORK = "fork-20250512080000-a1b2c3"


class Known(NamedTuple):
    """The ids the answers must cite."""

    refusal: str = "risk_events #2"  # REFUSED_ORDER, by max_order_pct
    deactivation: str = "risk_events #3"  # momentum deactivated by its drawdown
    kill_switch: str = "risk_events #4"
    halted_refusal: str = "risk_events #5"  # HALTED_ORDER, by the kill switch
    first_allocation: str = "allocations #1"
    reallocation: str = "allocations #2"
    fork: str = f"fork {FORK}"
    first_regime: str = "market_regimes #1"
    regime: str = "market_regimes #2"
    highlight: str = "pr_events #2"


def build(path: Path) -> Known:
    """Write the story into a new store at `path`."""
    store = Store(path)
    now = time.time()
    try:
        store.insert_many("signals", ("signal_id", "strategy", "symbol", "side", "confidence", "reason", "price",
                                      "event_time", "trace_id", "outcome", "received_at"), [
            (FILLED_SIGNAL, "momentum", "BTCUSDT", "buy", 0.7, "SMA5 crossed above SMA20, RSI 55.2 < 70.0",
             "104000.0", T0, "00000000000000a1", "ordered", now),
            (f"momentum:ETHUSDT:{T0 + 30 * MINUTE}:buy", "momentum", "ETHUSDT", "buy", 0.9,
             "SMA5 crossed above SMA20, RSI 61.0 < 70.0", "2500.0", T0 + 30 * MINUTE, "00000000000000a2",
             "rejected", now),
            (f"macd:BTCUSDT:{T0 + 90 * MINUTE}:buy", "macd", "BTCUSDT", "buy", 0.6,
             "MACD 12.1 crossed above signal 11.9", "103500.0", T0 + 90 * MINUTE, "00000000000000a3", "rejected",
             now)])
        store.insert_many("orders", ("order_id", "signal_id", "strategy", "symbol", "side", "qty", "price", "status",
                                     "reason", "event_time", "trace_id", "created_at"), [
            (FILLED_ORDER, FILLED_SIGNAL, "momentum", "BTCUSDT", "buy", "0.048", "104010.4", "FILLED",
             "SMA5 crossed above SMA20, RSI 55.2 < 70.0", T0, "00000000000000a1", now),
            (REFUSED_ORDER, f"momentum:ETHUSDT:{T0 + 30 * MINUTE}:buy", "momentum", "ETHUSDT", "buy", "10.000", None,
             "REJECTED", "max_order_pct: notional 25000.00 over 20% of the strategy's 50000.00", T0 + 30 * MINUTE,
             "00000000000000a2", now),
            (HALTED_ORDER, f"macd:BTCUSDT:{T0 + 90 * MINUTE}:buy", "macd", "BTCUSDT", "buy", "0.040", None,
             "REJECTED", "halted: kill switch on", T0 + 90 * MINUTE, "00000000000000a3", now)])
        store.insert_many("order_events", ("order_id", "seq", "from_status", "to_status", "filled_qty", "reason",
                                           "event_time", "created_at"), [
            (FILLED_ORDER, 1, "NEW", "SUBMITTED", "0", "approved", T0, now),
            (FILLED_ORDER, 2, "SUBMITTED", "FILLED", "0.048", "0.048 at 104010.4 (taker)", T0, now),
            (REFUSED_ORDER, 1, "NEW", "REJECTED", "0", "max_order_pct: notional 25000.00 over 20%", T0 + 30 * MINUTE,
             now)])
        store.insert_many("trades", ("trade_id", "order_id", "strategy", "symbol", "side", "qty", "price", "fee",
                                     "realized_pnl", "event_time", "created_at"), [
            (f"{FILLED_ORDER}-1", FILLED_ORDER, "momentum", "BTCUSDT", "buy", "0.048", "104010.4", "2.49625",
             "0", T0, now)])
        store.insert_many("risk_events", (*EVENT_COLUMNS,), [
            (FILLED_ORDER, "momentum", "BTCUSDT", "buy", 1, "within_limits", "notional 4992.50 within all limits",
             "ACTIVE", T0, now),
            (REFUSED_ORDER, "momentum", "ETHUSDT", "buy", 0, "max_order_pct",
             "notional 25000.00 over 20% of the strategy's 50000.00", "ACTIVE", T0 + 30 * MINUTE, now),
            (None, None, None, None, None, "strategy_drawdown",
             "momentum: drawdown 10.4% from its peak 51000.00 reached 10%: deactivated", "ACTIVE", T0 + 60 * MINUTE,
             now),
            (None, None, None, None, None, "kill_switch", "kill switch turned on by cli:ops (ACTIVE -> HALTED)",
             "HALTED", T0 + 80 * MINUTE, now),
            (HALTED_ORDER, "macd", "BTCUSDT", "buy", 0, "halted", "kill switch on", "HALTED", T0 + 90 * MINUTE, now)])
        store.insert_many("allocations", ("event_time", "weights", "reason", "created_at"), [
            (T0 - 60 * MINUTE, json.dumps({"momentum": "0.5000", "macd": "0.5000"}), "initial: equal weights", now),
            (T0 + 120 * MINUTE, json.dumps({"momentum": "0.0500", "macd": "0.4500", "cash": "0.5000"}),
             f"validation (schedule) on {FORK} over 720m: momentum Sharpe -1.20 ROI -1.20% (14 trades); macd Sharpe "
             "0.80 ROI 0.40% (9 trades); regime high_volatility; cash 50.0%", now)])
        results = {"validation": {"720m": {"momentum": {"roi": -0.012, "sharpe": -1.2, "trades": 14},
                                           "macd": {"roi": 0.004, "sharpe": 0.8, "trades": 9}}}}
        store.insert_many("fork_tracking", ("fork_id", "backend", "parent", "purpose", "requester", "path",
                                            "created_at", "created_et", "ttl_s", "expires_et", "status", "results"), [
            (FORK, "sqlite", str(path), "validation", "allocator", str(path.with_name(f"{FORK}.db")), now,
             T0 + 118 * MINUTE, 7200, T0 + 238 * MINUTE, "released", json.dumps(results))])
        store.insert_many("market_regimes", ("event_time", "regime", "metrics", "created_at"), [
            (T0 - 120 * MINUTE, "trending_bull", json.dumps({"adx": 27.1, "volatility": 0.0005}), now),
            (T0 + 100 * MINUTE, "high_volatility", json.dumps({"adx": 31.4, "volatility": 0.0031}), now)])
        store.insert_many("pr_events", ("kind", "title", "body", "event_time", "created_at"), [
            ("first_trade", "First trade", "momentum bought 0.048 BTCUSDT at 104010.4", T0, now),
            ("regime", "Market regime: high volatility", "adx 31.4, volatility 0.0031", T0 + 100 * MINUTE, now)])
    finally:
        store.close()
    return Known()
