"""Risk guard: the pre-trade gate (REQ/REP), the trading state, the operators' controls (kill switch, pause,
risk limits changed at run time).

Rules live in meshtrader.domain.risk; this process holds the book (day baseline, peaks, halts, kill switch,
pause, limit overrides), persists it, records every decision with its reason and every control with who
asked (meshtrader.persistence.audit)."""
from __future__ import annotations

import time
from decimal import Decimal

from meshtrader.domain.instruments import install_instruments
from meshtrader.domain.risk import (
    BOOK_KEY,
    LimitRefused,
    Limits,
    ResetRefused,
    RiskBook,
    Verdict,
    judge,
    limit_values,
)
from meshtrader.persistence.audit import record_control
from meshtrader.runtime.config import Settings
from meshtrader.services.base import Service, main
from meshtrader.venues.instruments import load_instruments
from meshtrader.wire.messages import (
    AccountSnapshot,
    Approval,
    ApproveOrder,
    ControlReply,
    FeedStatus,
    LimitReply,
    MarginClose,
    Reactivate,
    ResetRisk,
    RiskDecision,
    RiskRequests,
    RiskState,
    RiskStatus,
    RiskStatusReply,
    SetKillSwitch,
    SetPaused,
    SetRiskLimit,
)

TRADING_STATES = ("ACTIVE", "REDUCING", "HALTED")  # RiskState.trading_state's values
EVENT_COLUMNS = ("request_id", "strategy", "symbol", "side", "approved", "rule", "reason", "trading_state",
                 "event_time", "created_at")


