"""Capital allocation across strategies, and the cash line: the share of capital no strategy has shown it
earns, which the executor keeps in a sub-account of its own (CASH) that holds cash only."""
from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

WEIGHT_QUANTUM = Decimal("0.0001")
CASH = "cash"  # the allocation's cash line: a reserved name, never a strategy's


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
    """Weights from scores (e.g. validations' per-bar Sharpe ratios) by a softmax of the scores standardised
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
    return settled(weights, dict.fromkeys(weights, max_pct))


def settled(weights: dict[str, Decimal], limit: dict[str, Decimal]) -> dict[str, Decimal]:
    """Weights on the WEIGHT_QUANTUM grid adding up to exactly 1: the rounding remainder goes to the largest
    weight it keeps within its limit (to the largest if none)."""
    weights = {n: w.quantize(WEIGHT_QUANTUM, rounding=ROUND_DOWN) for n, w in weights.items()}
    remainder = Decimal(1) - sum(weights.values())
    room = [n for n in weights if weights[n] + remainder <= limit[n]] or list(weights)
    weights[max(room, key=lambda n: (weights[n], n))] += remainder
    return weights


def filled(weights: dict[str, Decimal], total: Decimal, limit: dict[str, Decimal],
           basis: dict[str, Decimal]) -> dict[str, Decimal]:
    """Raise the weights with room under their limit toward `total`, pro rata to `basis` (water-filling:
    each pass may fill some to their limit and leave the rest to the others)."""
    weights = dict(weights)
    for _ in range(len(weights)):
        missing = total - sum(weights.values())
        room = [n for n, w in weights.items() if w < limit.get(n, Decimal(0))]
        if missing <= 0 or not room:
            break
        base = sum(basis[n] for n in room)
        for n in room:
            share = missing * basis[n] / base if base else missing / len(room)
            weights[n] = min(limit[n], weights[n] + share)
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
    strategies with room, in proportion to their weights. If the caps add up to less than the whole
    (every strategy capped, those at the minimum included) they cannot all hold (capital must go
    somewhere) and the weights are left as they were. Returns the weights and the strategies whose cap
    bound."""
    limit = {n: min(max(caps.get(n, max_pct), min_pct), max_pct) for n in weights}
    bound = [n for n, w in weights.items() if w > limit[n]]
    if not bound or sum(limit.values()) < 1:
        return weights, []
    capped = filled({n: min(w, limit[n]) for n, w in weights.items()}, Decimal(1), limit, weights)
    return settled(capped, limit), bound


def hold_cash(weights: dict[str, Decimal], no_edge: list[str], cash_max_pct: Decimal,
              max_pct: Decimal) -> dict[str, Decimal]:
    """The strategies without an edge give up their shares, which stay in the CASH line up to `cash_max_pct`
    of the capital. What the cap does not let it hold goes to the strategies with an edge (pro rata, each
    up to `max_pct`), and what they cannot take back to the others, pro rata: the cap is what keeps capital
    invested. Unchanged (and no CASH line) with a cap of 0 or when every strategy has an edge."""
    freed = sum((weights[n] for n in no_edge if n in weights), Decimal(0))
    if not cash_max_pct or not freed:
        return weights
    held = min(freed, cash_max_pct)
    edge = {n: max_pct for n in weights if n not in no_edge}
    kept = filled({n: (w if n in edge else Decimal(0)) for n, w in weights.items()}, 1 - held, edge, weights)
    kept = filled(kept, 1 - held, {**edge, **{n: weights[n] for n in no_edge if n in weights}}, weights)
    return settled({**kept, CASH: held}, {**{n: max_pct for n in kept}, CASH: cash_max_pct})


def split_cash(weights: dict[str, Decimal]) -> tuple[dict[str, Decimal], Decimal]:
    """The strategies' weights, and the cash line's share (0 without one)."""
    return {n: w for n, w in weights.items() if n != CASH}, weights.get(CASH, Decimal(0))


@dataclass(frozen=True)
class AllocationRules:
    """The bounds of a decision: each strategy's share within [min_pct, max_pct], capped at `kelly_cap` x its
    Kelly fraction (0: no cap), at most `cash_max_pct` in the cash line (0: always fully invested)."""

    min_pct: Decimal
    max_pct: Decimal
    kelly_cap: Decimal = Decimal(0)
    cash_max_pct: Decimal = Decimal(0)

    @classmethod
    def from_settings(cls, settings: Any) -> AllocationRules:
        return cls(settings.alloc_min_pct, settings.alloc_max_pct, settings.kelly_cap, settings.alloc_cash_max_pct)


@dataclass(frozen=True)
class AllocationDecision:
    weights: dict[str, Decimal]  # every strategy's share, then the cash line's if it holds any: adding up to 1
    capped_by: list[str]  # strategies whose Kelly cap bound
    no_edge: list[str]  # strategies whose validation showed no edge


def allocate(scores: dict[str, float], kelly: dict[str, float], rois: dict[str, float], deactivated: list[str],
             rules: AllocationRules) -> AllocationDecision:
    """The meta-allocator's decision from a validation: a softmax of the scores within bounds, each share
    capped by its Kelly fraction, the shares of strategies without an edge (ROI after fees <= 0) held in
    cash up to the cap; deactivated strategies at 0%."""
    active = {n: v for n, v in scores.items() if n not in deactivated}
    weights = performance_weights(active, rules.min_pct, rules.max_pct) if active else {}
    capped_by: list[str] = []
    if rules.kelly_cap and weights:
        caps = {n: rules.kelly_cap * Decimal(repr(round(max(k, 0.0), 6))) for n, k in kelly.items()}
        weights, capped_by = kelly_capped(weights, caps, rules.min_pct, rules.max_pct)
    no_edge = sorted(n for n in weights if rois.get(n, 0.0) <= 0)
    invested, held = split_cash(hold_cash(weights, no_edge, rules.cash_max_pct, rules.max_pct))
    ordered = {n: invested.get(n, Decimal(0)) for n in scores}
    return AllocationDecision({**ordered, CASH: held} if held else ordered, capped_by, no_edge)


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
