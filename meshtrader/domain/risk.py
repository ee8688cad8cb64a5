"""Pre-trade risk rules and the trading state they drive (ACTIVE, REDUCING, HALTED).

Pure: the risk guard service feeds it requests and account observations and persists the book; tests
trip every rule with crafted numbers. Every verdict names its rule and the numbers behind it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from meshtrader.domain.money import instrument
from meshtrader.wire.messages import ApproveOrder

DAY_MS = 86_400_000
BOOK_KEY = "risk.book"  # where the risk guard keeps its book in the store (read by `mesh` and the dashboard)
# Entries approved today whose request ids the book remembers, so a request asked again counts once: a repeat
# comes within seconds (a Lazy Pirate retry; a signal replayed to an executor that restarted between the
# approval and its journal, within the signal TTL), far fewer entries than this apart.
REMEMBERED_ENTRIES = 256


@dataclass(frozen=True)
class Limits:
    max_order_pct: Decimal
    max_exposure_pct: Decimal
    max_positions_per_strategy: int
    daily_loss_pct: Decimal
    strategy_drawdown_pct: Decimal
    max_open_positions: int = 10
    max_trades_per_day: int = 1000
    risk_per_trade_pct: Decimal = Decimal("0.01")
    max_position_pct: Decimal = Decimal("0.10")
    kelly_multiple: Decimal = Decimal(0)
    portfolio_drawdown_pct: Decimal = Decimal("0.10")
    max_leverage: Decimal = Decimal(5)
    margin_reduce_ratio: Decimal = Decimal("0.5")
    margin_close_ratio: Decimal = Decimal("0.8")

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(settings.max_order_pct, settings.max_exposure_pct, settings.max_positions_per_strategy,
                   settings.daily_loss_pct, settings.strategy_drawdown_pct, settings.max_open_positions,
                   settings.max_trades_per_day, settings.risk_per_trade_pct, settings.max_position_pct,
                   settings.risk_kelly_multiple, settings.portfolio_drawdown_pct, settings.max_leverage,
                   settings.margin_reduce_ratio, settings.margin_close_ratio)


class LimitRefused(ValueError):
    """A run-time limit change the guard will not make; the message says why, for the operator."""


class ResetRefused(ValueError):
    """An operator's reset with nothing to reset; the message says why."""


@dataclass(frozen=True)
class LimitRange:
    """The values a limit may take at run time, and why: a typo must not switch a rule off or make it absurd."""

    whole: bool  # a count (int); else a Decimal
    low: Decimal
    low_included: bool
    high: Decimal | None
    rule: str  # what the value must be, in words
    why: str  # why the range is what it is

    def parse(self, name: str, text: str) -> Decimal | int:
        """`text` as this limit's value, or LimitRefused naming the limit, the value, the range and why."""
        text = text.strip()
        shown = repr(text[:40])
        if self.whole:
            if not re.fullmatch(r"[+-]?\d{1,18}", text):
                raise LimitRefused(f"{name} must be {self.rule}: {shown} is not a whole number")
            value: Decimal | int = int(text)
        else:
            try:
                value = Decimal(text)
            except InvalidOperation:
                raise LimitRefused(f"{name} must be {self.rule}: {shown} is not a number"
                                   + (" (write 0.03 for 3%)" if text.endswith("%") else "")) from None
            if not value.is_finite():
                raise LimitRefused(f"{name} must be {self.rule}: {shown} is not a finite number")
        if value < self.low or (value == self.low and not self.low_included) or \
                (self.high is not None and value > self.high):
            raise LimitRefused(f"{name} must be {self.rule}: {shown} is out of range ({self.why})")
        return value


FRACTION = LimitRange(False, Decimal(0), False, Decimal(1), "a fraction above 0 and at most 1 (0.05 is 5%)",
                      "0 would stop all trading, which mesh pause and the kill switch do plainly; "
                      "over 1 is more than all of it")
COUNT = LimitRange(True, Decimal(0), True, None, "a whole number, 0 or more",
                   "it counts positions or entries; 0 allows no new ones")
