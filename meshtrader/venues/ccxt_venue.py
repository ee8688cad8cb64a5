"""Live orders through ccxt: the executor's venue when MESH_MODE=live.

Credentials come from the environment or .env only (`<EXCHANGE>_API_KEY`, `<EXCHANGE>_API_SECRET`),
and no log line carries them. Orders use the executor's client order id, so an order whose answer was
lost is found again by that id instead of being placed twice. Fills, prices and fees are the exchange's
own reports, not the paper rules' estimate.

Requests are signed with a `recvWindow` of RECV_WINDOW_MS: the exchange refuses a request older than
that, so an order it still does not know a little after that long will never arrive (LOST_AFTER_S).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import zmq

from meshtrader.bus import AsyncioThread
from meshtrader.domain.orders import Order, OrderStatus
from meshtrader.marketdata.live import Backoff, point_at
from meshtrader.runtime.config import credential


class VenueRejected(Exception):
    """The exchange refused the order (insufficient balance, filters, duplicate id...)."""


class VenueUnavailable(Exception):
    """No clear answer (network, timeout, exchange down): the order's fate is unknown until checked."""


RECV_WINDOW_MS = 5000
LOST_AFTER_S = RECV_WINDOW_MS / 1000 + 2  # + clock skew: an order still unknown this long after sending never arrived


@dataclass(frozen=True)
class ExchangeFill:
    """One exchange trade as the books take it: `qty` is what the position moves by and `fee` is in
    the quote currency, so cash moves by exactly what the exchange moved it by (see `as_booked`)."""

    trade_id: str
    price: Decimal
    qty: Decimal
    fee: Decimal
    note: str = ""  # a fee the books cannot carry (paid in a third asset, e.g. BNB)


def as_booked(trade_id: str, side: str, amount: Decimal, price: Decimal, fee: Decimal, fee_asset: str,
              base: str, quote: str) -> ExchangeFill:
    """An exchange trade in the books' terms. Binance charges a buy's commission in the asset bought:
    the position grows by `amount - fee` while cash pays `amount x price`, which is the books' fill of
    `amount - fee` at `price` with a quote fee of `fee x price` (a sell's base fee mirrors it)."""
    if fee and fee_asset == base:
        qty = amount - fee if side == "buy" else amount + fee
        return ExchangeFill(trade_id, price, qty, fee * price)
    if fee and fee_asset != quote:
        return ExchangeFill(trade_id, price, amount, Decimal(0), f"fee {fee} {fee_asset} paid outside the books")
    return ExchangeFill(trade_id, price, amount, fee)


@dataclass(frozen=True)
class UnbookedFill:
    """A trade at the exchange the store does not have."""

    client_id: str
    trade_id: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal

    def __str__(self) -> str:
        return f"trade {self.trade_id} of order {self.client_id} ({self.symbol} {self.side} {self.qty} at {self.price})"


@dataclass(frozen=True)
class ExchangeOrder:
    status: str  # the ccxt status: open, closed, canceled, expired, rejected
    filled: Decimal
    fills: list[ExchangeFill]

    @property
    def open(self) -> bool:
        return self.status == "open"


@dataclass
class LiveOrder:
    """An order at the exchange that is not finished: resting, or sent without an answer yet."""

    order: Order
    strategy: str
    symbol: str
    side: str
    signal_id: str
    tid: int
    sent_at: float  # wall clock: when an order the exchange does not know can be called lost
    limit: Decimal | None = None
    booked: set[str] = field(default_factory=set)  # exchange trade ids already in the books
    cancel_reason: str = ""  # why a cancel was asked for, until the exchange confirms it

    @property
    def unanswered(self) -> bool:
        return self.order.status == OrderStatus.SUBMITTED


END_STATES = {"canceled": OrderStatus.CANCELED, "expired": OrderStatus.EXPIRED, "rejected": OrderStatus.REJECTED}


def end_state(order: Order, exchange_status: str) -> OrderStatus:
    """The state an order the exchange closed unfilled (or part-filled) ends in: the exchange's own
    word where the state machine allows it from here, else EXPIRED."""
    wanted = END_STATES.get(exchange_status, OrderStatus.EXPIRED)
    return wanted if order.can_move(wanted) else OrderStatus.EXPIRED


def trading_exchange(module: Any, settings: Any) -> Any:
    """A ccxt exchange (sync `ccxt` or async `ccxt.pro`) with the trading credentials, pointed at
    MESH_EXCHANGE_URL or the sandbox. Raises VenueUnavailable when the credentials are missing."""
    name = settings.exchange.upper()
    key, secret = credential(f"{name}_API_KEY"), credential(f"{name}_API_SECRET")
    if not key or not secret:
        raise VenueUnavailable(f"live trading needs {name}_API_KEY and {name}_API_SECRET in the environment or .env")
    exchange = getattr(module, settings.exchange)({
        "apiKey": key, "secret": secret, "enableRateLimit": True, "timeout": int(settings.live_timeout_s * 1000),
        "newUpdates": True,
        "options": {"defaultType": "spot", "recvWindow": RECV_WINDOW_MS, "fetchCurrencies": False,
                    "fetchMargins": False, "fetchMarkets": {"types": ["spot"]}}})
    if settings.exchange_url:
        point_at(exchange.urls["api"], settings.exchange_url)
    elif settings.live_sandbox:
        exchange.set_sandbox_mode(True)
    return exchange


