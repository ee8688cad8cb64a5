"""A local exchange that speaks Binance's spot and USD-M futures wire formats over the bundled data, for
rehearsing live mode offline (`mesh exchange-sim`) and for testing the live feed with the real ccxt.
USD-M (`/fapi`, the `fstream` websockets, ccxt's `binanceusdm`) is tools.exchange_sim.usdm: positions,
leverage, isolated margin and funding settled from the bundled funding rates as market time passes them.
Coinbase Advanced Trade's public market data (ccxt's `coinbase`: products, candles and market trades over
REST, the `market_trades` WebSocket channel; BTCUSDT listed as BTC-USD) is tools.exchange_sim.coinbase.

Addresses: ccxt's API URLs are pointed at this server as http://HOST:PORT/<original host><original path>
(see meshtrader.marketdata.live.point_at), so `https://api.binance.com/api/v3/klines` is served at
`/api.binance.com/api/v3/klines` and the websocket `wss://stream.binance.com:9443/ws/0` at
`/stream.binance.com:9443/ws/0`.

Market time runs from the data's first candle at `speed` candles per second. Each candle trades along
open, nearer extreme, farther extreme, close; the websocket sends a kline update (and a trade) at each
of those points and the final kline (`"x": true`) at the close, so closed candles equal the data exactly.
The order book (`/api/v3/depth` and the `<symbol>@depth@100ms` diff stream, one update id per point) is
synthetic: 20 levels a side, 1 bp apart around the last price, sized from the candle's volume. Orders
meet this market's last trade in the mesh's own matching engine (see tools.exchange_sim.accounts).

Chaos, by `POST /admin/chaos {"action": ..., ...}` or `--chaos`:
- drop: close every websocket and refuse new ones for `seconds`;
- gap: keep the connection but send nothing for the next `minutes` candles;
- malformed: send each client a frame that is not valid JSON, and a kline with missing fields;
- bad_candle: the next final kline of each symbol has its high below its low;
- rate_limit: answer the next `count` REST requests with 429 and Retry-After;
- reject_orders / partial: see tools.exchange_sim.accounts (the signed order, account and trade endpoints);
- order_timeout: the next `count` orders execute but are answered 503 with Binance's -1007 ("execution
  status unknown");
- thin_book: the order book's sizes times `factor` (1 restores them);
- vanish: at the next order the exchange goes away for `seconds` (websockets closed, signed requests held
  unanswered, then 503): after the order executed, or with `"before": true` before it arrived.
All of them apply to USD-M's endpoints and streams as well (reject_orders refuses for insufficient margin).
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from meshtrader.domain.candles import Bar, intrabar_path
from meshtrader.domain.money import BP, FeeModel
from meshtrader.marketdata.files import find_candle_file, load_bars
from tools.exchange_sim.accounts import BinanceError, SimAccount, SimAccounts
from tools.exchange_sim.coinbase import coinbase_routes
from tools.exchange_sim.usdm import usdm_routes

MINUTE_MS = 60_000
REST = "/api.binance.com/api/v3"
WS = "/stream.binance.com:9443/ws"
WS_API = "/ws-api.binance.com:443/ws-api/v3"  # Binance's WebSocket API (the spot user-data stream)
MATCH_EVERY_S = 0.1  # how often resting orders meet the market and user-data events go out
PATH_FRACTIONS = (0.0, 1 / 3, 2 / 3)  # when the open, first and second extremes trade within a candle
SPOT_FILTERS = {
    "BTCUSDT": ("0.01", "0.00001"), "ETHUSDT": ("0.01", "0.0001"),
}
PointSender = Callable[[WebSocket, set[str], str, int], Awaitable[None]]  # (socket, subscriptions, symbol, at)
SignedAction = Callable[[SimAccount, dict[str, str]], object]  # a signed request's work: its JSON answer


def _num(x: float) -> str:
    return repr(float(x))


@dataclass
class Chaos:
    refuse_until: float = 0.0
    silent_minutes: int = 0
    silent_from_open: int = -1
    silent_until_open: int = -1
    malformed_pending: set = field(default_factory=set)
    bad_candle_symbols: set = field(default_factory=set)
    rate_limited: int = 0
    order_timeouts: int = 0  # the next N orders execute but are answered -1007 (execution status unknown)
    vanish_s: float = 0.0  # at the next order the exchange goes away this long without answering
    vanish_before: bool = False  # ... before the order reaches the matching engine (else after it executed)
    away_until: float = 0.0
    book_factor: float = 1.0  # thin_book: the order book's sizes times this


class Market:
    """The replayed market: a clock over the bundled bars."""

    def __init__(self, data_dir: Path, symbols: list[str], speed: float, start_index: int = 0) -> None:
        self.bars: dict[str, list[Bar]] = {}
        self.index: dict[str, dict[int, int]] = {}
        for symbol in symbols:
            bars, _ = load_bars(find_candle_file(data_dir, symbol))
            self.bars[symbol] = bars
            self.index[symbol] = {b.open_time: i for i, b in enumerate(bars)}
        first = min(b[start_index].open_time for b in self.bars.values())
        self.origin_ms = first
        self.speed = speed
        self.started = time.monotonic()

    def now_ms(self) -> int:
        return self.origin_ms + int((time.monotonic() - self.started) * self.speed * MINUTE_MS)

    def bar_at(self, symbol: str, open_time: int) -> Bar | None:
        i = self.index[symbol].get(open_time)
        return self.bars[symbol][i] if i is not None else None

    def path(self, symbol: str, open_time: int) -> list[tuple[int, float]]:
        """Where a candle trades (market time, price): its open and its extremes, at PATH_FRACTIONS of its
        minute (its close is the next candle's first point)."""
        bar = self.bar_at(symbol, open_time)
        if bar is None:
            return []
        return [(open_time + int(f * MINUTE_MS), price)
                for price, f in zip(intrabar_path(bar, 4), PATH_FRACTIONS, strict=False)]

    def closed_bars(self, symbol: str, start: int | None, end: int | None, limit: int) -> list[Bar]:
        now = self.now_ms()
        out = []
        for bar in self.bars[symbol]:
            if start is not None and bar.open_time < start:
                continue
            if bar.open_time + MINUTE_MS > now or (end is not None and bar.open_time > end):
                break
            out.append(bar)
            if len(out) >= limit:
                break
        return out

    def partial(self, symbol: str, at_ms: int) -> tuple[Bar, float] | None:
        """The candle trading at `at_ms` as it stands then, and its last traded price."""
        open_time = at_ms - at_ms % MINUTE_MS
        bar = self.bar_at(symbol, open_time)
        if bar is None:
            return None
        path = intrabar_path(bar, 4)
        fraction = (at_ms - open_time) / MINUTE_MS
        seen = [p for p, f in zip(path, PATH_FRACTIONS + (1.0,), strict=True) if f <= fraction] or path[:1]
        part = Bar(open_time, bar.open, max(seen), min(seen), seen[-1], bar.volume * fraction)
        return part, seen[-1]


BOOK_LEVELS = 20
BOOK_SPACING = Decimal("0.0001")  # 1 bp between levels
BOOK_SHARE = 0.1  # each side holds a tenth of the candle's volume, more of it further from the price
POINT_MS = MINUTE_MS // 3  # market time between the stream's points (kline updates, trades, book updates)


def book_at(market: Market, symbol: str, point_ms: int, factor: float) -> tuple[list, list] | None:
    """The simulated order book at a point: BOOK_LEVELS levels a side, 1 bp apart around the last traded
    price, sized from the candle's volume. Synthetic: the bundled data has no depth."""
    traded = market.partial(symbol, point_ms)
    if traded is None:
        return None
    bar, price = traded[0], Decimal(repr(traded[1]))
    full = market.bar_at(symbol, bar.open_time) or bar
    tick, step = (Decimal(x) for x in SPOT_FILTERS.get(symbol, ("0.01", "0.0001")))
    bids, asks = [], []
    for k in range(1, BOOK_LEVELS + 1):
        size = Decimal(repr(full.volume * BOOK_SHARE * factor * k / 210))
        qty = str(max(step, (size // step) * step).quantize(step))
        asks.append([str(((price * (1 + k * BOOK_SPACING)) / tick).to_integral_value(ROUND_CEILING) * tick), qty])
        bids.append([str(((price * (1 - k * BOOK_SPACING)) / tick).to_integral_value(ROUND_FLOOR) * tick), qty])
    return bids, asks


def book_diff(before: list, after: list) -> list:
    """Binance's diff-depth levels: every level of the new book, and the old ones gone at quantity 0."""
    gone = {p for p, _ in before} - {p for p, _ in after}
    return after + [[p, "0"] for p in sorted(gone)]


def kline_json(symbol: str, bar: Bar, closed: bool, event_ms: int) -> dict:
    return {"e": "kline", "E": event_ms, "s": symbol, "k": {
        "t": bar.open_time, "T": bar.open_time + MINUTE_MS - 1, "s": symbol, "i": "1m", "f": 0, "L": 0,
        "o": _num(bar.open), "c": _num(bar.close), "h": _num(bar.high), "l": _num(bar.low),
        "v": _num(bar.volume), "n": 4, "x": closed, "q": "0", "V": "0", "Q": "0", "B": "0"}}


def rest_kline(bar: Bar) -> list:
    return [bar.open_time, _num(bar.open), _num(bar.high), _num(bar.low), _num(bar.close), _num(bar.volume),
            bar.open_time + MINUTE_MS - 1, "0", 4, "0", "0", "0"]


def commission_bp(rate: Decimal) -> int | float:
    """A fee rate as Binance's account endpoint states it: in bp, a whole number when it is one."""
    bp = rate / BP
    return int(bp) if bp == bp.to_integral_value() else float(bp)


class ExchangeSim:
    def __init__(self, data_dir: Path, symbols: list[str], speed: float, fees: FeeModel, chaos_every_s: float = 0.0,
                 credentials: dict[str, str] | None = None, balance: Decimal = Decimal("100000")) -> None:
        self.market = Market(data_dir, symbols, speed)
        self.data_dir = data_dir  # USD-M reads its funding rates and instruments beside the candles
        self.accounts = SimAccounts(credentials or {}, {"USDT": balance}, fees)
        self.symbols = symbols
        self.chaos = Chaos()
        self.chaos_every_s = chaos_every_s
        self.clients: set[WebSocket] = set()
        self.user_streams: list[tuple[WebSocket, int, SimAccount]] = []  # (socket, subscription id, account)
        self.subscription_ids = itertools.count()
        self.trade_ids = 0
        self.app = Starlette(routes=[
            Route(f"{REST}/ping", self.ping), Route(f"{REST}/time", self.server_time),
            Route(f"{REST}/exchangeInfo", self.exchange_info), Route(f"{REST}/klines", self.klines),
            Route(f"{REST}/trades", self.trades), Route(f"{REST}/ticker/24hr", self.ticker),
            Route(f"{REST}/depth", self.depth),
            Route(f"{REST}/order", self.order, methods=["GET", "POST", "DELETE"]),
            Route(f"{REST}/openOrders", self.open_orders), Route(f"{REST}/account", self.account),
            Route(f"{REST}/myTrades", self.my_trades),
            Route("/admin/chaos", self.admin_chaos, methods=["POST"]), Route("/admin/state", self.admin_state),
            Route("/admin/accounts", self.admin_accounts),
            WebSocketRoute(WS + "/{stream}", self.stream), WebSocketRoute(WS_API, self.ws_api),
            *usdm_routes(self), *coinbase_routes(self),
        ], lifespan=self.lifespan)

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        tasks = [asyncio.create_task(self.match()), asyncio.create_task(self.usdm.run())]
        if self.chaos_every_s:
            tasks.append(asyncio.create_task(self.periodic_chaos()))
        yield
        for task in tasks:
            task.cancel()

    # ----- REST ----------------------------------------------------------------------------------
    def limited(self) -> Response | None:
        if self.chaos.away_until > time.monotonic():
            return JSONResponse({"code": -1001, "msg": "Internal error; unable to process your request. "
                                 "Please try again."}, status_code=503)
        if self.chaos.rate_limited > 0:
            self.chaos.rate_limited -= 1
            return JSONResponse({"code": -1003, "msg": "Too many requests; current limit is 6000 request weight "
                                 "per 1 MINUTE."}, status_code=429, headers={"Retry-After": "1"})
        return None

    def refusal(self, request: Request) -> Response | None:
        """What Binance answers instead of market data: 429 while rate limited, 400 for a bad symbol."""
        if (limited := self.limited()) is not None:
            return limited
        if request.query_params.get("symbol", "") not in self.market.bars:
            return JSONResponse({"code": -1121, "msg": "Invalid symbol."}, status_code=400)
        return None

    async def ping(self, request: Request) -> Response:
        return self.limited() or JSONResponse({})

    async def server_time(self, request: Request) -> Response:
        return self.limited() or JSONResponse({"serverTime": self.market.now_ms()})

    async def exchange_info(self, request: Request) -> Response:
        if (limited := self.limited()) is not None:
            return limited
        symbols = []
        for symbol in self.symbols:
            tick, step = SPOT_FILTERS.get(symbol, ("0.01", "0.0001"))
            base = symbol.removesuffix("USDT")
            symbols.append({
                "symbol": symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
                "quoteAsset": "USDT", "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
                "quoteCommissionPrecision": 8, "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
                "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True, "quoteOrderQtyMarketAllowed": True,
                "allowTrailingStop": True, "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": False, "permissions": [], "permissionSets": [["SPOT"]],
                "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00", "tickSize": tick},
                    {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000.00000000", "stepSize": step},
                    {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
                     "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
                ]})
        return JSONResponse({"timezone": "UTC", "serverTime": self.market.now_ms(), "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}],
            "exchangeFilters": [], "symbols": symbols})

    async def klines(self, request: Request) -> Response:
        if (refused := self.refusal(request)) is not None:
            return refused
        symbol = request.query_params["symbol"]
        if request.query_params.get("interval") != "1m":
            return JSONResponse({"code": -1120, "msg": "Invalid interval."}, status_code=400)
        q = request.query_params
        limit = min(int(q.get("limit", 500)), 1000)
        start = int(q["startTime"]) if "startTime" in q else None
        end = int(q["endTime"]) if "endTime" in q else None
        bars = self.market.closed_bars(symbol, start, end, limit) if start is not None else \
            self.market.closed_bars(symbol, self.market.now_ms() - limit * MINUTE_MS, end, limit)
        rows = [rest_kline(b) for b in bars]
        partial = self.market.partial(symbol, self.market.now_ms())
        if partial and len(rows) < limit and (end is None or partial[0].open_time <= end):
            rows.append(rest_kline(partial[0]))  # Binance includes the candle still trading
        return JSONResponse(rows)

    async def trades(self, request: Request) -> Response:
        if (refused := self.refusal(request)) is not None:
            return refused
        symbol = request.query_params["symbol"]
        partial = self.market.partial(symbol, self.market.now_ms())
        price = partial[1] if partial else 0.0
        self.trade_ids += 1
        return JSONResponse([{"id": self.trade_ids, "price": _num(price), "qty": "0.001", "quoteQty": _num(price / 1000),
                              "time": self.market.now_ms(), "isBuyerMaker": False, "isBestMatch": True}])

    async def depth(self, request: Request) -> Response:
        """The book snapshot a diff-depth subscriber starts from: `lastUpdateId` is the stream's id."""
        if (refused := self.refusal(request)) is not None:
            return refused
        point = self.market.now_ms() // POINT_MS
        book = book_at(self.market, request.query_params["symbol"], point * POINT_MS, self.chaos.book_factor)
        bids, asks = book or ([], [])
        limit = int(request.query_params.get("limit", 100))
        return JSONResponse({"lastUpdateId": point, "bids": bids[:limit], "asks": asks[:limit]})

    async def ticker(self, request: Request) -> Response:
        if (refused := self.refusal(request)) is not None:
            return refused
        symbol = request.query_params["symbol"]
        now = self.market.now_ms()
        bar, price = self.market.partial(symbol, now)
        return JSONResponse({"symbol": symbol, "priceChange": "0", "priceChangePercent": "0",
                             "weightedAvgPrice": _num(price), "prevClosePrice": _num(bar.open), "lastPrice": _num(price),
                             "lastQty": "0.001", "bidPrice": _num(price), "bidQty": "1", "askPrice": _num(price),
                             "askQty": "1", "openPrice": _num(bar.open), "highPrice": _num(bar.high),
                             "lowPrice": _num(bar.low), "volume": _num(bar.volume), "quoteVolume": "0",
                             "openTime": now - 86_400_000, "closeTime": now, "firstId": 0, "lastId": 0, "count": 0})

    # ----- websocket -----------------------------------------------------------------------------
    async def stream(self, socket: WebSocket, send_point: PointSender | None = None) -> None:
        """A market-data websocket: SUBSCRIBE / UNSUBSCRIBE, and `send_point` (spot's, unless given) at each
        traded point of each candle."""
        if time.monotonic() < self.chaos.refuse_until:
            await socket.close(code=1013)  # try again later
            return
        await socket.accept()
        self.clients.add(socket)
        subscriptions: set[str] = set()
        sender = asyncio.create_task(self.push(socket, subscriptions, send_point or self.send_point))
        try:
            while True:
                request = json.loads(await socket.receive_text())
                if request.get("method") == "SUBSCRIBE":
                    subscriptions.update(request.get("params", []))
                elif request.get("method") == "UNSUBSCRIBE":
                    subscriptions.difference_update(request.get("params", []))
                await socket.send_text(json.dumps({"result": None, "id": request.get("id")}))
        except (WebSocketDisconnect, RuntimeError, json.JSONDecodeError):
            pass
        finally:
            sender.cancel()
            self.clients.discard(socket)

    async def push(self, socket: WebSocket, subscriptions: set[str], send_point: PointSender) -> None:
        """Send kline, trade and depth events as market time crosses each traded point of each candle."""
        step_ms = POINT_MS
        cursor = self.market.now_ms()
        try:
            while True:
                now = self.market.now_ms()
                points = []
                point = cursor - cursor % step_ms + step_ms
                while point <= now:
                    points.append(int(point))
                    point += step_ms
                cursor = now
                for at in points:
                    for symbol in self.symbols:
                        await send_point(socket, subscriptions, symbol, at)
                await asyncio.sleep(min(0.05, step_ms / MINUTE_MS / self.market.speed / 2))
        except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
            return

    async def send_point(self, socket: WebSocket, subscriptions: set[str], symbol: str, at: int) -> None:
        lower = symbol.lower()
        if f"{lower}@depth@100ms" in subscriptions or f"{lower}@depth" in subscriptions:
            await self.send_depth(socket, symbol, at)
        open_time = at - at % MINUTE_MS
        if at % MINUTE_MS == 0:  # a candle closes: its final kline, then the new one opens
            closed_open = open_time - MINUTE_MS
            if self.silenced(closed_open):
                return
            final = self.market.bar_at(symbol, closed_open)
            if final is not None and f"{lower}@kline_1m" in subscriptions:
                if symbol in self.chaos.bad_candle_symbols:
                    self.chaos.bad_candle_symbols.discard(symbol)
                    final = final._replace(high=final.low * 0.99)
                await socket.send_text(json.dumps(kline_json(symbol, final, True, at)))
        if self.chaos.silent_minutes:  # silence the rest of this candle and the next `minutes`
            self.chaos.silent_from_open = open_time
            self.chaos.silent_until_open = open_time + self.chaos.silent_minutes * MINUTE_MS
            self.chaos.silent_minutes = 0
        if self.silenced(open_time):
            return
        if socket in self.chaos.malformed_pending:
            self.chaos.malformed_pending.discard(socket)
            await socket.send_text("{not json")
            await socket.send_text(json.dumps({"e": "kline", "E": at, "s": symbol, "k": {"t": "soon"}}))
        partial = self.market.partial(symbol, at)
        if partial is None:
            return
        bar, price = partial
        if f"{lower}@kline_1m" in subscriptions:
            await socket.send_text(json.dumps(kline_json(symbol, bar, False, at)))
        if f"{lower}@trade" in subscriptions:
            self.trade_ids += 1
            await socket.send_text(json.dumps({"e": "trade", "E": at, "s": symbol, "t": self.trade_ids,
                                               "p": _num(price), "q": "0.001", "T": at, "m": False, "M": True}))

    async def send_depth(self, socket: WebSocket, symbol: str, at: int) -> None:
        """One diff-depth event per point, its update id the point's number, so every subscriber and the
        REST snapshot agree on the sequence."""
        point = at // POINT_MS
        before = book_at(self.market, symbol, (point - 1) * POINT_MS, self.chaos.book_factor)
        after = book_at(self.market, symbol, point * POINT_MS, self.chaos.book_factor)
        if after is None:
            return
        before = before or ([], [])
        await socket.send_text(json.dumps({"e": "depthUpdate", "E": at, "s": symbol, "U": point, "u": point,
                                           "b": book_diff(before[0], after[0]), "a": book_diff(before[1], after[1])}))

    # ----- chaos ---------------------------------------------------------------------------------
    def silenced(self, open_time: int) -> bool:
        return self.chaos.silent_from_open <= open_time <= self.chaos.silent_until_open

    # ----- signed endpoints: orders, account, trades --------------------------------------------------
    async def signed(self, request: Request) -> tuple[SimAccount, dict[str, str]]:
        raw = request.url.query if request.method in ("GET", "DELETE") else (await request.body()).decode()
        account, params = self.accounts.authenticate(request.headers.get("X-MBX-APIKEY"), raw)
        self.cross_resting()
        return account, params

    def cross_resting(self) -> None:
        """Resting orders the market traded through fill now."""
        now = self.market.now_ms()
        for symbol in self.symbols:
            if (price := self.price(symbol, now)) is not None:
                self.accounts.cross(symbol, price, now)

    async def match(self) -> None:
        """The matching engine's clock: resting orders meet the market, user-data events go out."""
        while True:
            await asyncio.sleep(MATCH_EVERY_S)
            if self.chaos.away_until > time.monotonic():
                continue
            self.cross_resting()
            await self.send_user_events()

    async def send_user_events(self) -> None:
        for account in self.accounts.accounts.values():
            events, account.events = account.events, []
            for socket, subscription, owner in list(self.user_streams):
                if owner is not account:
                    continue
                try:
                    for event in events:
                        await socket.send_text(json.dumps({"subscriptionId": subscription, "event": event}))
                except (WebSocketDisconnect, RuntimeError):
                    self.user_streams.remove((socket, subscription, owner))

    async def ws_api(self, socket: WebSocket) -> None:
        """Binance's WebSocket API, the part a trader's user-data stream needs:
        `userDataStream.subscribe.signature`, then every executionReport of the account."""
        if time.monotonic() < self.chaos.refuse_until:
            await socket.close(code=1013)
            return
        await socket.accept()
        self.clients.add(socket)
        try:
            while True:
                request = json.loads(await socket.receive_text())
                answer = self.ws_api_call(socket, request.get("method"), request.get("params") or {})
                await socket.send_text(json.dumps({"id": request.get("id"), **answer}))
        except (WebSocketDisconnect, RuntimeError, json.JSONDecodeError):
            pass
        finally:
            self.clients.discard(socket)
            self.user_streams = [s for s in self.user_streams if s[0] is not socket]

    def ws_api_call(self, socket: WebSocket, method: str | None, params: dict) -> dict:
        if method == "userDataStream.subscribe.signature":
            try:
                account = self.accounts.authenticate_ws(params)
            except BinanceError as error:
                return {"status": error.status, "error": {"code": error.code, "msg": error.msg}}
            subscription = next(self.subscription_ids)
            self.user_streams.append((socket, subscription, account))
            return {"status": 200, "result": {"subscriptionId": subscription}}
        if method == "userDataStream.unsubscribe":
            self.user_streams = [s for s in self.user_streams
                                 if s[0] is not socket or s[1] != params.get("subscriptionId", s[1])]
            return {"status": 200, "result": {}}
        if method == "ping":
            return {"status": 200, "result": {}}
        return {"status": 400, "error": {"code": -1100, "msg": f"Unknown method {method!r}."}}

    def price(self, symbol: str, at_ms: int) -> Decimal | None:
        traded = self.market.partial(symbol, at_ms)
        return Decimal(repr(traded[1])) if traded else None

    async def private(self, request: Request, action: SignedAction) -> Response:
        if (away := self.chaos.away_until - time.monotonic()) > 0:  # gone: hold the request, then fail it
            await asyncio.sleep(away)
            return JSONResponse({"code": -1001, "msg": "Internal error; unable to process your request. "
                                 "Please try again."}, status_code=503)
        if (limited := self.limited()) is not None:
            return limited
        try:
            account, params = await self.signed(request)
            answer = JSONResponse(action(account, params))
            await self.send_user_events()
            return answer
        except BinanceError as error:
            return JSONResponse({"code": error.code, "msg": error.msg}, status_code=error.status)

    async def order(self, request: Request) -> Response:
        def act(account: SimAccount, params: dict[str, str]):
            if params.get("symbol") not in self.market.bars:
                raise BinanceError(400, -1121, "Invalid symbol.")
            now = self.market.now_ms()
            if request.method == "GET":
                return self.accounts.view(self.accounts.find(account, params))
            if request.method == "DELETE":
                return self.accounts.view(self.accounts.cancel(account, params, now))
            tick, step = SPOT_FILTERS.get(params["symbol"], ("0.01", "0.0001"))
            return self.accounts.place(account, params, self.price(params["symbol"], now), now,
                                       (Decimal(tick), Decimal(step)))

        return await self.order_with_chaos(request, act)

    async def order_with_chaos(self, request: Request, act: SignedAction) -> Response:
        """An order request (place, query, cancel; spot's or USD-M's `act`) through the order chaos: vanish
        before or after a new order reaches the matching engine, or its answer lost (-1007)."""
        if request.method == "POST" and self.chaos.vanish_s and self.chaos.vanish_before:
            seconds, self.chaos.vanish_s = self.chaos.vanish_s, 0.0
            await self.go_away(seconds)  # the order is lost on the way in
        response = await self.private(request, act)
        if request.method != "POST" or response.status_code != 200:
            return response
        if self.chaos.order_timeouts > 0:  # Binance's own answer when its matching engine is slow
            self.chaos.order_timeouts -= 1
            return JSONResponse({"code": -1007, "msg": "Timeout waiting for response from backend server. Send "
                                 "status unknown; execution status unknown."}, status_code=503)
        if self.chaos.vanish_s:  # the order is in; its answer never comes, and nothing answers for a while
            seconds, self.chaos.vanish_s = self.chaos.vanish_s, 0.0
            await self.go_away(seconds)
            await asyncio.sleep(seconds)
        return response

    async def open_orders(self, request: Request) -> Response:
        return await self.private(request, lambda account, params: self.accounts.open_orders(
            account, params.get("symbol")))

    async def account(self, request: Request) -> Response:
        return await self.private(request, lambda account, params: {
            "makerCommission": commission_bp(self.accounts.fees.maker),
            "takerCommission": commission_bp(self.accounts.fees.taker), "canTrade": True, "canWithdraw": False,
            "canDeposit": False,
            "updateTime": self.market.now_ms(), "accountType": "SPOT", "balances": self.accounts.balances(account),
            "permissions": ["SPOT"]})

    async def my_trades(self, request: Request) -> Response:
        def act(account: SimAccount, params: dict[str, str]):
            trades = [t for t in account.trades if t["symbol"] == params.get("symbol")
                      and ("orderId" not in params or t["orderId"] == int(params["orderId"]))
                      and t["time"] >= int(params.get("startTime", 0))]
            return trades[-int(params.get("limit", 500)):]

        return await self.private(request, act)

    async def admin_accounts(self, request: Request) -> Response:
        """Balances per API key (by the key's first characters only): for tests and rehearsals."""
        return JSONResponse({key[:4] + "...": {a: str(v) for a, v in acc.balances.items()}
                             for key, acc in self.accounts.accounts.items()})

    async def admin_chaos(self, request: Request) -> Response:
        body = await request.json()
        action = body.get("action")
        if action == "drop":
            await self.drop_sockets(float(body.get("seconds", 3)))
        elif action == "gap":
            self.chaos.silent_minutes = int(body.get("minutes", 3))
        elif action == "malformed":
            self.chaos.malformed_pending = set(self.clients)
        elif action == "bad_candle":
            self.chaos.bad_candle_symbols = set(self.symbols)
        elif action == "rate_limit":
            self.chaos.rate_limited = int(body.get("count", 3))
        elif action == "reject_orders":
            self.accounts.reject_next = int(body.get("count", 1))
        elif action == "partial":
            self.accounts.partial_next = int(body.get("count", 1))
        elif action == "thin_book":
            self.chaos.book_factor = float(body.get("factor", 0.01))
        elif action == "order_timeout":
            self.chaos.order_timeouts = int(body.get("count", 1))
        elif action == "vanish":
            self.chaos.vanish_s = float(body.get("seconds", 5))
            self.chaos.vanish_before = bool(body.get("before", False))
        else:
            return JSONResponse({"error": f"unknown action {action!r}; use drop, gap, malformed, bad_candle, "
                                          "rate_limit, reject_orders, partial, order_timeout, vanish, thin_book"},
                                status_code=400)
        return JSONResponse({"ok": True, "action": action, "market_time": self.market.now_ms()})

    async def admin_state(self, request: Request) -> Response:
        return JSONResponse({"market_time": self.market.now_ms(), "clients": len(self.clients),
                             "user_streams": len(self.user_streams), "symbols": self.symbols,
                             "speed": self.market.speed})

    async def periodic_chaos(self) -> None:
        while True:
            await asyncio.sleep(self.chaos_every_s)
            await self.drop_sockets(3)

    async def drop_sockets(self, seconds: float) -> None:
        """Close every websocket and refuse new ones for `seconds`."""
        self.chaos.refuse_until = time.monotonic() + seconds
        for socket in list(self.clients):
            with contextlib.suppress(Exception):
                await socket.close(code=1012)

    async def go_away(self, seconds: float) -> None:
        """The whole exchange down for `seconds`: sockets closed, signed requests unanswered until then."""
        self.chaos.away_until = time.monotonic() + seconds
        await self.drop_sockets(seconds)


def serve(port: int, data_dir: Path, symbols: list[str], speed: float, fees: FeeModel, chaos_every_s: float = 0.0,
          host: str = "127.0.0.1") -> None:
    import os

    import uvicorn

    # The simulator's account: the same variables the executor reads its credentials from, so a mesh and
    # its simulator started in one environment agree. Not real keys: nothing leaves 127.0.0.1.
    key, secret = os.environ.get("BINANCE_API_KEY"), os.environ.get("BINANCE_API_SECRET")
    sim = ExchangeSim(data_dir, symbols, speed, fees, chaos_every_s, {key: secret} if key and secret else None)
    chaos = f"  chaos: connections dropped every {chaos_every_s}s" if chaos_every_s else ""
    print(f"exchange simulator (Binance spot and USD-M, Coinbase Advanced Trade wire formats) on http://{host}:{port}  symbols {', '.join(symbols)}  "
          f"speed {speed} candles/s{chaos}", flush=True)
    uvicorn.run(sim.app, host=host, port=port, log_level="warning", ws_ping_interval=20)
