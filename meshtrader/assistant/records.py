"""The assistant's tools over the store: what happened, each fact with the record it comes from.

A fact's `source` is how it is cited and how it can be found again: `risk_events #123`, `allocations #8`,
`order mt...`, `signal momentum:BTCUSDT:...`, `fork fork-...`, `market_regimes #11`, `pr_events #88`,
`risk state` (the risk guard's published state), or a document section `README.md#futures`."""
from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any, NamedTuple

from meshtrader.persistence import evidence
from meshtrader.persistence.store import Store

RECORDS = 5  # how many records of a kind a tool reports by default: the latest ones
FORKS_SEARCHED = 20  # the newest forks looked through for the latest finished ones


class Fact(NamedTuple):
    source: str  # the citation
    text: str  # what it says
    kind: str = "record"  # or "doc"


def when(event_time: int | None) -> str:
    """A market time (ms) as people read it."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(event_time / 1000)) if event_time else "(no market time)"


def risk_fact(row: dict) -> Fact:
    """A risk guard's record: a verdict on an order, or a change of the trading state."""
    if row["request_id"] is None:
        text = (f"{when(row['event_time'])}: trading state {row['trading_state']} after {row['rule']}: "
                f"{row['reason']}")
    else:
        verdict = "approved" if row["approved"] else "refused"
        text = (f"{when(row['event_time'])}: the risk guard {verdict} order {row['request_id']} "
                f"({row['strategy']} {row['side']} {row['symbol']}) by rule {row['rule']}: {row['reason']}")
    return Fact(f"risk_events #{row['id']}", text)


def allocation_fact(row: dict) -> Fact:
    weights = ", ".join(f"{name} {Decimal(share) * 100:.1f}%" for name, share in json.loads(row["weights"]).items())
    at = f"at {when(row['event_time'])}" if row["event_time"] else "before the first candle"
    return Fact(f"allocations #{row['id']}", f"allocation {at}: {weights}; reason: {row['reason']}")


def signal_fact(row: dict) -> Fact:
    return Fact(f"signal {row['signal_id']}",
                f"{when(row['event_time'])}: {row['strategy']} signalled {row['side']} {row['symbol']} at "
                f"{row['price']} ({row['reason']}); outcome: {row['outcome'] or 'pending'}")


def order_fact(row: dict) -> Fact:
    return Fact(f"order {row['order_id']}",
                f"{when(row['event_time'])}: {row['strategy']} order {row['order_id']} {row['side']} {row['qty']} "
                f"{row['symbol']} is {row['status']}: {row['reason']}")


def fork_fact(row: dict) -> Fact:
    results = json.loads(row["results"]) if row.get("results") else {}
    summary = summarize_fork_results(results)
    return Fact(f"fork {row['fork_id']}",
                f"fork {row['fork_id']} ({row['purpose']}, asked by {row['requester']}, {row['backend']}, "
                f"{row['status']}) at {when(row['created_et'])}" + (f": {summary}" if summary else ""))


def summarize_fork_results(results: dict[str, Any]) -> str:
    """A fork's results in a line: each validation window's per-strategy figures, and what else it recorded."""
    parts = []
    for window, strategies in (results.get("validation") or {}).items():
        figures = [f"{name} ROI {shown_pct(r.get('roi'))}, Sharpe {shown_ratio(r.get('sharpe'))}, "
                   f"{r.get('trades', '?')} trades" for name, r in strategies.items() if isinstance(r, dict)]
        parts.append(f"{window}: " + "; ".join(figures))
    for key in ("decision", "reason", "adopted", "best", "error"):
        if key in results:
            parts.append(f"{key}: {json.dumps(results[key], default=str) if not isinstance(results[key], str) else results[key]}")
    return " | ".join(parts)


def shown_pct(value: Any) -> str:
    return "n/a" if value is None else f"{float(value) * 100:.2f}%"


def shown_ratio(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.2f}"


# ----- the tools ---------------------------------------------------------------------------------------------
def strategy_activity(store: Store, strategy: str, n: int = RECORDS) -> list[Fact]:
    """What a strategy did lately and what stood in its way: its last fill, the risk guard's refusals and the
    state changes naming it since, its latest signals and what became of them, and its share in the latest
    allocation. The answer to "why did it stop trading?" is among these."""
    facts: list[Fact] = []
    last = evidence.last_trade(store, strategy)
    if last:
        facts.append(Fact(f"trade {last['trade_id']}",
                          f"{strategy}'s last fill: {when(last['event_time'])}, {last['side']} {last['qty']} "
                          f"{last['symbol']} at {last['price']} (order {last['order_id']})"))
    else:
        facts.append(Fact(f"trades of {strategy}", f"{strategy} has no fill in the store"))
    since = last["event_time"] if last else None
    blocking = [row for row in evidence.risk_events(store, n * 4, strategy=strategy)
                if (not row["approved"] or row["request_id"] is None)
                and (since is None or (row["event_time"] or 0) >= since)]
    facts += [risk_fact(row) for row in blocking[:n]]
    facts += [signal_fact(row) for row in evidence.signals(store, strategy, n)]
    for row in evidence.adoptions(store, strategy, 1):
        adopted = json.loads(row["detail"])
        params = ", ".join(f"{k} {v}" for k, v in adopted.get("params", {}).items())
        facts.append(Fact(f"agent_events #{row['id']}", f"{strategy} adopted optimised parameters ({params}) from "
                          f"fork {adopted.get('fork_id', '?')}"))
    for row in evidence.allocations(store, 1):
        weights = json.loads(row["weights"])
        if strategy in weights:
            facts.append(Fact(f"allocations #{row['id']}",
                              f"the latest allocation ({when(row['event_time']) if row['event_time'] else 'initial'}) "
                              f"gives {strategy} "
                              f"{Decimal(weights[strategy]) * 100:.1f}% of the capital; reason: {row['reason']}"))
    return facts