LIMIT_RANGES: dict[str, LimitRange] = {
    "max_order_pct": FRACTION,
    "max_exposure_pct": LimitRange(False, Decimal(0), False, Decimal(10),
                                   "a multiple of equity above 0 and at most 10 (0.8 is 80%)",
                                   "exposure may exceed equity with leverage, as far as MESH_MAX_EXPOSURE_PCT "
                                   "allows; 0 would stop all trading"),
    "max_positions_per_strategy": COUNT,
    "daily_loss_pct": FRACTION,
    "strategy_drawdown_pct": FRACTION,
    "max_open_positions": COUNT,
    "max_trades_per_day": COUNT,
    "risk_per_trade_pct": FRACTION,
    "max_position_pct": FRACTION,
    "kelly_multiple": LimitRange(False, Decimal(0), True, Decimal(10), "a multiple from 0 to 10",
                                 "0 turns the Kelly cap off; over 10 times the Kelly fraction it caps nothing"),
    "portfolio_drawdown_pct": FRACTION,
    "max_leverage": LimitRange(False, Decimal(1), True, Decimal(125), "a multiple from 1 to 125",
                               "1 is no leverage; Binance allows at most 125"),
    "margin_reduce_ratio": FRACTION,
    "margin_close_ratio": FRACTION,
}


def parse_limit(name: str, text: str) -> Decimal | int:
    """A run-time value for the limit called `name` (a field of Limits), validated; LimitRefused says why not."""
    if name not in LIMIT_RANGES:
        raise LimitRefused(f"no risk limit {name[:40]!r}; one of {', '.join(LIMIT_RANGES)}")
    return LIMIT_RANGES[name].parse(name, text)


def limit_values(limits: Limits) -> dict[str, str]:
    """Every limit in use, by name, as exact strings (for people and views)."""
    return {f.name: str(getattr(limits, f.name)) for f in fields(limits)}


@dataclass(frozen=True)
class Verdict:
    approved: bool
    rule: str
    reason: str


