"""Every message schema of the mesh, in one place.

A stream message is a ZeroMQ multipart frame [topic, MessagePack payload]; the topic's prefix names the
schema (see TOPIC_SCHEMAS). Every stream payload carries the envelope fields of `Event`:

- v:   schema version (SCHEMA_VERSION)
- src: the publishing service
- seq: per-publisher, per-topic sequence number (1, 2, ...; subscribers detect gaps)
- et:  event time, market time in ms since the epoch (the whole mesh runs on it)
- st:  send time, wall clock in ns (CLOCK_REALTIME: hops are timed across processes, and across hosts whose clocks NTP keeps together)
- tid: trace id, minted by the feed for each tick and carried through signal, order and fill

Money (prices of orders and fills, quantities, cash, fees) is Decimal, encoded as a string, so it stays
exact across the wire. Market data prices are floats: they are observations that feed indicators, and a
float's repr gives back the exchange's decimal string exactly, which is how the executor turns them into
money (`meshtrader.domain.money.to_decimal`).

Request/reply messages are tagged unions (field `kind`), decoded by the REP socket's own union type.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Literal, get_args

import msgspec

SCHEMA_VERSION = 1

Side = Literal["buy", "sell"]  # an order's
# A signal's: enter long (buy), leave it (sell); futures also enter short (short) and leave it (cover)
SignalSide = Literal["buy", "sell", "short", "cover"]


class Event(msgspec.Struct, kw_only=True):
    """The envelope every stream message carries."""

    v: int = SCHEMA_VERSION
    src: str = ""
    seq: int = 0
    et: int = 0
    st: int = 0
    tid: int = 0


# ----- market data -------------------------------------------------------------------------------
class Tick(Event, kw_only=True):
    symbol: str
    price: float
    qty: float = 0.0


class OrderBook(Event, kw_only=True):
    """The top of an exchange's order book, best level first: [price, qty] pairs."""

    symbol: str
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


class Candle(Event, kw_only=True):
    """A closed candle; `et` is its close time, `open_time` its open time (ms)."""

    symbol: str
    tf: str
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class FundingRate(Event, kw_only=True):
    """A perpetual's funding settlement; `et` is the settlement time."""

    symbol: str
    rate: float
    mark: float = 0.0  # the mark price at the settlement (the replay: the close of the candle it ends); 0: unknown


class MarketGap(Event, kw_only=True):
    """Candles the stream missed, and how many were repaired through REST before anything newer."""

    symbol: str
    tf: str
    from_open: int
    to_open: int
    missing: int
    backfilled: int
    reason: str


class FeedStatus(Event, kw_only=True):
    symbol: str
    connected: bool
    stale: bool
    reason: str


class VenueStatus(Event, kw_only=True):
    """Whether the live exchange answers the executor (orders are refused while it does not)."""

    connected: bool
    reason: str


# ----- trading -----------------------------------------------------------------------------------
class Signal(Event, kw_only=True):
    """A strategy's wish. `signal_id` is deterministic (strategy, symbol, bar, side): a worker that
    re-emits it after a restart is deduplicated by the executor's unique key."""

    signal_id: str
    strategy: str
    symbol: str
    side: SignalSide
    confidence: float
    reason: str
    price: float
    bar_volume: float = 0.0
    volatility: float = 0.0  # the symbol's realised daily volatility (a fraction) at the signal, for sizing
    stop: float = 0.0  # the strategy's stop price for an entry; 0: it defines none
    origin_ns: int = 0


class OrderEvent(Event, kw_only=True):
    """What every order-related message names."""

    order_id: str
    signal_id: str
    strategy: str
    symbol: str
    side: Side
    qty: Decimal


class OrderUpdate(OrderEvent, kw_only=True):
    """One transition of an order's state machine (meshtrader.domain.orders)."""

    status: str
    reason: str = ""
    price: Decimal | None = None
    filled_qty: Decimal = Decimal(0)


class Fill(OrderEvent, kw_only=True):
    trade_id: str
    price: Decimal
    fee: Decimal
    realized_pnl: Decimal
    cash_after: Decimal
    position_after: Decimal
    liquidity: str = "taker"  # "maker" for a resting limit order's fill: the fee differs
    # the order path's monotonic time stamps (the latency bench's hops): the tick was sent, the strategy
    # published the signal, the executor got it, and the risk guard's approval came back
    origin_ns: int = 0
    signal_ns: int = 0
    received_ns: int = 0
    approved_ns: int = 0


class PositionView(msgspec.Struct, kw_only=True):
    symbol: str
    qty: Decimal  # futures: signed, a short is negative
    cost: Decimal
    avg_price: Decimal
    last_price: Decimal
    # futures only
    margin: Decimal = Decimal(0)
    unrealized_pnl: Decimal = Decimal(0)
    liquidation_price: Decimal | None = None


