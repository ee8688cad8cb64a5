"""Order planning: slippage, fees, fill models."""
from __future__ import annotations

from decimal import Decimal

from meshtrader.domain.money import fee
from meshtrader.domain.portfolio import Portfolio
from meshtrader.runtime.config import load_settings

D = Decimal


def test_volume_aware_slippage_grows_with_the_share_of_the_bar():
    from meshtrader.domain.money import FeeModel
    from meshtrader.execution.planning import OrderRules, plan_order

    book = Portfolio()
    book.fund("m", D("50000"))
    book.mark("BTCUSDT", D("95000.0"))
    fixed = OrderRules(D("0.10"), FeeModel(D("0.001"), D("0.0002")), D("5"))
    impact = OrderRules(D("0.10"), FeeModel(D("0.001"), D("0.0002")), D("5"), impact_bp=D("100"))
    base = plan_order(book, "m", "BTCUSDT", "buy", fixed, bar_volume=1.0)
    thin = plan_order(book, "m", "BTCUSDT", "buy", impact, bar_volume=0.5)    # 0.052 of 0.5: ~32 bp more
    deep = plan_order(book, "m", "BTCUSDT", "buy", impact, bar_volume=5000.0)  # a sliver: ~0.3 bp more
    assert base.price == D("95047.5") and deep.price < thin.price and base.price <= deep.price
    assert thin.qty * thin.price + fee(thin.qty * thin.price, D("0.001")) <= D("50000")


def test_takers_and_makers_pay_their_own_fee():
    from meshtrader.domain.money import MAKER, TAKER
    from meshtrader.execution.planning import OrderRules, plan_order

    book = Portfolio()
    book.fund("m", D("50000"))
    book.mark("BTCUSDT", D("95000.0"))
    rules = OrderRules.from_settings(load_settings(taker_fee_bp=5, maker_fee_bp=2))
    market = plan_order(book, "m", "BTCUSDT", "buy", rules)
    assert market.liquidity == TAKER and rules.fees.fee(market.qty * market.price, market.liquidity) == fee(market.qty * market.price, D("0.0005"))
    resting = market._replace(liquidity=MAKER)
    assert rules.fees.fee(resting.qty * resting.price, resting.liquidity) == fee(market.qty * market.price, D("0.0002"))


def test_fill_models_and_the_slippage_tolerance():
    from dataclasses import replace

    from meshtrader.domain.money import FeeModel
    from meshtrader.execution.planning import OrderRules, plan_order, slippage_problem

    book = Portfolio()
    book.fund("m", D("50000"))
    book.mark("BTCUSDT", D("95000.0"))
    fixed = OrderRules(D("0.10"), FeeModel(D("0.0005"), D("0.0002")), D("5"), impact_bp=D("100"))
    instant = replace(fixed, fill_model="instant")
    assert plan_order(book, "m", "BTCUSDT", "buy", instant, bar_volume=0.5).price == D("95000.0")
    thin = plan_order(book, "m", "BTCUSDT", "buy", fixed, bar_volume=0.5)  # ~0.05 BTC of a 0.5 BTC bar
    assert thin.slippage_bp > 30 and slippage_problem(thin, fixed) is None  # within the default 50 bp
    strict = replace(fixed, max_slippage_bp=D("10"))
    assert "tolerance" in slippage_problem(thin, strict)
    book.apply_fill("m", "BTCUSDT", "buy", D("0.01"), D("95000"), D("0"))
    assert slippage_problem(plan_order(book, "m", "BTCUSDT", "sell", strict, bar_volume=0.001), strict) is None
