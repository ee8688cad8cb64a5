"""The exchange simulator's accounts: Binance spot's signed order, account and trade endpoints.

Requests are authenticated the way Binance does it: the `X-MBX-APIKEY` header names the key, and the
`signature` parameter must be the HMAC-SHA256 (hex) of everything before it (the query string for GET and
DELETE, the form body for POST) under the key's secret, with a `timestamp` within `recvWindow` of the
server's clock. Errors carry Binance's codes and messages.

Orders meet the market in the mesh's own matching engine (meshtrader.venues.matching), by the same rules
as in the paper venue and the backtester: market orders fill at the simulated market's current price as
takers; limit orders rest in each account's `LimitBook` and fill, whole, at their price and as makers,
when the market trades through them. Fees are a `FeeModel` (the mesh's settings), charged in the quote
asset. Chaos for orders, by `POST /admin/chaos`: `reject_orders` (the next N orders are refused for
insufficient balance) and `partial` (the next N market orders fill half and expire).

Every change to an order is also a user-data event (`executionReport`, and `outboundAccountPosition`
after a trade), queued per account for the WebSocket API's `userDataStream.subscribe.signature`.
"""
from __future__ import annotations

import hashlib
import hmac
import itertools
import time
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from urllib.parse import parse_qsl

from meshtrader.domain.money import MAKER, TAKER, FeeModel
from meshtrader.venues.matching import LimitBook, Match, RestingLimit, match


