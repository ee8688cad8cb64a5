"""What the dashboard's Strategies, Forks, Market regime and Narratives views show, read from the store:
each strategy's results and risk-adjusted performance net of the allocator's transfers, its parameters
and its latest validation beside what it did live over the same window; every fork's life and what it
produced; the regime's changes with the classifier's thresholds; the narrator's highlights.

Money stays exact (Decimal strings); ratios and percentages are floats, for display. Without a store
(a mesh that never started) every answer is empty."""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from decimal import Decimal
from typing import Any, NamedTuple

from meshtrader.domain.portfolio import FUNDING
from meshtrader.domain.regime import RegimeRules
from meshtrader.ops.status import reading
from meshtrader.persistence import views
from meshtrader.persistence.fork_registry import DESTROYED, ForkRegistry
from meshtrader.persistence.store import Store
from meshtrader.research.backtest import MINUTES_PER_YEAR
from meshtrader.research.metrics import shown
from meshtrader.runtime.config import Settings
from meshtrader.strategies import ParameterError, create

YEAR_MS = MINUTES_PER_YEAR * 60_000  # the backtester's year: live and backtest Sharpe ratios compare
VALIDATIONS_SEARCHED = 50  # the newest validation forks looked through for one that covered a strategy


class Period(NamedTuple):
    """From one equity record to the next (market ms), and the return over it net of transfers."""

    start: int
    end: int
    ret: float


# ----- strategies ------------------------------------------------------------------------------------------
def strategy_insights(settings: Settings) -> dict[str, Any]:
    """Every configured strategy's trades, P&L, fees, win rate, Sharpe, drawdown, allocation over time,
    parameters in use and latest validation against live."""
    with reading(settings) as store:
        if store is None:
            return {"strategies": {}}
        trades, equity, transfers = defaultdict(list), defaultdict(list), defaultdict(list)
        for row in views.trade_results(store):
            trades[row["strategy"]].append(row)
        # keyed by (market time, wall time): a transfer at the market time of an equity record falls before or
        # after it as it happened
        for row in views.equity_history(store):
            equity[row["strategy"]].append(((row["event_time"], row["created_at"]), Decimal(row["equity"])))
        for row in store.ledger():
            if row["kind"] == FUNDING:  # funding is the positions' performance, not capital moved
                continue
            transfers[row["strategy"]].append(((row["event_time"] or 0, row["created_at"]), Decimal(row["amount"])))
        allocations = views.allocation_history(store)
        adoptions = views.params_adoptions(store)
        validations = views.fork_results(store, "validation", VALIDATIONS_SEARCHED)
        first_candle = views.candles_start(store)
        strategies = {}
        for name in settings.strategies:
            history = periods(equity[name], transfers[name])
            strategies[name] = {
                **trade_figures(trades[name]), **performance(history),
                "allocation_history": [{"time": t, "weight_pct": float(w[name] * 100)}
                                       for t, w in allocations if name in w],
                **params_in_use(store, settings, name, adoptions.get(name)),
                "validation": validation_vs_live(name, validations, first_candle, history, trades[name])}
    return {"strategies": strategies}


def trade_figures(trades: list[dict]) -> dict[str, Any]:
    """Counts, win rate over the trades that closed something (realized P&L not zero), exact sums."""
    pnls = [Decimal(t["realized_pnl"]) for t in trades]
    closed = [p for p in pnls if p]
    return {"trades": len(trades), "closed_trades": len(closed),
            "win_rate": round(sum(1 for p in closed if p > 0) / len(closed), 6) if closed else None,
            "realized_pnl": str(sum(pnls, Decimal(0))),
            "fees": str(sum((Decimal(t["fee"]) for t in trades), Decimal(0)))}


Moment = tuple[int, float]  # (market time ms, wall-clock time s): orders records made at the same market time


def periods(equity: list[tuple[Moment, Decimal]], transfers: list[tuple[Moment, Decimal]]) -> list[Period]:
    """Each period between two equity records with its return net of the transfers made in it (after the
    first record, up to and including the second): r = (equity_t - transfers) / equity_t-1 - 1, so capital
    the allocator moves is no performance. Transfers up to the first record are the capital it starts
    with; a period starting from an empty account has no return."""
    if not equity:
        return []
    moves = sorted(transfers)
    k = 0
    while k < len(moves) and moves[k][0] <= equity[0][0]:
        k += 1
    result = []
    for (start, before), (end, after) in zip(equity, equity[1:], strict=False):
        moved = Decimal(0)
        while k < len(moves) and moves[k][0] <= end:
            moved += moves[k][1]
            k += 1
        if before > 0:
            result.append(Period(start[0], end[0], float((after - moved) / before - 1)))
    return result


