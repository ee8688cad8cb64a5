"""Binance USD-M futures (fapi/fstream) wire formats of the exchange simulator, served beside spot's, for
ccxt's `binanceusdm` (sync and ccxt.pro) through meshtrader.marketdata.live.point_at.

Hosts: the REST API under every host ccxt knows for USD-M (production fapi.binance.com, the testnet
testnet.binancefuture.com and demo-fapi.binance.com), so `https://fapi.binance.com/fapi/v1/order` is
served at `/fapi.binance.com/fapi/v1/order`; the websockets under fstream.binance.com and
fstream.binancefuture.com: market streams at `/<host>/market/ws/<n>`, `/<host>/public/ws/<n>` and the
legacy `/<host>/ws/<n>` (kline_1m, trade, aggTrade, markPrice and depth, by SUBSCRIBE), the user-data
stream at `/<host>/private/ws?listenKey=<key>` (or the legacy `/<host>/ws/<key>`).

Market data is spot's (the same replayed candles: klines, depth, trades, the 24h ticker, through spot's
handlers and their chaos); the mark price is the last trade price. Funding: each symbol's bundled funding
file (`*<SYMBOL>_funding_*.csv[.gz]`) is settled at each of its timestamps as market time passes it, at
the mark then, on every open position (FUNDING_FEE income, and an ACCOUNT_UPDATE); `premiumIndex` shows
the rate of the next settlement and its time. A symbol without a funding file has no funding, and none is
settled after a file's last timestamp. Instruments are the data's instruments.json (`usdm`); leverage
brackets Binance's published ones for BTCUSDT and ETHUSDT. Accounts, positions and their accounting:
tools.exchange_sim.futures_accounts. Signed requests are checked exactly as spot's are (HMAC-SHA256,
X-MBX-APIKEY, timestamp within recvWindow) and go through the same chaos.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from meshtrader.domain.instruments import Instrument, conservative_instrument
from meshtrader.domain.money import ZERO
from meshtrader.marketdata.files import find_series_file, load_data_instruments, load_rows
from tools.exchange_sim.accounts import BinanceError, SimAccount
from tools.exchange_sim.futures_accounts import FuturesAccount, FuturesAccounts, brackets_of, max_notional, text

if TYPE_CHECKING:
    from tools.exchange_sim.server import ExchangeSim

FAPI_HOSTS = ("fapi.binance.com", "testnet.binancefuture.com", "demo-fapi.binance.com")
FSTREAM_HOSTS = ("fstream.binance.com", "fstream.binancefuture.com")
MINUTE_MS = 60_000
CLOCK_S = 0.1  # how often funding is settled, resting orders meet the market and user-data events go out
V2_ONLY = {"leverage", "maxNotionalValue", "marginType", "isAutoAddMargin", "isolated"}  # positionRisk's fields
V3_ONLY = {"initialMargin", "maintMargin", "positionInitialMargin", "openOrderInitialMargin", "adl", "bidNotional",
           "askNotional", "marginAsset"}
FuturesAction = Callable[[FuturesAccount, dict[str, str]], object]


def usdm_routes(sim: ExchangeSim) -> list[BaseRoute]:
    """The USD-M routes, served beside spot's; the exchange is `sim.usdm` (its clock runs in sim's lifespan)."""
    sim.usdm = UsdmExchange(sim)
    return sim.usdm.routes()


def _number(amount: Decimal) -> int | float:
    """A bracket figure as Binance's leverageBracket writes it: a JSON number."""
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def _decimals(step: Decimal) -> int:
    return max(0, -step.normalize().as_tuple().exponent)


def funding_rates(sim: ExchangeSim, symbol: str) -> list[tuple[int, Decimal]]:
    """The symbol's funding settlements (time, rate) from the data's funding file, exact; none without one."""
    path = find_series_file(sim.data_dir, symbol, "funding")
    rows = load_rows(path, ("timestamp_ms", "funding_rate")) if path else []
    return sorted((int(row[0]), Decimal(row[1])) for row in rows)


