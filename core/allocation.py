"""Capital allocation across strategies."""
from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

WEIGHT_QUANTUM = Decimal("0.0001")


def equal_weights(strategies: list[str]) -> dict[str, Decimal]:
    """Equal shares that add up to exactly 1 (the first strategies take the rounding remainder)."""
    if not strategies:
        return {}
    share = (Decimal(1) / len(strategies)).quantize(WEIGHT_QUANTUM, rounding=ROUND_DOWN)
    weights = {s: share for s in strategies}
    remainder = Decimal(1) - share * len(strategies)
    for strategy in strategies:
        if remainder <= 0:
            break
        weights[strategy] += WEIGHT_QUANTUM
        remainder -= WEIGHT_QUANTUM
    return weights