class StrategyAccount(msgspec.Struct, kw_only=True):
    strategy: str
    cash: Decimal  # futures: the wallet balance
    equity: Decimal
    nav: Decimal = Decimal(1)  # equity per unit: performance net of capital moved in or out
    positions: list[PositionView] = []
    # futures only
    margin: Decimal = Decimal(0)
    margin_ratio: Decimal = Decimal(0)  # the highest of its positions' maintenance margin / margin balance
    funding: Decimal = Decimal(0)  # received (+) and paid (-) so far
    leverage: Decimal = Decimal(1)


class AccountSnapshot(Event, kw_only=True):
    equity: Decimal
    cash: Decimal
    exposure: Decimal
    trades: int
    accounts: list[StrategyAccount] = []
    market: str = "spot"  # spot, or usdm (futures: cash is the wallet, equity wallet + unrealized PnL)


class MarginClose(Event, kw_only=True):
    """The risk guard's order to close a strategy's futures positions: its margin ratio reached the close
    level, before the exchange would liquidate them. Published, not asked: the executor's closing orders
    need the risk guard's approval in turn."""

    strategy: str
    reason: str


class Allocation(Event, kw_only=True):
    weights: dict[str, Decimal]
    reason: str
    forks: list[str] = []  # the forks the decision was made on


class RiskDecision(Event, kw_only=True):
    request_id: str
    strategy: str
    symbol: str
    side: Side
    approved: bool
    rule: str
    reason: str


class RiskState(Event, kw_only=True):
    trading_state: Literal["ACTIVE", "REDUCING", "HALTED"]
    kill_switch: bool
    paused: bool = False  # only exposure-reducing orders, until resumed
    deactivated: list[str] = []
    reason: str = ""
    # grows with every state published, across restarts too (microseconds, or one more): a reader that got a
    # newer state from the stream ignores an older one still in flight from the hot state, which lags by a flush
    rev: int = 0


class MarketRegime(Event, kw_only=True):
    regime: str
    metrics: dict[str, float | None]


class Heartbeat(Event, kw_only=True):
    service: str
    pid: int
    started: float


class ForkEvent(Event, kw_only=True):
    fork_id: str
    event: str
    purpose: str
    requester: str
    status: str
    ttl_s: int
    path: str = ""


class ParamsUpdate(Event, kw_only=True):
    """New parameters for a strategy, adopted after a walk-forward optimisation: its worker swaps them in."""

    strategy: str
    params: dict
    reason: str
    fork_id: str = ""


class Narrative(Event, kw_only=True):
    kind: str
    title: str
    body: str


TOPIC_SCHEMAS: tuple[tuple[bytes, type[Event]], ...] = (
    (b"md.tick.", Tick),
    (b"md.candle.", Candle),
    (b"md.gap.", MarketGap),
    (b"md.funding.", FundingRate),
    (b"md.status.", FeedStatus),
    (b"md.book.", OrderBook),
    (b"venue.status", VenueStatus),
    (b"sig.", Signal),
    (b"order", OrderUpdate),
    (b"fill", Fill),
    (b"acct", AccountSnapshot),
    (b"alloc", Allocation),
    (b"params.", ParamsUpdate),
    (b"risk.decision", RiskDecision),
    (b"risk.state", RiskState),
    (b"risk.close", MarginClose),
    (b"hb", Heartbeat),
    (b"regime", MarketRegime),
    (b"fork.", ForkEvent),
    (b"narr", Narrative),
)


def tick_topic(symbol: str) -> bytes:
    return b"md.tick." + symbol.encode()


def book_topic(symbol: str) -> bytes:
    return b"md.book." + symbol.encode()


def funding_topic(symbol: str) -> bytes:
    return b"md.funding." + symbol.encode()


def candle_topic(symbol: str, tf: str = "1m") -> bytes:
    return b"md.candle." + tf.encode() + b"." + symbol.encode()


def signal_topic(strategy: str) -> bytes:
    return b"sig." + strategy.encode()


# ----- request / reply ---------------------------------------------------------------------------
class Request(msgspec.Struct, kw_only=True, tag_field="kind"):
    src: str = ""
    tid: int = 0


class ApproveOrder(Request, tag="approve", kw_only=True):
    """Pre-trade check. The executor owns the books, so it sends the numbers the rules need."""

    request_id: str
    strategy: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    reduces: bool
    opens_position: bool
    strategy_equity: Decimal
    strategy_nav: Decimal = Decimal(1)
    strategy_open_positions: int
    portfolio_equity: Decimal
    portfolio_exposure: Decimal
    event_time: int
    stop_price: Decimal | None = None  # the strategy's stop for this entry, if it defines one
    position_qty: Decimal = Decimal(0)  # what the strategy holds of this symbol already
    portfolio_open_positions: int = 0
    strategy_kelly: float | None = None  # from its closed trades; None until there are enough
    close_all: bool = False  # an operator's "close all positions now": allowed even when halted
    leverage: Decimal = Decimal(1)  # futures: the strategy's leverage (notional / margin)
    margin_ratio: Decimal = Decimal(0)  # futures: the strategy's highest maintenance margin / margin balance