class UsdmExchange:
    """The USD-M side of the simulated exchange: its routes, accounts, funding clock and user-data streams."""

    def __init__(self, sim: ExchangeSim) -> None:
        self.sim = sim
        deposit = next((a.balances.get("USDT", ZERO) for a in sim.accounts.accounts.values()), ZERO)
        self.accounts = FuturesAccounts(sim.accounts, deposit, sim.accounts.fees, sim.market.origin_ms)
        self.key_of = {id(account): key for key, account in sim.accounts.accounts.items()}
        instruments = load_data_instruments(sim.data_dir, "usdm")
        self.specs: dict[str, Instrument] = {s: instruments.get(s) or conservative_instrument(s, "usdm")
                                             for s in sim.symbols}
        self.funding = {symbol: funding_rates(sim, symbol) for symbol in sim.symbols}
        self.settled_ms = sim.market.origin_ms  # funding up to here is settled
        self.listen_keys: dict[str, FuturesAccount] = {}
        self.user_streams: list[tuple[WebSocket, FuturesAccount]] = []
        self.sending = asyncio.Lock()  # user-data events go out in the order they happened

    def routes(self) -> list[BaseRoute]:
        sim = self.sim
        public = {"ping": sim.ping, "time": sim.server_time, "klines": sim.klines, "depth": sim.depth,
                  "trades": sim.trades, "ticker/24hr": sim.ticker, "exchangeInfo": self.exchange_info,
                  "premiumIndex": self.premium_index, "fundingRate": self.funding_history}
        signed = {"leverageBracket": self.leverage_bracket, "openOrders": self.open_orders,
                  "userTrades": self.user_trades, "income": self.income, "commissionRate": self.commission_rate,
                  "symbolConfig": self.symbol_config, "positionSide/dual": self.position_mode}
        versioned = {"positionRisk": self.position_risk, "account": self.account, "balance": self.balance}
        routes: list[BaseRoute] = []
        for host in FAPI_HOSTS:
            v1 = f"/{host}/fapi/v1"
            routes += [Route(f"{v1}/{name}", endpoint) for name, endpoint in {**public, **signed}.items()]
            routes += [Route(f"/{host}/fapi/{version}/{name}", endpoint)
                       for version in ("v2", "v3") for name, endpoint in versioned.items()]
            routes += [Route(f"{v1}/order", self.order, methods=["GET", "POST", "DELETE"]),
                       Route(f"{v1}/leverage", self.leverage, methods=["POST"]),
                       Route(f"{v1}/marginType", self.margin_type, methods=["POST"]),
                       Route(f"{v1}/listenKey", self.listen_key, methods=["POST", "PUT", "DELETE"])]
        for host in FSTREAM_HOSTS:
            routes += [WebSocketRoute(f"/{host}/{category}/ws/{{stream}}", self.market_stream)
                       for category in ("market", "public")]
            routes += [WebSocketRoute(f"/{host}/private/ws", self.user_stream),
                       WebSocketRoute(f"/{host}/ws/{{stream}}", self.legacy_stream)]
        return routes

    # ----- the clock --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Funding settlements, resting orders meeting the market and user-data events, as time passes."""
        while True:
            await asyncio.sleep(CLOCK_S)
            if self.sim.chaos.away_until > time.monotonic():
                continue
            self.advance()
            await self.send_user_events()

    def advance(self) -> None:
        """Bring the accounts to market time: every funding settlement passed since, then the resting
        orders the last trade goes through."""
        now = self.sim.market.now_ms()
        for symbol, rates in self.funding.items():
            for settled_at, rate in rates:
                if self.settled_ms < settled_at <= now and (mark := self.sim.price(symbol, settled_at)) is not None:
                    self.accounts.settle_funding(symbol, settled_at, rate, mark)
        self.settled_ms = max(self.settled_ms, now)
        for symbol in self.sim.symbols:
            if (price := self.sim.price(symbol, now)) is not None:
                self.accounts.cross(symbol, price, now)

    def marks(self) -> dict[str, Decimal]:
        now = self.sim.market.now_ms()
        return {s: mark for s in self.sim.symbols if (mark := self.sim.price(s, now)) is not None}

    def next_funding(self, symbol: str) -> tuple[int, Decimal] | None:
        now = self.sim.market.now_ms()
        return next(((t, rate) for t, rate in self.funding[symbol] if t > now), None)

    # ----- public REST ------------------------------------------------------------------------------
    async def exchange_info(self, request: Request) -> Response:
        if (limited := self.sim.limited()) is not None:
            return limited
        symbols = []
        for symbol, spec in self.specs.items():
            tick, step = text(spec.price_tick), text(spec.qty_step)
            symbols.append({
                "symbol": symbol, "pair": symbol, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
                "onboardDate": 1569398400000, "status": "TRADING", "baseAsset": symbol.removesuffix("USDT"),
                "quoteAsset": "USDT", "marginAsset": "USDT", "pricePrecision": _decimals(spec.price_tick),
                "quantityPrecision": _decimals(spec.qty_step), "baseAssetPrecision": 8, "quotePrecision": 8,
                "underlyingType": "COIN", "underlyingSubType": [], "settlePlan": 0, "triggerProtect": "0.0500",
                "liquidationFee": "0.012500", "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
                "orderTypes": ["LIMIT", "MARKET"], "timeInForce": ["GTC"],
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "4529764", "tickSize": tick},
                    {"filterType": "LOT_SIZE", "minQty": text(spec.min_qty), "maxQty": "1000", "stepSize": step},
                    {"filterType": "MARKET_LOT_SIZE", "minQty": text(spec.min_qty), "maxQty": "120",
                     "stepSize": step},
                    {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                    {"filterType": "MIN_NOTIONAL", "notional": text(spec.min_notional)},
                    {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
                     "multiplierDecimal": "4"}]})
        return JSONResponse({"timezone": "UTC", "serverTime": self.sim.market.now_ms(), "futuresType": "U_MARGINED",
                             "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                                             "intervalNum": 1, "limit": 2400}],
                             "exchangeFilters": [], "assets": [{"asset": "USDT", "marginAvailable": True}],
                             "symbols": symbols})

    def asked_symbols(self, request: Request) -> list[str]:
        """The symbol a request names, or every symbol when it names none; BinanceError for an unknown one."""
        symbol = request.query_params.get("symbol")
        if symbol is not None and symbol not in self.specs:
            raise BinanceError(400, -1121, "Invalid symbol.")
        return [symbol] if symbol else list(self.specs)

    async def public(self, request: Request, answer: Callable[[list[str]], object]) -> Response:
        """A public market-data answer for the symbols asked, through spot's rate-limit chaos."""
        if (limited := self.sim.limited()) is not None:
            return limited
        try:
            return JSONResponse(answer(self.asked_symbols(request)))
        except BinanceError as error:
            return JSONResponse({"code": error.code, "msg": error.msg}, status_code=error.status)

    async def premium_index(self, request: Request) -> Response:
        """Mark price (the last trade), the rate of the next settlement and its time."""
        def answer(symbols: list[str]) -> object:
            marks, now = self.marks(), self.sim.market.now_ms()
            found = []
            for symbol in symbols:
                mark, upcoming = text(marks.get(symbol, ZERO)), self.next_funding(symbol)
                found.append({"symbol": symbol, "markPrice": mark, "indexPrice": mark, "estimatedSettlePrice": mark,
                              "lastFundingRate": text(upcoming[1]) if upcoming else "",
                              "interestRate": "0.00010000", "nextFundingTime": upcoming[0] if upcoming else 0,
                              "time": now})
            return found[0] if "symbol" in request.query_params else found

        return await self.public(request, answer)

    async def funding_history(self, request: Request) -> Response:
        """Settled funding rates (GET /fapi/v1/fundingRate), oldest first, each with the mark it settled at."""
        q = request.query_params
        start, end = int(q.get("startTime", 0)), int(q.get("endTime", self.sim.market.now_ms()))
        limit = min(int(q.get("limit", 100)), 1000)

        def answer(symbols: list[str]) -> object:
            now = self.sim.market.now_ms()
            settled = sorted((t, symbol, rate) for symbol in symbols for t, rate in self.funding[symbol]
                             if start <= t <= min(end, now))
            settled = settled[:limit] if "startTime" in q else settled[-limit:]
            return [{"symbol": symbol, "fundingTime": t, "fundingRate": text(rate),
                     "markPrice": text(mark) if (mark := self.sim.price(symbol, t)) is not None else ""}
                    for t, symbol, rate in settled]

        return await self.public(request, answer)

    # ----- signed REST ------------------------------------------------------------------------------
    def signed_action(self, act: FuturesAction) -> Callable[[SimAccount, dict[str, str]], object]:
        """Spot's signed-request machinery (signature, recvWindow, chaos) around a USD-M action: the request's
        key's futures account, brought to market time first."""
        def action(spot_account: SimAccount, params: dict[str, str]) -> object:
            self.advance()
            return act(self.accounts.accounts[self.key_of[id(spot_account)]], params)

        return action

    async def private(self, request: Request, act: FuturesAction) -> Response:
        response = await self.sim.private(request, self.signed_action(act))
        await self.send_user_events()
        return response

    def spec(self, params: dict[str, str]) -> Instrument:
        spec = self.specs.get(params.get("symbol", ""))
        if spec is None:
            raise BinanceError(400, -1121, "Invalid symbol.")
        return spec

    async def order(self, request: Request) -> Response:
        def act(account: FuturesAccount, params: dict[str, str]) -> object:
            spec, now = self.spec(params), self.sim.market.now_ms()
            if request.method == "GET":
                return self.accounts.find(account, params)
            if request.method == "DELETE":
                return self.accounts.cancel(account, params, now)
            price = self.sim.price(spec.symbol, now)
            if price is None:
                raise BinanceError(400, -1121, "Invalid symbol: the market has no price (the data has ended).")
            return self.accounts.place(account, params, price, now, spec)

        response = await self.sim.order_with_chaos(request, self.signed_action(act))
        await self.send_user_events()
        return response

    async def open_orders(self, request: Request) -> Response:
        return await self.private(request, lambda account, params: [
            account.orders[o.order_id] for o in account.resting.orders.values()
            if params.get("symbol") in (None, o.symbol)])

    async def user_trades(self, request: Request) -> Response:
        def act(account: FuturesAccount, params: dict[str, str]) -> object:
            self.spec(params)
            start, end = int(params.get("startTime", 0)), int(params.get("endTime", 2 ** 62))
            trades = [t for t in account.trades if t["symbol"] == params["symbol"] and start <= t["time"] <= end
                      and ("orderId" not in params or t["orderId"] == int(params["orderId"]))
                      and t["id"] >= int(params.get("fromId", 0))]
            limit = min(int(params.get("limit", 500)), 1000)
            return trades[:limit] if "startTime" in params or "fromId" in params else trades[-limit:]

        return await self.private(request, act)

    async def income(self, request: Request) -> Response:
        """The income history (REALIZED_PNL, COMMISSION, FUNDING_FEE, TRANSFER), oldest first."""
        def act(account: FuturesAccount, params: dict[str, str]) -> object:
            start, end = int(params.get("startTime", 0)), int(params.get("endTime", 2 ** 62))
            entries = [i for i in account.income if start <= i["time"] <= end
                       and params.get("symbol") in (None, i["symbol"])
                       and params.get("incomeType") in (None, i["incomeType"])]
            limit = min(int(params.get("limit", 100)), 1000)
            return entries[:limit] if "startTime" in params else entries[-limit:]

        return await self.private(request, act)

    async def leverage_bracket(self, request: Request) -> Response:
        def act(account: FuturesAccount, params: dict[str, str]) -> object:
            symbols = [self.spec(params).symbol] if "symbol" in params else list(self.specs)
            answer = []
            for symbol in symbols:
                floor, brackets = ZERO, []
                for number, bracket in enumerate(brackets_of(symbol), start=1):
                    brackets.append({"bracket": number, "initialLeverage": _number(bracket.max_leverage),
                                     "notionalCap": _number(bracket.notional_cap), "notionalFloor": _number(floor),
                                     "maintMarginRatio": _number(bracket.mmr), "cum": _number(bracket.cum)})
                    floor = bracket.notional_cap
                answer.append({"symbol": symbol, "notionalCoef": 1.0, "brackets": brackets})
            return answer

        return await self.private(request, act)

    async def commission_rate(self, request: Request) -> Response:
        fees = self.accounts.fees
        return await self.private(request, lambda account, params: {
            "symbol": self.spec(params).symbol, "makerCommissionRate": text(fees.maker),
            "takerCommissionRate": text(fees.taker)})

    async def symbol_config(self, request: Request) -> Response:
        def act(account: FuturesAccount, params: dict[str, str]) -> object:
            symbols = [self.spec(params).symbol] if "symbol" in params else list(self.specs)
            return [{"symbol": s, "marginType": account.config(s).margin_type, "isAutoAddMargin": "false",
                     "leverage": account.config(s).leverage,
                     "maxNotionalValue": text(max_notional(s, account.config(s).leverage))} for s in symbols]

        return await self.private(request, act)

    async def position_mode(self, request: Request) -> Response:
        return await self.private(request, lambda account, params: {"dualSidePosition": False})

    async def position_risk(self, request: Request) -> Response:
        """v2: every symbol, with its leverage and margin type; v3: those with a position, with their margins."""
        v2 = "/v2/" in request.url.path
        left_out = V3_ONLY if v2 else V2_ONLY

        def act(account: FuturesAccount, params: dict[str, str]) -> object:
            marks = self.marks()
            symbols = [self.spec(params).symbol] if "symbol" in params else list(self.specs)
            shown = [s for s in symbols if s in marks and (v2 or account.position(s).qty)]
            return [{k: v for k, v in self.accounts.position_risk(account, s, marks[s]).items() if k not in left_out}
                    for s in shown]

        return await self.private(request, act)

    async def account(self, request: Request) -> Response:
        return await self.private(request, lambda account, params: self.accounts.summary(
            account, self.marks(), self.sim.market.now_ms()))

    async def balance(self, request: Request) -> Response:
        def act(account: FuturesAccount, params: dict[str, str]) -> object:
            summary = self.accounts.summary(account, self.marks(), self.sim.market.now_ms())
            asset = summary["assets"][0]
            return [{"accountAlias": "SimFutures", "asset": "USDT", "balance": asset["walletBalance"],
                     "crossWalletBalance": asset["crossWalletBalance"], "crossUnPnl": "0",
                     "availableBalance": asset["availableBalance"], "maxWithdrawAmount": asset["maxWithdrawAmount"],
                     "marginAvailable": True, "updateTime": asset["updateTime"]}]

        return await self.private(request, act)

    async def leverage(self, request: Request) -> Response:
        def act(account: FuturesAccount, params: dict[str, str]) -> object:
            try:
                leverage = int(params.get("leverage", ""))
            except ValueError:
                raise BinanceError(400, -1100, "Illegal characters found in parameter 'leverage'.") from None
            return self.accounts.set_leverage(account, self.spec(params).symbol, leverage)

        return await self.private(request, act)

    async def margin_type(self, request: Request) -> Response:
        return await self.private(request, lambda account, params: self.accounts.set_margin_type(
            account, self.spec(params).symbol, params.get("marginType", "").upper()))

    async def listen_key(self, request: Request) -> Response:
        """The user-data stream's key (USER_STREAM: the API key, no signature): POST opens it (or gives
        the open one again), PUT keeps it alive, DELETE closes it and its streams."""
        if (limited := self.sim.limited()) is not None:
            return limited
        account = self.accounts.accounts.get(request.headers.get("X-MBX-APIKEY") or "")
        if account is None:
            return JSONResponse({"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."},
                                status_code=401)
        key = next((k for k, owner in self.listen_keys.items() if owner is account), None)
        if request.method == "POST":
            key = key or secrets.token_hex(32)
            self.listen_keys[key] = account
            return JSONResponse({"listenKey": key})
        if key is None:
            return JSONResponse({"code": -1125, "msg": "This listenKey does not exist."}, status_code=400)
        if request.method == "DELETE":
            del self.listen_keys[key]
            for socket, _ in [s for s in self.user_streams if s[1] is account]:
                await socket.close(code=1000)
            return JSONResponse({})
        return JSONResponse({"listenKey": key})

    # ----- websockets -------------------------------------------------------------------------------
    async def market_stream(self, socket: WebSocket) -> None:
        await self.sim.stream(socket, self.send_point)

    async def legacy_stream(self, socket: WebSocket) -> None:
        """`/ws/<name>`: the user-data stream when the name is a listen key, else market streams."""
        if socket.path_params.get("stream") in self.listen_keys:
            await self.user_stream(socket)
        else:
            await self.market_stream(socket)

    async def send_point(self, socket: WebSocket, subscriptions: set[str], symbol: str, at: int) -> None:
        """Spot's kline, trade and depth events (and their chaos), then USD-M's markPrice and aggTrade."""
        await self.sim.send_point(socket, subscriptions, symbol, at)
        if self.sim.silenced(at - at % MINUTE_MS) or (mark := self.sim.price(symbol, at)) is None:
            return
        lower = symbol.lower()
        if {f"{lower}@markPrice", f"{lower}@markPrice@1s"} & subscriptions:
            upcoming = self.next_funding(symbol)
            await socket.send_text(json.dumps({
                "e": "markPriceUpdate", "E": at, "s": symbol, "p": text(mark), "i": text(mark), "P": text(mark),
                "r": text(upcoming[1]) if upcoming else "", "T": upcoming[0] if upcoming else 0}))
        if f"{lower}@aggTrade" in subscriptions:
            self.sim.trade_ids += 1
            trade_id = self.sim.trade_ids
            await socket.send_text(json.dumps({"e": "aggTrade", "E": at, "s": symbol, "a": trade_id,
                                               "p": text(mark), "q": "0.001", "f": trade_id, "l": trade_id,
                                               "T": at, "m": False}))

    async def user_stream(self, socket: WebSocket) -> None:
        """The account's ORDER_TRADE_UPDATE and ACCOUNT_UPDATE events, from the listen key's account."""
        key = socket.query_params.get("listenKey") or socket.path_params.get("stream")
        account = self.listen_keys.get(key or "")
        if time.monotonic() < self.sim.chaos.refuse_until or account is None:
            await socket.close(code=1013 if account else 1008)
            return
        await socket.accept()
        self.sim.clients.add(socket)  # closed by the drop and vanish chaos, as spot's are
        self.user_streams.append((socket, account))
        try:
            while True:
                await socket.receive_text()  # nothing to answer: the stream only sends
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self.sim.clients.discard(socket)
            self.user_streams = [s for s in self.user_streams if s[0] is not socket]

    async def send_user_events(self) -> None:
        async with self.sending:
            for account in self.accounts.accounts.values():
                events, account.events = account.events, []
                for socket, owner in list(self.user_streams):
                    if owner is not account:
                        continue
                    try:
                        for event in events:
                            await socket.send_text(json.dumps(event))
                    except (WebSocketDisconnect, RuntimeError):
                        self.user_streams = [s for s in self.user_streams if s[0] is not socket]
