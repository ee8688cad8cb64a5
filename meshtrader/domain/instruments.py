"""Instruments: what an exchange accepts for a symbol (price tick, quantity step, minimum size and notional).

Binance lists spot BTCUSDT and the USD-M perpetual BTCUSDT under one id with different rules (a 0.01 vs
a 0.1 tick, a 5 vs a 100 USDT minimum), so every instrument carries its market type and an instrument set
holds one market type only: the two can never be confused.

The process-wide active set is what `instrument(symbol)` answers from (order planning, the risk judge's
size checks, paper fills). A service installs its set at start-up (`install_instruments`); until then it
is the bundled data's (data/instruments.json). That default is read here, at the bottom layer, because
the domain's own risk rules look instruments up; nothing else in this module reads or writes anything.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, get_args

MarketType = Literal["spot", "usdm"]  # spot, or Binance-style USD-M futures
MARKET_TYPES: tuple[str, ...] = get_args(MarketType)
RULES = ("price_tick", "qty_step", "min_qty", "min_notional")  # an instrument's fields in instruments.json
BUNDLED_INSTRUMENTS = Path(__file__).resolve().parents[2] / "data" / "instruments.json"  # runtime.config.BUNDLED_DATA
BUNDLED_MARKET_TYPE: MarketType = "usdm"  # the bundled candles are Binance USD-M perpetuals


@dataclass(frozen=True)
class Instrument:
    symbol: str
    market_type: MarketType
    price_tick: Decimal
    qty_step: Decimal
    min_qty: Decimal
    min_notional: Decimal

    def __post_init__(self) -> None:
        if self.market_type not in MARKET_TYPES:
            raise ValueError(f"{self.symbol}: unknown market type {self.market_type!r} (one of {MARKET_TYPES})")
        if self.price_tick <= 0 or self.qty_step <= 0 or self.min_qty < 0 or self.min_notional < 0:
            raise ValueError(f"{self.symbol}: tick and step must be positive, minimums not negative")

    def round_price(self, price: Decimal, side: str) -> Decimal:
        """Round against the trader: buys up, sells down, to the tick."""
        steps = price / self.price_tick
        rounded = steps.to_integral_value(rounding=ROUND_CEILING if side == "buy" else ROUND_FLOOR)
        return (rounded * self.price_tick).quantize(self.price_tick)

    def floor_qty(self, qty: Decimal) -> Decimal:
        return ((qty / self.qty_step).to_integral_value(rounding=ROUND_DOWN) * self.qty_step).quantize(self.qty_step)


def conservative_instrument(symbol: str, market_type: MarketType) -> Instrument:
    """For a symbol no source describes (paper trading one's own data): fine steps, a small minimum."""
    fine = Decimal("0.00001")
    return Instrument(symbol, market_type, fine, fine, fine, Decimal("5"))


class UnknownInstruments(LookupError):
    """Symbols an instrument set does not list: a configuration error, found at start-up."""

    def __init__(self, symbols: list[str], market_type: MarketType, source: str) -> None:
        super().__init__(f"{source} lists no {market_type} market {', '.join(symbols)}")


@dataclass(frozen=True)
class InstrumentSet:
    """The instruments of one market type, by symbol, and where they came from (for error messages)."""

    market_type: MarketType
    source: str
    by_symbol: Mapping[str, Instrument]

    def __post_init__(self) -> None:
        for symbol, spec in self.by_symbol.items():
            if spec.symbol != symbol or spec.market_type != self.market_type:
                raise ValueError(f"{self.source}: {spec.market_type} {spec.symbol} "
                                 f"filed as {self.market_type} {symbol}")

    @classmethod
    def of(cls, market_type: MarketType, source: str, instruments: Iterable[Instrument]) -> InstrumentSet:
        return cls(market_type, source, {spec.symbol: spec for spec in instruments})

    def get(self, symbol: str) -> Instrument | None:
        return self.by_symbol.get(symbol)

    def select(self, symbols: Iterable[str]) -> InstrumentSet:
        """Just these symbols; raises UnknownInstruments naming every one the set lacks."""
        wanted = list(dict.fromkeys(symbols))
        missing = [symbol for symbol in wanted if symbol not in self.by_symbol]
        if missing:
            raise UnknownInstruments(missing, self.market_type, self.source)
        return InstrumentSet(self.market_type, self.source, {symbol: self.by_symbol[symbol] for symbol in wanted})


def parse_instruments(document: Any, market_type: MarketType, source: str) -> InstrumentSet:
    """An instruments.json document's instruments of one market type (none of that type: an empty set).
    The document maps market type to symbol to RULES, each a decimal string so it stays exact:
    `{"usdm": {"BTCUSDT": {"price_tick": "0.1", "qty_step": "0.001", "min_qty": "0.001", "min_notional": "100"}}}`."""
    if not isinstance(document, dict) or not set(document) <= set(MARKET_TYPES):
        raise ValueError(f"{source}: expected an object keyed by market type ({', '.join(MARKET_TYPES)})")
    try:
        return InstrumentSet.of(market_type, source, (
            Instrument(symbol, market_type, *(Decimal(rules[rule]) for rule in RULES))
            for symbol, rules in document.get(market_type, {}).items()))
    except (KeyError, TypeError, InvalidOperation) as error:
        raise ValueError(f"{source}: {market_type} instruments need {', '.join(RULES)} as decimal strings "
                         f"({type(error).__name__}: {error})") from None


def bundled_instruments(market_type: MarketType = BUNDLED_MARKET_TYPE) -> InstrumentSet:
    return parse_instruments(json.loads(BUNDLED_INSTRUMENTS.read_text()), market_type, str(BUNDLED_INSTRUMENTS))


_active: InstrumentSet | None = None


def install_instruments(instruments: InstrumentSet) -> None:
    """Make these the process's instruments (a service does so once, at start-up)."""
    global _active
    _active = instruments


def active_instruments() -> InstrumentSet:
    """The installed set, or until one is installed the bundled data's."""
    global _active
    if _active is None:
        _active = bundled_instruments()
    return _active


def instrument(symbol: str) -> Instrument:
    """The active set's instrument for a symbol; a conservative one for symbols it does not describe."""
    active = active_instruments()
    return active.get(symbol) or conservative_instrument(symbol, active.market_type)