class SetKillSwitch(Request, tag="kill_switch"):
    on: bool
    by: str = "cli"


class SetPaused(Request, tag="pause"):
    """Pause trading (only exposure-reducing orders pass) or resume it; unlike the kill switch, exits go on."""

    on: bool
    by: str = "cli"


class SetRiskLimit(Request, tag="set_limit"):
    """Change one risk limit (a field of domain.risk.Limits) at run time; the value as text, checked by the guard."""

    name: str
    value: str
    by: str = "cli"


class RiskStatus(Request, tag="risk_status"):
    pass


class Reactivate(Request, tag="reactivate"):
    """Bring back a strategy the drawdown rule deactivated: only after a successful fork validation."""

    strategy: str
    reason: str


ResetKind = Literal["peak", "daily_loss", "strategy"]
RESET_KINDS: tuple[str, ...] = get_args(ResetKind)  # the risk guard journals each as control `reset_<kind>`


class ResetRisk(Request, tag="reset_risk"):
    """An operator resets what a loss limit measures from, at the equity now: the portfolio's peak (`peak`),
    the day's start, lifting the day's loss halt (`daily_loss`), or a strategy's drawdown, lifting its
    deactivation (`strategy`)."""

    what: ResetKind
    strategy: str = ""
    reason: str = ""
    by: str = "cli"


class CloseAll(Request, tag="close_all"):
    """Sell every open position now, at market, whatever the trading state."""

    by: str
    reason: str = ""


class RunValidation(Request, tag="validate"):
    """Validate the strategies now (and optimise one), instead of waiting for the schedule."""

    reason: str = "on demand"
    optimize: bool = False


class RecentCandles(Request, tag="candles"):
    symbol: str
    n: int = 500


class CreateFork(Request, tag="fork"):
    purpose: str  # validation, optimization, whatif, incident
    requester: str
    ttl_s: int = 0
    writable: bool = False  # a read-only request may get a fork another read-only request already has


class ListForks(Request, tag="list_forks"):
    pass


class KeepFork(Request, tag="keep_fork"):
    """Keep a fork longer: the narrator found what it holds interesting."""

    fork_id: str
    reason: str
    ttl_s: int = 0  # from now, in market seconds; 0: MESH_FORK_KEEP_TTL_S


class Reply(msgspec.Struct, kw_only=True, tag_field="kind"):
    ok: bool = True
    error: str = ""


class ErrorReply(Reply, tag="error"):
    ok: bool = False


class Approval(Reply, tag="approval"):
    approved: bool
    rule: str
    reason: str
    trading_state: str


class RiskStatusReply(Reply, tag="risk_status"):
    trading_state: str
    kill_switch: bool
    deactivated: list[str] = []
    reason: str = ""
    paused: bool = False
    limit_values: dict[str, str] = {}  # every limit in use, by name


class LimitReply(Reply, tag="limit"):
    """A limit change applied (ok, with the old and new value) or refused (ok False, `error` says why)."""

    name: str
    old: str = ""
    new: str = ""
    limit_values: dict[str, str] = {}


class ControlReply(Reply, tag="control"):
    """A control applied (ok, `message` says what changed) or refused (ok False, `error` says why)."""

    message: str = ""
    trading_state: str = ""


class CandlesReply(Reply, tag="candles"):
    candles: list[Candle] = []


class ForkReply(Reply, tag="fork"):
    fork_id: str = ""
    path: str = ""
    reason: str = ""


class ForkList(Reply, tag="list_forks"):
    forks: list[dict] = []


class Accepted(Reply, tag="accepted"):
    message: str = ""


class ClosedAll(Reply, tag="closed_all"):
    positions: int = 0
    filled: int = 0
    message: str = ""


RiskRequests = ApproveOrder | SetKillSwitch | SetPaused | SetRiskLimit | RiskStatus | Reactivate | ResetRisk
RiskReplies = Approval | RiskStatusReply | LimitReply | ControlReply | ErrorReply
FeedRequests = RecentCandles
FeedReplies = CandlesReply | ErrorReply
ForkRequests = CreateFork | ListForks | KeepFork
ForkReplies = ForkReply | ForkList | ErrorReply
AllocatorRequests = RunValidation
ExecutorRequests = CloseAll
ExecutorReplies = ClosedAll | ErrorReply
AllocatorReplies = Accepted | ErrorReply
