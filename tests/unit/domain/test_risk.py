"""Risk rules and the risk book."""
from __future__ import annotations

from decimal import Decimal

import pytest

from meshtrader.domain.risk import Limits, RiskBook, evaluate, judge
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
    assert [judge(book, order(), limits)[0].rule for _ in range(3)] == ["within_limits"] * 2 + ["max_trades_per_day"]
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
