"""Paper fills against the depth of a live order book (MESH_FILL_MODEL=book): the feed streams the
exchange simulator's book through the real ccxt (snapshot + diff-depth), the executor walks it."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from conftest import chaos, live_feed, running_mesh, wait_for


@pytest.fixture(scope="module")
def book_mesh(sim, tmp_path_factory):
    with running_mesh(Path(tmp_path_factory.mktemp("book")), live_feed(sim, MESH_FILL_MODEL="book")) as mesh:
        yield mesh


def test_paper_fills_walk_the_live_order_book(book_mesh, sim):
    """MESH_FILL_MODEL=book: a paper market order takes the streamed book's levels one fill each, and an
    order the book is too thin for fills what the book holds; the rest expires."""
    live = book_mesh

    def walked():  # an order the book held in full (a thin candle's book may hold less: that is the next case)
        return live.query("SELECT t.order_id FROM trades t JOIN orders o ON o.order_id = t.order_id "
                          "WHERE o.status = 'FILLED' GROUP BY t.order_id HAVING COUNT(*) > 1")

    chaos(sim, action="thin_book", factor=0.1)  # levels smaller than the orders
    try:
        [order_id, *_] = wait_for(walked, 90, "an order that took several levels of the book")[0]
        chaos(sim, action="thin_book", factor=0.001)  # the whole book smaller than an order
        ordered, filled = wait_for(lambda: live.query(
            "SELECT o.qty, SUM(CAST(t.qty AS REAL)) FROM orders o JOIN trades t ON t.order_id = o.order_id "
            "WHERE o.status = 'EXPIRED' GROUP BY o.order_id"), 90, "an order the thin book filled in part")[0]
    finally:
        chaos(sim, action="thin_book", factor=1)
    assert 0 < filled < float(ordered)
    (side, qty, status), = live.query("SELECT side, qty, status FROM orders WHERE order_id = ?", (order_id,))
    rows = live.query("SELECT trade_id, qty, price FROM trades WHERE order_id = ?", (order_id,))
    fills = [(q, p) for _, q, p in sorted(rows, key=lambda r: int(r[0].rsplit("-", 1)[1]))]
    prices = [Decimal(p) for _, p in fills]
    assert prices == sorted(prices, reverse=side == "sell")  # best level first
    assert status == "FILLED" and sum(Decimal(q) for q, _ in fills) == Decimal(qty)
