"""Percentiles for benchmark reports."""
from __future__ import annotations


def percentiles_us(samples_ns: list[int]) -> dict[str, float]:
    """p50/p99/p99.9 in microseconds (nearest-rank)."""
    if not samples_ns:
        return {"p50": float("nan"), "p99": float("nan"), "p999": float("nan")}
    ordered = sorted(samples_ns)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000, 1)

    return {"p50": rank(0.50), "p99": rank(0.99), "p999": rank(0.999)}
