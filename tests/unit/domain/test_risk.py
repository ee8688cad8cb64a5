"""Risk rules and the risk book, and the operators' controls on it: pause (exits only) and risk limits
changed at run time."""
from __future__ import annotations

from dataclasses import fields
from decimal import Decimal

import pytest

from meshtrader.domain.risk import (
    LIMIT_RANGES,
    LimitRefused,
    Limits,
    ResetRefused,
    RiskBook,
    evaluate,
    judge,
    limit_values,
)
from meshtrader.runtime.config import load_settings
from meshtrader.wire.messages import ApproveOrder

D = Decimal


LIMITS = Limits(D("0.20"), D("0.80"), 2, D("0.05"), D("0.10"))


def order(**changes) -> ApproveOrder:
    base = dict(request_id="r", strategy="m", symbol="BTCUSDT", side="buy", qty=D("0.05"), price=D("100000"),
                reduces=False, opens_position=True, strategy_equity=D("50000"), strategy_open_positions=0,
                portfolio_equity=D("100000"), portfolio_exposure=D("0"), event_time=1_746_372_780_000)
    return ApproveOrder(**{**base, **changes})


def test_an_order_within_limits_is_approved():
    verdict = evaluate(order(), RiskBook(), LIMITS)
    assert verdict.approved and verdict.rule == "within_limits"


@pytest.mark.parametrize("changes, rule", [
    ({"qty": D("0.11")}, "max_order_size"),                                  # 11,000 > 20% of 50,000
    ({"strategy_open_positions": 2}, "max_positions"),
    ({"portfolio_exposure": D("76000")}, "max_exposure"),                    # 76,000 + 5,000 > 80,000
    ({"portfolio_open_positions": 10}, "max_open_positions"),
    ({"qty": D("0.0505")}, "precision"),                                     # BTCUSDT steps of 0.001
    ({"price": D("100000.05")}, "precision"),                                # ticks of 0.1
    ({"qty": D("0.001"), "price": D("90000")}, "min_order_size"),             # 90 < 100 USDT notional
    ({"stop_price": D("89000")}, "risk_per_trade"),                          # 550 at risk > 1% of 50,000
    ({"stop_price": D("99500"), "position_qty": D("0.01")}, "max_position_size"),  # 6,000 > 10% of 50,000
    ({"strategy_kelly": 0.05}, "kelly_cap"),                                 # 5,000 > 1 x 0.05 x 50,000
])
def test_each_limit_trips(changes, rule):
    limits = Limits(D("0.20"), D("0.80"), 2, D("0.05"), D("0.10"), kelly_multiple=D("1"))
    verdict = evaluate(order(**changes), RiskBook(), limits)
    assert not verdict.approved and verdict.rule == rule and verdict.reason


def test_entries_per_day_are_counted_and_exits_still_pass():
    limits = Limits(D("0.20"), D("0.80"), 2, D("0.05"), D("0.10"), max_trades_per_day=2)
    book = RiskBook()
    assert [judge(book, order(request_id=f"r{n}"), limits)[0].rule for n in range(3)] == ["within_limits"] * 2 + ["max_trades_per_day"]
    assert judge(book, order(reduces=True, opens_position=False), limits)[0].approved
    assert judge(book, order(event_time=1_746_372_780_000 + 86_400_000), limits)[0].approved  # a new UTC day


def test_portfolio_drawdown_turns_the_kill_switch_on():
    book = RiskBook()
    book.observe(1, D("100000"), {}, LIMITS)
    book.observe(2, D("110000"), {}, LIMITS)
    assert not book.observe(3, D("99500"), {}, LIMITS)
    changes = book.observe(4, D("98900"), {}, LIMITS)  # 10.1% under the 110,000 peak
    assert changes[0][0] == "portfolio_drawdown" and book.kill_switch and book.trading_state == "HALTED"
    assert "below its peak" in RiskBook.from_json(book.to_json()).state_reason()


def test_daily_loss_halts_until_the_next_utc_day():
    book = RiskBook()
    day = 1_746_316_800_000  # 2025-05-04 00:00 UTC
    book.observe(day + 1000, D("100000"), {}, LIMITS)
    changes = book.observe(day + 3_600_000, D("94999"), {}, LIMITS)
    assert changes[0][0] == "daily_loss" and book.trading_state == "HALTED"
    assert evaluate(order(event_time=day + 3_600_000, portfolio_equity=D("94999")), book, LIMITS).rule == "daily_loss"
    assert not evaluate(order(reduces=True, event_time=day + 3_600_000), book, LIMITS).approved
    book.observe(day + 86_400_000, D("94999"), {}, LIMITS)
    assert book.trading_state == "ACTIVE"