class RiskGuard(Service):
    hot_path_store = True

    def __init__(self, settings: Settings) -> None:
        super().__init__("risk", settings)
        self.settings_limits = Limits.from_settings(settings)
        install_instruments(load_instruments(settings, self.log, self.metrics))  # the venue's tick, step, minimums
        self.pending_events: list[tuple] = []
        self.answered: list[tuple[ApproveOrder, Verdict, str, float]] = []  # decisions not yet recorded
        self.book_dirty = False
        self.limits_in_use: list[dict[str, str]] = []  # each limit's use at the last account snapshot
        self.controls: list[tuple[str, str, str, int]] = []  # (control, by, change, event time) not yet recorded
        self.equity: Decimal | None = None  # the portfolio's, at the last account snapshot
        self.state_rev = 0  # RiskState.rev of the last state published
        gauge = self.metrics.gauge
        self.kill_switch_gauge = gauge("mesh_kill_switch", "1 while the kill switch is on").labels(self.name)
        self.state_gauge = gauge("mesh_trading_state", "1 for the trading state in force", ("state",))
        self.daily_pnl_gauge = gauge("mesh_daily_pnl_usdt", "equity less the day's start (00:00 UTC market time)")
        self.daily_pnl_ratio_gauge = gauge("mesh_daily_pnl_ratio", "the day's P&L as a fraction of its start")
        self.drawdown_gauge = gauge("mesh_drawdown_ratio", "how far equity is below its peak, as a fraction")

    def setup(self) -> None:
        self.book = RiskBook.from_json(self.store.get_state(BOOK_KEY))
        limits, dropped = self.book.limits(self.settings_limits)
        self.use_limits(limits)
        self.publisher("risk.pub")
        for why in dropped:
            self.log.error("limit_override_dropped", reason=why)
            self.record_state_change("limit_change", f"stored override dropped, the setting applies: {why}")
        self.serve("risk.rep", RiskRequests, self.on_request, after_reply=self.record_decisions)
        self.subscribe([self.settings.endpoint("executor.pub")], [b"acct"], self.on_account)
        self.subscribe([self.settings.endpoint("feed.pub")], [b"md.status."], self.on_feed_status)
        self.decisions = self.metrics.counter("mesh_risk_decisions_total", "pre-trade decisions", ("rule",))
        self.control_count = self.metrics.counter("mesh_risk_controls_total", "operators' controls",
                                                  ("control", "outcome"))
        self.loop.every(0.05, self.flush)
        self.state_rev = int((self.hot.get("risk") or {}).get("rev") or 0)  # grows on from the last one published
        self.loop.every(1.0, self.publish_state, first_in=0)
        self.log.info("risk_book_loaded", trading_state=self.book.trading_state, kill_switch=self.book.kill_switch,
                      deactivated=list(self.book.deactivated), paused_by=self.book.paused_by,
                      limit_overrides=self.book.limit_overrides)

    def use_limits(self, limits: Limits) -> None:
        self.limits = limits
        self.limit_values = limit_values(limits)  # made once per change: the state published every second shows it

    # ----- requests -----------------------------------------------------------------------------
    def on_request(self, request: ApproveOrder | SetKillSwitch | SetPaused | SetRiskLimit | RiskStatus | Reactivate
                   | ResetRisk) -> Approval | RiskStatusReply | LimitReply | ControlReply:
        if isinstance(request, ApproveOrder):
            return self.approve(request)
        if isinstance(request, SetKillSwitch):
            self.set_kill_switch(request.on, who(request.by))
        elif isinstance(request, SetPaused):
            self.set_paused(request.on, who(request.by))
        elif isinstance(request, SetRiskLimit):
            return self.set_limit(request.name, request.value, who(request.by))
        elif isinstance(request, Reactivate):
            self.apply_changes(self.book.reactivate(request.strategy, f"{request.reason} (by {request.src or '?'})"))
            self.flush()
        elif isinstance(request, ResetRisk):
            return self.reset(request, who(request.by))
        return self.status()

    def reset(self, request: ResetRisk, by: str) -> ControlReply:
        """An operator resets what a loss limit measures from, at the equity now; refused, saying why, when
        there is nothing to reset. Recorded as a control, with who and why."""
        control = f"reset_{request.what}"
        try:
            if request.what == "peak":
                change = self.book.reset_peak(self.equity)
            elif request.what == "daily_loss":
                change = self.book.lift_daily_halt(self.equity)
            else:
                [(_, change)] = self.book.reactivate_by_hand(request.strategy)
        except ResetRefused as refusal:
            self.control_count.labels(self.name, control, "refused").inc()
            self.log.warning("reset_refused", by=by, what=request.what, strategy=request.strategy[:40],
                             reason=str(refusal))
            return ControlReply(ok=False, error=str(refusal), trading_state=self.book.trading_state)
        self.control(control, by, f"{change} by {by}" + (f": {request.reason[:200]}" if request.reason else ""))
        return ControlReply(message=change, trading_state=self.book.trading_state)

    def approve(self, request: ApproveOrder) -> Approval:
        """The verdict, and only what it needs: the record of it is made after the answer has gone."""
        self.event_time = max(self.event_time, request.event_time)
        verdict, changes = judge(self.book, request, self.limits)
        self.apply_changes(changes)
        self.book_dirty = True
        self.answered.append((request, verdict, self.book.trading_state, time.time()))
        return Approval(approved=verdict.approved, rule=verdict.rule, reason=verdict.reason,
                        trading_state=self.book.trading_state)

    def record_decisions(self) -> None:
        """After the answer has gone, so the executor is not kept waiting: each decision counted, queued
        for the store and broadcast."""
        for request, verdict, state, decided_at in self.answered:
            self.decisions.labels(self.name, verdict.rule).inc()
            self.pending_events.append((request.request_id, request.strategy, request.symbol, request.side,
                                        int(verdict.approved), verdict.rule, verdict.reason, state,
                                        request.event_time, decided_at))
            self.pub.publish(b"risk.decision", RiskDecision(
                request_id=request.request_id, strategy=request.strategy, symbol=request.symbol, side=request.side,
                approved=verdict.approved, rule=verdict.rule, reason=verdict.reason, et=request.event_time,
                tid=request.tid))
            if not verdict.approved:
                self.log.info("order_rejected", trace_id=request.tid, request_id=request.request_id,
                              rule=verdict.rule, reason=verdict.reason)
        self.answered.clear()

    def set_kill_switch(self, on: bool, by: str) -> None:
        if self.book.kill_switch == on:
            return
        was = self.book.trading_state
        self.book.kill_switch = on
        self.book.kill_reason = f"turned on by {by}" if on else ""  # not an earlier trip's reason
        self.control("kill_switch", by, f"kill switch turned {'on' if on else 'off'} by {by} "
                                        f"({was} -> {self.book.trading_state})")

    def set_paused(self, on: bool, by: str) -> None:
        """Paused, only exposure-reducing orders pass (REDUCING), until resumed; the kill switch still wins."""
        if bool(self.book.paused_by) == on:
            return
        was = self.book.trading_state
        self.book.paused_by = by if on else ""
        self.control("pause", by, f"trading {'paused' if on else 'resumed'} by {by} "
                                  f"({was} -> {self.book.trading_state})")

    def set_limit(self, name: str, value: str, by: str) -> LimitReply:
        """A limit changed at run time: checked (a refusal says why), applied at once, kept in the book."""
        try:
            limits, old, new = self.book.set_limit(self.limits, name, value)
        except LimitRefused as refusal:
            self.control_count.labels(self.name, "limit_change", "refused").inc()
            self.log.warning("limit_change_refused", by=by, limit=name[:40], value=value[:40], reason=str(refusal))
            return LimitReply(ok=False, error=str(refusal), name=name[:40], limit_values=self.limit_values)
        changed = limits != self.limits
        self.use_limits(limits)
        self.book_dirty = True  # the override is kept even when it restates the value in force
        if changed:
            self.control("limit_change", by, f"{name} {old} -> {new} by {by}")
        return LimitReply(name=name, old=old, new=new, limit_values=self.limit_values)

    def control(self, control: str, by: str, change: str) -> None:
        """An operator's control has changed the book: logged, counted, journaled with who and when, the
        state republished, and the book stored before the answer goes."""
        self.control_count.labels(self.name, control, "applied").inc()
        self.log.warning(control, by=by, change=change, trading_state=self.book.trading_state)
        self.controls.append((control, by, change, self.event_time))
        self.record_state_change(control, change)
        self.flush()

    def status(self) -> RiskStatusReply:
        return RiskStatusReply(trading_state=self.book.trading_state, kill_switch=self.book.kill_switch,
                               deactivated=sorted(self.book.deactivated), reason=self.book.state_reason(),
                               paused=bool(self.book.paused_by), limit_values=self.limit_values)

    # ----- monitoring ---------------------------------------------------------------------------
    def on_account(self, topic: bytes, snapshot: AccountSnapshot) -> None:
        if snapshot.et <= 0:
            return
        self.event_time = max(self.event_time, snapshot.et)
        navs = {a.strategy: a.nav for a in snapshot.accounts}
        self.equity = snapshot.equity
        self.apply_changes(self.book.observe(snapshot.et, snapshot.equity, navs, self.limits))
        if snapshot.market == "usdm":
            self.watch_margins(snapshot)
        self.limits_in_use = self.book.limit_use(snapshot.equity, snapshot.exposure, navs, self.limits)
        self.book_dirty = True

    def watch_margins(self, snapshot: AccountSnapshot) -> None:
        """Futures: the margin-ratio rule on each strategy's worst position (the executor publishes a
        snapshot at once when a position crosses a level): reduce only, then close, before liquidation."""
        ratios = {a.strategy: a.margin_ratio for a in snapshot.accounts
                  if a.margin_ratio or a.strategy in self.book.margin_calls}
        changes, to_close = self.book.observe_margins(ratios, self.limits)
        self.apply_changes(changes)
        for strategy in to_close:
            reason = f"margin ratio {ratios[strategy]} reached {self.limits.margin_close_ratio}"
            self.log.warning("margin_close", strategy=strategy, reason=reason)
            self.pub.publish(b"risk.close", MarginClose(strategy=strategy, reason=reason, et=snapshot.et))

    def on_feed_status(self, topic: bytes, status: FeedStatus) -> None:
        """Stale market data puts trading in REDUCING until data flows again."""
        was = status.symbol in self.book.stale
        if status.stale and not was:
            self.book.stale[status.symbol] = status.reason
            self.apply_changes([("stale_data", f"{status.symbol}: {status.reason}: only exits allowed")])
        elif not status.stale and was:
            del self.book.stale[status.symbol]
            self.apply_changes([("stale_data", f"{status.symbol}: market data flowing again")])

    def apply_changes(self, changes: list[tuple[str, str]]) -> None:
        for rule, reason in changes:
            self.log.warning("trading_state_changed", rule=rule, reason=reason, trading_state=self.book.trading_state)
            self.record_state_change(rule, reason)

    def record_state_change(self, rule: str, reason: str) -> None:
        self.book_dirty = True
        self.pending_events.append((None, None, None, None, None, rule, reason, self.book.trading_state,
                                    self.event_time, time.time()))
        self.publish_state(reason)

    def publish_state(self, reason: str = "") -> None:
        state = self.status()
        self.state_rev = max(self.state_rev + 1, time.time_ns() // 1000)
        self.hot.put("risk", {"rev": self.state_rev, "trading_state": state.trading_state, "kill_switch": state.kill_switch,
                              "deactivated": self.book.deactivated, "daily_halt": self.book.daily_halt,
                              "reason": state.reason,
                              "paused_by": self.book.paused_by or None, "limits": self.limits_in_use,
                              "limit_values": self.limit_values})
        self.pub.publish(b"risk.state", RiskState(trading_state=state.trading_state, kill_switch=state.kill_switch,
                                                  paused=state.paused, deactivated=state.deactivated,
                                                  reason=reason or state.reason, rev=self.state_rev,
                                                  et=self.event_time))
        self.gauge_book()

    def gauge_book(self) -> None:
        """The book for Prometheus, with the state published every second and at each change: never per order."""
        book, equity = self.book, self.equity
        self.kill_switch_gauge.set(book.kill_switch)
        for state in TRADING_STATES:
            self.state_gauge.labels(self.name, state).set(state == book.trading_state)
        if equity is not None and book.day_start_equity:
            self.daily_pnl_gauge.labels(self.name).set(float(equity - book.day_start_equity))
            self.daily_pnl_ratio_gauge.labels(self.name).set(float(equity / book.day_start_equity - 1))
        if equity is not None and book.portfolio_peak:
            self.drawdown_gauge.labels(self.name).set(float(1 - equity / book.portfolio_peak))

    def flush(self) -> None:
        """Decisions and the book reach the store right after the answer, off the order's critical path."""
        if self.pending_events:
            events, self.pending_events = self.pending_events, []
            self.store.insert_many("risk_events", EVENT_COLUMNS, events)
        if self.book_dirty:
            self.book_dirty = False
            self.store.put_state(BOOK_KEY, self.book.to_json())
        if self.controls:
            controls, self.controls = self.controls, []
            for control, by, change, event_time in controls:
                record_control(self.store, self.name, control, by, change, event_time or None)

    def teardown(self) -> None:
        self.flush()


def who(by: str) -> str:
    """Who asked, as recorded: a name the operator's client gave, kept short."""
    return by.strip()[:80] or "unknown"


if __name__ == "__main__":
    main(RiskGuard)
