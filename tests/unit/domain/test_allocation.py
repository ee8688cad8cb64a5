"""Allocation: equal and performance weights, the meta-allocator's inputs."""
from __future__ import annotations

from decimal import Decimal

import pytest

from meshtrader.domain.allocation import equal_weights

D = Decimal


def test_equal_weights_add_up_to_one():
    for n in range(1, 8):
        weights = equal_weights([f"s{i}" for i in range(n)])
        assert sum(weights.values()) == 1


def test_performance_weights_are_bounded_and_exact():
    from meshtrader.domain.allocation import meaningful_change, performance_weights

    weights = performance_weights({"a": 3.0, "b": 1.0, "c": -2.0}, D("0.05"), D("0.6"))
    assert sum(weights.values()) == 1 and weights["a"] <= D("0.6") and weights["c"] >= D("0.05")
    assert weights["a"] > weights["b"] > weights["c"]
    scaled = performance_weights({"a": -189.0, "b": -213.0}, D("0.05"), D("0.95"))
    assert D("0.6") < scaled["a"] < D("0.95"), "a scale-free split, not winner-takes-all"
    losers = performance_weights({"a": -1.0, "b": -3.0}, D("0.05"), D("0.9"))
    assert sum(losers.values()) == 1 and losers["a"] > losers["b"] >= D("0.05")
    assert performance_weights({"a": 0.5, "b": 0.5}, D("0.05"), D("0.9")) == {"a": D("0.5"), "b": D("0.5")}
    assert not meaningful_change(weights, {**weights}, D("0.02"))
    assert meaningful_change(weights, {"a": D("0.5"), "b": D("0.45"), "c": D("0.05")}, D("0.02"))


def test_meta_allocator_inputs():
    from meshtrader.domain.allocation import (
        blend_windows,
        correlation_penalties,
        exposure_correlations,
        kelly_capped,
        kelly_fraction,
    )

    # Windows on different scales count by their standardised scores, the recent window most.
    blended = blend_windows([{"a": -200.0, "b": -100.0}, {"a": 5.0, "b": 1.0}], [0.7, 0.3])
    assert blended["b"] > blended["a"] and blended["a"] + blended["b"] == pytest.approx(0)
    assert kelly_fraction(0.5, 2.0) == pytest.approx(0.25) and kelly_fraction(0.4, 0.8) < 0
    capped, bound = kelly_capped({"a": D("0.6"), "b": D("0.3"), "c": D("0.1")}, {"a": D("0.25")}, D("0.05"), D("0.6"))
    assert bound == ["a"] and capped["a"] == D("0.25") and sum(capped.values()) == 1
    assert capped["b"] / capped["c"] == pytest.approx(3, rel=0.01)  # the freed share goes pro rata
    everyone = {"a": D("0.5"), "b": D("0.5")}
    assert kelly_capped(everyone, {"a": D("0"), "b": D("0")}, D("0.05"), D("0.6")) == (everyone, [])
    together = exposure_correlations({"a": [0, 1, 1, 0, 1, 1], "b": [0, 1, 1, 0, 1, 1], "c": [1, 0, 0, 1, 0, 0]})
    assert together[("a", "b")] == pytest.approx(1) and together[("a", "c")] == pytest.approx(-1)
    penalties = correlation_penalties({"a": 1.0, "b": 0.5, "c": 0.0}, together, 0.7)
    assert penalties == {"a": 0.0, "b": pytest.approx(1.0), "c": 0.0}  # the weaker of the twins pays
