"""Which parameter sets an optimisation tries: an Optuna study, asked and told in rounds.

Both samplers search the strategy's grid (`search_space`) and record what they tried in one Optuna study:
- `random`: a seeded sample of distinct valid sets (as before Optuna), enqueued in the study in order;
- `tpe`: Optuna's TPESampler(seed), each parameter a categorical over its grid values, so every suggestion
  is a point of the grid. The first rounds are random (`startup_trials`); then each round's suggestions
  lean toward where the judged sets scored best.
A budget as large as the valid grid tries the whole grid, in its order, whichever sampler (`grid`).

A round asks for TRIALS_PER_ROUND new sets, the caller evaluates them in parallel and tells their values
in the order asked. The round's size does not depend on how many workers run it, so a seed gives the same
trials in one process, two, or on a Dask cluster.

What the study is told: a judged set its objective (COMPLETE); a set with too few trades to judge, or
one the strategy rejects, PRUNED (TPE ranks pruned trials below every complete one, so it learns to avoid
them). A set already tried in this search is told what it got then, marked `repeat_of` (Optuna's FAQ
way; on a toy 20x20 grid it found the optimum within 80 sets for 8 seeds of 8, against 2 of 8 when repeats
were failed, which TPE ignores and so suggests again), and another is asked for; a repeat of a set still
being evaluated fails. After MAX_ASKS_PER_SET asks without a new valid set (a small grid nearly spent), the
next untried set in seeded random order is enqueued: a search always gets its budget of distinct sets, each
one backtest.

The study leaves as a JSON-able list (`stored`) in the optimisation's result, and `earlier` trials (a
previous search of the same strategy, on an earlier window) warm-start a new one: they inform the sampler
only (TPE counts them as its random start, so it models from the first round); a set is judged on this
search's window alone, the earlier trials are not part of its record.
"""
from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence
from typing import Any, Literal

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)  # its INFO lines are plain text: our logs are JSON

Space = dict[str, list]
Sampler = Literal["tpe", "random"]
Rejects = Callable[[dict], str | None]  # why the strategy refuses a parameter set, or None if it takes it

TRIALS_PER_ROUND = 4  # sets asked for before any is told: the parallelism of a search, whatever runs it
MAX_ASKS_PER_SET = 8  # suggestions tried for one new valid set before an untried one is taken instead


def grid(space: Space) -> list[dict]:
    """Every combination of the space's values, in a stable order (none for an empty space)."""
    if not space:
        return []
    names = list(space)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(space[n] for n in names))]


def valid_sets(space: Space, rejects: Rejects) -> list[dict]:
    return [params for params in grid(space) if rejects(params) is None]


def random_sets(valid: list[dict], samples: int, seed: int) -> list[dict]:
    """`samples` distinct sets drawn from `valid` (seeded), or all of them when that is as many or fewer."""
    if samples and samples < len(valid):
        return random.Random(seed).sample(valid, samples)
    return list(valid)