def explain_order(store: Store, order_id: str) -> list[Fact]:
    """Why an order exists and what became of it: the signal behind it, the risk guard's verdict, each change of
    its state, its fills."""
    found = evidence.order(store, order_id)
    if found is None:
        return [Fact(f"order {order_id}", f"no order or signal {order_id} in the store")]
    facts = [order_fact(found)]
    if found["signal"]:
        facts.append(signal_fact({**found["signal"], "strategy": found["strategy"], "symbol": found["symbol"]}))
    facts += [risk_fact(row) for row in found["verdicts"]]
    facts += [Fact(f"order {found['order_id']} step {e['seq']}",
                   f"{when(e['event_time'])}: {e['from_status']} -> {e['to_status']}, filled {e['filled_qty']}: "
                   f"{e['reason']}") for e in found["events"]]
    facts += [Fact(f"trade {t['trade_id']}", f"fill {t['qty']} at {t['price']}, fee {t['fee']}, realized P&L "
                   f"{t['realized_pnl']} ({t['liquidity']})") for t in found["fills"]]
    return facts


def rejections(store: Store, strategy: str | None = None, n: int = RECORDS) -> list[Fact]:
    """The latest refused orders with the rule that refused each (the risk guard's record when it was the guard)."""
    facts = []
    for row in evidence.rejected_orders(store, n, strategy):
        verdicts = [v for v in evidence.order(store, row["order_id"])["verdicts"] if not v["approved"]]
        facts.append(risk_fact(verdicts[-1]) if verdicts else order_fact({**row, "status": "REJECTED"}))
    return facts or [Fact("orders", f"no refused order{' of ' + strategy if strategy else ''} in the store")]


def allocation_history(store: Store, n: int = RECORDS) -> list[Fact]:
    """The allocator's latest decisions, newest first, each with its reason."""
    return [allocation_fact(row) for row in evidence.allocations(store, n)] or [
        Fact("allocations", "the allocator has not decided an allocation yet")]


def fork_results(store: Store, fork_id: str | None = None, purpose: str | None = "validation") -> list[Fact]:
    """A fork's record and results; without an id, the newest forks of a purpose that produced results."""
    if fork_id:
        row = evidence.fork(store, fork_id)
        return [fork_fact(row)] if row else [Fact(f"fork {fork_id}", f"no fork {fork_id} in the store")]
    rows = evidence.latest_forks(store, purpose, FORKS_SEARCHED, with_results=True)
    if purpose == "validation":  # a fork's results hold its making at once, the validation's only once it is done
        rows = [row for row in rows if "validation" in json.loads(row["results"])]
    return [fork_fact(row) for row in rows[:2]] or [Fact("forks", f"no {purpose or ''} fork has results yet")]


def regimes(store: Store, n: int = RECORDS) -> list[Fact]:
    """The regime detector's latest confirmed changes."""
    facts = []
    for row in evidence.regimes(store, n):
        metrics = ", ".join(f"{k} {v}" for k, v in json.loads(row["metrics"] or "{}").items())
        facts.append(Fact(f"market_regimes #{row['id']}",
                          f"{when(row['event_time'])}: the market regime became {row['regime']} ({metrics})"))
    return facts or [Fact("market_regimes", "no regime has been detected yet")]


def highlights(store: Store, n: int = RECORDS) -> list[Fact]:
    """The narrator's latest highlights."""
    return [Fact(f"pr_events #{r['id']}", f"{when(r['event_time'])}: {r['title']}. {r['body'] or ''}".strip())
            for r in evidence.highlights(store, n)] or [Fact("pr_events", "the narrator has told nothing yet")]


def state_changes(store: Store, n: int = RECORDS) -> list[Fact]:
    """The latest trading-state changes and controls."""
    return [risk_fact(row) for row in evidence.state_changes(store, n)]


def risk_now(risk: dict[str, Any]) -> list[Fact]:
    """The risk guard's state as it last published it (Redis): trading state, why, and each limit's use."""
    if not risk:
        return [Fact("risk state", "the risk guard has published no state (is the mesh running?)")]
    facts = [Fact("risk state", f"trading state {risk.get('trading_state', 'UNKNOWN')}"
                  + (f": {risk['reason']}" if risk.get("reason") else "")
                  + ("; kill switch on" if risk.get("kill_switch") else "")
                  + (f"; paused by {risk['paused_by']}" if risk.get("paused_by") else "")
                  + (f"; deactivated: {', '.join(risk['deactivated'])}" if risk.get("deactivated") else ""))]
    facts += [Fact("risk state", f"limit {row['limit']}: {row['used']} used of {row['of']}")
              for row in risk.get("limits", [])]
    return facts
