"""The exchange simulator's USD-M futures accounts: Binance's one-way positions, isolated margin, funding
and income history, behind the `/fapi` endpoints of tools.exchange_sim.usdm.

The accounting is implemented here on its own, not borrowed from the mesh's books: the mesh reconciles
against what this exchange reports, so the two agreeing to the last digit is the test. All of it is exact
Decimal; cash() is 1e-8, half even.
- A position is a signed quantity (a short is negative) and its signed cost, the sum of qty x price of the
  open quantity; its entry price is cost / qty (to 1e-8, as Binance shows it).
- A fill that opens or adds: cost += signed qty x price, margin += cash(|qty x price| / leverage).
- A fill of q that reduces a position s: released R = cost if q == |s| else cash(cost x q / |s|);
  realized = sign(s) x q x price - R; cost -= R; the margin is released the same way, pro rata. A fill
  bigger than the position closes it and opens the rest the other way.
- Commission cash(q x price x rate), taker or maker, from the wallet: wallet = deposits + realized -
  commission + funding. Unrealized = qty x mark - cost; margin balance = wallet + unrealized.
- Funding at each settlement of rate r at mark m: cash(-qty x m x r) to the wallet (longs pay a positive rate).
- Maintenance margin |qty| x mark x mmr - cum, the tier (mmr, cum) from the leverage bracket of the
  notional at the mark; liquidation price (qty x entry - margin - cum) / (qty - |qty| x mmr), the tier from
  the entry notional |cost|, to 1e-8. A tier holds notionals up to and including its cap.
The mark is the last trade price (the bundled data has no mark or index series). Margin is isolated only
(the default here, unlike Binance's cross): `marginType CROSSED` is refused. The simulator does not
liquidate: a position past its liquidation price stays open (the mesh's risk guard closes it first).

Orders meet the market in the mesh's own matching engine (meshtrader.venues.matching), as spot's do, and
share spot's order chaos (reject_orders: refused for insufficient margin; partial). Every change is also a
user-data event (ORDER_TRADE_UPDATE, ACCOUNT_UPDATE), queued per account for the fstream user-data socket.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from meshtrader.domain.futures import BINANCE_BRACKETS, DEFAULT_BRACKETS, Bracket
from meshtrader.domain.instruments import Instrument
from meshtrader.domain.money import MAKER, TAKER, ZERO, FeeModel, cash
from meshtrader.venues.matching import LimitBook, Match, RestingLimit, match
from tools.exchange_sim.accounts import BinanceError, SimAccounts, find_order

DEFAULT_LEVERAGE = 20  # Binance's initial leverage for a symbol never set
REALIZED_PNL, COMMISSION, FUNDING_FEE, TRANSFER = "REALIZED_PNL", "COMMISSION", "FUNDING_FEE", "TRANSFER"


def text(amount: Decimal) -> str:
    """A Decimal as Binance writes numbers: plain notation, never an exponent."""
    return format(amount, "f")


def brackets_of(symbol: str) -> tuple[Bracket, ...]:
    """The symbol's leverage brackets: Binance's published ones (the same table the mesh's defaults carry)."""
    return BINANCE_BRACKETS.get(symbol, DEFAULT_BRACKETS)


def tier(symbol: str, notional: Decimal) -> Bracket:
    """The bracket a notional (absolute) falls in: the first whose cap it does not exceed."""
    tiers = brackets_of(symbol)
    return next((t for t in tiers if notional <= t.notional_cap), tiers[-1])


def max_notional(symbol: str, leverage: int) -> Decimal:
    """The largest position notional this leverage allows: the cap of the last bracket allowing it."""
    return max((t.notional_cap for t in brackets_of(symbol) if t.max_leverage >= leverage), default=ZERO)


@dataclass
class FuturesPosition:
    """One symbol's one-way position."""

    qty: Decimal = ZERO  # signed: a short is negative
    cost: Decimal = ZERO  # signed sum of qty x price of the open quantity
    margin: Decimal = ZERO  # its isolated margin
    realized: Decimal = ZERO  # accumulated realized PnL (before fees), ACCOUNT_UPDATE's "cr"
    updated_ms: int = 0

    @property
    def entry_price(self) -> Decimal:
        return cash(self.cost / self.qty) if self.qty else ZERO

    def closable(self, signed: Decimal) -> Decimal:
        """How much of a signed fill would reduce this position (the rest opens the other way)."""
        return min(abs(signed), abs(self.qty)) if self.qty and (self.qty > 0) != (signed > 0) else ZERO

    def fill(self, signed: Decimal, price: Decimal, leverage: int) -> Decimal:
        """Book a signed fill at `price`; its realized PnL (zero for what opens or adds)."""
        realized = ZERO
        if closing := self.closable(signed):
            held = abs(self.qty)
            released = self.cost if closing == held else cash(self.cost * closing / held)
            freed = self.margin if closing == held else cash(self.margin * closing / held)
            realized = (closing if self.qty > 0 else -closing) * price - released
            self.cost -= released
            self.margin -= freed
            self.realized += realized
            self.qty += closing if signed > 0 else -closing
        if opening := abs(signed) - closing:
            notional = opening * price
            self.cost += notional if signed > 0 else -notional
            self.margin += cash(notional / leverage)
            self.qty += opening if signed > 0 else -opening
        return realized

    def unrealized(self, mark: Decimal) -> Decimal:
        return self.qty * mark - self.cost if self.qty else ZERO

    def maintenance(self, symbol: str, mark: Decimal) -> Decimal:
        notional = abs(self.qty) * mark
        bracket = tier(symbol, notional)
        return max(notional * bracket.mmr - bracket.cum, ZERO)

    def liquidation_price(self, symbol: str) -> Decimal:
        """Where the margin balance meets the maintenance margin; 0 (Binance's "none") when no positive
        price does, or without a position."""
        if not self.qty:
            return ZERO
        bracket = tier(symbol, abs(self.cost))
        price = (self.cost - self.margin - bracket.cum) / (self.qty - abs(self.qty) * bracket.mmr)
        return cash(price) if price > 0 else ZERO


@dataclass
class SymbolConfig:
    leverage: int = DEFAULT_LEVERAGE
    margin_type: str = "ISOLATED"


@dataclass
class FuturesAccount:
    wallet: Decimal  # deposits + realized - commission + funding
    positions: dict[str, FuturesPosition] = field(default_factory=dict)
    configs: dict[str, SymbolConfig] = field(default_factory=dict)
    orders: dict[int, dict] = field(default_factory=dict)
    resting: LimitBook = field(default_factory=LimitBook)
    trades: list[dict] = field(default_factory=list)  # as GET /fapi/v1/userTrades shows them
    income: list[dict] = field(default_factory=list)  # as GET /fapi/v1/income shows it
    events: list[dict] = field(default_factory=list)  # user-data events not yet sent

    def position(self, symbol: str) -> FuturesPosition:
        return self.positions.setdefault(symbol, FuturesPosition())

    def config(self, symbol: str) -> SymbolConfig:
        return self.configs.setdefault(symbol, SymbolConfig())

    def order_margin(self) -> Decimal:
        """The initial margin the resting orders that may open positions hold back."""
        return sum((cash(o.qty * o.price / self.config(o.symbol).leverage) for o in self.resting.orders.values()
                    if not self.orders[o.order_id]["reduceOnly"]), ZERO)

    def position_margin(self) -> Decimal:
        return sum((p.margin for p in self.positions.values()), ZERO)

    def available(self) -> Decimal:
        """What new positions may take as margin: the wallet less the isolated margins and open orders'."""
        return self.wallet - self.position_margin() - self.order_margin()


def order_update(order: dict, execution: str, now_ms: int, trade: dict | None = None) -> dict:
    """Binance's ORDER_TRADE_UPDATE user-data event for an order that changed."""
    return {"e": "ORDER_TRADE_UPDATE", "E": now_ms, "T": now_ms, "o": {
        "s": order["symbol"], "c": order["clientOrderId"], "S": order["side"], "o": order["type"],
        "f": order["timeInForce"], "q": order["origQty"], "p": order["price"], "ap": order["avgPrice"], "sp": "0",
        "x": execution, "X": order["status"], "i": order["orderId"], "l": trade["qty"] if trade else "0",
        "z": order["executedQty"], "L": trade["price"] if trade else "0", "N": "USDT",
        "n": trade["commission"] if trade else "0", "T": now_ms, "t": trade["id"] if trade else 0, "b": "0", "a": "0",
        "m": trade["maker"] if trade else False, "R": order["reduceOnly"], "wt": "CONTRACT_PRICE",
        "ot": order["origType"], "ps": "BOTH", "cp": False, "rp": trade["realizedPnl"] if trade else "0",
        "pP": False, "si": 0, "ss": 0, "V": "NONE", "pm": "NONE", "gtd": 0}}


def account_update(account: FuturesAccount, reason: str, symbol: str, mark: Decimal | None, now_ms: int,
                   change: Decimal = ZERO) -> dict:
    """Binance's ACCOUNT_UPDATE user-data event: the wallet and the symbol's position after `reason`
    (ORDER, FUNDING_FEE); `change` is the balance change other than PnL and commission."""
    position = account.position(symbol)
    return {"e": "ACCOUNT_UPDATE", "E": now_ms, "T": now_ms, "a": {"m": reason, "B": [
        {"a": "USDT", "wb": text(account.wallet), "cw": text(account.wallet - account.position_margin()),
         "bc": text(change)}], "P": [
        {"s": symbol, "pa": text(position.qty), "ep": text(position.entry_price), "bep": text(position.entry_price),
         "cr": text(position.realized), "up": text(cash(position.unrealized(mark)) if mark is not None else ZERO),
         "mt": account.config(symbol).margin_type.lower(), "iw": text(position.margin), "ps": "BOTH"}]}}


def _decimal(params: dict[str, str], name: str) -> Decimal:
    try:
        return Decimal(params.get(name, "0"))
    except InvalidOperation:
        raise BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None


class FuturesAccounts:
    """Every API key's USD-M account (the spot accounts' keys, a wallet of its own funded with `deposit`)."""

    def __init__(self, spot: SimAccounts, deposit: Decimal, fees: FeeModel, opened_ms: int) -> None:
        self.spot = spot  # whose order chaos (reject_next, partial_next) futures orders share
        self.fees = fees
        self.order_ids = itertools.count(8_000_001)
        self.trade_ids = itertools.count(9_000_001)
        self.tran_ids = itertools.count(7_000_001)
        self.accounts: dict[str, FuturesAccount] = {}
        for key in spot.accounts:
            account = self.accounts[key] = FuturesAccount(deposit)
            self.book(account, "", TRANSFER, deposit, opened_ms, "deposit")

    def book(self, account: FuturesAccount, symbol: str, kind: str, amount: Decimal, time_ms: int,
             info: str = "", trade_id: str = "") -> None:
        """An income-history entry (each with its own tranId)."""
        account.income.append({"symbol": symbol, "incomeType": kind, "income": text(amount), "asset": "USDT",
                               "info": info or kind, "time": time_ms, "tranId": next(self.tran_ids),
                               "tradeId": trade_id})

    # ----- orders -----------------------------------------------------------------------------------
    def place(self, account: FuturesAccount, params: dict[str, str], price: Decimal, now_ms: int,
              spec: Instrument) -> dict:
        symbol, side, kind = params.get("symbol", ""), params.get("side", ""), params.get("type", "")
        if side not in ("BUY", "SELL") or kind not in ("MARKET", "LIMIT"):
            raise BinanceError(400, -1116, "Invalid orderType.")
        qty = _decimal(params, "quantity")
        if qty <= 0:
            raise BinanceError(400, -4003, "Quantity less than or equal to zero.")
        if qty % spec.qty_step:
            raise BinanceError(400, -1111, "Precision is over the maximum defined for this asset.")
        if qty < spec.min_qty:
            raise BinanceError(400, -4003, f"Quantity less than the minimum {text(spec.min_qty)}.")
        reduce_only = params.get("reduceOnly", "false").lower() == "true"
        signed = qty if side == "BUY" else -qty
        position = account.position(symbol)
        if reduce_only and not position.closable(signed):
            raise BinanceError(400, -2022, "ReduceOnly Order is rejected.")
        client_id = params.get("newClientOrderId") or f"sim-{next(self.order_ids)}"
        if any(o["clientOrderId"] == client_id for o in account.orders.values()):
            raise BinanceError(400, -4116, "ClientOrderId is duplicated.")
        limit = _decimal(params, "price") if kind == "LIMIT" else None
        if limit is not None and (limit <= 0 or limit % spec.price_tick):
            raise BinanceError(400, -4014, "Price not increased by tick size.")
        notional = qty * (limit or price)
        if not reduce_only and notional < spec.min_notional:
            raise BinanceError(400, -4164, f"Order's notional must be no smaller than {text(spec.min_notional)} "
                               "(unless you choose reduce only).")
        if self.spot.reject_next > 0:
            self.spot.reject_next -= 1
            raise BinanceError(400, -2019, "Margin is insufficient.")
        opening = ZERO if reduce_only else qty - position.closable(signed)
        needed = cash(opening * (limit or price) / account.config(symbol).leverage) + self.fees.fee(notional, TAKER)
        if opening and needed > account.available():
            raise BinanceError(400, -2019, "Margin is insufficient.")
        order = {"orderId": next(self.order_ids), "symbol": symbol, "status": "NEW", "clientOrderId": client_id,
                 "price": text(limit or ZERO), "avgPrice": "0", "origQty": text(qty), "executedQty": "0",
                 "cumQty": "0", "cumQuote": "0", "timeInForce": params.get("timeInForce", "GTC"), "type": kind,
                 "reduceOnly": reduce_only, "closePosition": False, "side": side, "positionSide": "BOTH",
                 "stopPrice": "0", "workingType": "CONTRACT_PRICE", "priceProtect": False, "origType": kind,
                 "priceMatch": "NONE", "selfTradePreventionMode": "NONE", "goodTillDate": 0, "time": now_ms,
                 "updateTime": now_ms}
        account.orders[order["orderId"]] = order
        account.events.append(order_update(order, "NEW", now_ms))
        if limit is not None:
            account.resting.rest(RestingLimit(order["orderId"], symbol, side.lower(), qty, limit))
            return order
        partial = self.spot.partial_next > 0
        self.spot.partial_next -= partial
        filled = spec.floor_qty(qty / 2) if partial else qty
        if reduce_only:
            filled = min(filled, position.closable(signed))
        if filled > 0:
            self.execute(account, order, match(filled, price, TAKER, self.fees), now_ms)
        if filled < qty:  # what did not fill expires, as a market order's rest does
            self.end(account, order, "EXPIRED", now_ms)
        return order

    def execute(self, account: FuturesAccount, order: dict, fill: Match, now_ms: int) -> None:
        """Book a fill the matching engine made: position, wallet, the trade, the income, the events."""
        symbol, buying = order["symbol"], order["side"] == "BUY"
        position = account.position(symbol)
        realized = position.fill(fill.qty if buying else -fill.qty, fill.price, account.config(symbol).leverage)
        position.updated_ms = now_ms
        account.wallet += realized - fill.fee
        trade = {"symbol": symbol, "id": next(self.trade_ids), "orderId": order["orderId"], "side": order["side"],
                 "price": text(fill.price), "qty": text(fill.qty), "realizedPnl": text(realized),
                 "quoteQty": text(fill.notional), "commission": text(fill.fee), "commissionAsset": "USDT",
                 "time": now_ms, "positionSide": "BOTH", "buyer": buying, "maker": fill.liquidity == MAKER}
        account.trades.append(trade)
        if realized:
            self.book(account, symbol, REALIZED_PNL, realized, now_ms, trade_id=str(trade["id"]))
        if fill.fee:
            self.book(account, symbol, COMMISSION, -fill.fee, now_ms, trade_id=str(trade["id"]))
        executed = Decimal(order["executedQty"]) + fill.qty
        quote = Decimal(order["cumQuote"]) + fill.notional
        order.update(executedQty=text(executed), cumQty=text(executed), cumQuote=text(quote),
                     avgPrice=text(quote / executed), updateTime=now_ms,
                     status="FILLED" if executed == Decimal(order["origQty"]) else "PARTIALLY_FILLED")
        account.events += [order_update(order, "TRADE", now_ms, trade),
                           account_update(account, "ORDER", symbol, fill.price, now_ms)]

    def end(self, account: FuturesAccount, order: dict, status: str, now_ms: int) -> dict:
        """An order ends unfilled (its rest): EXPIRED or CANCELED."""
        account.resting.remove(order["orderId"])
        order["status"], order["updateTime"] = status, now_ms
        account.events.append(order_update(order, status, now_ms))
        return order

    def cross(self, symbol: str, price: Decimal, now_ms: int) -> None:
        """A trade at `price`: the resting limit orders it goes through fill, at their price, as makers (a
        reduce-only one no further than the position it reduces; the rest of it expires)."""
        for account in self.accounts.values():
            for resting, fill in account.resting.trade(symbol, price, self.fees):
                order = account.orders[resting.order_id]
                qty = fill.qty
                if order["reduceOnly"]:
                    qty = min(qty, account.position(symbol).closable(qty if order["side"] == "BUY" else -qty))
                if qty:
                    self.execute(account, order, match(qty, fill.price, MAKER, self.fees), now_ms)
                if qty < fill.qty:
                    self.end(account, order, "EXPIRED", now_ms)

    def find(self, account: FuturesAccount, params: dict[str, str]) -> dict:
        return find_order(account.orders, params)

    def cancel(self, account: FuturesAccount, params: dict[str, str], now_ms: int) -> dict:
        order = self.find(account, params)
        if order["orderId"] not in account.resting.orders:  # filled, expired or canceled already
            raise BinanceError(400, -2011, "Unknown order sent.")
        return self.end(account, order, "CANCELED", now_ms)

    # ----- funding, leverage ---------------------------------------------------------------------------
    def settle_funding(self, symbol: str, time_ms: int, rate: Decimal, mark: Decimal) -> None:
        """A funding settlement: every open position in `symbol` pays or receives cash(-qty x mark x rate)."""
        for account in self.accounts.values():
            position = account.positions.get(symbol)
            if position is None or not position.qty:
                continue
            amount = cash(-position.qty * mark * rate)
            account.wallet += amount
            self.book(account, symbol, FUNDING_FEE, amount, time_ms)
            account.events.append(account_update(account, FUNDING_FEE, symbol, mark, time_ms, amount))

    @staticmethod
    def set_leverage(account: FuturesAccount, symbol: str, leverage: int) -> dict:
        """Binance's POST /fapi/v1/leverage: at most what the bracket of the position's notional allows; no
        reduction while an isolated position is open (its margin was set at the old one)."""
        position = account.position(symbol)
        if not 1 <= leverage <= tier(symbol, abs(position.cost)).max_leverage:
            raise BinanceError(400, -4028, f"Leverage {leverage} is not valid")
        config = account.config(symbol)
        if position.qty and leverage < config.leverage:
            raise BinanceError(400, -4161, "Leverage reduction is not supported in Isolated Margin Mode with open "
                               "positions")
        config.leverage = leverage
        return {"leverage": leverage, "maxNotionalValue": text(max_notional(symbol, leverage)), "symbol": symbol}

    @staticmethod
    def set_margin_type(account: FuturesAccount, symbol: str, margin_type: str) -> dict:
        """Binance's POST /fapi/v1/marginType; isolated only here."""
        if margin_type != "ISOLATED":
            raise BinanceError(400, -1130, "Data sent for parameter 'marginType' is not valid: the simulator "
                               "trades isolated margin only.")
        if account.config(symbol).margin_type == margin_type:
            raise BinanceError(400, -4046, "No need to change margin type.")
        if account.position(symbol).qty:
            raise BinanceError(400, -4048, "Margin type cannot be changed if there exists position.")
        account.config(symbol).margin_type = margin_type
        return {"code": 200, "msg": "success"}

    # ----- views ------------------------------------------------------------------------------------
    @staticmethod
    def position_risk(account: FuturesAccount, symbol: str, mark: Decimal) -> dict:
        """A position as GET /fapi/v3/positionRisk shows it, with v2's leverage and margin type besides."""
        position, config = account.position(symbol), account.config(symbol)
        notional = position.qty * mark
        unrealized = cash(position.unrealized(mark))
        return {"symbol": symbol, "positionSide": "BOTH", "positionAmt": text(position.qty),
                "entryPrice": text(position.entry_price), "breakEvenPrice": text(position.entry_price),
                "markPrice": text(mark), "unRealizedProfit": text(unrealized),
                "liquidationPrice": text(position.liquidation_price(symbol)),
                "isolatedMargin": text(position.margin + unrealized), "notional": text(notional),
                "marginAsset": "USDT", "isolatedWallet": text(position.margin),
                "initialMargin": text(cash(abs(notional) / config.leverage)),
                "maintMargin": text(cash(position.maintenance(symbol, mark))),
                "positionInitialMargin": text(cash(abs(notional) / config.leverage)),
                "openOrderInitialMargin": "0", "adl": 0, "bidNotional": "0", "askNotional": "0",
                "updateTime": position.updated_ms, "leverage": str(config.leverage),
                "maxNotionalValue": text(max_notional(symbol, config.leverage)),
                "marginType": config.margin_type.lower(), "isAutoAddMargin": "false",
                "isolated": config.margin_type == "ISOLATED"}

    @classmethod
    def summary(cls, account: FuturesAccount, marks: dict[str, Decimal], now_ms: int) -> dict:
        """The account's figures as GET /fapi/v3/account shows them: wallet, unrealized, margin balance, margins."""
        held = {s: p for s, p in account.positions.items() if p.qty and s in marks}
        unrealized = sum((cash(p.unrealized(marks[s])) for s, p in held.items()), ZERO)
        maintenance = sum((cash(p.maintenance(s, marks[s])) for s, p in held.items()), ZERO)
        position_margin, order_margin = account.position_margin(), account.order_margin()
        available = account.available()
        asset = {"asset": "USDT", "walletBalance": text(account.wallet), "unrealizedProfit": text(unrealized),
                 "marginBalance": text(account.wallet + unrealized), "maintMargin": text(maintenance),
                 "initialMargin": text(position_margin + order_margin),
                 "positionInitialMargin": text(position_margin), "openOrderInitialMargin": text(order_margin),
                 "crossWalletBalance": text(account.wallet - position_margin), "crossUnPnl": "0",
                 "availableBalance": text(available), "maxWithdrawAmount": text(max(available, ZERO)),
                 "marginAvailable": True, "updateTime": now_ms}
        return {"totalInitialMargin": asset["initialMargin"], "totalMaintMargin": asset["maintMargin"],
                "totalWalletBalance": asset["walletBalance"], "totalUnrealizedProfit": asset["unrealizedProfit"],
                "totalMarginBalance": asset["marginBalance"], "totalPositionInitialMargin": asset["positionInitialMargin"],
                "totalOpenOrderInitialMargin": asset["openOrderInitialMargin"],
                "totalCrossWalletBalance": asset["crossWalletBalance"], "totalCrossUnPnl": "0",
                "availableBalance": asset["availableBalance"], "maxWithdrawAmount": asset["maxWithdrawAmount"],
                "canTrade": True, "canDeposit": True, "canWithdraw": True, "feeTier": 0, "updateTime": now_ms,
                "assets": [asset],
                "positions": [{**cls.position_risk(account, s, marks[s]), "unrealizedProfit": text(
                    cash(held[s].unrealized(marks[s])))} for s in sorted(held)]}
