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


def standardized(scores: dict[str, float]) -> dict[str, float]:
    """Scores as z-scores across strategies (all 0 when they do not differ)."""
    if not scores:
        return {}
    mean = sum(scores.values()) / len(scores)
    spread = math.sqrt(sum((v - mean) ** 2 for v in scores.values()) / len(scores))
    return {n: (v - mean) / spread if spread else 0.0 for n, v in scores.items()}


def blend_windows(per_window: list[dict[str, float]], window_weights: list[float]) -> dict[str, float]:
    """One score per strategy from several lookback windows: each window standardised (a Sharpe ratio
    over 7 days and over 90 days are not on one scale), then weighted, the recent windows first."""
    total = sum(window_weights[: len(per_window)]) or 1.0
    blended: dict[str, float] = {}
    for scores, weight in zip(per_window, window_weights, strict=False):
        for name, z in standardized(scores).items():
            blended[name] = blended.get(name, 0.0) + z * weight / total
    return blended


def kelly_fraction(win_rate: float, profit_factor: float | None) -> float:
    """The Kelly fraction f* = p - (1 - p) / b with b the payoff ratio, which with the profit factor
    PF = p b / (1 - p) is p (1 - 1 / PF). Negative: the edge is negative."""
    if not profit_factor or win_rate <= 0:
        return -1.0
    return win_rate * (1 - 1 / profit_factor)


def kelly_capped(weights: dict[str, Decimal], caps: dict[str, Decimal], min_pct: Decimal,
                 max_pct: Decimal) -> tuple[dict[str, Decimal], list[str]]:
    """Cap each weight at its Kelly cap (never below min_pct) and give what the caps free to the
    strategies with room, in proportion to their weights. If every strategy is capped the caps cannot
    all hold (capital must go somewhere) and the weights are left as they were. Returns the weights
    and the strategies whose cap bound."""
    limit = {n: min(max(caps.get(n, max_pct), min_pct), max_pct) for n in weights}
    bound = [n for n, w in weights.items() if w > limit[n]]
    if not bound or len(bound) == len(weights):
        return weights, []
    capped = {n: min(w, limit[n]) for n, w in weights.items()}
    for _ in range(len(weights)):  # water-filling: each pass may fill some strategies to their cap
        freed = Decimal(1) - sum(capped.values())
        room = [n for n, w in capped.items() if w < limit[n]]
        if freed <= 0 or not room:
            break
        base = sum(weights[n] for n in room)
        for n in room:
            share = freed * weights[n] / base if base else freed / len(room)
            capped[n] = min(limit[n], capped[n] + share)
    capped = {n: w.quantize(WEIGHT_QUANTUM, rounding=ROUND_DOWN) for n, w in capped.items()}
    remainder = Decimal(1) - sum(capped.values())
    room_left = [n for n in capped if capped[n] + remainder <= limit[n]] or list(capped)
    capped[max(room_left, key=lambda n: (capped[n], n))] += remainder
    return capped, bound


def exposure_correlations(holding: dict[str, list[int]]) -> dict[tuple[str, str], float]:
    """Pearson correlation of the strategies' in-the-market series (1 while holding, bar by bar): two
    strategies that take the same positions at the same times are one bet, not two."""
    names = sorted(holding)
    result = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            x, y = holding[a], holding[b]
            n = min(len(x), len(y))
            if n < 2:
                continue
            mx, my = sum(x[:n]) / n, sum(y[:n]) / n
            sxy = sum((x[k] - mx) * (y[k] - my) for k in range(n))
            sxx = sum((x[k] - mx) ** 2 for k in range(n))
            syy = sum((y[k] - my) ** 2 for k in range(n))
            if sxx and syy:
                result[(a, b)] = sxy / math.sqrt(sxx * syy)
    return result


def correlation_penalties(scores: dict[str, float], correlations: dict[tuple[str, str], float],
                          threshold: float) -> dict[str, float]:
    """For each pair correlated above `threshold`, the weaker of the two loses up to one standard
    deviation of score, in proportion to how far above the threshold the pair is."""
    penalties = {n: 0.0 for n in scores}
    for (a, b), corr in correlations.items():
        if corr > threshold and a in scores and b in scores:
            weaker = a if scores[a] < scores[b] else b
            penalties[weaker] += (corr - threshold) / (1 - threshold) if threshold < 1 else 0.0
    return penalties
