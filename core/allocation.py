"""Capital allocation across strategies."""
from __future__ import annotations

import math
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


def performance_weights(scores: dict[str, float], min_pct: Decimal, max_pct: Decimal,
                        temperature: float = 1.0) -> dict[str, Decimal]:
    """Weights from scores (e.g. validation Sharpe ratios) by a softmax of the scores standardised
    across strategies (their scale varies wildly with the window), so the better get more and the
    worse less but none nothing, each within [min_pct, max_pct], summing to exactly 1."""
    if not scores:
        return {}
    mean = sum(scores.values()) / len(scores)
    spread = math.sqrt(sum((v - mean) ** 2 for v in scores.values()) / len(scores))
    raw = {name: math.exp((score - mean) / spread / temperature) if spread else 1.0 for name, score in scores.items()}
    total = sum(raw.values())
    weights = {name: Decimal(repr(value / total)) for name, value in raw.items()}
    for _ in range(len(weights) + 1):  # clamp, then spread what clamping freed or took over the rest
        clamped = {n: min(max(w, min_pct), max_pct) for n, w in weights.items()}
        excess = sum(clamped.values()) - 1
        free = [n for n, w in clamped.items() if min_pct < w < max_pct] if excess else []
        if not excess or not free:
            weights = clamped
            break
        share = excess / len(free)
        weights = {n: (w - share if n in free else w) for n, w in clamped.items()}
    weights = {n: w.quantize(WEIGHT_QUANTUM, rounding=ROUND_DOWN) for n, w in weights.items()}
    remainder = Decimal(1) - sum(weights.values())
    room = [n for n in weights if weights[n] + remainder <= max_pct] or list(weights)
    weights[max(room, key=lambda n: (weights[n], n))] += remainder  # the rounding remainder, within bounds
    return weights


def meaningful_change(old: dict[str, Decimal], new: dict[str, Decimal], threshold: Decimal) -> bool:
    return set(old) != set(new) or any(abs(new[n] - old[n]) >= threshold for n in new)
