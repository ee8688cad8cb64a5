"""USD-M perpetual futures arithmetic: leverage brackets, margin, liquidation and funding, exact in Decimal.

One-way mode and isolated margin per strategy sub-account, as Binance computes them:
- a position's maintenance margin is `|qty| x mark x mmr - cum`, with the maintenance-margin rate `mmr` and
  maintenance amount `cum` of the leverage bracket its notional falls in;
- its margin balance is its isolated margin plus its unrealized PnL `qty x mark - cost` (cost: the signed
  entry notional); it is liquidated when that falls to the maintenance margin, at
  `LP = (qty x entry - margin - cum) / (qty - |qty| x mmr)`;
- its margin ratio is maintenance margin / margin balance: 1 at the liquidation price;
- at each funding settlement it pays `qty x mark x rate` (positive rate: longs pay shorts).
The mark price is the last trade price: the bundled data has no separate mark or index series.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from meshtrader.domain.money import ZERO, cash

FUNDING_INTERVAL_MS = 8 * 3_600_000  # Binance's USD-M settlements: 00:00, 08:00 and 16:00 UTC


@dataclass(frozen=True)
class Bracket:
    """One notional tier of a symbol's leverage brackets."""

    notional_cap: Decimal  # positions of notional up to this fall in this tier
    max_leverage: Decimal
    mmr: Decimal  # maintenance-margin rate
    cum: Decimal  # maintenance amount: makes the tiers' maintenance margins continuous


# Binance's USD-M brackets for BTCUSDT and ETHUSDT (the tiers of its "Leverage & Margin" table, as transcribed in
# data/PROVENANCE.md). A live venue reads the exchange's own through ccxt (fetch_leverage_tiers).
def _tiers(rows: list[tuple[int, int, str]]) -> tuple[Bracket, ...]:
    """(cap, max leverage, mmr) rows; each tier's `cum` follows from continuity at the tier's floor."""
    brackets, floor, cum, last_mmr = [], ZERO, ZERO, ZERO
    for cap, leverage, mmr in rows:
        rate = Decimal(mmr)
        cum += floor * (rate - last_mmr)
        brackets.append(Bracket(Decimal(cap), Decimal(leverage), rate, cum))
        floor, last_mmr = Decimal(cap), rate
    return tuple(brackets)


BINANCE_BRACKETS: dict[str, tuple[Bracket, ...]] = {
    "BTCUSDT": _tiers([(300_000, 125, "0.004"), (800_000, 100, "0.005"), (3_000_000, 75, "0.0065"),
                       (12_000_000, 50, "0.01"), (70_000_000, 25, "0.02"), (100_000_000, 20, "0.025"),
                       (230_000_000, 10, "0.05"), (480_000_000, 5, "0.1"), (600_000_000, 4, "0.125"),
                       (800_000_000, 3, "0.15"), (1_200_000_000, 2, "0.25"), (1_800_000_000, 1, "0.5")]),
    "ETHUSDT": _tiers([(300_000, 125, "0.004"), (800_000, 100, "0.005"), (3_000_000, 75, "0.0065"),
                       (12_000_000, 50, "0.01"), (50_000_000, 25, "0.02"), (65_000_000, 20, "0.025"),
                       (150_000_000, 10, "0.05"), (320_000_000, 5, "0.1"), (400_000_000, 4, "0.125"),
                       (530_000_000, 3, "0.15"), (800_000_000, 2, "0.25"), (1_200_000_000, 1, "0.5")]),
}
# A symbol without published brackets: one conservative tier (1% maintenance, at most 20x).
DEFAULT_BRACKETS = (Bracket(Decimal("1e15"), Decimal(20), Decimal("0.01"), ZERO),)
# The brackets in force: the bundled ones, until a live executor installs the exchange's (`install_brackets`).
_brackets: dict[str, tuple[Bracket, ...]] = dict(BINANCE_BRACKETS)


def install_brackets(brackets: dict[str, tuple[Bracket, ...]]) -> None:
    """The exchange's own brackets for these symbols (a live venue's, read through ccxt) over the bundled."""
    _brackets.update(brackets)


def bracket(symbol: str, notional: Decimal) -> Bracket:
    """The tier a position of `notional` (absolute) falls in."""
    tiers = _brackets.get(symbol, DEFAULT_BRACKETS)
    for tier in tiers:
        if notional <= tier.notional_cap:
            return tier
    return tiers[-1]


def initial_margin(notional: Decimal, leverage: Decimal) -> Decimal:
    return cash(abs(notional) / leverage)


def maintenance_margin(symbol: str, qty: Decimal, mark: Decimal) -> Decimal:
    notional = abs(qty) * mark
    tier = bracket(symbol, notional)
    return max(notional * tier.mmr - tier.cum, ZERO)


def threshold_price(symbol: str, qty: Decimal, cost: Decimal, margin: Decimal, ratio: Decimal,
                    tick: Decimal) -> Decimal | None:
    """The mark at which the position's margin ratio reaches `ratio` (1: the liquidation price), on the
    tick and rounded toward the position (a long's up, a short's down: reached no later than exact); None
    for a position that cannot reach it (no quantity, or a price it can never trade at)."""
    if not qty:
        return None
    tier = bracket(symbol, abs(cost))
    # maintenance margin = ratio x margin balance: |q| P mmr - cum = ratio (margin + q P - cost)
    price = (cost - margin - tier.cum / ratio) / (qty - abs(qty) * tier.mmr / ratio)
    if price <= 0:
        return None
    steps = (price / tick).to_integral_value(rounding=ROUND_CEILING if qty > 0 else ROUND_FLOOR)
    return (steps * tick).quantize(tick)


def margin_ratio(symbol: str, qty: Decimal, cost: Decimal, margin: Decimal, mark: Decimal) -> Decimal:
    """Maintenance margin / margin balance (isolated): 0 without a position, 1 or more when it is due for
    liquidation (a margin balance at or under zero counts as far past it)."""
    if not qty:
        return ZERO
    balance = margin + qty * mark - cost
    if balance <= 0:
        return Decimal(99)
    return (maintenance_margin(symbol, qty, mark) / balance).quantize(Decimal("0.0001"))


def funding_payment(qty: Decimal, mark: Decimal, rate: Decimal) -> Decimal:
    """What a position receives (positive) or pays (negative) at a settlement: -qty x mark x rate."""
    return cash(-qty * mark * rate)


def liquidation_fee(qty: Decimal, price: Decimal, rate: Decimal, margin_left: Decimal) -> Decimal:
    """The liquidation fee on the notional at the liquidation price, never more than the margin left (an
    isolated position loses at most its margin)."""
    return min(cash(abs(qty) * price * rate), max(cash(margin_left), ZERO))

