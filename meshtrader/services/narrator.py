"""Narrator: turns what happens on the bus into short readable highlights (pr_events, a markdown file
under MESH_HOME, and the `narr` topic)."""
from __future__ import annotations

import json
import time
from decimal import Decimal

from meshtrader.domain.money import LIQUIDATION
from meshtrader.persistence.views import agent_events_after, narrated
from meshtrader.runtime.alerts import Alerter
from meshtrader.runtime.config import Settings
from meshtrader.services.base import Service, main
from meshtrader.services.watchdog import JOURNAL
from meshtrader.wire.messages import (
    Allocation,
    FeedStatus,
    Fill,
    ForkEvent,
    ForkReplies,
    KeepFork,
    MarketGap,
    MarketRegime,
    Narrative,
    OrderUpdate,
    ParamsUpdate,
    RiskState,
    VenueStatus,
)

DEATHS_SEEN = "narrator.deaths_seen"  # service_state: the last watchdog journal entry told
DEATHS_POLL_S = 0.5


class Narrator(Service):
    background = True

    def __init__(self, settings: Settings) -> None:
        super().__init__("narrator", settings)
        self.path = settings.home_dir / "narrative.md"
        self.big_move = settings.capital / len(settings.strategies) * settings.big_move_pct
        self.trading_state: str | None = None
        self.deactivated: set[str] = set()
        self.weights: dict[str, Decimal] = {}

    def setup(self) -> None:
        self.publisher("narrator.pub")
        self.first_trade_told = narrated(self.store, "first_trade")
        endpoints = [e for name, e in self.settings.publisher_endpoints().items() if name != "narrator"]
        self.subscribe(endpoints, [b"fill", b"risk.state", b"fork.created", b"md.gap.", b"regime", b"alloc",
                                   b"params."], self.on_event)
        self.forks = self.client("forks.rep", ForkReplies, timeout_ms=2000, retries=1)
        self.alerts = Alerter.from_settings(self.settings, self.log, self.name)
        self._closables.append(self.alerts)
        self.subscribe([self.settings.endpoint("feed.pub")], [b"md.status."], self.on_feed_status)
        self.deaths_seen = self.store.get_state(DEATHS_SEEN) or 0
        self.loop.every(DEATHS_POLL_S, self.on_deaths, first_in=0)
        if self.settings.mode == "live":
            self.subscribe([self.settings.endpoint("executor.pub")], [b"order", b"venue.status"], self.on_live_order)

    def on_event(self, topic: bytes, event) -> None:
        self.event_time = max(self.event_time, event.et)
        if isinstance(event, Fill):
            self.on_fill(event)
        elif isinstance(event, RiskState):
            self.on_risk(event)
        elif isinstance(event, MarketGap):
            self.tell("market_gap", f"{event.symbol}: {event.missing} candle(s) repaired",
                      f"{event.reason}; {event.backfilled} of {event.missing} refetched through REST before anything newer "
                      "was published.")
        elif isinstance(event, MarketRegime):
            self.tell("regime", f"Market regime: {event.regime.replace('_', ' ')}",
                      ", ".join(f"{k} {v}" for k, v in event.metrics.items()))
        elif isinstance(event, ForkEvent):
            if event.purpose == "incident":
                self.tell("incident", f"Incident snapshot {event.fork_id}",
                          "The risk guard tripped: the store is frozen as of this moment for later analysis.")
                self.alerts.alert("warning", f"Incident snapshot {event.fork_id}",
                                  "the store is frozen as of the breach for later analysis", self.event_time)
            else:
                self.tell("fork_created", f"Fork {event.fork_id} created",
                          f"{event.requester} asked for a {event.purpose} fork (TTL {event.ttl_s}s).")
        elif isinstance(event, Allocation):
            self.on_allocation(event)
        elif isinstance(event, ParamsUpdate):
            shown = ", ".join(f"{k}={v}" for k, v in event.params.items())
            self.tell("params_adopted", f"{event.strategy} adopts new parameters", f"{shown}. {event.reason}.")
            self.keep(event.fork_id, f"its optimisation changed {event.strategy}'s live parameters")

    def on_allocation(self, allocation: Allocation) -> None:
        """A reallocation is news; one that moves a strategy by 10 points or more makes its forks worth keeping."""
        before, self.weights = self.weights, dict(allocation.weights)
        if not before:
            return  # the allocation in force at start-up: known already
        moves = {n: w - before.get(n, Decimal(0)) for n, w in allocation.weights.items()}
        shown = ", ".join(f"{n} {w * 100:.1f}% ({moves[n] * 100:+.1f})" for n, w in allocation.weights.items())
        self.tell("allocation", "Capital reallocated", f"{shown}. {allocation.reason.split(': ', 1)[0]}.")
        if max((abs(m) for m in moves.values()), default=0) >= Decimal("0.10"):
            for fork_id in allocation.forks:
                self.keep(fork_id, "it moved a strategy's allocation by 10 points or more")

    def keep(self, fork_id: str, why: str) -> None:
        if fork_id:
            self.forks.request(KeepFork(fork_id=fork_id, reason=why, src=self.name))

    def on_fill(self, fill: Fill) -> None:
        if not self.first_trade_told:
            self.first_trade_told = True
            self.tell("first_trade", "First trade",
                      f"{fill.strategy} {'bought' if fill.side == 'buy' else 'sold'} {fill.qty} {fill.symbol} "
                      f"at {fill.price}.")
        if fill.liquidity == LIQUIDATION:
            self.tell("liquidation", f"{fill.strategy}'s {fill.symbol} position liquidated",
                      f"Its margin fell to maintenance: {fill.qty} {fill.symbol} closed at its liquidation price "
                      f"{fill.price}, realizing {fill.realized_pnl:.2f} and a liquidation fee of {fill.fee}.")
        elif fill.realized_pnl and abs(fill.realized_pnl) >= self.big_move:
            kind, word = ("big_win", "won") if fill.realized_pnl > 0 else ("big_loss", "lost")
            self.tell(kind, f"{fill.strategy} {word} {abs(fill.realized_pnl):.2f}",
                      f"Closing {fill.qty} {fill.symbol} at {fill.price} realized {fill.realized_pnl:.2f} "
                      f"(fee {fill.fee}).")

    def on_risk(self, state: RiskState) -> None:
        if self.trading_state is not None and state.trading_state != self.trading_state:
            if state.trading_state == "HALTED":
                self.tell("risk_halt", "Trading halted", state.reason or "The risk guard halted trading.")
                self.alerts.alert("critical", "Trading halted", state.reason or "the risk guard halted trading",
                                  self.event_time)
            else:
                self.tell("risk_resumed", f"Trading {state.trading_state.lower()}", state.reason or "Trading resumed.")
                if state.trading_state == "REDUCING":
                    self.alerts.alert("warning", "Trading reduced to exits", state.reason, self.event_time)
        self.trading_state = state.trading_state
        for strategy in set(state.deactivated) - self.deactivated:
            self.tell("strategy_deactivated", f"{strategy} deactivated", state.reason or "Drawdown limit hit.")
            self.alerts.alert("warning", f"{strategy} deactivated", state.reason or "drawdown limit hit",
                              self.event_time)
        self.deactivated = set(state.deactivated)

    def on_deaths(self) -> None:
        """The watchdog's journal (supervisord's word on every exit) since the last entry told: read from the
        store, so a death while the narrator itself was down (or its own) is told once it is back."""
        rows = agent_events_after(self.store, JOURNAL, self.deaths_seen)
        for _, event, detail in rows:
            death = json.loads(detail)
            program = death["program"]
            if event == "died":
                title = f"{program} died"
                body = f"{program} died ({death['how']}) and was restarted in {death['restarted_in_s']:.1f} s."
                self.tell("service_died", title, body)
                self.alerts.alert("warning", title, body, self.event_time)
            else:
                title = f"{program} is crash-looping"
                body = (f"supervisord gave up on {program} after repeated failed starts ({death['how']})."
                        if death["gave_up"] else
                        f"{program} exited {death['exits']} times within {death['window_s']:.0f} s "
                        f"(last: {death['how']}); supervisord keeps restarting it.")
                self.tell("crash_loop", title, body)
                self.alerts.alert("critical", title, body, self.event_time)
        if rows:
            self.deaths_seen = rows[-1][0]
            self.store.put_state(DEATHS_SEEN, self.deaths_seen)

    def on_live_order(self, topic: bytes, update: OrderUpdate | VenueStatus) -> None:
        if isinstance(update, VenueStatus):
            if not update.connected:
                self.alerts.alert("warning", "Exchange not answering: live orders refused", update.reason, update.et)
        elif update.status == "REJECTED":
            self.alerts.alert("warning", f"Live order rejected: {update.strategy} {update.side} {update.symbol}",
                              update.reason, update.et)

    def on_feed_status(self, topic: bytes, status: FeedStatus) -> None:
        if not status.connected or status.stale:
            what = "disconnected" if not status.connected else "stale"
            self.alerts.alert("warning", f"Market data {what}: {status.symbol}", status.reason, status.et)

    def tell(self, kind: str, title: str, body: str) -> None:
        self.store.insert_many("pr_events", ("kind", "title", "body", "event_time", "created_at"),
                               [(kind, title, body, self.event_time, time.time())])
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.event_time / 1000)) if self.event_time else "-"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(f"- **{title}** ({when}): {body}\n")
        self.pub.publish(b"narr", Narrative(kind=kind, title=title, body=body, et=self.event_time))
        self.log.info("narrated", kind=kind, title=title)


if __name__ == "__main__":
    main(Narrator)
