"""Parameter search through Optuna (meshtrader.research.search): seeded TPE asked and told in rounds over a
strategy's grid, its study kept in the optimisation's result and reloaded from the fork registry."""
from __future__ import annotations

from collections.abc import Callable

import pytest
from optuna.trial import FrozenTrial
from support.candle_store import SYMBOLS, candle_store

from meshtrader.persistence.fork_registry import ForkRegistry
from meshtrader.persistence.store import Store
from meshtrader.research.optimize import optimize, rejection
from meshtrader.research.search import ParameterSearch, load_trials
from meshtrader.runtime.config import load_settings

BOWL = {"x": list(range(20)), "y": list(range(20))}  # 400 sets; the best is x=13, y=4


def bowl(params: dict) -> float:
    return -float((params["x"] - 13) ** 2 + (params["y"] - 4) ** 2)


def accept(params: dict) -> None:
    return None


def seen(trial: FrozenTrial) -> tuple:
    return trial.params, trial.state, trial.value, trial.user_attrs


def searched(search: ParameterSearch, objective: Callable[[dict], float | None]) -> list[tuple[dict, float | None]]:
    """Run the search to its budget, round by round: every set evaluated, with its value, in order."""
    evaluated = []
    while batch := search.ask():
        values = [objective(params) for params in batch]
        search.tell(values)
        evaluated += zip(batch, values, strict=True)
    return evaluated


def test_the_same_seed_gives_the_same_trials():
    for sampler in ("tpe", "random"):
        first, again, other = (ParameterSearch(BOWL, 24, accept, sampler, seed) for seed in (3, 3, 4))
        assert searched(first, bowl) == searched(again, bowl) != searched(other, bowl)
        assert first.stored() == again.stored()


def test_tpe_finds_the_optimum_of_a_toy_objective_and_tries_each_set_once():
    search = ParameterSearch(BOWL, 80, accept, "tpe", seed=0)
    evaluated = searched(search, bowl)
    assert max(value for _, value in evaluated) == 0.0  # found x=13, y=4 within 80 of the 400 sets
    assert len(evaluated) == 80 and len({tuple(p.items()) for p, _ in evaluated}) == 80
    kept = search.stored()
    repeats = [(t, kept[t["attrs"]["repeat_of"]]) for t in kept if "repeat_of" in t.get("attrs", {})]
    assert repeats and all(t["params"] == first["params"] for t, first in repeats)
    # a repeat is told what its set got then; one asked while its set was still being evaluated fails
    assert all(t["value"] == first["value"] for t, first in repeats if t["state"] != "FAIL")


def test_sets_the_strategy_rejects_are_pruned_not_fatal():
    space = {"fast": [5, 10, 20, 40], "slow": [10, 20, 40, 80]}  # sma_cross wants fast < slow: 6 of 16 refused
    rejects = rejection("sma_cross")
    search = ParameterSearch(space, 8, rejects, "tpe", seed=1)
    evaluated = searched(search, lambda p: float(p["slow"] - p["fast"]))
    assert len(evaluated) == 8 and all(p["fast"] < p["slow"] for p, _ in evaluated)
    refused = [t for t in search.stored() if "rejected" in t.get("attrs", {})]
    assert refused and all(t["state"] == "PRUNED" and t["params"]["fast"] >= t["params"]["slow"] for t in refused)
    assert "fast" in refused[0]["attrs"]["rejected"]
    unjudged = ParameterSearch(space, 3, rejects, "tpe", seed=1)  # too few trades: None, pruned as well
    searched(unjudged, lambda p: None)
    assert {t["state"] for t in unjudged.stored() if "repeat_of" not in t.get("attrs", {})} == {"PRUNED"}


def test_the_study_round_trips_through_the_fork_registry_and_warm_starts_a_search(tmp_path):
    cold = ParameterSearch(BOWL, 16, accept, "tpe", seed=5)
    searched(cold, bowl)
    store = Store(tmp_path / "mesh.db")
    registry = ForkRegistry(store)
    registry.register("o", "sqlite", "mesh.db", "optimization", "allocator", 0, 60, 60_000, writable=False)
    registry.merge_results("o", {"optimization": {"strategy": "toy", "study": cold.stored()}})
    kept = registry.results("o")["optimization"]["study"]
    store.close()
    assert [seen(t) for t in load_trials(kept, BOWL)] == [seen(t) for t in cold.study.trials]
    narrower = {**BOWL, "x": [0, 1]}  # the grid changed since: what no longer fits is left out
    assert [seen(t) for t in load_trials(kept, narrower)] == [seen(t) for t in cold.study.trials if t.params["x"] < 2]

    warm = ParameterSearch(BOWL, 16, accept, "tpe", seed=6, earlier=kept)
    fresh = ParameterSearch(BOWL, 16, accept, "tpe", seed=6)
    assert len(warm.study.trials) == len(kept)  # the earlier trials inform the sampler...
    best_warm, best_fresh = (max(v for _, v in searched(s, bowl)) for s in (warm, fresh))
    assert len(warm.stored()) >= 16 and len(warm.study.trials) == len(kept) + len(warm.stored())  # ...not its record
    assert best_warm > best_fresh


@pytest.fixture(scope="module")
def fork(tmp_path_factory) -> tuple[str, int]:
    return candle_store(tmp_path_factory.mktemp("search") / "fork.db", 1500)


def test_an_optimisation_keeps_its_study_and_starts_from_an_earlier_one(fork):
    location, now = fork
    settings = load_settings(optimize_sampler="tpe", optimize_seed=2)
    first = optimize("momentum", None, location, SYMBOLS, settings, now - 1500 * 60_000, now, "roi", samples=6,
                     workers=1)
    assert (first.sampler, first.seed, first.trials) == ("tpe", 2, 6)
    tried = [t for t in first.study if "repeat_of" not in t.get("attrs", {})]
    assert len(tried) == 6 and {t["state"] for t in tried} <= {"COMPLETE", "PRUNED"}
    judged = [t["value"] for t in tried if t["state"] == "COMPLETE"]
    assert judged and first.best_in_sample == max(judged)
    later = optimize("momentum", None, location, SYMBOLS, settings, now - 1500 * 60_000, now, "roi", samples=6,
                     workers=1, warm_start=first.study)
    assert later.trials == 6 and "(tpe)" in later.reason
    assert later.study != first.study  # TPE models from the start: the earlier trials count as its random ones
