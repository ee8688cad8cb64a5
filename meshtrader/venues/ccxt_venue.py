"""An exchange through ccxt: the executor's venue when MESH_MODE=live.

Credentials come from the environment or .env only (`<EXCHANGE>_API_KEY`, `<EXCHANGE>_API_SECRET`),
and no log line carries them. Orders carry the engine's client order id, so an order whose answer was
lost is found again by that id instead of being placed twice. Fills, prices and fees are the exchange's
own reports. What differs between exchanges (parameter names, the receive window, which of their
markets are of the configured MESH_MARKET_TYPE) is their adapter's (meshtrader.venues.adapters). The
instruments (tick, step, minimums) are the exchange's, from its markets.

USD-M futures (MESH_MARKET=usdm): exits go as reduce-only orders; positions, leverage (isolated margin),
funding payments (the income history's FUNDING_FEE entries) and the wallet balance are read from the
exchange's own strings, so they are exact Decimals, never ccxt's floats.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import zmq

from meshtrader.bus import AsyncioThread
from meshtrader.domain.futures import Bracket
from meshtrader.domain.instruments import Instrument, InstrumentSet, MarketType
from meshtrader.domain.money import MAKER, TAKER
from meshtrader.execution.venue import (
    FundingPayment,
    OrderRequest,
    UnbookedFill,
    VenueFill,
    VenuePosition,
    VenueRejected,
    VenueReport,
    VenueUnavailable,
)
from meshtrader.marketdata.live import Backoff, point_at
from meshtrader.runtime.config import credential
from meshtrader.runtime.metrics import REMOTE_BUCKETS, ServiceMetrics
from meshtrader.venues.adapters import ExchangeAdapter, adapter_for
from meshtrader.wire.messages import OrderBook

FUNDING_PAGE = 1000  # income-history entries a request asks for (Binance's most)


def as_booked(trade_id: str, side: str, amount: Decimal, price: Decimal, fee: Decimal, fee_asset: str,
              base: str, quote: str, liquidity: str = TAKER) -> VenueFill:
    """An exchange trade in the books' terms. Binance charges a buy's commission in the asset bought:
    the position grows by `amount - fee` while cash pays `amount x price`, which is the books' fill of
    `amount - fee` at `price` with a quote fee of `fee x price` (a sell's base fee mirrors it)."""
    if fee and fee_asset == base:
        qty = amount - fee if side == "buy" else amount + fee
        return VenueFill(trade_id, qty, price, fee * price, liquidity, f"exchange trade {trade_id}")
    if fee and fee_asset != quote:
        return VenueFill(trade_id, amount, price, Decimal(0), liquidity, f"exchange trade {trade_id}",
                         f"fee {fee} {fee_asset} paid outside the books")
    return VenueFill(trade_id, amount, price, fee, liquidity, f"exchange trade {trade_id}")


class MissingCredentials(VenueUnavailable):
    """No API key or secret: waiting will not help."""


def trading_exchange(module: Any, settings: Any) -> Any:
    """A ccxt exchange (sync `ccxt` or async `ccxt.pro`) with the trading credentials, pointed at
    MESH_EXCHANGE_URL or the sandbox. Raises MissingCredentials when the credentials are missing."""
    adapter = adapter_for(settings.exchange, settings.market_type)
    name = settings.exchange.upper()
    key, secret = credential(f"{name}_API_KEY"), credential(f"{name}_API_SECRET")
    if not key or not secret:
        raise MissingCredentials(f"live trading needs {name}_API_KEY and {name}_API_SECRET in the environment or .env")
    exchange = getattr(module, settings.exchange)({
        "apiKey": key, "secret": secret, "enableRateLimit": True, "timeout": int(settings.live_timeout_s * 1000),
        "newUpdates": True, "options": adapter.options()})
    if settings.exchange_url:
        point_at(exchange.urls["api"], settings.exchange_url)
        adapter.pointed(exchange)
    elif settings.live_sandbox:
        exchange.set_sandbox_mode(True)
    return exchange


def exchange_step(precision: Any, precision_mode: int) -> Decimal:
    """A ccxt market precision as the step it means: ccxt gives a tick (TICK_SIZE, Binance) or a number
    of decimal places (DECIMAL_PLACES); significant digits have no fixed step."""
    from ccxt.base.decimal_to_precision import DECIMAL_PLACES, TICK_SIZE

    if precision is None:
        raise ValueError("no precision given")
    if precision_mode == TICK_SIZE:
        return _dec(precision)
    if precision_mode == DECIMAL_PLACES:
        return Decimal(1).scaleb(-int(precision))
    raise ValueError(f"precision mode {precision_mode} (significant digits) has no fixed step")


def instrument_of(market: dict, market_type: MarketType, precision_mode: int) -> Instrument:
    """A ccxt market's rules; no amount minimum is one step, no cost minimum is none."""
    symbol = market["id"]
    try:
        tick = exchange_step(market["precision"].get("price"), precision_mode)
        step = exchange_step(market["precision"].get("amount"), precision_mode)
    except ValueError as error:
        raise ValueError(f"{symbol}: {error}") from None
    limits = market.get("limits") or {}
    min_qty = (limits.get("amount") or {}).get("min")
    min_notional = (limits.get("cost") or {}).get("min")
    return Instrument(symbol, market_type, tick, step, step if min_qty is None else _dec(min_qty),
                      Decimal(0) if min_notional is None else _dec(min_notional))


class CcxtVenue:
    """The Venue an exchange is, through ccxt's synchronous client (the executor's loop waits at most
    MESH_LIVE_TIMEOUT_S for an answer; no answer is VenueUnavailable and the order is looked up later).
    Every request to the exchange is timed, and its errors counted by ccxt's error class, per method."""

    remote = True

    def __init__(self, settings: Any, metrics: ServiceMetrics) -> None:
        import ccxt

        self.ccxt = ccxt
        self.name = settings.exchange
        self.adapter: ExchangeAdapter = adapter_for(settings.exchange, settings.market_type)
        self.futures = self.adapter.market_type == "usdm"
        self.lost_after_s = self.adapter.lost_after_s
        self.settings = settings
        self._exchange: Any = None
        self.service = metrics.service
        self.latency = metrics.histogram("mesh_exchange_request_seconds", "a request to the exchange, answered or not",
                                         ("method",), REMOTE_BUCKETS)
        self.errors = metrics.counter("mesh_exchange_errors_total", "requests the exchange refused or did not answer, "
                                      "by ccxt error class", ("method", "error"))

    @property
    def exchange(self) -> Any:
        """The ccxt client with its markets, made at first use (and retried until the exchange answers)."""
        if self._exchange is None:
            exchange = trading_exchange(self.ccxt, self.settings)
            self.call(exchange.load_markets)
            self._exchange = exchange
        return self._exchange

    def request(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One request to the exchange, timed; an error is counted by its type and raised as it is."""
        name = getattr(method, "__name__", "?")
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        except self.ccxt.BaseError as error:
            self.errors.labels(self.service, name, type(error).__name__).inc()
            raise
        finally:
            self.latency.labels(self.service, name).observe(time.perf_counter() - started)

    def call(self, method, *args, **kwargs):
        """One request, its ccxt error raised as the venue's (see `venue_error`)."""
        try:
            return self.request(method, *args, **kwargs)
        except self.ccxt.BaseError as error:
            raise self.venue_error(error) from None

    def venue_error(self, error: Exception) -> VenueRejected | VenueUnavailable:
        """A ccxt error sorted into refused (the exchange said no) and unknown (no clear answer)."""
        ccxt = self.ccxt
        refused = (ccxt.InsufficientFunds, ccxt.InvalidOrder, ccxt.BadRequest, ccxt.PermissionDenied,
                   ccxt.AuthenticationError)
        return (VenueRejected if isinstance(error, refused) else VenueUnavailable)(_short(error))

    def listed(self, symbol: str) -> dict | None:
        """The exchange's market of our type with this id, if it lists one."""
        return next((m for m in self.exchange.markets_by_id.get(symbol, []) if self.adapter.lists(m)), None)

    def market_symbol(self, symbol: str) -> str:
        market = self.listed(symbol)
        if market is None:
            raise VenueRejected(f"{self.name} lists no {self.adapter.market_type} market {symbol}")
        return market["symbol"]

    def instruments(self, symbols: list[str]) -> InstrumentSet:
        """The exchange's precision and minimums for these symbols. Raises UnknownInstruments naming every
        symbol it does not list (as a market of our type), VenueUnavailable while it does not answer, and
        ValueError for a market whose precision is no step."""
        market_type, precision_mode = self.adapter.market_type, self.exchange.precisionMode
        found = [instrument_of(market, market_type, precision_mode)
                 for market in map(self.listed, symbols) if market is not None]
        return InstrumentSet.of(market_type, f"exchange {self.name}", found).select(symbols)

    def leverage_brackets(self, symbols: list[str]) -> dict[str, tuple[Bracket, ...]]:
        """The exchange's leverage brackets (ccxt's fetch_leverage_tiers), exact from its own figures where it
        gives them (Binance: notionalCap, maintMarginRatio, cum), for the books' margin and liquidation
        prices; none on spot."""
        if not self.futures:
            return {}
        ours = {self.market_symbol(symbol): symbol for symbol in symbols}
        found = {}
        for unified, tiers in self.call(self.exchange.fetch_leverage_tiers, list(ours)).items():
            if unified in ours and tiers:
                found[ours[unified]] = tuple(Bracket(
                    _dec(tier["info"].get("notionalCap", tier["maxNotional"])), _dec(tier["maxLeverage"]),
                    _dec(tier["info"].get("maintMarginRatio", tier["maintenanceMarginRate"])),
                    _dec(tier["info"].get("cum", 0))) for tier in tiers)
        return found

    def submit(self, request: OrderRequest) -> VenueReport:
        """A market order, or a good-till-canceled limit order; reduce-only where asked (futures)."""
        unified = self.market_symbol(request.symbol)
        params = self.adapter.create_params(request.order_id)
        if self.futures and request.reduce_only:
            params["reduceOnly"] = True
        order = self.call(self.exchange.create_order, unified, "limit" if request.limit else "market", request.side,
                          float(request.qty), float(request.price) if request.limit else None, params)
        return self.report(unified, order)

    def lookup(self, symbol: str, order_id: str) -> VenueReport | None:
        unified = self.market_symbol(symbol)
        params = self.adapter.lookup_params(order_id)
        try:
            order = self.request(self.exchange.fetch_order, None, unified, params)
        except self.ccxt.OrderNotFound:
            return None
        except self.ccxt.BaseError:
            order = self.call(self.exchange.fetch_order, None, unified, params)
        return self.report(unified, order)

    def cancel(self, symbol: str, order_id: str) -> VenueReport | None:
        """Cancel an open order; its final state either way (an order that filled first cannot be
        canceled), or None if the exchange has no such order."""
        unified = self.market_symbol(symbol)
        params = self.adapter.lookup_params(order_id)
        try:
            self.request(self.exchange.cancel_order, None, unified, params)
        except self.ccxt.OrderNotFound:
            pass  # filled (or canceled) before the cancel got there: its final state says which
        except self.ccxt.BaseError:
            self.call(self.exchange.cancel_order, None, unified, params)
        return self.lookup(symbol, order_id)

    def report(self, unified: str, order: dict) -> VenueReport:
        """The order's status and every fill it has had, from the exchange's trade reports."""
        trades = order.get("trades") or []
        if not trades and order.get("filled"):
            trades = self.call(self.exchange.fetch_my_trades, unified, None, None, {"orderId": order["id"]})
        market = self.exchange.markets[unified]
        liquidity = MAKER if order.get("type") == "limit" else TAKER
        fills = tuple(as_booked(str(t["id"]), order["side"], _dec(t["amount"]), _dec(t["price"]),
                                _dec((t.get("fee") or {}).get("cost") or 0),
                                (t.get("fee") or {}).get("currency") or market["quote"], market["base"],
                                market["quote"], liquidity) for t in trades)
        status = order.get("status") or "open"
        return VenueReport(fills, status == "open", status)

    def expected_slippage_bp(self, symbol: str, side: str, qty: Decimal, mark: Decimal,
                             budget: Decimal | None) -> Decimal | None:
        return None  # the fill model's fixed estimate: the exchange's book is the exchange's

    def on_trade(self, symbol: str, price: Decimal) -> list[tuple[str, VenueReport]]:
        return []  # the exchange matches its own orders: they are looked up, and pushed by the user stream

    def on_book(self, book: OrderBook) -> None:
        pass

    def restore(self, request: OrderRequest, filled: Decimal) -> None:
        pass  # the exchange still holds it: the engine looks it up at start-up

    def ping(self) -> None:
        """Raises VenueUnavailable while the exchange does not answer."""
        self.call(self.exchange.fetch_time)

    def balances(self) -> dict[str, Decimal]:
        """Each asset's total; futures: its wallet balance (deposits + realized PnL - fees + funding, the
        books' cash; unrealized PnL apart), from the account's own figures."""
        balance = self.call(self.exchange.fetch_balance)
        if self.futures:
            return {asset["asset"]: Decimal(asset["walletBalance"]) for asset in balance["info"].get("assets", [])}
        return {asset: _dec(amount) for asset, amount in (balance.get("total") or {}).items() if amount is not None}

    def positions(self, symbols: list[str]) -> list[VenuePosition] | None:
        """The open futures positions in these symbols (Binance's positionRisk, its leverage from the symbol
        configuration); None on spot, where there are balances only."""
        if not self.futures:
            return None
        ours = {self.market_symbol(symbol): symbol for symbol in symbols}
        leverages = self.call(self.exchange.fetch_leverages, list(ours))
        found = []
        for position in self.call(self.exchange.fetch_positions, list(ours)):
            info, unified = position["info"], position["symbol"]
            qty = Decimal(info["positionAmt"])
            if unified not in ours or not qty:
                continue
            liquidation = Decimal(info.get("liquidationPrice") or 0)
            found.append(VenuePosition(ours[unified], qty, Decimal(info["entryPrice"]),
                                       _dec(leverages[unified]["info"]["leverage"]), liquidation or None))
        return found

    def funding_payments(self, symbols: list[str], since_ms: int) -> list[FundingPayment]:
        """Every funding payment (FUNDING_FEE income) in these symbols from `since_ms` on, oldest first, each
        once (by the exchange's tranId); none on spot. Paged by time: a page ends inside a millisecond's
        entries, so the next starts at that millisecond again."""
        if not self.futures:
            return []
        ours = {self.market_symbol(symbol): symbol for symbol in symbols}
        payments: list[FundingPayment] = []
        seen: set[str] = set()
        since = since_ms
        while True:
            page = self.call(self.exchange.fetch_funding_history, None, since, FUNDING_PAGE)
            new = [entry for entry in page if str(entry["id"]) not in seen]
            seen.update(str(entry["id"]) for entry in new)
            payments += [FundingPayment(str(entry["id"]), ours[entry["symbol"]], Decimal(entry["info"]["income"]),
                                        int(entry["timestamp"])) for entry in new if entry["symbol"] in ours]
            if len(page) < FUNDING_PAGE or not new:
                break
            since = int(page[-1]["timestamp"])
        return sorted(payments, key=lambda payment: payment.time_ms)

    def set_leverage(self, symbol: str, leverage: Decimal) -> None:
        """Isolated margin at this (whole) leverage for the symbol; nothing on spot, which has none."""
        if not self.futures:
            return
        if leverage != leverage.to_integral_value():
            raise VenueRejected(f"{self.name} takes whole leverages, not {leverage}")
        unified = self.market_symbol(symbol)
        try:
            self.request(self.exchange.set_margin_mode, "isolated", unified)
        except self.ccxt.MarginModeAlreadySet:
            pass  # isolated already
        except self.ccxt.BaseError as error:
            raise self.venue_error(error) from None
        self.call(self.exchange.set_leverage, int(leverage), unified)

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


def _dec(value: Any) -> Decimal:
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))


def _short(error: Exception) -> str:
    """The exchange's message without the request URL (which carries the signature)."""
    text = str(error)
    brace = text.find("{")
    return f"{type(error).__name__}: {text[brace:] if brace >= 0 else text.split(' http', 1)[0]}"[:300]
