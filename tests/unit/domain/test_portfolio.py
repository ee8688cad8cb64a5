"""The portfolio: books to the last digit, sizing, rebalancing."""
from __future__ import annotations

from decimal import Decimal

import pytest

from meshtrader.domain.money import instrument
from meshtrader.domain.portfolio import AccountingError, Portfolio, size_entry

D = Decimal


def test_portfolio_reconciles_to_the_last_digit():
    book = Portfolio()
    book.fund("m", D("50000"))
    spent = D("0.052") * D("95547.8") + D("4.96848560")
    book.apply_fill("m", "BTCUSDT", "buy", D("0.052"), D("95547.8"), D("4.96848560"))
    assert book.accounts["m"].cash == D("50000") - spent
    book.mark("BTCUSDT", D("96000.1"))
    assert book.equity("m") == book.accounts["m"].cash + D("0.052") * D("96000.1")
    realized = book.apply_fill("m", "BTCUSDT", "sell", D("0.052"), D("96000.1"), D("4.99200520"))
    assert realized == D("0.052") * D("96000.1") - D("4.99200520") - spent
    assert book.equity("m") == book.accounts["m"].cash == D("50000") + realized
    with pytest.raises(AccountingError):
        book.apply_fill("m", "BTCUSDT", "sell", D("0.001"), D("1"), D("0"))
    with pytest.raises(AccountingError):
        book.apply_fill("m", "BTCUSDT", "buy", D("100"), D("96000"), D("0"))


def test_buy_sizing_respects_cash_and_exchange_minimums():
    book = Portfolio()
    book.fund("m", D("1000"))
    account = book.accounts["m"]
    qty, _ = size_entry(account, D("1000"), D("95000"), D("0.2"), D("0.001"), instrument("BTCUSDT"))
    assert qty == D("0.002")
    qty, why = size_entry(account, D("1000"), D("95000"), D("0.05"), D("0.001"), instrument("BTCUSDT"))
    assert qty == 0 and "too small" in why


def test_rebalance_moves_free_cash_only_and_nets_to_zero():
    from meshtrader.domain.portfolio import rebalance_transfers

    book = Portfolio()
    book.fund("a", D("50000"))
    book.fund("b", D("50000"))
    book.mark("BTCUSDT", D("100000"))
    book.apply_fill("a", "BTCUSDT", "buy", D("0.4"), D("100000"), D("40"))  # a: 9,960 cash + 40,000 BTC
    moves = rebalance_transfers(book, {"a": D("0.2"), "b": D("0.8")})
    assert sum(moves.values()) == 0 and moves["a"] == -book.accounts["a"].cash  # only free cash moves
    before = book.equity()
    for strategy, amount in moves.items():
        book.fund(strategy, amount)
    assert book.equity() == before
    assert rebalance_transfers(book, {"a": D("0.2"), "b": D("0.8")}) == {}  # nothing left to give
