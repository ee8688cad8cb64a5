"""Allocator (the meta-allocator): splits capital across strategies from fork-based backtests and the
market regime. Equal weights to start; after the first validation, performance-based weights.

- Regime: classifies the market from the feed's candles (meshtrader.domain.regime), stores each change in
  market_regimes and publishes it on `regime`.
- Validation (workflow 1): on the schedule, when a strategy has lost `MESH_VALIDATION_LOSS_PCT` since
  the last one, when the regime changes, and on demand (`mesh validate`): every strategy is backtested
  on a read-only fork over several lookback windows. Its score blends the windows (recent first), the
  learned regime x strategy table, and a penalty for strategies holding the same positions; weights are
  a softmax of the scores within bounds, capped by each strategy's Kelly fraction; a strategy whose
  validation shows no edge (ROI after fees <= 0 over the windows) gives its share to the cash line, up
  to MESH_ALLOC_CASH_MAX_PCT. Deactivated strategies get 0%, and come back only after a successful
  validation.
- What-if (workflow 3): before moving money, the current, proposed and equal allocations are simulated
  together on a fork; the best by the objective is the one published, with the comparison as reason.
- Optimisation (workflow 2): every `MESH_OPTIMIZE_EVERY`th validation one strategy (in turn) gets a
  walk-forward parameter search in worker processes over a fork (meshtrader.research.optimize), in a background
  thread; a set that beats the live one out of sample is published on `params.<strategy>` and its
  worker swaps it in without a restart.
"""
from __future__ import annotations

import json
import queue
import threading
import time
from decimal import Decimal

from meshtrader.domain.allocation import (
    CASH,
    AllocationDecision,
    AllocationRules,
    allocate,
    equal_weights,
    meaningful_change,
    split_cash,
)
from meshtrader.domain.candles import Bar
from meshtrader.domain.regime import RegimeDetector, RegimeReading
from meshtrader.persistence.fork_registry import ForkRegistry
from meshtrader.persistence.store import Store
from meshtrader.persistence.views import last_allocation
from meshtrader.research.backtest import Report, simulate_allocations
from meshtrader.research.cluster import Cancelled
from meshtrader.research.metrics import ranking_figure, shown
from meshtrader.research.optimize import optimize
from meshtrader.research.validation import MIN_TRADES, Judgement, judge, validation_backtests
from meshtrader.runtime.config import Settings
from meshtrader.services.base import Service, main
from meshtrader.wire.messages import (
    Accepted,
    AccountSnapshot,
    Allocation,
    AllocatorRequests,
    Candle,
    CreateFork,
    ForkReplies,
    ForkReply,
    MarketRegime,
    ParamsUpdate,
    Reactivate,
    RiskReplies,
    RiskStatus,
    RiskStatusReply,
    RunValidation,
    candle_topic,
)

REVALIDATE_GAP_MS = 60 * 60_000  # loss and regime triggers: at most one validation per market hour