class LiveVenue:
    def __init__(self, settings: Any) -> None:
        import ccxt

        self.ccxt = ccxt
        self.exchange = trading_exchange(ccxt, settings)
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

    def place(self, symbol: str, side: str, qty: Decimal, client_id: str,
              limit: Decimal | None = None) -> ExchangeOrder:
        """A market order, or a good-till-canceled limit order at `limit`."""
        unified = self.market_symbol(symbol)
        kind = "market" if limit is None else "limit"
        order = self.call(self.exchange.create_order, unified, kind, side, float(qty),
                          None if limit is None else float(limit), {"newClientOrderId": client_id})
        return self.report(unified, order)

    def order(self, symbol: str, client_id: str) -> ExchangeOrder | None:
        """The order as the exchange knows it now, or None if it has no such order."""
        unified = self.market_symbol(symbol)
        try:
            order = self.exchange.fetch_order(None, unified, {"origClientOrderId": client_id})
        except self.ccxt.OrderNotFound:
            return None
        except self.ccxt.BaseError:
            order = self.call(self.exchange.fetch_order, None, unified, {"origClientOrderId": client_id})
        return self.report(unified, order)

    def cancel(self, symbol: str, client_id: str) -> ExchangeOrder | None:
        """Cancel an open order; its final state either way (an order that filled first cannot be
        canceled), or None if the exchange has no such order."""
        unified = self.market_symbol(symbol)
        try:
            self.exchange.cancel_order(None, unified, {"origClientOrderId": client_id})
        except self.ccxt.OrderNotFound:
            pass  # filled (or canceled) before the cancel got there: its final state says which
        except self.ccxt.BaseError:
            self.call(self.exchange.cancel_order, None, unified, {"origClientOrderId": client_id})
        return self.order(symbol, client_id)

    def report(self, unified: str, order: dict) -> ExchangeOrder:
        """The order's status and every fill it has had, from the exchange's trade reports."""
        trades = order.get("trades") or []
        if not trades and order.get("filled"):
            trades = self.call(self.exchange.fetch_my_trades, unified, None, None, {"orderId": order["id"]})
        market = self.exchange.markets[unified]
        fills = [as_booked(str(t["id"]), order["side"], _dec(t["amount"]), _dec(t["price"]),
                           _dec((t.get("fee") or {}).get("cost") or 0),
                           (t.get("fee") or {}).get("currency") or market["quote"], market["base"], market["quote"])
                 for t in trades]
        return ExchangeOrder(order.get("status") or "open", _dec(order.get("filled") or 0), fills)

    def ping(self) -> None:
        """Raises VenueUnavailable while the exchange does not answer."""
        self.call(self.exchange.fetch_time)

    def balances(self) -> dict[str, Decimal]:
        balance = self.call(self.exchange.fetch_balance)
        return {asset: _dec(amount) for asset, amount in (balance.get("total") or {}).items() if amount is not None}

    def unbooked_fills(self, symbols: list[str], booked: set[str]) -> list[UnbookedFill]:
        """The exchange's latest trades (500 a symbol) whose ids are not in `booked`, each with the
        client id of its order."""
        found = []
        for symbol in symbols:
            unified = self.market_symbol(symbol)
            trades = [t for t in self.call(self.exchange.fetch_my_trades, unified) if str(t["id"]) not in booked]
            client_ids = {}
            for order_id in {t["order"] for t in trades}:
                order = self.call(self.exchange.fetch_order, order_id, unified)
                client_ids[order_id] = order.get("clientOrderId") or str(order_id)
            found += [UnbookedFill(client_ids[t["order"]], str(t["id"]), symbol, t["side"], _dec(t["amount"]),
                                   _dec(t["price"])) for t in trades]
        return found

    def open_orders(self, symbols: list[str]) -> list[str]:
        """Client order ids of the orders open at the exchange."""
        return [o.get("clientOrderId") or o["id"] for symbol in symbols
                for o in self.call(self.exchange.fetch_open_orders, self.market_symbol(symbol))]


class UserStream(AsyncioThread):
    """The exchange's user-data stream (ccxt `watch_orders`) in a thread of its own. Each order update's
    client order id goes to the executor's loop over an inproc PUSH socket; the executor then looks the
    order up through REST, which stays the record. The stream makes fills prompt; the executor's own
    checks every MESH_LIVE_CHECK_S cover the stream being down."""

    def __init__(self, settings: Any, push_endpoint: str, ctx: zmq.Context, log: Any) -> None:
        super().__init__("userstream", ctx, push_endpoint)
        self.settings, self.log = settings, log

    async def run_async(self) -> None:
        import ccxt.pro

        try:
            exchange = trading_exchange(ccxt.pro, self.settings)
        except VenueUnavailable as error:
            self.log.error("user_stream_unavailable", error=str(error))
            return
        watcher = asyncio.create_task(self._watch(exchange))
        try:
            await self.until_stopped()
        finally:
            watcher.cancel()
            await exchange.close()

    async def _watch(self, exchange: Any) -> None:
        backoff, up = Backoff(0.5, 16.0), False
        while True:
            try:
                orders = await exchange.watch_orders()
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():
                    raise
                continue
            except Exception as error:  # down, refused, a message ccxt cannot parse: retry, never die
                up = False
                delay = backoff.next_delay()
                self.log.warning("user_stream_down", error=_short(error), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            if not up:
                up = True
                self.log.info("user_stream_up")
            backoff.reset()
            for order in orders:
                if order.get("clientOrderId"):
                    self.push.send(order["clientOrderId"].encode())


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


def _dec(value: Any) -> Decimal:
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))


def _short(error: Exception) -> str:
    """The exchange's message without the request URL (which carries the signature)."""
    text = str(error)
    brace = text.find("{")
    return f"{type(error).__name__}: {text[brace:] if brace >= 0 else text.split(' http', 1)[0]}"[:300]