class BinanceError(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def find_order(orders: dict[int, dict], params: dict[str, str]) -> dict:
    """An account's order by `orderId` or `origClientOrderId` (and its symbol), as Binance finds it: -2013
    if there is none."""
    if "orderId" in params:
        order = orders.get(int(params["orderId"]))
    else:
        order = next((o for o in orders.values() if o["clientOrderId"] == params.get("origClientOrderId")), None)
    if order is None or order["symbol"] != params.get("symbol"):
        raise BinanceError(400, -2013, "Order does not exist.")
    return order


@dataclass
class SimAccount:
    secret: str
    balances: dict[str, Decimal]
    orders: dict[int, dict] = field(default_factory=dict)
    resting: LimitBook = field(default_factory=LimitBook)  # its limit orders still working, by order id
    trades: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # user-data stream events not yet sent


def execution_report(order: dict, execution: str, now_ms: int, trade: dict | None = None) -> dict:
    """Binance's `executionReport` user-data event for an order that changed."""
    return {"e": "executionReport", "E": now_ms, "s": order["symbol"], "c": order["clientOrderId"],
            "S": order["side"], "o": order["type"], "f": order["timeInForce"], "q": order["origQty"],
            "p": order["price"], "P": "0.00000000", "F": "0.00000000", "g": -1, "C": "", "x": execution,
            "X": order["status"], "r": "NONE", "i": order["orderId"],
            "l": trade["qty"] if trade else "0.00000000", "z": order["executedQty"],
            "L": trade["price"] if trade else "0.00000000", "n": trade["commission"] if trade else "0",
            "N": trade["commissionAsset"] if trade else None, "T": now_ms, "t": trade["id"] if trade else -1,
            "I": 0, "w": order["status"] in ("NEW", "PARTIALLY_FILLED"), "m": trade["isMaker"] if trade else False,
            "M": False, "O": order["time"], "Z": order["cummulativeQuoteQty"],
            "Y": trade["quoteQty"] if trade else "0.00000000", "Q": "0.00000000", "W": order["workingTime"],
            "V": "EXPIRE_MAKER"}


def account_position(account: SimAccount, now_ms: int) -> dict:
    """Binance's `outboundAccountPosition` event: the balances after a change."""
    return {"e": "outboundAccountPosition", "E": now_ms, "u": now_ms,
            "B": [{"a": b["asset"], "f": b["free"], "l": b["locked"]} for b in SimAccounts.balances(account)]}


class SimAccounts:
    def __init__(self, credentials: dict[str, str], balances: dict[str, Decimal], fees: FeeModel) -> None:
        self.accounts = {key: SimAccount(secret, dict(balances)) for key, secret in credentials.items()}
        self.fees = fees
        self.order_ids = itertools.count(1_000_001)
        self.trade_ids = itertools.count(5_000_001)
        self.reject_next = 0
        self.partial_next = 0

    # ----- authentication ---------------------------------------------------------------------------
    def authenticate(self, api_key: str | None, signed: str) -> tuple[SimAccount, dict[str, str]]:
        """The account and the request's parameters, or BinanceError as Binance would answer."""
        account = self.accounts.get(api_key or "")
        if account is None:
            raise BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        payload, marker, signature = signed.rpartition("&signature=")
        if not marker:
            raise BinanceError(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        expected = hmac.new(account.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise BinanceError(400, -1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(payload, keep_blank_values=True))
        window = int(params.get("recvWindow", 5000))
        if abs(time.time() * 1000 - int(params.get("timestamp", 0))) > window:
            raise BinanceError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return account, params

    def authenticate_ws(self, params: dict) -> SimAccount:
        """A WebSocket API request signed the Binance way: HMAC-SHA256 over its parameters (all but the
        signature) sorted by name, as name=value joined by &."""
        account = self.accounts.get(str(params.get("apiKey", "")))
        if account is None:
            raise BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        signed = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "signature")
        expected = hmac.new(account.secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, str(params.get("signature", ""))):
            raise BinanceError(400, -1022, "Signature for this request is not valid.")
        if abs(time.time() * 1000 - int(params.get("timestamp", 0))) > int(params.get("recvWindow", 5000)):
            raise BinanceError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return account

    # ----- orders -----------------------------------------------------------------------------------
    def place(self, account: SimAccount, params: dict[str, str], price: Decimal, now_ms: int,
              filters: tuple[Decimal, Decimal]) -> dict:
        symbol, side, kind = params.get("symbol", ""), params.get("side", ""), params.get("type", "")
        if side not in ("BUY", "SELL") or kind not in ("MARKET", "LIMIT"):
            raise BinanceError(400, -1100, "Illegal characters found in parameter 'side' or 'type'.")
        qty = Decimal(params.get("quantity", "0"))
        tick, step = filters
        if qty <= 0 or qty % step:
            raise BinanceError(400, -1013, "Filter failure: LOT_SIZE")
        client_id = params.get("newClientOrderId") or f"sim-{next(self.order_ids)}"
        if any(o["clientOrderId"] == client_id for o in account.orders.values()):
            raise BinanceError(400, -2010, "Duplicate order sent.")
        if self.reject_next > 0:
            self.reject_next -= 1
            raise BinanceError(400, -2010, "Account has insufficient balance for requested action.")
        limit = Decimal(params["price"]) if kind == "LIMIT" else None
        if limit is not None and limit % tick:
            raise BinanceError(400, -1013, "Filter failure: PRICE_FILTER")
        base, quote = symbol.removesuffix("USDT"), "USDT"
        need = qty * (limit or price) * (1 + self.fees.taker) if side == "BUY" else qty
        have = account.balances.get(quote if side == "BUY" else base, Decimal(0))
        if need > have:
            raise BinanceError(400, -2010, "Account has insufficient balance for requested action.")
        order = {"symbol": symbol, "orderId": next(self.order_ids), "orderListId": -1, "clientOrderId": client_id,
                 "price": str(limit or Decimal(0)), "origQty": str(qty), "executedQty": "0", "cummulativeQuoteQty": "0",
                 "status": "NEW", "timeInForce": params.get("timeInForce", "GTC"), "type": kind, "side": side,
                 "time": now_ms, "updateTime": now_ms, "workingTime": now_ms, "fills": []}
        account.orders[order["orderId"]] = order
        account.events.append(execution_report(order, "NEW", now_ms))
        if limit is not None:
            account.resting.rest(RestingLimit(order["orderId"], symbol, side.lower(), qty, limit))
            return order
        partial = self.partial_next > 0
        self.partial_next -= partial
        filled = (qty / 2).quantize(step, rounding=ROUND_DOWN) if partial else qty
        if filled > 0:
            self.execute(account, order, match(filled, price, TAKER, self.fees), now_ms)
        if filled < qty:  # what did not fill expires, as a market order's rest does at Binance
            order["status"] = "EXPIRED"
            account.events.append(execution_report(order, "EXPIRED", now_ms))
        return order

    def execute(self, account: SimAccount, order: dict, fill: Match, now_ms: int) -> None:
        """Book a fill the matching engine made: balances, the trade, the order, the user-data events."""
        base = order["symbol"].removesuffix("USDT")
        buying = order["side"] == "BUY"
        balances = account.balances
        balances["USDT"] = balances.get("USDT", Decimal(0)) + (-fill.notional if buying else fill.notional) - fill.fee
        balances[base] = balances.get(base, Decimal(0)) + (fill.qty if buying else -fill.qty)
        trade = {"symbol": order["symbol"], "id": next(self.trade_ids), "orderId": order["orderId"], "orderListId": -1,
                 "price": str(fill.price), "qty": str(fill.qty), "quoteQty": str(fill.notional),
                 "commission": str(fill.fee), "commissionAsset": "USDT", "time": now_ms, "isBuyer": buying,
                 "isMaker": fill.liquidity == MAKER, "isBestMatch": True}
        account.trades.append(trade)
        executed = Decimal(order["executedQty"]) + fill.qty
        order["executedQty"] = str(executed)
        order["cummulativeQuoteQty"] = str(Decimal(order["cummulativeQuoteQty"]) + fill.notional)
        order["status"] = "FILLED" if executed == Decimal(order["origQty"]) else "PARTIALLY_FILLED"
        order["updateTime"] = now_ms
        order["fills"].append({"price": str(fill.price), "qty": str(fill.qty), "commission": str(fill.fee),
                               "commissionAsset": "USDT", "tradeId": trade["id"]})
        account.events += [execution_report(order, "TRADE", now_ms, trade), account_position(account, now_ms)]

    def cross(self, symbol: str, price: Decimal, now_ms: int) -> None:
        """A trade at `price`: the resting limit orders it goes through fill, at their price, as makers."""
        for account in self.accounts.values():
            for resting, fill in account.resting.trade(symbol, price, self.fees):
                self.execute(account, account.orders[resting.order_id], fill, now_ms)

    def find(self, account: SimAccount, params: dict[str, str]) -> dict:
        return find_order(account.orders, params)

    def cancel(self, account: SimAccount, params: dict[str, str], now_ms: int) -> dict:
        order = self.find(account, params)
        if account.resting.remove(order["orderId"]) is None:  # not working: filled, expired or canceled
            raise BinanceError(400, -2011, "Unknown order sent.")
        order["status"], order["updateTime"] = "CANCELED", now_ms
        account.events.append(execution_report(order, "CANCELED", now_ms))
        return order

    @staticmethod
    def open_orders(account: SimAccount, symbol: str | None) -> list[dict]:
        """The account's working orders (of `symbol`, or all), as GET /openOrders shows them."""
        return [SimAccounts.view(account.orders[o.order_id]) for o in account.resting.orders.values()
                if symbol in (None, o.symbol)]

    @staticmethod
    def view(order: dict) -> dict:
        """An order as GET /order shows it (no fills)."""
        return {k: v for k, v in order.items() if k != "fills"}

    @staticmethod
    def balances(account: SimAccount) -> list[dict]:
        return [{"asset": asset, "free": str(amount), "locked": "0.00000000"}
                for asset, amount in sorted(account.balances.items())]
