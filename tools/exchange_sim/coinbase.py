"""Coinbase Advanced Trade in the exchange simulator: the public market data that ccxt's `coinbase` (REST)
and ccxt.pro's `coinbase` (WebSocket) read, over the bundled data.

Addresses, as meshtrader.marketdata.live.point_at rewrites ccxt's: REST `https://api.coinbase.com` is
served at `/api.coinbase.com`, the WebSocket `wss://advanced-trade-ws.coinbase.com` at
`/advanced-trade-ws.coinbase.com`.
- REST: `GET /api/v3/brokerage/market/products` (load_markets; `product_type=FUTURE` lists none),
  `.../market/products/{id}`, `.../market/products/{id}/candles` (ONE_MINUTE, newest first, the candle still
  trading included, at most 350), `.../market/products/{id}/ticker` (the market trades: the newest `limit`
  within `start` and `end`, Unix seconds, newest first), `/api/v3/brokerage/time`, and the v2 `currencies`,
  `currencies/crypto`, `exchange-rates` and `time` that ccxt reads when it loads the markets.
- WebSocket: `{"type": "subscribe" | "unsubscribe", "channel": "market_trades" | "heartbeats",
  "product_ids": [...]}`, each answered with a `subscriptions` message. `market_trades` sends a snapshot of
  the last 50 trades, then updates with the trades since (gathered every 20 ms of wall time, as Coinbase
  gathers 250 ms; newest first within a message, as Coinbase sends them); `heartbeats` one a second. Other
  channels (level2, ticker, candles...) are acknowledged and send nothing. Market data needs no
  credentials, on Coinbase as here: ccxt.pro signs only the `user` channel.

Products: a data symbol quoted in USDT is listed quoted in USD (BTCUSDT as BTC-USD, ETHUSDT as ETH-USD),
with Coinbase's increments. Trades: each candle trades along the path the Binance side trades it
(Market.path: open, nearer extreme, farther extreme) and at its close, 50 s into its minute, so every 15 s
of a minute holds one trade and trades rebuild each candle exactly. A trade carries a quarter of the
candle's volume (exact in decimal) and an id from its minute and point, so REST, the stream and a snapshot
after a reconnect agree. Chaos: `drop` closes these sockets too, `rate_limit` answers REST with Coinbase's
429.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, NamedTuple

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

if TYPE_CHECKING:  # server.py imports this module
    from tools.exchange_sim.server import ExchangeSim, Market

REST = "/api.coinbase.com"
BROKERAGE = REST + "/api/v3/brokerage"
WS = "/advanced-trade-ws.coinbase.com"
MINUTE_MS = 60_000
CLOSE_AT_MS = 50_000  # when a candle's close trades: one trade in each 15 s of its minute
SIZE_STEP = Decimal("0.00000001")
BASE_INCREMENT, QUOTE_INCREMENT = "0.00000001", "0.01"  # Coinbase's, for BTC-USD and ETH-USD alike
SNAPSHOT_TRADES = 50
DEFAULT_LIMIT = 100
MAX_CANDLES = 350
HEARTBEAT_S = 1.0
PUSH_EVERY_S = 0.02
NAMES = {"BTC": "Bitcoin", "ETH": "Ethereum"}


class SimTrade(NamedTuple):
    trade_id: str
    time: int  # market time, ms
    price: float
    size: str  # base currency, exact decimal


def product_id(symbol: str) -> str:
    """The Coinbase product a data symbol is listed as: BTCUSDT -> BTC-USD."""
    return f"{symbol.removesuffix('USDT')}-USD" if symbol.endswith("USDT") else symbol


def iso_time(ms: int) -> str:
    """RFC 3339 with milliseconds, as Coinbase stamps trades (integer arithmetic: no float rounding)."""
    return f"{datetime.fromtimestamp(ms // 1000, UTC):%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def candle_trades(market: Market, symbol: str, open_time: int) -> list[SimTrade]:
    """The trades a candle is made of, in time order (none where the data has no candle)."""
    bar = market.bar_at(symbol, open_time)
    if bar is None:
        return []
    points = market.path(symbol, open_time) + [(open_time + CLOSE_AT_MS, bar.close)]
    volume = Decimal(repr(bar.volume))
    share = (volume / len(points)).quantize(SIZE_STEP, ROUND_DOWN)
    sizes = [share] * (len(points) - 1) + [volume - share * (len(points) - 1)]
    first_id = open_time // MINUTE_MS * len(points)
    return [SimTrade(str(first_id + k), at, price, f"{size:f}")
            for k, ((at, price), size) in enumerate(zip(points, sizes, strict=True))]


def recent_trades(market: Market, symbol: str, until_ms: int, limit: int, since_ms: int | None = None
                  ) -> list[SimTrade]:
    """Newest first: at most `limit` trades at or before `until_ms` (and at or after `since_ms`)."""
    first_open = market.bars[symbol][0].open_time if market.bars[symbol] else until_ms + 1
    floor = first_open if since_ms is None else max(first_open, since_ms - since_ms % MINUTE_MS)
    found: list[SimTrade] = []
    open_time = until_ms - until_ms % MINUTE_MS
    while open_time >= floor and len(found) < limit:
        found += [t for t in reversed(candle_trades(market, symbol, open_time))
                  if t.time <= until_ms and (since_ms is None or t.time >= since_ms)]
        open_time -= MINUTE_MS
    return found[:limit]


def trade_json(symbol: str, trade: SimTrade) -> dict:
    return {"trade_id": trade.trade_id, "product_id": product_id(symbol), "price": repr(trade.price),
            "size": trade.size, "time": iso_time(trade.time), "side": "BUY", "bid": "", "ask": ""}


def candle_json(market: Market, symbol: str, open_time: int, now_ms: int) -> dict | None:
    """A ONE_MINUTE candle as Coinbase gives it; the one still trading from its trades so far."""
    trades = [t for t in candle_trades(market, symbol, open_time) if t.time <= now_ms]
    if not trades:
        return None
    prices = [t.price for t in trades]
    return {"start": str(open_time // 1000), "low": repr(min(prices)), "high": repr(max(prices)),
            "open": repr(prices[0]), "close": repr(prices[-1]),
            "volume": f"{sum(Decimal(t.size) for t in trades):f}"}


class CoinbaseSide:
    """Coinbase's endpoints of one ExchangeSim: its market, clock, client sockets and chaos."""

    def __init__(self, sim: ExchangeSim) -> None:
        self.sim, self.market = sim, sim.market
        self.symbols = {product_id(symbol): symbol for symbol in sim.symbols}

    def routes(self) -> list:
        return [
            Route(f"{BROKERAGE}/market/products", self.products),
            Route(f"{BROKERAGE}/market/products/{{product_id}}", self.product),
            Route(f"{BROKERAGE}/market/products/{{product_id}}/candles", self.candles),
            Route(f"{BROKERAGE}/market/products/{{product_id}}/ticker", self.market_trades),
            Route(f"{BROKERAGE}/time", self.time),
            Route(f"{REST}/v2/time", self.time_v2),
            Route(f"{REST}/v2/currencies", self.fiat_currencies),
            Route(f"{REST}/v2/currencies/crypto", self.crypto_currencies),
            Route(f"{REST}/v2/exchange-rates", self.exchange_rates),
            WebSocketRoute(WS, self.stream),
        ]

    # ----- REST ----------------------------------------------------------------------------------
    def refusal(self) -> Response | None:
        """Coinbase's answers instead of data: 503 while the exchange is away, 429 while rate limited."""
        chaos = self.sim.chaos
        if chaos.away_until > time.monotonic():
            return JSONResponse({"errors": [{"id": "internal_server_error", "message": "Internal error"}]},
                                status_code=503)
        if chaos.rate_limited > 0:
            chaos.rate_limited -= 1
            return JSONResponse({"errors": [{"id": "rate_limit_exceeded", "message": "Too many requests"}]},
                                status_code=429, headers={"Retry-After": "1"})
        return None

    def symbol_of(self, request: Request) -> str | Response:
        """The data symbol of the request's product, or what Coinbase answers instead: 429 while rate
        limited, 404 for a product it does not list."""
        if (refused := self.refusal()) is not None:
            return refused
        symbol = self.symbols.get(request.path_params["product_id"])
        if symbol is None:
            return JSONResponse({"error": "NOT_FOUND", "error_details": "ProductID is invalid",
                                 "message": "ProductID is invalid"}, status_code=404)
        return symbol

    def product_json(self, symbol: str) -> dict:
        base = symbol.removesuffix("USDT")
        partial = self.market.partial(symbol, self.market.now_ms())
        return {
            "product_id": product_id(symbol), "price": repr(partial[1]) if partial else "",
            "price_percentage_change_24h": "0", "volume_24h": "0", "volume_percentage_change_24h": "0",
            "base_increment": BASE_INCREMENT, "quote_increment": QUOTE_INCREMENT, "quote_min_size": "1",
            "quote_max_size": "150000000", "base_min_size": BASE_INCREMENT, "base_max_size": "3400",
            "base_name": NAMES.get(base, base), "quote_name": "US Dollar", "watched": False, "is_disabled": False,
            "new": False, "status": "online", "cancel_only": False, "limit_only": False, "post_only": False,
            "trading_disabled": False, "auction_mode": False, "product_type": "SPOT", "quote_currency_id": "USD",
            "base_currency_id": base, "fcm_trading_session_details": None, "mid_market_price": "", "alias": "",
            "alias_to": [], "base_display_symbol": base, "quote_display_symbol": "USD", "view_only": False,
            "price_increment": QUOTE_INCREMENT, "display_name": product_id(symbol), "product_venue": "CBE"}

    async def products(self, request: Request) -> Response:
        if (refused := self.refusal()) is not None:
            return refused
        spot = request.query_params.get("product_type", "SPOT") == "SPOT"
        listed = [self.product_json(symbol) for symbol in self.symbols.values()] if spot else []
        return JSONResponse({"products": listed, "num_products": len(listed)})

    async def product(self, request: Request) -> Response:
        symbol = self.symbol_of(request)
        return symbol if isinstance(symbol, Response) else JSONResponse(self.product_json(symbol))

    async def candles(self, request: Request) -> Response:
        symbol = self.symbol_of(request)
        if isinstance(symbol, Response):
            return symbol
        q = request.query_params
        if q.get("granularity") != "ONE_MINUTE":
            return _invalid(f"granularity {q.get('granularity')!r}: the simulator serves ONE_MINUTE")
        try:
            start_ms, end_ms = int(q["start"]) * 1000, int(q["end"]) * 1000
        except (KeyError, ValueError):
            return _invalid("start and end (Unix seconds) are required")
        first = start_ms + (-start_ms) % MINUTE_MS
        if (end_ms - first) // MINUTE_MS > MAX_CANDLES:
            return _invalid(f"number of candles requested should be less than {MAX_CANDLES}")
        now = self.market.now_ms()
        rows = [candle_json(self.market, symbol, open_time, now) for open_time in range(first, min(end_ms, now + 1),
                                                                                        MINUTE_MS)]
        return JSONResponse({"candles": [row for row in reversed(rows) if row is not None]})

    async def market_trades(self, request: Request) -> Response:
        symbol = self.symbol_of(request)
        if isinstance(symbol, Response):
            return symbol
        q = request.query_params
        now = self.market.now_ms()
        try:
            limit = int(q.get("limit", DEFAULT_LIMIT))
            since = int(q["start"]) * 1000 if "start" in q else None
            until = min(now, int(q["end"]) * 1000 - 1) if "end" in q else now
        except ValueError:
            return _invalid("limit, start and end are whole numbers")
        trades = recent_trades(self.market, symbol, until, min(limit, 1000), since)
        price = repr(trades[0].price) if trades else ""
        return JSONResponse({"trades": [trade_json(symbol, t) for t in trades], "best_bid": price, "best_ask": price})

    async def time(self, request: Request) -> Response:
        now = self.market.now_ms()
        return JSONResponse({"iso": iso_time(now), "epochSeconds": str(now // 1000), "epochMillis": str(now)})

    async def time_v2(self, request: Request) -> Response:
        now = self.market.now_ms()
        return JSONResponse({"data": {"iso": iso_time(now), "epoch": now // 1000}})

    async def fiat_currencies(self, request: Request) -> Response:
        return JSONResponse({"data": [{"id": "USD", "name": "US Dollar", "min_size": "0.01"}]})

    async def crypto_currencies(self, request: Request) -> Response:
        bases = [symbol.removesuffix("USDT") for symbol in self.symbols.values()]
        return JSONResponse({"data": [
            {"asset_id": f"sim-{base.lower()}", "code": base, "name": NAMES.get(base, base), "color": "#000000",
             "sort_index": str(i), "exponent": "8", "type": "crypto", "address_regex": ""}
            for i, base in enumerate(bases)]})

    async def exchange_rates(self, request: Request) -> Response:
        now = self.market.now_ms()
        rates = {}
        for symbol in self.symbols.values():
            if (partial := self.market.partial(symbol, now)) is not None:
                rates[symbol.removesuffix("USDT")] = repr(1 / partial[1])
        return JSONResponse({"data": {"currency": "USD", "rates": rates}})

    # ----- WebSocket -----------------------------------------------------------------------------
    async def stream(self, socket: WebSocket) -> None:
        if time.monotonic() < self.sim.chaos.refuse_until:
            await socket.close(code=1013)  # try again later
            return
        await socket.accept()
        self.sim.clients.add(socket)
        session = Session(self, socket)
        pusher = asyncio.create_task(session.push())
        try:
            while True:
                await session.on_request(json.loads(await socket.receive_text()))
        except (WebSocketDisconnect, RuntimeError, json.JSONDecodeError):
            pass
        finally:
            pusher.cancel()
            self.sim.clients.discard(socket)


class Session:
    """One WebSocket client: its subscriptions, where each product's trades stand, its message numbers."""

    def __init__(self, side: CoinbaseSide, socket: WebSocket) -> None:
        self.side, self.market, self.socket = side, side.market, socket
        self.trades_sent: dict[str, int] = {}  # product -> market time its trades were sent up to
        self.heartbeats: set[str] = set()
        self.sequence = 0
        self.sending = asyncio.Lock()  # a snapshot and the updates after it go out in order

    async def send(self, channel: str, events: list[dict]) -> None:
        await self.socket.send_text(json.dumps({
            "channel": channel, "client_id": "", "timestamp": iso_time(self.market.now_ms()),
            "sequence_num": self.sequence, "events": events}))
        self.sequence += 1

    async def on_request(self, request: dict) -> None:
        kind, channel = request.get("type"), request.get("channel")
        products = [p for p in request.get("product_ids") or [] if p in self.side.symbols]
        async with self.sending:
            if kind == "subscribe" and channel == "market_trades":
                now = self.market.now_ms()
                for product in products:
                    self.trades_sent[product] = now
                    symbol = self.side.symbols[product]
                    snapshot = recent_trades(self.market, symbol, now, SNAPSHOT_TRADES)
                    if snapshot:
                        await self.send("market_trades", [{"type": "snapshot",
                                                           "trades": [trade_json(symbol, t) for t in snapshot]}])
            elif kind == "subscribe" and channel == "heartbeats":
                self.heartbeats.update(products or ["*"])
            elif kind == "unsubscribe" and channel == "market_trades":
                for product in products:
                    self.trades_sent.pop(product, None)
            elif kind == "unsubscribe" and channel == "heartbeats":
                self.heartbeats.clear()
            elif kind not in ("subscribe", "unsubscribe"):
                await self.socket.send_text(json.dumps({"type": "error", "message": f"Failure to subscribe: "
                                                        f"unknown type {kind!r}"}))
                return
            await self.send("subscriptions", [{"subscriptions": {
                name: subscribed for name, subscribed in (("market_trades", sorted(self.trades_sent)),
                                                          ("heartbeats", sorted(self.heartbeats))) if subscribed}}])

    async def push(self) -> None:
        """Each product's trades as market time passes them; heartbeats once a second."""
        next_heartbeat, counter = time.monotonic(), 0
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
            while True:
                await asyncio.sleep(PUSH_EVERY_S)
                async with self.sending:
                    now = self.market.now_ms()
                    for product, sent in list(self.trades_sent.items()):
                        symbol = self.side.symbols[product]
                        fresh = recent_trades(self.market, symbol, now, 10_000, since_ms=sent + 1)
                        self.trades_sent[product] = now
                        if fresh:
                            await self.send("market_trades", [{"type": "update",
                                                               "trades": [trade_json(symbol, t) for t in fresh]}])
                    if self.heartbeats and time.monotonic() >= next_heartbeat:
                        next_heartbeat, counter = next_heartbeat + HEARTBEAT_S, counter + 1
                        clock = datetime.fromtimestamp(now / 1000, UTC)
                        await self.send("heartbeats", [{"current_time": f"{clock:%Y-%m-%d %H:%M:%S.%f} +0000 UTC",
                                                        "heartbeat_counter": str(counter)}])


def _invalid(message: str) -> Response:
    return JSONResponse({"error": "INVALID_ARGUMENT", "error_details": message, "message": message}, status_code=400)


def coinbase_routes(sim: ExchangeSim) -> list:
    """The Coinbase Advanced Trade routes, served beside Binance's."""
    return CoinbaseSide(sim).routes()
