"""The operators' controls on the risk book: pause (exits only) and risk limits changed at run time."""
from __future__ import annotations

from dataclasses import fields
from decimal import Decimal

import pytest

from meshtrader.domain.risk import LIMIT_RANGES, LimitRefused, Limits, RiskBook, evaluate, judge, limit_values
from meshtrader.wire.messages import ApproveOrder

D = Decimal
LIMITS = Limits(D("0.20"), D("0.80"), 2, D("0.05"), D("0.10"))


def order(**changes) -> ApproveOrder:
    base = dict(request_id="r", strategy="m", symbol="BTCUSDT", side="buy", qty=D("0.05"), price=D("100000"),
                reduces=False, opens_position=True, strategy_equity=D("50000"), strategy_open_positions=0,
                portfolio_equity=D("100000"), portfolio_exposure=D("0"), event_time=1_746_372_780_000)
    return ApproveOrder(**{**base, **changes})


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
    restored = again.limits(LIMITS)
    assert restored.daily_loss_pct == D("0.03") and restored.max_positions_per_strategy == 1
    assert restored.max_order_pct == LIMITS.max_order_pct  # the rest stay the settings'
    old = RiskBook.from_json({"kill_switch": False, "day": 3})  # a book stored before these controls existed
    assert old.paused_by == "" and old.limit_overrides == {} and old.limits(LIMITS) == LIMITS


def test_an_override_edited_by_hand_is_checked_again():
    book = RiskBook.from_json({"limit_overrides": {"daily_loss_pct": "7"}})
    with pytest.raises(LimitRefused, match="daily_loss_pct"):
        book.limits(LIMITS)
