"""The meta-allocator may hold cash: a strategy without an edge gets 0%, and its share stays in the cash line,
never above MESH_ALLOC_CASH_MAX_PCT; with a cap of 0 the allocation is fully invested, as it always was."""
from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from meshtrader.domain.allocation import (
    CASH,
    WEIGHT_QUANTUM,
    AllocationRules,
    allocate,
    hold_cash,
    performance_weights,
    split_cash,
)

D = Decimal
MAX = D("0.6")


def test_a_strategy_without_an_edge_gives_its_share_to_the_cash_line():
    weights = {"a": D("0.5"), "b": D("0.3"), "c": D("0.2")}
    held = hold_cash(weights, ["c"], D("0.5"), MAX)
    assert held == {"a": D("0.5"), "b": D("0.3"), "c": D(0), CASH: D("0.2")}
    assert split_cash(held) == ({"a": D("0.5"), "b": D("0.3"), "c": D(0)}, D("0.2"))


def test_the_cash_line_never_exceeds_its_cap():
    weights = {"a": D("0.5"), "b": D("0.3"), "c": D("0.2")}
    # a and b show no edge: 0.8 freed, 0.3 may stay in cash; c (the edge) takes what it may (up to 0.6) and the
    # rest goes back to a and b pro rata, because the cap keeps it invested
    held = hold_cash(weights, ["a", "b"], D("0.3"), MAX)
    assert held[CASH] == D("0.3") and held["c"] == MAX and sum(held.values()) == 1
    assert held["a"] / held["b"] == D("0.5") / D("0.3")
    # nobody has an edge: the cap's worth in cash, the rest as the scores had it
    nobody = hold_cash(weights, ["a", "b", "c"], D("0.5"), MAX)
    assert nobody == {"a": D("0.25"), "b": D("0.15"), "c": D("0.1"), CASH: D("0.5")}


def test_a_zero_cap_or_an_edge_everywhere_keeps_the_allocation_fully_invested():
    weights = {"a": D("0.6"), "b": D("0.4")}
    assert hold_cash(weights, ["a", "b"], D(0), MAX) == weights
    assert hold_cash(weights, [], D("0.5"), MAX) == weights


def test_allocate_from_a_validation():
    scores, kelly = {"a": 1.0, "b": 0.2, "c": -1.0}, {"a": 0.3, "b": 0.1, "c": -0.2}
    rules = AllocationRules(D("0.05"), MAX, kelly_cap=D(0), cash_max_pct=D("0.5"))
    decision = allocate(scores, kelly, {"a": 0.004, "b": -0.001, "c": -0.02}, ["c"], rules)
    assert list(decision.weights) == ["a", "b", "c", CASH], "strategies in order, then the cash line"
    assert decision.weights["c"] == 0 and decision.weights["b"] == 0 and decision.no_edge == ["b"]
    assert decision.weights[CASH] <= D("0.5") and sum(decision.weights.values()) == 1
    invested = allocate(scores, kelly, {"a": 0.004, "b": -0.001, "c": -0.02}, ["c"],
                        AllocationRules(D("0.05"), MAX, D(0), D(0)))
    assert CASH not in invested.weights and invested.weights["b"] > 0 and sum(invested.weights.values()) == 1
    # the Kelly caps act first, as before the cash line: a negative Kelly caps a strategy at the minimum
    capped = allocate(scores, {**kelly, "b": 0.5}, dict.fromkeys(scores, 0.01), [],
                      AllocationRules(D("0.05"), MAX, D(2), D("0.5")))
    assert capped.capped_by == ["c"] and capped.weights["c"] == D("0.05") and CASH not in capped.weights
    assert capped.weights["a"] == MAX and sum(capped.weights.values()) == 1


def test_kelly_caps_that_cannot_hold_are_ignored_even_with_strategies_at_the_minimum():
    """Every Kelly fraction negative caps every strategy at the minimum: the caps add up to less than the
    capital, so they are ignored (they once put the whole remainder on one strategy, by name)."""
    from meshtrader.domain.allocation import kelly_capped

    weights = {"a": D("0.05"), "b": D("0.05"), "c": D("0.3"), "d": D("0.6")}
    assert kelly_capped(weights, dict.fromkeys(weights, D(0)), D("0.05"), MAX) == (weights, [])


@settings(max_examples=150, deadline=None)
@given(scores=st.lists(st.floats(-5, 5), min_size=1, max_size=6),
       edges=st.lists(st.booleans(), min_size=6, max_size=6),
       cap=st.sampled_from([D(0), D("0.1"), D("0.25"), D("0.5"), D("0.9"), D(1)]))
def test_cash_line_bounds_hold_for_any_allocation(scores, edges, cap):
    names = [f"s{i}" for i in range(len(scores))]
    weights = performance_weights(dict(zip(names, scores, strict=True)), D("0.05"), MAX)
    no_edge = [n for n, edge in zip(names, edges, strict=False) if not edge]
    held = hold_cash(weights, no_edge, cap, MAX)
    invested, cash = split_cash(held)
    assert sum(held.values()) == 1 and all(w >= 0 and w % WEIGHT_QUANTUM == 0 for w in held.values())
    assert cash <= cap, "never above the cap"
    freed = sum(weights[n] for n in no_edge)
    if not cap:
        assert held == weights, "a cap of 0: fully invested, as before"
    elif freed <= cap:
        assert cash == freed and all(invested[n] == 0 for n in no_edge), "no edge: 0%, its share in cash"
    else:
        assert cash == cap
