"""Narrator: turns what happens on the bus into short readable highlights (pr_events, a markdown file
under MESH_HOME, and the `narr` topic)."""
from __future__ import annotations

import time

from core.config import Settings
from core.messages import Fill, ForkEvent, MarketGap, MarketRegime, Narrative, RiskState
from core.service import Service, main


class Narrator(Service):
    background = True

    def __init__(self, settings: Settings) -> None:
        super().__init__("narrator", settings)
        self.path = settings.home_dir / "narrative.md"
        self.big_move = settings.capital / len(settings.strategies) * settings.big_move_pct
        self.trading_state: str | None = None
        self.deactivated: set[str] = set()

    def setup(self) -> None:
        self.publisher("narrator.pub")
        self.first_trade_told = bool(self.store.scalar("SELECT 1 FROM pr_events WHERE kind='first_trade'"))
        endpoints = [e for name, e in self.settings.publisher_endpoints().items() if name != "narrator"]
        self.subscribe(endpoints, [b"fill", b"risk.state", b"fork.created", b"md.gap.", b"regime"], self.on_event)

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
            self.tell("fork_created", f"Fork {event.fork_id} created",
                      f"{event.requester} asked for a {event.purpose} fork (TTL {event.ttl_s}s).")

    def on_fill(self, fill: Fill) -> None:
        if not self.first_trade_told:
            self.first_trade_told = True
            self.tell("first_trade", "First trade",
                      f"{fill.strategy} {'bought' if fill.side == 'buy' else 'sold'} {fill.qty} {fill.symbol} "
                      f"at {fill.price}.")
        if fill.realized_pnl and abs(fill.realized_pnl) >= self.big_move:
            kind, word = ("big_win", "won") if fill.realized_pnl > 0 else ("big_loss", "lost")
            self.tell(kind, f"{fill.strategy} {word} {abs(fill.realized_pnl):.2f}",
                      f"Closing {fill.qty} {fill.symbol} at {fill.price} realized {fill.realized_pnl:.2f} "
                      f"(fee {fill.fee}).")

    def on_risk(self, state: RiskState) -> None:
        if self.trading_state is not None and state.trading_state != self.trading_state:
            if state.trading_state == "HALTED":
                self.tell("risk_halt", "Trading halted", state.reason or "The risk guard halted trading.")
            else:
                self.tell("risk_resumed", f"Trading {state.trading_state.lower()}", state.reason or "Trading resumed.")
        self.trading_state = state.trading_state
        for strategy in set(state.deactivated) - self.deactivated:
            self.tell("strategy_deactivated", f"{strategy} deactivated", state.reason or "Drawdown limit hit.")
        self.deactivated = set(state.deactivated)

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