class Allocator(Service):
    background = True

    def __init__(self, settings: Settings) -> None:
        super().__init__("allocator", settings)

    def setup(self) -> None:
        s = self.settings
        self.publisher("allocator.pub")
        self.allocation_gauge = self.metrics.gauge("mesh_allocation_ratio", "each strategy's share of the capital",
                                                   ("strategy",))
        self.cash_gauge = self.metrics.gauge("mesh_allocation_cash_ratio", "the share of the capital held in cash")
        self.registry = ForkRegistry(self.store)
        self.held: list[str] = []  # forks cited by what was published last: released at the next validation
        last = last_allocation(self.store)
        if last:
            (self.weights, self.reason), self.based_on = last, []
        if not last or set(split_cash(self.weights)[0]) != set(s.strategies):
            self.set_weights(equal_weights(s.strategies), "equal weights until the first validation cycle")
        else:
            self.publish()
        self.live_params = {name: self.store.get_state(f"params.{name}") or s.strategy_params.get(name)
                            for name in s.strategies}
        self.forks = self.client("forks.rep", ForkReplies, timeout_ms=15_000, retries=1, stoppable=True)
        self.risk = self.client("risk.rep", RiskReplies, timeout_ms=1000, retries=1)
        self.serve("allocator.rep", AllocatorRequests, self.on_request)
        self.next_validation: int | None = None
        self.last_validation_et = 0
        self.validations = 0
        # (every reason asked for, optimise too): run on the loop, not in a handler
        self.pending: tuple[list[str], bool] | None = None
        self.nav_at_validation: dict[str, Decimal] = {}
        self.rearm_loss_trigger = False
        self.optimizing: threading.Thread | None = None
        self.optimizing_fork = ""
        self.optimize_wanted: list[str] = []  # asked for while one ran: the validation forks that asked
        self.optimized: queue.Queue = queue.Queue()
        self.next_to_optimize = 0
        symbols = s.symbols
        # a regime per symbol, each read with the other's correlation; the first symbol's is the market's: it
        # drives revalidation and the regime x strategy table
        self.detectors = {sym: RegimeDetector(sym, next((o for o in symbols if o != sym), None)) for sym in symbols}
        self.detector = self.detectors[symbols[0]]
        self.regime = ""
        self.symbol_regimes: dict[str, dict] = {}
        warm = self.detector.rules.window + self.detector.rules.slope_bars + 10
        history = {sym: self.store.recent_candles(sym, warm, s.timeframe) for sym in symbols}
        for candle in sorted((c for cs in history.values() for c in cs), key=lambda c: (c.open_time, c.symbol != symbols[0])):
            for detector in self.detectors.values():  # warm up after a restart: no re-announcement
                reading = detector.update(candle)
                confirmed = reading is not None and detector.confirm(reading)
                if confirmed and detector is self.detector:
                    self.regime = reading.regime
        self.subscribe([s.endpoint("feed.pub")], [candle_topic(sym, s.timeframe) for sym in symbols], self.on_candle)
        self.subscribe([s.endpoint("executor.pub")], [b"acct"], self.on_account)
        self.loop.every(0.5, self.run_pending)
        self.loop.every(0.5, self.collect_optimizations)

    # ----- triggers -----------------------------------------------------------------------------------
    def on_candle(self, topic: bytes, candle: Candle) -> None:
        self.event_time = max(self.event_time, candle.et)
        self.observe_regime(candle)
        every_ms = int(self.settings.validation_every_min * 60_000)
        if self.next_validation is None:
            self.next_validation = candle.et + every_ms  # a first period of data before the first validation
        elif candle.et >= self.next_validation:
            self.next_validation = candle.et + every_ms
            self.request_validation("schedule")

    def observe_regime(self, candle: Candle) -> None:
        read = False
        for symbol, detector in self.detectors.items():
            reading = detector.update(candle)
            if reading is None:
                continue
            confirmed = detector.confirm(reading)
            self.symbol_regimes[symbol] = {"regime": detector.regime, "reading": reading.regime,
                                           "metrics": reading.metrics(), "event_time": candle.et}
            read = True
            if confirmed and detector is self.detector:
                self.record_regime(reading, candle)
        if read:  # every reading, for the dashboard's gauges (Redis is written in the background, the latest only)
            self.hot.put("regime.symbols", self.symbol_regimes)

    def record_regime(self, reading: RegimeReading, candle: Candle) -> None:
        """The market's regime changed: stored, published, and strategies revalidated if it has been a while."""
        metrics = reading.metrics()
        previous, self.regime = self.regime, reading.regime
        self.store.insert_many("market_regimes", ("event_time", "regime", "metrics", "created_at"),
                               [(candle.et, reading.regime, json.dumps(metrics), time.time())])
        self.hot.put("regime", {"regime": reading.regime, "metrics": metrics, "event_time": candle.et})
        self.pub.publish(b"regime", MarketRegime(regime=reading.regime, metrics=metrics, et=candle.et))
        self.log.info("regime_changed", regime=reading.regime, **metrics)
        if previous and self.validations and candle.et - self.last_validation_et >= REVALIDATE_GAP_MS:
            self.request_validation(f"regime changed from {previous} to {reading.regime}")

    def on_account(self, topic: bytes, snapshot: AccountSnapshot) -> None:
        """A strategy that lost enough since the last validation is validated again now."""
        navs = {account.strategy: account.nav for account in snapshot.accounts}
        if self.rearm_loss_trigger:
            self.nav_at_validation, self.rearm_loss_trigger = navs, False
            return
        if snapshot.et - self.last_validation_et < REVALIDATE_GAP_MS:
            return
        for name, nav in navs.items():
            before = self.nav_at_validation.get(name)
            if before and nav <= before * (1 - self.settings.validation_loss_pct):
                self.nav_at_validation = {}  # once per validation
                self.request_validation(f"{name} lost {(1 - nav / before) * 100:.1f}% since the last validation")
                return

    def on_request(self, request: RunValidation) -> Accepted:
        self.request_validation(request.reason, optimize=request.optimize)
        return Accepted(message=f"validation queued ({request.reason})"
                                + (", with a parameter optimisation" if request.optimize else ""))

    def request_validation(self, why: str, optimize: bool = False) -> None:
        """A request made while another waits joins it: one validation runs for both, both reasons recorded."""
        if self.pending is None:
            self.pending = ([why], optimize)
        else:
            reasons, wanted = self.pending
            self.pending = (reasons if why in reasons else [*reasons, why], wanted or optimize)

    def run_pending(self) -> None:
        if self.pending is None or not self.event_time:
            return  # before the first candle there is nothing to validate on: the request waits for data
        (reasons, optimize_now), self.pending = self.pending, None
        self.validate(reasons, optimize_now)

    # ----- workflow 1: validation on a fork -----------------------------------------------------------
    def fork(self, purpose: str, ttl_s: int) -> ForkReply | None:
        reply = self.forks.request(CreateFork(purpose=purpose, requester=self.name, ttl_s=ttl_s, src=self.name))
        if not isinstance(reply, ForkReply) or not reply.ok:
            self.log.warning("fork_refused", purpose=purpose,
                             why=getattr(reply, "reason", None) or "fork manager not answering")
            return None
        return reply

    def done_with(self, fork_id: str) -> None:
        """A fork this allocator has finished with goes back to the fork manager (destroyed at its next sweep),
        unless what was just published cites it: then it is held until the next validation, so the narrator
        can still ask to keep it."""
        if fork_id and fork_id not in self.held:
            self.registry.release(fork_id, self.name)

    def hold(self, fork_ids: list[str]) -> None:
        self.held += [f for f in fork_ids if f and f not in self.held]

    def release_held(self) -> None:
        held, self.held = self.held, []
        for fork_id in held:
            self.done_with(fork_id)

    def teardown(self) -> None:
        """Whatever this allocator still holds goes back (an optimisation cut short included)."""
        self.release_held()
        self.done_with(self.optimizing_fork)

    def read_fork(self, location: str, since: int) -> dict[str, list[Bar]]:
        fork = Store(self.settings.fork_location(location), read_only=True)
        try:
            return {sym: fork.bars(sym, self.settings.timeframe, since) for sym in self.settings.symbols}
        finally:
            fork.close()

    def validate(self, triggers: list[str], optimize_now: bool = False) -> None:
        """Backtest every strategy on a fork over each lookback window, then reweight (via a what-if)."""
        self.release_held()  # the last allocation's forks: the narrator has had its chance to keep them
        ttl = int(self.settings.validation_every_min * 60 * 2)
        reply = self.fork("validation", ttl)
        if reply is None:
            return
        try:
            self.validate_on(reply, triggers, optimize_now)
        except Cancelled as cut:  # supervisord stops us: end within one backtest, not after all of them
            self.log.info("validation_cancelled", fork_id=reply.fork_id, why=str(cut))
        finally:
            self.done_with(reply.fork_id)

    def validate_on(self, reply: ForkReply, triggers: list[str], optimize_now: bool) -> None:
        s = self.settings
        why = " and ".join(triggers)
        self.validations += 1
        self.last_validation_et = self.event_time
        windows = sorted(s.validation_windows_min)
        validation = validation_backtests({name: self.live_params.get(name) for name in s.strategies}, windows,
                                          s.fork_location(reply.path), s, self.event_time, self.log,
                                          cancelled=lambda: self.loop.stopping)
        per_window = validation.windows
        reports = {f"{minutes:g}m": {name: summary(r) for name, r in results.items()}
                   for minutes, results in zip(windows, per_window, strict=True)}
        recent = per_window[0]
        judged = judge(validation, s.validation_window_weights, s.correlation_max, s.regime_weight,
                       self.learned_scores(list(recent)))
        if self.regime:
            self.store.learn_regime_scores(self.regime, {n: r.bar_sharpe for n, r in recent.items()
                                                         if r.trades >= MIN_TRADES})
        deactivated = self.reactivate_the_recovered(recent)
        decision = allocate(judged.scores, judged.kelly, judged.rois, deactivated, AllocationRules.from_settings(s))
        weights = decision.weights
        self.rearm_loss_trigger = True  # losses count from the next account snapshot on
        reason = (f"validation ({why}) on {reply.fork_id} over {', '.join(reports)}: " + "; ".join(
            f"{name} Sharpe {shown(r.sharpe, r.days)} ROI {r.roi * 100:.2f}% ({r.trades} trades)"
            for name, r in recent.items()))
        notes = [f"regime {self.regime}" if self.regime else ""]
        notes += [f"Kelly cap on {', '.join(decision.capped_by)}" if decision.capped_by else ""]
        notes += [f"{a}~{b} hold together ({c:.2f})" for (a, b), c in judged.correlations.items()
                  if c > s.correlation_max]
        notes += [f"{n} deactivated: 0%" for n in deactivated]
        notes += [cash_note(decision, judged, s.alloc_cash_max_pct)]
        reason += "".join(f"; {n}" for n in notes if n)
        changes = meaningful_change(self.weights, weights, s.alloc_change_pct)
        proposed = ", ".join(f"{name} {share * 100:.1f}%" for name, share in weights.items())
        outcome = (f"proposed {proposed}; a what-if decides" if changes else
                   f"kept the allocation: {proposed} is within MESH_ALLOC_CHANGE_PCT of the weights in force")
        self.registry.merge_results(reply.fork_id, {"validation": reports, "trigger": why, "triggers": triggers,
                                                    "decision": outcome, "inputs": {
            "scores": judged.scores, "kelly": judged.kelly, "rois": judged.rois, "no_edge": decision.no_edge,
            "regime": self.regime, "correlations": {f"{a}~{b}": c for (a, b), c in judged.correlations.items()}}},
            accumulate=("triggers",))  # a shared fork validated twice: both validations' triggers
        self.log.info("validated", fork_id=reply.fork_id, trigger=why, scores=judged.scores, rois=judged.rois)
        if changes:
            self.what_if_then_set(weights, reason, reply.fork_id)
        if optimize_now or (s.optimize_every and self.validations % s.optimize_every == 0):
            self.start_optimization([reply.fork_id], asked=optimize_now)

    def learned_scores(self, names: list[str]) -> dict[str, float]:
        """The regime x strategy table's scores for the current regime, of the strategies it has 2 samples of."""
        table = self.store.regime_scores(self.regime) if self.regime else {}
        return {n: v for n, (v, samples) in table.items() if samples >= 2 and n in names}

    def reactivate_the_recovered(self, recent: dict[str, Report]) -> list[str]:
        """Strategies deactivated by the drawdown rule come back once a validation shows them profitable;
        the others stay at 0%."""
        status = self.risk.request(RiskStatus(src=self.name))
        if not isinstance(status, RiskStatusReply):
            return []
        still = []
        for name in status.deactivated:
            report = recent.get(name)
            if report and report.trades >= MIN_TRADES and report.roi > 0 and report.bar_sharpe > 0:
                self.risk.request(Reactivate(strategy=name, src=self.name, reason=(
                    f"validation: ROI {report.roi * 100:.2f}%, Sharpe {shown(report.sharpe, report.days)} over "
                    f"{report.trades} trades")))
                self.log.info("strategy_reactivated", strategy=name, roi=report.roi, sharpe=report.sharpe,
                              days=report.days, bar_sharpe=report.bar_sharpe)
            elif name in recent:
                still.append(name)
        return still

    # ----- workflow 3: what-if before reallocating ----------------------------------------------------
    def what_if_then_set(self, proposed: dict[str, Decimal], reason: str, validation_fork: str) -> None:
        s = self.settings
        scenarios = {"proposed": proposed, "current": self.weights, "equal": equal_weights(s.strategies)}
        reply = self.fork("whatif", int(s.validation_every_min * 60))
        if reply is None:
            self.set_weights(proposed, reason + "; what-if skipped (no fork)", [validation_fork])
            return
        try:
            self.what_if_on(reply, scenarios, reason, validation_fork)
        finally:
            self.done_with(reply.fork_id)

    def what_if_on(self, reply: ForkReply, scenarios: dict[str, dict[str, Decimal]], reason: str,
                   validation_fork: str) -> None:
        s = self.settings
        since = self.event_time - int(min(s.validation_windows_min) * 60_000)
        window = {sym: [b for b in bars if b.open_time >= since] for sym, bars in self.read_fork(reply.path, since).items()}
        outcome = simulate_allocations({n: self.live_params.get(n) for n in s.strategies}, scenarios, window, s)
        # the daily Sharpe needs days the shortest window may not have: ranked by its per-bar form
        figure = ranking_figure(s.optimize_objective if s.optimize_objective != "profit_factor" else "sharpe")
        chosen = max(scenarios, key=lambda n: (outcome[n][figure], n == "proposed"))
        self.registry.merge_results(reply.fork_id, {"whatif": {"scenarios": {n: {k: str(v) for k, v in w.items()}
                                                                             for n, w in scenarios.items()},
                                                              "outcome": outcome, "chosen": chosen},
                                                    "validation_fork": validation_fork})
        compared = ", ".join(f"{n} {figure.replace('_', ' ')} {o[figure]:.4f} ROI {o['roi'] * 100:.2f}% "
                             f"Sharpe {shown(o['sharpe'], o['days'])}" for n, o in outcome.items())
        self.log.info("what_if", fork_id=reply.fork_id, chosen=chosen, outcome=outcome)
        verdict = f"{reason}; what-if on {reply.fork_id}: {compared} -> {chosen}"
        if chosen != "current":
            self.set_weights(scenarios[chosen], verdict, [validation_fork, reply.fork_id])
        else:  # a decision too: stored with its reason, nothing to publish
            self.store.insert_many("allocations", ("event_time", "weights", "reason", "created_at"),
                                   [(self.event_time, json.dumps({k: str(v) for k, v in self.weights.items()}),
                                     verdict, time.time())])

    # ----- workflow 2: parameter optimisation ---------------------------------------------------------
    def start_optimization(self, validation_forks: list[str], asked: bool = False) -> None:
        """One strategy's parameter search, in a thread. While one runs, a scheduled one is skipped; one asked
        for (`mesh validate --optimize`) starts when the running one ends."""
        s = self.settings
        if self.optimizing is not None and self.optimizing.is_alive():
            if asked:
                self.optimize_wanted += validation_forks
            return
        candidates = [n for n in s.strategies if n != "bench"]
        if not candidates:
            return
        strategy = candidates[self.next_to_optimize % len(candidates)]
        self.next_to_optimize += 1
        reply = self.fork("optimization", int(s.validation_every_min * 60 * 4))
        if reply is None:
            return
        since, until = self.event_time - int(s.optimize_window_min * 60_000), self.event_time
        earlier = self.store.get_state(f"study.{strategy}") or ()  # the last search's trials guide this one

        def work() -> None:
            try:
                result = optimize(strategy, self.live_params.get(strategy), s.fork_location(reply.path), s.symbols,
                                  s, since, until, s.optimize_objective, s.optimize_samples, s.optimize_workers,
                                  log=self.log, warm_start=earlier)
            except Exception as error:  # reported on the loop; the allocator carries on
                result = error
            self.optimized.put((reply.fork_id, validation_forks, strategy, result))

        self.log.info("optimization_started", fork_id=reply.fork_id, strategy=strategy, workers=s.optimize_workers)
        self.optimizing, self.optimizing_fork = threading.Thread(target=work, name=f"optimize-{strategy}",
                                                                 daemon=True), reply.fork_id
        self.optimizing.start()

    def collect_optimizations(self) -> None:
        while not self.optimized.empty():
            fork_id, validation_forks, strategy, result = self.optimized.get()
            try:
                self.optimization_done(fork_id, validation_forks, strategy, result)
            finally:
                if self.optimizing_fork == fork_id:
                    self.optimizing_fork = ""
                self.done_with(fork_id)
        if self.optimize_wanted and not (self.optimizing is not None and self.optimizing.is_alive()):
            wanted, self.optimize_wanted = self.optimize_wanted, []
            self.start_optimization(wanted, asked=True)

    def optimization_done(self, fork_id: str, validation_forks: list[str], strategy: str, result) -> None:
        """Recorded on the fork with the validations that asked for it; adopted parameters published."""
        if isinstance(result, Exception):
            self.log.error("optimization_failed", fork_id=fork_id, strategy=strategy, error=repr(result))
            self.registry.merge_results(fork_id, {"optimization": {"strategy": strategy, "error": repr(result)},
                                                  "validation_forks": validation_forks})
            return
        self.registry.merge_results(fork_id, {"optimization": result.summary(), "validation_forks": validation_forks})
        self.store.put_state(f"study.{strategy}", result.study)
        self.log.info("optimized", fork_id=fork_id, strategy=strategy, adopt=result.adopt, reason=result.reason,
                      seconds=result.seconds)
        if result.adopt:
            self.live_params[strategy] = result.best_params
            self.store.put_state(f"params.{strategy}", result.best_params)
            self.store.agent_event(self.name, "params_adopted", {"strategy": strategy, "fork_id": fork_id,
                                                                 "params": result.best_params})
            self.hold([fork_id])  # the update cites it: the narrator keeps it
            self.pub.publish(b"params." + strategy.encode(), ParamsUpdate(
                strategy=strategy, params=result.best_params, reason=result.reason, fork_id=fork_id,
                et=self.event_time))

    # ----- the allocation -----------------------------------------------------------------------------
    def set_weights(self, weights: dict[str, Decimal], reason: str, forks: list[str] | None = None) -> None:
        """A change of allocation: stored with its reason, kept in Redis, published."""
        self.weights, self.reason, self.based_on = weights, reason, forks or []
        self.hold(self.based_on)
        shown = {k: str(v) for k, v in weights.items()}
        self.store.insert_many("allocations", ("event_time", "weights", "reason", "created_at"),
                               [(self.event_time, json.dumps(shown), reason, time.time())])
        self.log.info("allocation_changed", weights=shown, reason=reason)
        self.publish()

    def publish(self) -> None:
        """On a change only; a late joiner reads the current allocation from Redis."""
        self.hot.put("alloc", {"weights": {k: str(v) for k, v in self.weights.items()}, "reason": self.reason})
        invested, held = split_cash(self.weights)
        for strategy, weight in invested.items():
            self.allocation_gauge.labels(self.name, strategy).set(float(weight))
        self.cash_gauge.labels(self.name).set(float(held))
        self.pub.publish(b"alloc", Allocation(weights=self.weights, reason=self.reason, forks=self.based_on,
                                              et=self.event_time))


def summary(report: Report) -> dict:
    return {"sharpe": report.sharpe, "sortino": report.sortino, "days": report.days, "bar_sharpe": report.bar_sharpe,
            "roi": report.roi, "max_drawdown": report.max_drawdown, "trades": report.trades,
            "win_rate": report.win_rate, "profit_factor": report.profit_factor, "bars": report.bars}


def cash_note(decision: AllocationDecision, judged: Judgement, cash_max_pct: Decimal) -> str:
    """Which strategies showed no edge, and what the cash line holds for it."""
    if not decision.no_edge:
        return ""
    said = "no edge (ROI after fees over the windows): " + ", ".join(
        f"{n} {judged.rois[n] * 100:+.2f}%" for n in decision.no_edge)
    held = decision.weights.get(CASH)
    if held:
        return f"{said}; cash {held * 100:.1f}% (at most {float(cash_max_pct) * 100:g}%)"
    return said + ("" if cash_max_pct else "; no cash line (MESH_ALLOC_CASH_MAX_PCT 0)")


if __name__ == "__main__":
    main(Allocator)