def performance(history: list[Period]) -> dict[str, float | None]:
    """Return, Sharpe and maximum drawdown of the NAV the periods compound to. Sharpe as the backtester
    takes it (mean over the population standard deviation of the returns), annualised by the mean period
    length observed in market time: records are 15 market minutes apart, but a restarted executor
    records early."""
    if not history:
        return {"return_pct": None, "sharpe": None, "max_drawdown_pct": None}
    nav = peak = 1.0
    drawdown = 0.0
    for period in history:
        nav *= 1 + period.ret
        peak = max(peak, nav)
        drawdown = max(drawdown, 1 - nav / peak)
    n = len(history)
    mean = sum(p.ret for p in history) / n
    std = math.sqrt(sum((p.ret - mean) ** 2 for p in history) / n)
    elapsed = sum(p.end - p.start for p in history)
    sharpe = round(mean / std * math.sqrt(YEAR_MS * n / elapsed), 6) if n > 1 and std and elapsed > 0 else None
    return {"return_pct": round((nav - 1) * 100, 6), "sharpe": sharpe, "max_drawdown_pct": round(drawdown * 100, 6)}


def params_in_use(store: Store, settings: Settings, name: str, adopted_at: float | None) -> dict[str, Any]:
    """The set the allocator adopted (and when), else the configured one; with the strategy's defaults for
    what it does not name."""
    adopted = store.get_state(f"params.{name}")
    given = adopted if adopted is not None else settings.strategy_params.get(name, {})
    try:
        params = create(name, settings.symbols[0], given).params.model_dump(
            exclude=None if settings.market == "usdm" else {"short"})  # a futures-only knob
    except ParameterError:  # recorded before the strategy's parameters changed: shown as recorded
        params = given
    return {"params": params, "params_source": "configured" if adopted is None else "adopted",
            "params_adopted_at": None if adopted is None else adopted_at}


def validation_vs_live(name: str, validations: list[dict], first_candle: int | None, history: list[Period],
                       trades: list[dict]) -> dict[str, Any] | None:
    """The newest validation that backtested this strategy, in its shortest (most recent) window, beside
    the strategy's live results over the same market time. The window ends where the fork was taken (its
    copy holds no later candle) and starts no earlier than the store's first candle."""
    for fork in validations:
        windows = {float(label.removesuffix("m")): reports[name]
                   for label, reports in fork["results"].get("validation", {}).items() if name in reports}
        if windows:
            break
    else:
        return None
    minutes = min(windows)
    report, to_et = windows[minutes], fork["created_et"]
    from_et = max(to_et - int(minutes * 60_000), first_candle or 0)
    live = [p for p in history if from_et < p.end <= to_et]
    return {"fork_id": fork["fork_id"], "window_min": minutes, "from_et": from_et, "to_et": to_et,
            "backtest": {"return_pct": percent(report.get("roi")), "trades": report.get("trades"),
                         "sharpe": report.get("sharpe"), "days": report.get("days"),
                         "max_drawdown_pct": percent(report.get("max_drawdown")),
                         "win_rate": report.get("win_rate"), "profit_factor": report.get("profit_factor")},
            "live": {**performance(live), "trades": sum(1 for t in trades if from_et < t["event_time"] <= to_et),
                     "from_et": live[0].start if live else None, "to_et": live[-1].end if live else None}}


def percent(fraction: float | None) -> float | None:
    return None if fraction is None else round(fraction * 100, 6)


# ----- forks -----------------------------------------------------------------------------------------------
def fork_timeline(settings: Settings, limit: int = 200) -> dict[str, Any]:
    """The newest forks, newest first, with how long each lived (wall clock) and what it produced; and per
    purpose, over every fork the mesh made: how many, how many still there, the time they lived."""
    with reading(settings) as store:
        if store is None:
            return {"forks": [], "by_purpose": {}}
        rows, lifetimes = ForkRegistry(store).listing(limit), views.fork_lifetimes(store)
    now = time.time()
    forks = [{"fork_id": r["fork_id"], "purpose": r["purpose"], "requester": r["requester"], "backend": r["backend"],
              "status": r["status"], "created_at": r["created_at"], "created_et": r["created_et"],
              "destroyed_at": r["destroyed_at"], "ttl_s": r["ttl_s"], "expires_et": r["expires_et"],
              "kept": bool(r["kept"]), "lived_s": lived(r, now),
              "produced": produced(json.loads(r["results"]) if r["results"] else {})} for r in rows]
    by_purpose: dict[str, dict[str, Any]] = {}
    for row in lifetimes:
        entry = by_purpose.setdefault(row["purpose"], {"count": 0, "active": 0, "total_s": 0.0, "lived": 0})
        entry["count"] += 1
        entry["active"] += int(row["status"] != DESTROYED)
        seconds = lived(row, now)
        if seconds is not None:
            entry["total_s"] += seconds
            entry["lived"] += 1
    return {"forks": forks, "by_purpose": {
        purpose: {"count": e["count"], "active": e["active"], "total_s": round(e["total_s"], 3),
                  "mean_s": round(e["total_s"] / e["lived"], 3) if e["lived"] else None}
        for purpose, e in sorted(by_purpose.items())}}