def test_strategy_drawdown_deactivates_but_lets_it_exit():
    book = RiskBook()
    book.observe(1, D("100000"), {"m": D("50000")}, LIMITS)
    book.observe(2, D("100000"), {"m": D("55000")}, LIMITS)
    book.observe(3, D("100000"), {"m": D("49400")}, LIMITS)  # 10.2% below the 55,000 peak
    assert "m" in book.deactivated
    assert evaluate(order(strategy_equity=D("49400")), book, LIMITS).rule == "strategy_drawdown"
    assert evaluate(order(reduces=True), book, LIMITS).approved


def test_kill_switch_stops_everything_and_book_survives_json():
    book = RiskBook(kill_switch=True)
    assert evaluate(order(reduces=True), book, LIMITS).rule == "kill_switch"
    assert RiskBook.from_json(book.to_json()) == book


def test_a_deactivated_strategy_can_be_reactivated():
    book, limits = RiskBook(), Limits.from_settings(load_settings())
    book.observe(1, D("100000"), {"m": D("1.0")}, limits)
    changes = book.observe(2, D("100000"), {"m": D("0.85")}, limits)
    assert [rule for rule, _ in changes] == ["strategy_drawdown"] and "m" in book.deactivated
    assert book.reactivate("m", "validation: ROI 1.2%")[0][0] == "strategy_reactivated"
    assert not book.observe(3, D("100000"), {"m": D("0.85")}, limits)  # its drawdown counts afresh
    assert book.reactivate("m", "again") == []


def test_an_operator_resets_what_a_loss_limit_measures_from_and_a_reset_with_nothing_to_reset_is_refused():
    day = 1_746_316_800_000  # 2025-05-04 00:00 UTC
    book = RiskBook()
    for refused, why in ((lambda: book.reset_peak(None), "equity to measure from is unknown"),
                         (lambda: book.lift_daily_halt(D("100000")), "no daily loss halt"),
                         (lambda: book.reactivate_by_hand("m"), "'m' is not deactivated")):
        with pytest.raises(ResetRefused, match=why):
            refused()
    book.observe(day + 1000, D("100000"), {"m": D("1.0")}, LIMITS)
    book.observe(day + 2000, D("110000"), {"m": D("1.2")}, LIMITS)
    book.observe(day + 3000, D("94000"), {"m": D("1.0")}, LIMITS)  # the peak's drawdown and the day's loss trip
    assert book.kill_switch and book.daily_halt and "m" in book.deactivated
    # the drawdown halt: the peak reset, the kill switch stays on until released, then holds no more
    assert book.reset_peak(D("94000")) == "portfolio peak 110000.00 -> 94000.00" and book.kill_switch
    book.kill_switch = False
    assert not [rule for rule, _ in book.observe(day + 4000, D("94000"), {"m": D("1.0")}, LIMITS)
                if rule == "portfolio_drawdown"]
    # the daily halt lifted before 00:00 UTC: the rest of the day counts from the equity now
    assert "counts from 94000.00" in book.lift_daily_halt(D("94000")) and book.trading_state == "ACTIVE"
    assert not book.observe(day + 5000, D("91000"), {"m": D("1.0")}, LIMITS)  # 3.2% down from 94,000
    assert book.observe(day + 6000, D("89000"), {"m": D("1.0")}, LIMITS)[0][0] == "daily_loss"  # 5.3%
    # a deactivated strategy back by hand, its drawdown counted afresh
    assert book.reactivate_by_hand("m") == [("strategy_reactivated", "m: reactivated by hand")]
    assert "m" not in book.deactivated and "m" not in book.peaks
    assert RiskBook.from_json(book.to_json()) == book


def test_each_limit_shows_how_much_of_it_is_in_use():
    book = RiskBook()
    book.observe(1, D("100000"), {"macd": D("1")}, LIMITS)  # the day's start and the peaks
    book.observe(2, D("98000"), {"macd": D("0.95")}, LIMITS)
    book.entries_today = 3
    use = {row["limit"]: (row["used"], row["of"]) for row in book.limit_use(D("98000"), D("24500"),
                                                                             {"macd": D("0.95")}, LIMITS)}
    assert use == {"daily loss": ("0.0200", "0.05"), "portfolio drawdown": ("0.0200", "0.10"),
                   "exposure": ("0.2500", "0.80"), "entries today": ("3", "1000"), "macd drawdown": ("0.0500", "0.10")}
    assert book.trading_state == "ACTIVE"  # 2% of a 5% daily loss: in use, not tripped


