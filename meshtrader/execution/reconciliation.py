"""The books against a venue at start-up: what forbids trading, and what is only worth a note."""
from __future__ import annotations

from decimal import Decimal

from meshtrader.domain.portfolio import Portfolio
from meshtrader.execution.venue import UnbookedFill, VenuePosition


def reconcile(cash: Decimal, positions: dict[str, Decimal], balances: dict[str, Decimal], open_at_exchange: list[str],
              known_open: set[str], tolerance: Decimal, unbooked: list[UnbookedFill] = (),
              ours: set[str] = frozenset()) -> tuple[list[str], list[str]]:
    """Books against the exchange: (problems that forbid trading, notes). The mesh may manage part of an
    account, so the exchange holding more than the books, or fills of orders the mesh never placed, are
    notes; holding less, an open order the store does not know, or a fill of one of the mesh's own orders
    (`ours`) missing from the store, is a problem, named with both figures."""
    problems, notes = [], []
    missing = [fill for fill in unbooked if fill.client_id in ours]
    if missing:
        problems.append("fills at the exchange missing from the store: " + "; ".join(map(str, missing)))
    foreign = [fill for fill in unbooked if fill.client_id not in ours]
    if foreign:
        notes.append(f"{len(foreign)} recent fills of orders the mesh did not place, e.g. {foreign[0]}")
    checks = [("USDT", cash, tolerance)] + [(asset, qty, Decimal(0)) for asset, qty in sorted(positions.items())]
    for asset, books, slack in checks:
        held = balances.get(asset, Decimal(0))
        if held < books - slack:
            problems.append(f"{asset}: the exchange holds {held}, the books {books}")
        elif held > books + slack:
            notes.append(f"{asset}: the exchange holds {held}, {held - books} more than the books manage")
    unknown = sorted(set(open_at_exchange) - known_open)
    if unknown:
        problems.append(f"open orders at the exchange the store does not know: {', '.join(unknown)}")
    return problems, notes


def reconcile_positions(portfolio: Portfolio, positions: list[VenuePosition]) -> list[str]:
    """Futures: each symbol's position at the exchange (one-way: one signed size) against the sub-accounts'
    together: side and size must agree exactly, and so must the entry price where one sub-account holds it
    all (several holders average theirs, which the exchange does by its own rounding)."""
    books: dict[str, list] = {}
    for account in portfolio.accounts.values():
        for symbol, position in account.positions.items():
            if position.qty:
                books.setdefault(symbol, []).append(position)
    exchange = {p.symbol: p for p in positions if p.qty}
    problems = []
    for symbol in sorted(set(books) | set(exchange)):
        ours = books.get(symbol, [])
        qty = sum((p.qty for p in ours), Decimal(0))
        theirs = exchange.get(symbol)
        their_qty = theirs.qty if theirs else Decimal(0)
        if qty != their_qty:
            problems.append(f"{symbol}: the exchange holds a position of {their_qty}, the books {qty}")
        elif theirs and len(ours) == 1 and ours[0].entry_price != theirs.entry_price:
            problems.append(f"{symbol}: entry price at the exchange {theirs.entry_price}, in the books "
                            f"{ours[0].entry_price}")
    return problems