@dataclass
class RiskBook:
    """What the guard remembers across requests and restarts."""

    kill_switch: bool = False
    day: int = -1
    day_start_equity: Decimal | None = None
    daily_halt: bool = False
    peaks: dict[str, Decimal] = field(default_factory=dict)
    deactivated: dict[str, str] = field(default_factory=dict)  # strategy -> why
    portfolio_peak: Decimal | None = None
    kill_reason: str = ""
    entries_today: int = 0
    paused_by: str = ""  # who paused trading (exits only until resumed); "" while not paused
    limit_overrides: dict[str, str] = field(default_factory=dict)  # limit -> value set at run time, over settings
    entry_ids: list[str] = field(default_factory=list)  # request ids of today's latest approved entries, oldest first
    stale: dict[str, str] = field(default_factory=dict)  # symbol -> why; live state, never persisted
    margin_calls: dict[str, str] = field(default_factory=dict)  # strategy -> why (futures); live, never persisted

    @property
    def trading_state(self) -> str:
        if self.kill_switch or self.daily_halt:
            return "HALTED"
        return "REDUCING" if self.stale or self.paused_by else "ACTIVE"  # margin calls: per strategy

    def state_reason(self) -> str:
        if self.kill_switch:
            return f"kill switch on: {self.kill_reason}" if self.kill_reason else "kill switch on"
        if self.daily_halt:
            return "daily loss limit hit: halted until 00:00 UTC"
        causes = [f"paused by {self.paused_by}"] if self.paused_by else []
        if self.stale:
            causes.append("stale market data (" + "; ".join(f"{s}: {why}" for s, why in sorted(self.stale.items()))
                          + ")")
        return "; ".join(causes) + ": only exposure-reducing orders" if causes else ""

    def limits(self, settings_limits: Limits) -> tuple[Limits, list[str]]:
        """The limits in force: the settings' with the run-time overrides on top, each checked again (a store
        edited by hand cannot slip a value past the ranges). An override the ranges refuse is dropped, the
        settings' value applies, and why is returned: a guard that refused to start over it would approve
        no exit either."""
        overrides, dropped = {}, []
        for name, text in list(self.limit_overrides.items()):
            try:
                overrides[name] = parse_limit(name, text)
            except LimitRefused as refusal:
                del self.limit_overrides[name]
                dropped.append(str(refusal))
        return replace(settings_limits, **overrides), dropped

    def set_limit(self, limits: Limits, name: str, text: str) -> tuple[Limits, str, str]:
        """Change one limit at run time: the new limits, and the old and new value as text. Raises
        LimitRefused (unknown name, wrong type, out of range) and then changes nothing."""
        value = parse_limit(name, text)
        old = str(getattr(limits, name))
        self.limit_overrides[name] = str(value)
        return replace(limits, **{name: value}), old, str(value)

    def observe(self, event_time: int, portfolio_equity: Decimal, strategy_nav: dict[str, Decimal],
                limits: Limits) -> list[tuple[str, str]]:
        """Update day baseline, peaks and halts from marked equity and each strategy's NAV (its equity per
        unit, so capital moved in or out by the allocator is no drawdown); returns the (rule, reason) changes."""
        changes: list[tuple[str, str]] = []
        day = event_time // DAY_MS
        if day > self.day:
            self.day = day
            self.day_start_equity = portfolio_equity
            self.entries_today = 0
            self.entry_ids = []
            if self.daily_halt:
                self.daily_halt = False
                changes.append(("daily_loss", "new UTC day: daily loss halt lifted"))
        start = self.day_start_equity
        if not self.daily_halt and start and portfolio_equity <= start * (1 - limits.daily_loss_pct):
            self.daily_halt = True
            changes.append(("daily_loss", f"equity {portfolio_equity:.2f} is down "
                            f"{(1 - portfolio_equity / start) * 100:.2f}% from the day's start {start:.2f} "
                            f"(limit {limits.daily_loss_pct * 100}%): new orders halted until 00:00 UTC"))
        self.portfolio_peak = max(self.portfolio_peak or portfolio_equity, portfolio_equity)
        if not self.kill_switch and portfolio_equity <= self.portfolio_peak * (1 - limits.portfolio_drawdown_pct):
            self.kill_switch = True
            self.kill_reason = (f"portfolio equity {portfolio_equity:.2f} is "
                                f"{(1 - portfolio_equity / self.portfolio_peak) * 100:.2f}% below its peak "
                                f"{self.portfolio_peak:.2f} (limit {limits.portfolio_drawdown_pct * 100}%)")
            changes.append(("portfolio_drawdown", f"{self.kill_reason}: kill switch turned on"))
        for strategy, nav in strategy_nav.items():
            peak = max(self.peaks.get(strategy, nav), nav)
            self.peaks[strategy] = peak
            if strategy not in self.deactivated and nav <= peak * (1 - limits.strategy_drawdown_pct):
                why = (f"NAV {nav:.4f} is {(1 - nav / peak) * 100:.2f}% below its peak {peak:.4f} "
                       f"(limit {limits.strategy_drawdown_pct * 100}%): strategy deactivated")
                self.deactivated[strategy] = why
                changes.append(("strategy_drawdown", f"{strategy}: {why}"))
        return changes

    def limit_use(self, equity: Decimal, exposure: Decimal, strategy_nav: dict[str, Decimal],
                  limits: Limits) -> list[dict[str, str]]:
        """How much of each loss and size limit is in use now (fractions, as exact strings), for people to
        see how close trading is to a halt: the day's loss, the portfolio's and each strategy's drawdown,
        the exposure, the entries today."""
        def use(name: str, used: Decimal, limit: Decimal) -> dict[str, str]:
            return {"limit": name, "used": str(max(used, Decimal(0)).quantize(Decimal("0.0001"))), "of": str(limit)}

        rows = []
        if self.day_start_equity:
            rows.append(use("daily loss", 1 - equity / self.day_start_equity, limits.daily_loss_pct))
        if self.portfolio_peak:
            rows.append(use("portfolio drawdown", 1 - equity / self.portfolio_peak, limits.portfolio_drawdown_pct))
        if equity:
            rows.append(use("exposure", exposure / equity, limits.max_exposure_pct))
        rows.append({"limit": "entries today", "used": str(self.entries_today), "of": str(limits.max_trades_per_day)})
        for strategy, nav in sorted(strategy_nav.items()):
            if peak := self.peaks.get(strategy):
                rows.append(use(f"{strategy} drawdown", 1 - nav / peak, limits.strategy_drawdown_pct))
        return rows

    def observe_margins(self, ratios: dict[str, Decimal], limits: Limits) -> tuple[list[tuple[str, str]], list[str]]:
        """Futures: each strategy's margin ratio (maintenance margin / margin balance of its worst position).
        At `margin_reduce_ratio` it may only reduce; at `margin_close_ratio` its positions are to be closed,
        before the exchange would liquidate them at 1. Returns the (rule, reason) changes and the strategies
        to close now."""
        changes: list[tuple[str, str]] = []
        to_close = []
        for strategy, ratio in ratios.items():
            if ratio >= limits.margin_reduce_ratio and strategy not in self.margin_calls:
                self.margin_calls[strategy] = f"margin ratio {ratio} at or over {limits.margin_reduce_ratio}: " \
                                              "only reducing orders"
                changes.append(("margin_ratio", f"{strategy}: {self.margin_calls[strategy]}"))
            if ratio >= limits.margin_close_ratio:
                to_close.append(strategy)
                if not self.margin_calls[strategy].endswith("closed"):
                    self.margin_calls[strategy] += f"; at or over {limits.margin_close_ratio}: positions closed"
                    changes.append(("margin_ratio", f"{strategy}: margin ratio {ratio} at or over "
                                    f"{limits.margin_close_ratio}: its positions are closed before liquidation"))
            elif ratio < limits.margin_reduce_ratio and strategy in self.margin_calls:
                del self.margin_calls[strategy]
                changes.append(("margin_ratio", f"{strategy}: margin ratio {ratio} back under "
                                f"{limits.margin_reduce_ratio}: entries allowed again"))
        return changes, to_close

    def reset_peak(self, equity: Decimal | None) -> str:
        """The portfolio's drawdown measured afresh from the equity now (an operator's decision after a
        drawdown halt: the kill switch it turned on stays on until released)."""
        if equity is None:
            raise ResetRefused("no account snapshot has come yet: the equity to measure from is unknown")
        old, self.portfolio_peak = self.portfolio_peak, equity
        return f"portfolio peak {old:.2f} -> {equity:.2f}" if old is not None else f"portfolio peak set to {equity:.2f}"

    def lift_daily_halt(self, equity: Decimal | None) -> str:
        """End the day's loss halt before 00:00 UTC; the rest of the day's loss is measured from the equity now."""
        if not self.daily_halt:
            raise ResetRefused("no daily loss halt is in force")
        if equity is None:
            raise ResetRefused("no account snapshot has come yet: the equity to measure from is unknown")
        old, self.day_start_equity, self.daily_halt = self.day_start_equity, equity, False
        return f"daily loss halt lifted; the day's loss counts from {equity:.2f} (was from {old:.2f})"

    def reactivate_by_hand(self, strategy: str) -> list[tuple[str, str]]:
        """An operator lifts a drawdown deactivation without waiting for a validation."""
        if strategy not in self.deactivated:
            raise ResetRefused(f"{strategy!r} is not deactivated" + (
                f" (deactivated: {', '.join(sorted(self.deactivated))})" if self.deactivated else ""))
        return self.reactivate(strategy, "reactivated by hand")

    def reactivate(self, strategy: str, reason: str) -> list[tuple[str, str]]:
        """Lift a drawdown deactivation (after a successful validation): its drawdown counts afresh."""
        if strategy not in self.deactivated:
            return []
        del self.deactivated[strategy]
        self.peaks.pop(strategy, None)  # the next NAV seen is the new peak
        return [("strategy_reactivated", f"{strategy}: {reason}")]

    def to_json(self) -> dict:
        return {"kill_switch": self.kill_switch, "day": self.day,
                "day_start_equity": str(self.day_start_equity) if self.day_start_equity is not None else None,
                "daily_halt": self.daily_halt, "peaks": {k: str(v) for k, v in self.peaks.items()},
                "deactivated": self.deactivated, "kill_reason": self.kill_reason, "entries_today": self.entries_today,
                "portfolio_peak": str(self.portfolio_peak) if self.portfolio_peak is not None else None,
                "paused_by": self.paused_by, "limit_overrides": self.limit_overrides, "entry_ids": self.entry_ids}

    @classmethod
    def from_json(cls, data: dict | None) -> RiskBook:
        if not data:
            return cls()
        start = data.get("day_start_equity")
        return cls(kill_switch=bool(data.get("kill_switch")), day=int(data.get("day", -1)),
                   day_start_equity=Decimal(start) if start is not None else None,
                   daily_halt=bool(data.get("daily_halt")),
                   peaks={k: Decimal(v) for k, v in data.get("peaks", {}).items()},
                   deactivated=dict(data.get("deactivated", {})), kill_reason=data.get("kill_reason", ""),
                   entries_today=int(data.get("entries_today", 0)),
                   portfolio_peak=Decimal(data["portfolio_peak"]) if data.get("portfolio_peak") else None,
                   paused_by=str(data.get("paused_by") or ""),
                   limit_overrides={k: str(v) for k, v in (data.get("limit_overrides") or {}).items()},
                   entry_ids=[str(i) for i in data.get("entry_ids") or []][-REMEMBERED_ENTRIES:])