# ----- the operators' controls ------------------------------------------------------------------------
def test_a_paused_book_refuses_entries_and_lets_exits_through():
    book = RiskBook(paused_by="dashboard:alice")
    assert book.trading_state == "REDUCING"
    assert book.state_reason() == "paused by dashboard:alice: only exposure-reducing orders"
    entry = evaluate(order(), book, LIMITS)
    assert not entry.approved and entry.rule == "paused" and "paused by dashboard:alice" in entry.reason
    exit_ = evaluate(order(side="sell", reduces=True, opens_position=False), book, LIMITS)
    assert exit_.approved and exit_.rule == "reduce_only"
    verdict, _ = judge(book, order(), LIMITS)
    assert verdict.rule == "paused" and book.entries_today == 0  # a refused entry is not counted


def test_pause_is_not_the_kill_switch_and_both_causes_show():
    book = RiskBook(paused_by="cli", stale={"BTCUSDT": "no tick for 30s"})
    assert book.trading_state == "REDUCING"
    assert book.state_reason().startswith("paused by cli; stale market data (BTCUSDT: no tick for 30s)")
    book.kill_switch = True  # the kill switch halts even exits; a pause does not
    assert book.trading_state == "HALTED"
    assert evaluate(order(reduces=True, opens_position=False), book, LIMITS).rule == "kill_switch"
    book.kill_switch, book.paused_by = False, ""
    book.stale.clear()
    assert book.trading_state == "ACTIVE" and evaluate(order(), book, LIMITS).approved


def test_every_limit_has_a_run_time_range():
    assert set(LIMIT_RANGES) == {f.name for f in fields(Limits)}
    assert set(limit_values(LIMITS)) == set(LIMIT_RANGES)
    assert limit_values(LIMITS)["daily_loss_pct"] == "0.05" and limit_values(LIMITS)["max_open_positions"] == "10"


def test_a_limit_changed_at_run_time_applies_at_once():
    book = RiskBook()
    limits, old, new = book.set_limit(LIMITS, "max_order_pct", " 0.05 ")
    assert (old, new, limits.max_order_pct) == ("0.20", "0.05", D("0.05"))
    assert evaluate(order(), book, LIMITS).approved  # 5,000 is 10% of the strategy's 50,000
    assert evaluate(order(), book, limits).rule == "max_order_size"
    limits, old, new = book.set_limit(limits, "max_trades_per_day", "0")
    assert (old, new, limits.max_trades_per_day) == ("1000", "0", 0)
    assert book.limit_overrides == {"max_order_pct": "0.05", "max_trades_per_day": "0"}


@pytest.mark.parametrize("name, value, says", [
    ("daily_loss", "0.03", "no risk limit 'daily_loss'; one of max_order_pct"),
    ("daily_loss_pct", "three", "'three' is not a number"),
    ("daily_loss_pct", "3%", "write 0.03 for 3%"),
    ("daily_loss_pct", "NaN", "not a finite number"),
    ("daily_loss_pct", "0", "out of range (0 would stop all trading"),
    ("daily_loss_pct", "1.5", "over 1 is more than all of it"),
    ("max_exposure_pct", "11", "a multiple of equity above 0 and at most 10"),
    ("max_trades_per_day", "2.5", "is not a whole number"),
    ("max_open_positions", "-1", "out of range (it counts positions or entries"),
    ("kelly_multiple", "-0.5", "0 turns the Kelly cap off"),
    ("kelly_multiple", "1e9", "a multiple from 0 to 10"),
])
def test_a_bad_limit_is_refused_with_the_reason_and_changes_nothing(name, value, says):
    book = RiskBook()
    with pytest.raises(LimitRefused) as refusal:
        book.set_limit(LIMITS, name, value)
    assert says in str(refusal.value)
    assert book.limit_overrides == {}


def test_pause_and_overrides_survive_the_store():
    book = RiskBook(paused_by="cli:bob")
    book.set_limit(LIMITS, "daily_loss_pct", "0.03")
    book.set_limit(LIMITS, "max_positions_per_strategy", "1")
    again = RiskBook.from_json(book.to_json())
    assert again.paused_by == "cli:bob" and again.trading_state == "REDUCING"
    restored, dropped = again.limits(LIMITS)
    assert dropped == []
    assert restored.daily_loss_pct == D("0.03") and restored.max_positions_per_strategy == 1
    assert restored.max_order_pct == LIMITS.max_order_pct  # the rest stay the settings'
    old = RiskBook.from_json({"kill_switch": False, "day": 3})  # a book stored before these controls existed
    assert old.paused_by == "" and old.limit_overrides == {} and old.limits(LIMITS) == (LIMITS, [])


def test_an_override_edited_by_hand_is_checked_again_and_dropped():
    book = RiskBook.from_json({"limit_overrides": {"daily_loss_pct": "7", "max_open_positions": "3"}})
    limits, dropped = book.limits(LIMITS)
    assert limits.daily_loss_pct == LIMITS.daily_loss_pct and limits.max_open_positions == 3
    assert len(dropped) == 1 and "daily_loss_pct" in dropped[0] and book.limit_overrides == {"max_open_positions": "3"}