def startup_trials(budget: int) -> int:
    """Random rounds before TPE models: a third of the budget, at least one round (Optuna's default of 10
    would leave little of a small grid's budget to the model)."""
    return max(TRIALS_PER_ROUND, budget // 3)


def distributions(space: Space) -> dict[str, CategoricalDistribution]:
    """Each parameter a choice among its grid values: whatever TPE suggests is a point of the grid."""
    return {name: CategoricalDistribution(values) for name, values in space.items()}


def _key(params: dict) -> tuple:
    return tuple(sorted(params.items()))


class ParameterSearch:
    """Ask for new parameter sets in rounds, tell their objective values (None: unjudged), keep the study."""

    def __init__(self, space: Space, samples: int, rejects: Rejects, sampler: Sampler = "tpe", seed: int = 0,
                 earlier: Sequence[dict] = ()) -> None:
        valid = valid_sets(space, rejects)
        drawn = random_sets(valid, samples, seed)
        self.budget = len(drawn)
        self.sampler = sampler if self.budget < len(valid) else "grid"  # the whole grid: nothing to choose
        self.rejects = rejects
        self.distributions = distributions(space)
        self.study = optuna.create_study(direction="maximize", sampler=(
            optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=startup_trials(self.budget))
            if self.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed)))
        self.study.add_trials(load_trials(earlier, space))
        self.first = len(self.study.trials)  # this search's trials start here
        self.untried = random.Random(seed).sample(valid, len(valid))  # fallback order when TPE only repeats
        if self.sampler != "tpe":
            for params in drawn:
                self.study.enqueue_trial(params)
        self.numbers: dict[tuple, int] = {}  # each set tried in this search -> the number of its trial
        self.pending: list[optuna.Trial] = []
        self.tried = 0

    def ask(self, count: int = TRIALS_PER_ROUND) -> list[dict]:
        """Up to `count` sets not tried in this search yet; none once the budget is spent. A round is told
        before the next is asked: what TPE suggests next depends on every value told before."""
        if self.pending:
            raise RuntimeError("tell the values of the sets asked for before asking again")
        while len(self.pending) < count and self.tried + len(self.pending) < self.budget:
            self.pending.append(self._ask_new())
        return [trial.params for trial in self.pending]

    def tell(self, values: Sequence[float | None]) -> None:
        """The objective of each set of the last `ask`, in its order; None (or NaN): too few trades to judge."""
        if len(values) != len(self.pending):
            raise ValueError(f"{len(values)} values for {len(self.pending)} sets")
        for trial, value in zip(self.pending, values, strict=True):
            if value is None or math.isnan(value):
                self.study.tell(trial, state=TrialState.PRUNED)
            else:
                self.study.tell(trial, value)
        self.tried += len(self.pending)
        self.pending = []

    def _ask_new(self) -> optuna.Trial:
        for _ in range(MAX_ASKS_PER_SET):
            trial = self.study.ask(self.distributions)
            key = _key(trial.params)
            if key in self.numbers:
                self._tell_repeat(trial, self.study.get_trials(deepcopy=False)[self.numbers[key]])
                continue
            self.numbers[key] = trial.number
            reason = self.rejects(trial.params)
            if reason is None:
                return trial
            trial.set_user_attr("rejected", reason)
            self.study.tell(trial, state=TrialState.PRUNED)
        self.study.enqueue_trial(next(p for p in self.untried if _key(p) not in self.numbers))
        trial = self.study.ask(self.distributions)
        self.numbers[_key(trial.params)] = trial.number
        return trial

    def _tell_repeat(self, trial: optuna.Trial, first: FrozenTrial) -> None:
        """A set tried before is told what it got then (the way Optuna's FAQ has it: TPE's model then weighs
        it as often as it suggests it); one still being evaluated fails."""
        trial.set_user_attr("repeat_of", first.number - self.first)
        if first.state == TrialState.COMPLETE:
            self.study.tell(trial, first.value)
        else:
            self.study.tell(trial, state=TrialState.PRUNED if first.state == TrialState.PRUNED else TrialState.FAIL)

    def stored(self) -> list[dict[str, Any]]:
        """This search's trials, JSON-able, in the order asked (the earlier ones it started from left out)."""
        return [{"params": t.params, "state": t.state.name, "value": t.value, **(
            {"attrs": t.user_attrs} if t.user_attrs else {})} for t in self.study.trials[self.first:]]


def load_trials(stored: Sequence[dict], space: Space) -> list[FrozenTrial]:
    """Trials kept by `ParameterSearch.stored`, for `study.add_trials`; a trial whose parameters are no longer
    in the search space (the strategy's grid changed) is left out."""
    trials = []
    for kept in stored:
        params = kept["params"]
        if params.keys() != space.keys() or any(v not in space[k] for k, v in params.items()):
            continue
        state = TrialState[kept["state"]]
        trials.append(create_trial(params=params, distributions=distributions(space), state=state,
                                   value=kept["value"] if state == TrialState.COMPLETE else None,
                                   user_attrs=kept.get("attrs", {})))
    return trials
