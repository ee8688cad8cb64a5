"""Reconciliation of the books with the exchange."""
from __future__ import annotations

from decimal import Decimal

D = Decimal


def test_reconciliation_says_where_books_and_exchange_disagree():
    from meshtrader.execution.reconciliation import reconcile

    problems, notes = reconcile(D("1000.00"), {"BTC": D("0.010")}, {"USDT": D("1000.005"), "BTC": D("0.010"),
                                                                   "ETH": D("1")}, [], set(), D("0.01"))
    assert problems == [] and notes == []  # within tolerance; an asset the books do not trade is not theirs
    problems, notes = reconcile(D("1000.00"), {"BTC": D("0.010"), "ETH": D("0")},
                                {"USDT": D("990"), "BTC": D("0.012")}, ["mt1", "mt9"], {"mt1"}, D("0.01"))
    assert problems == ["USDT: the exchange holds 990, the books 1000.00",
                        "open orders at the exchange the store does not know: mt9"]
    assert notes == ["BTC: the exchange holds 0.012, 0.002 more than the books manage"]
    from meshtrader.execution.venue import UnbookedFill

    ours = UnbookedFill("mt7", "5000009", "BTCUSDT", "buy", D("0.001"), D("95000"))
    manual = UnbookedFill("web_1", "5000010", "BTCUSDT", "sell", D("0.002"), D("95010"))
    problems, notes = reconcile(D("1000"), {}, {"USDT": D("1000")}, [], set(), D("0.01"), [ours, manual], {"mt7"})
    assert problems == ["fills at the exchange missing from the store: trade 5000009 of order mt7 (BTCUSDT buy "
                        "0.001 at 95000)"]
    assert notes == ["1 recent fills of orders the mesh did not place, e.g. trade 5000010 of order web_1 (BTCUSDT "
                     "sell 0.002 at 95010)"]