def lived(row: dict, now: float) -> float | None:
    """Seconds from creation to destruction, or to now while it is there; None for one never made (its
    backend failed: destroyed at once, with no time of death)."""
    if row["destroyed_at"] is not None:
        return round(row["destroyed_at"] - row["created_at"], 3)
    return None if row["status"] == DESTROYED else round(now - row["created_at"], 3)


def produced(results: dict) -> str:
    """One line on what a fork's results hold: a validation's scores, a what-if's outcome and choice, an
    optimisation's verdict, an incident's cause, a failure, why it was kept. Empty while it holds none."""
    said = []
    if "validation" in results:
        scores = results.get("inputs", {}).get("scores", {})
        said.append(f"validation ({results.get('trigger', '?')}) over {', '.join(results['validation'])}: scores "
                    + ", ".join(f"{n} {v:.2f}" for n, v in scores.items()))
    if "whatif" in results:
        whatif = results["whatif"]
        said.append(f"what-if chose {whatif['chosen']}: " + ", ".join(
            f"{n} Sharpe {shown(o['sharpe'], o.get('days', 0))} ROI {o['roi'] * 100:.2f}%"  # no days: stored before
            for n, o in whatif["outcome"].items()))
    if "optimization" in results:
        said.append(optimization_verdict(results["optimization"]))
    said += [f"{label}: {results[key]}" for key, label in (("incident", "incident"), ("error", "failed"),
                                                            ("interesting", "kept")) if key in results]
    return "; ".join(said)


def optimization_verdict(summary: dict) -> str:
    name = summary["strategy"]
    if "error" in summary:
        return f"{name} optimisation failed: {summary['error']}"
    scores = (f"{summary['objective']} out of sample {score(summary['best_out_of_sample'])} vs live "
              f"{score(summary['live_out_of_sample'])}, {summary['trials']} sets")
    if summary["adopt"]:
        chosen = ", ".join(f"{k}={v}" for k, v in summary["best_params"].items())
        return f"{name} adopted {chosen} ({scores})"
    return f"{name} kept its parameters ({scores})"


def score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# ----- market regime ---------------------------------------------------------------------------------------
def regime_history(settings: Settings, limit: int = 500, live: dict[str, dict] | None = None) -> dict[str, Any]:
    """The market regime's latest changes, oldest first (the market's regime is the first symbol's, read with
    the second's correlation: it drives the allocator), and per symbol, gauges of volatility and trend
    strength (ADX) with the thresholds the classifier switches at. `live` is the allocator's latest reading
    per symbol (hot state); without one, the market's gauges show the reading that made its regime."""
    with reading(settings) as store:
        rows = views.regime_changes(store, limit) if store else []
    history = [{"time": r["event_time"], "regime": r["regime"], "metrics": r["metrics"]} for r in rows]
    current = history[-1] if history else None
    latest = dict(live or {})
    if current and settings.symbols[0] not in latest:
        latest[settings.symbols[0]] = {"regime": current["regime"], "reading": current["regime"],
                                       "metrics": current["metrics"], "event_time": current["time"]}
    rules = RegimeRules()

    def gauges(symbol: str) -> dict[str, Any]:
        last = latest.get(symbol) or {}
        metrics = last.get("metrics") or {}
        return {"regime": last.get("regime"), "reading": last.get("reading"), "as_of": last.get("event_time"),
                "volatility": {"value": metrics.get("volatility"), "high_from": rules.volatility_split},
                "trend_strength": {"value": metrics.get("adx"), "trend_from": rules.adx_trend,
                                   "trend_until": rules.adx_trend_exit},
                "slope": metrics.get("slope"), "correlation": metrics.get("correlation")}

    return {"market_symbol": settings.symbols[0], "current": current, "history": history,
            "symbols": {symbol: gauges(symbol) for symbol in settings.symbols}}


# ----- narratives ------------------------------------------------------------------------------------------
def narratives(settings: Settings, limit: int = 100, kind: str | None = None) -> list[dict]:
    """The narrator's highlights, newest first; of one kind (e.g. big_win, allocation) if given."""
    with reading(settings) as store:
        return views.highlights(store, limit, kind) if store else []
