"""Live orders through ccxt: the executor's venue when MESH_MODE=live.

Credentials come from the environment or .env only (`<EXCHANGE>_API_KEY`, `<EXCHANGE>_API_SECRET`),
and no log line carries them. Orders use the executor's client order id, so a retry after a lost
answer finds the order instead of placing a second one. Fills, prices and fees are the exchange's own
reports, not the paper rules' estimate.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from core.config import credential
from core.livefeed import point_at


class VenueRejected(Exception):
    """The exchange refused the order (insufficient balance, filters, duplicate id...)."""


class VenueUnavailable(Exception):
    """No clear answer (network, timeout, exchange down): the order's fate is unknown until checked."""


@dataclass(frozen=True)
class ExchangeFill:
    trade_id: str
    price: Decimal
    qty: Decimal
    fee: Decimal  # in the quote currency


@dataclass(frozen=True)
class ExchangeOrder:
    status: str  # the ccxt status: open, closed, canceled, expired, rejected
    filled: Decimal
    fills: list[ExchangeFill]


class LiveVenue:
    def __init__(self, settings: Any) -> None:
        import ccxt

        self.ccxt = ccxt
        name = settings.exchange.upper()
        key, secret = credential(f"{name}_API_KEY"), credential(f"{name}_API_SECRET")
        if not key or not secret:
            raise VenueUnavailable(f"live trading needs {name}_API_KEY and {name}_API_SECRET in the environment "
                                   "or .env")
        self.exchange = getattr(ccxt, settings.exchange)({
            "apiKey": key, "secret": secret, "enableRateLimit": True, "timeout": 10_000,
            "options": {"defaultType": "spot", "fetchCurrencies": False, "fetchMargins": False,
                        "fetchMarkets": {"types": ["spot"]}}})
        if settings.exchange_url:
            point_at(self.exchange.urls["api"], settings.exchange_url)
        elif settings.live_sandbox:
            self.exchange.set_sandbox_mode(True)
        self.call(self.exchange.load_markets)

    def call(self, method, *args, **kwargs):
        """ccxt errors sorted into refused (the exchange said no) and unknown (no clear answer)."""
        ccxt = self.ccxt
        try:
            return method(*args, **kwargs)
        except (ccxt.InsufficientFunds, ccxt.InvalidOrder, ccxt.BadRequest, ccxt.PermissionDenied,
                ccxt.AuthenticationError) as error:
            raise VenueRejected(_short(error)) from None
        except ccxt.BaseError as error:
            raise VenueUnavailable(_short(error)) from None

    def market_symbol(self, symbol: str) -> str:
        return self.exchange.markets_by_id[symbol][0]["symbol"]

    def market_order(self, symbol: str, side: str, qty: Decimal, client_id: str) -> ExchangeOrder:
        unified = self.market_symbol(symbol)
        order = self.call(self.exchange.create_order, unified, "market", side, float(qty), None,
                          {"newClientOrderId": client_id})
        trades = order.get("trades") or []
        if not trades and order.get("filled"):
            trades = self.call(self.exchange.fetch_my_trades, unified, None, None, {"orderId": order["id"]})
        fills = [ExchangeFill(str(t["id"]), _dec(t["price"]), _dec(t["amount"]),
                              _dec((t.get("fee") or {}).get("cost") or 0)) for t in trades]
        return ExchangeOrder(order.get("status") or "open", _dec(order.get("filled") or 0), fills)

    def balances(self) -> dict[str, Decimal]:
        balance = self.call(self.exchange.fetch_balance)
        return {asset: _dec(amount) for asset, amount in (balance.get("total") or {}).items() if amount is not None}

    def open_orders(self, symbols: list[str]) -> list[str]:
        """Client order ids of the orders open at the exchange."""
        return [o.get("clientOrderId") or o["id"] for symbol in symbols
                for o in self.call(self.exchange.fetch_open_orders, self.market_symbol(symbol))]


def reconcile(cash: Decimal, positions: dict[str, Decimal], balances: dict[str, Decimal], open_at_exchange: list[str],
              known_open: set[str], tolerance: Decimal) -> tuple[list[str], list[str]]:
    """Books against the exchange: (problems that forbid trading, notes). The mesh may manage part of an
    account, so the exchange holding more than the books is a note; holding less, or an open order the
    store does not know, is a problem, named with both figures."""
    problems, notes = [], []
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


def _dec(value: Any) -> Decimal:
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))


def _short(error: Exception) -> str:
    """The exchange's message without the request URL (which carries the signature)."""
    text = str(error)
    brace = text.find("{")
    return f"{type(error).__name__}: {text[brace:] if brace >= 0 else text.split(' http', 1)[0]}"[:300]