# The verdicts whose words never vary: made once, as most requests end in one of them (every order is
# refused while the kill switch is on).
CLOSING_ALL = Verdict(True, "close_all", "operator closing all positions")
KILL_SWITCH_ON = Verdict(False, "kill_switch", "kill switch is on: no orders")
REDUCES = Verdict(True, "reduce_only", "exposure-reducing order")


def standing_refusal(book: RiskBook) -> Verdict | None:
    """The refusal every order but an operator's close-all gets now, whatever its numbers (the halts), or
    None. An in-process guard asks it before an order's numbers are gathered: a halted book refuses cheaply."""
    if book.kill_switch:
        return KILL_SWITCH_ON
    if book.daily_halt:
        return Verdict(False, "daily_loss", book.state_reason())
    return None


def evaluate(request: ApproveOrder, book: RiskBook, limits: Limits) -> Verdict:
    """Approve or reject one order. Exits (reducing orders) pass every rule but the halts; an operator's
    close-all passes the halts too (HALTED means nothing new, not "keep the risk")."""
    if request.close_all and request.reduces:
        return CLOSING_ALL
    if (refusal := standing_refusal(book)) is not None:
        return refusal
    spec = instrument(request.symbol)
    if request.qty % spec.qty_step or request.price % spec.price_tick:
        return Verdict(False, "precision", f"{request.symbol} trades in steps of {spec.qty_step} at ticks of "
                       f"{spec.price_tick}: got {request.qty} at {request.price}")
    if request.qty < spec.min_qty or (not request.reduces and request.qty * request.price < spec.min_notional):
        return Verdict(False, "min_order_size", f"{request.qty} {request.symbol} (notional "
                       f"{request.qty * request.price:.2f}) is under the exchange minimum {spec.min_qty} / "
                       f"{spec.min_notional} notional")
    if request.reduces:
        return REDUCES
    if book.paused_by:
        return Verdict(False, "paused", book.state_reason())
    if book.stale:
        return Verdict(False, "stale_data", book.state_reason())
    if request.strategy in book.deactivated:
        return Verdict(False, "strategy_drawdown", f"{request.strategy} is deactivated: "
                       f"{book.deactivated[request.strategy]}")
    if request.leverage > limits.max_leverage:
        return Verdict(False, "max_leverage", f"{request.strategy} trades at {request.leverage}x, over the "
                       f"{limits.max_leverage}x allowed")
    if request.strategy in book.margin_calls:
        return Verdict(False, "margin_ratio", f"{request.strategy}: {book.margin_calls[request.strategy]}")
    if request.margin_ratio >= limits.margin_reduce_ratio:
        return Verdict(False, "margin_ratio", f"{request.strategy}'s margin ratio {request.margin_ratio} is at or "
                       f"over {limits.margin_reduce_ratio}: only reducing orders")
    notional = request.qty * request.price
    max_order = request.strategy_equity * limits.max_order_pct * request.leverage
    if notional > max_order:
        return Verdict(False, "max_order_size", f"order notional {notional:.2f} exceeds "
                       f"{limits.max_order_pct * 100}% of {request.strategy}'s capital "
                       f"{request.strategy_equity:.2f}" + (f" at {request.leverage}x" if request.leverage != 1 else "")
                       + f" (max {max_order:.2f})")
    if request.opens_position and request.strategy_open_positions >= limits.max_positions_per_strategy:
        return Verdict(False, "max_positions", f"{request.strategy} already holds "
                       f"{request.strategy_open_positions} positions (max {limits.max_positions_per_strategy})")
    if request.opens_position and request.portfolio_open_positions >= limits.max_open_positions:
        return Verdict(False, "max_open_positions", f"{request.portfolio_open_positions} positions open across "
                       f"strategies (max {limits.max_open_positions})")
    max_exposure = request.portfolio_equity * limits.max_exposure_pct
    if request.portfolio_exposure + notional > max_exposure:
        return Verdict(False, "max_exposure", f"exposure would be {request.portfolio_exposure + notional:.2f}, "
                       f"over {limits.max_exposure_pct * 100}% of equity {request.portfolio_equity:.2f} "
                       f"(max {max_exposure:.2f})")
    if book.entries_today >= limits.max_trades_per_day:
        return Verdict(False, "max_trades_per_day", f"{book.entries_today} entries today "
                       f"(max {limits.max_trades_per_day} per UTC day)")
    if request.stop_price is not None:
        at_risk = abs(request.price - request.stop_price) * request.qty
        allowed = request.strategy_equity * limits.risk_per_trade_pct
        if at_risk > allowed:
            return Verdict(False, "risk_per_trade", f"{at_risk:.2f} at risk to the stop {request.stop_price} is over "
                           f"{limits.risk_per_trade_pct * 100}% of {request.strategy}'s equity (max {allowed:.2f})")
        position = (abs(request.position_qty) + request.qty) * request.price
        cap = request.strategy_equity * limits.max_position_pct * request.leverage
        if position > cap:
            return Verdict(False, "max_position_size", f"position would be {position:.2f}, over "
                           f"{limits.max_position_pct * 100}% of {request.strategy}'s equity (max {cap:.2f})")
    if limits.kelly_multiple and request.strategy_kelly is not None:
        cap = request.strategy_equity * limits.kelly_multiple * Decimal(repr(max(request.strategy_kelly, 0.0)))
        if notional > cap:
            return Verdict(False, "kelly_cap", f"notional {notional:.2f} over {limits.kelly_multiple} x "
                           f"{request.strategy}'s Kelly fraction {request.strategy_kelly:.3f} of its equity "
                           f"(max {cap:.2f})")
    return Verdict(True, "within_limits", f"notional {notional:.2f} within all limits")


def judge(book: RiskBook, request: ApproveOrder, limits: Limits) -> tuple[Verdict, list[tuple[str, str]]]:
    """What the risk guard does for each order: update the book from the request's numbers, then rule.

    An entry counts against the day's entries once, however often it is asked (its request id derives
    from the signal id): asked again, it is judged afresh as if it had not been counted, and counted again
    only if approved again."""
    changes = book.observe(request.event_time, request.portfolio_equity, {request.strategy: request.strategy_nav},
                           limits)  # the same numbers seen again (after a `standing_refusal` check) change nothing
    repeated = not request.reduces and request.request_id in book.entry_ids
    if repeated:
        book.entry_ids.remove(request.request_id)
        book.entries_today -= 1
    verdict = evaluate(request, book, limits)
    if verdict.approved and not request.reduces:
        book.entries_today += 1
        book.entry_ids = [*book.entry_ids[1 - REMEMBERED_ENTRIES:], request.request_id]
    return verdict, changes
