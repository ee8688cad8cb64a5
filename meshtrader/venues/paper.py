"""The paper venue: the matching engine (meshtrader.venues.matching) over the mesh's own market data.

Market orders fill at once: at the planned price (the fixed-slippage and instant fill models), or by
walking the latest order book level by level (the book fill model; what the book cannot hold expires).
Limit orders rest and fill, whole and as makers, when the market trades through them. The backtester
trades through this same venue, so a backtest matches orders exactly as paper trading does.
"""
from __future__ import annotations

import math
import time
from decimal import Decimal

from meshtrader.domain.money import TAKER, FeeModel, instrument
from meshtrader.execution.venue import FundingPayment, OrderRequest, UnbookedFill, VenueFill, VenueReport
from meshtrader.runtime.log import Logger
from meshtrader.venues.matching import BookWalk, LimitBook, Match, RestingLimit, match, walk_book
from meshtrader.wire.messages import OrderBook

BOOK_STALE_S = 5.0  # an order book older than this is not walked (wall clock)


class PaperVenue:
    name = "paper"
    remote = False
    lost_after_s = math.inf

    def __init__(self, fees: FeeModel, fill_model: str, log: Logger) -> None:
        self.fees, self.fill_model, self.log = fees, fill_model, log
        self.limits = LimitBook()
        self.books: dict[str, tuple[OrderBook, float]] = {}  # symbol -> (latest book, monotonic time received)
        self.bookless: set[str] = set()  # symbols already logged as filled without a book
        self.quoted: tuple[tuple[str, str, Decimal], BookWalk] | None = None  # the last walk, for its submit

    # ----- market orders -------------------------------------------------------------------------------
    def expected_slippage_bp(self, symbol: str, side: str, qty: Decimal, mark: Decimal,
                             budget: Decimal | None) -> Decimal | None:
        """The book fill model's walk for a market order, or None (fixed slippage) without a fresh book."""
        self.quoted = None
        if self.fill_model != "book":
            return None
        book, received = self.books.get(symbol, (None, 0.0))
        if book is None or time.monotonic() - received > BOOK_STALE_S:
            if symbol not in self.bookless:
                self.bookless.add(symbol)
                self.log.warning("no_order_book", symbol=symbol, fallback="fixed slippage",
                                 why="no book received" if book is None else f"book older than {BOOK_STALE_S} s")
            return None
        self.bookless.discard(symbol)
        walk = walk_book(book.asks if side == "buy" else book.bids, qty, instrument(symbol), budget, self.fees.taker)
        self.quoted = ((symbol, side, qty), walk)
        return walk.slippage_bp(side, mark)

    def submit(self, request: OrderRequest) -> VenueReport:
        if request.limit:
            self.limits.rest(RestingLimit(request.order_id, request.symbol, request.side, request.qty, request.price))
            return VenueReport(open=True, status="open")
        quoted, self.quoted = self.quoted, None
        if quoted is None or quoted[0] != (request.symbol, request.side, request.qty):
            return VenueReport((self.fill(match(request.qty, request.price, TAKER, self.fees), TAKER, "1"),))
        walk = quoted[1]
        fills = tuple(self.fill(match(qty, price, TAKER, self.fees), f"book level {n}", str(n))
                      for n, (qty, price) in enumerate(walk.fills, 1))
        if walk.filled < request.qty:
            return VenueReport(fills, status="expired", reason=f"the order book held {walk.filled} of {request.qty} "
                               f"within its {walk.levels} levels: the rest expired")
        return VenueReport(fills)

    @staticmethod
    def fill(matched: Match, detail: str, trade_id: str) -> VenueFill:
        return VenueFill(trade_id, matched.qty, matched.price, matched.fee, matched.liquidity, detail)

    # ----- resting orders ---------------------------------------------------------------------------
    def on_trade(self, symbol: str, price: Decimal) -> list[tuple[str, VenueReport]]:
        return [(str(order.order_id),
                 VenueReport((self.fill(matched, f"the market traded through {order.price} at {price}", "1"),)))
                for order, matched in self.limits.trade(symbol, price, self.fees)]

    def cancel(self, symbol: str, order_id: str) -> VenueReport | None:
        return VenueReport(status="canceled") if self.limits.remove(order_id) is not None else None

    def lookup(self, symbol: str, order_id: str) -> VenueReport | None:
        return VenueReport(open=True, status="open") if order_id in self.limits.orders else None

    def restore(self, request: OrderRequest, filled: Decimal) -> None:
        if request.limit:
            self.limits.rest(RestingLimit(request.order_id, request.symbol, request.side, request.qty - filled,
                                          request.price))

    def on_book(self, book: OrderBook) -> None:
        self.books[book.symbol] = (book, time.monotonic())

    # ----- the account: the mesh's own books are the paper venue's ------------------------------------------
    def ping(self) -> None:
        pass

    def balances(self) -> None:
        return None

    def open_orders(self, symbols: list[str]) -> list[str]:
        return [o.order_id for o in self.limits.orders.values() if o.symbol in symbols]

    def unbooked_fills(self, symbols: list[str], booked: set[str]) -> list[UnbookedFill]:
        return []

    def positions(self, symbols: list[str]) -> None:
        return None  # the books are the paper venue's only account

    def funding_payments(self, symbols: list[str], since_ms: int) -> list[FundingPayment]:
        return []  # paper funding is settled from the feed's rates (ExecutionEngine.settle_funding)

    def set_leverage(self, symbol: str, leverage: Decimal) -> None:
        pass  # the books apply each strategy's leverage themselves
