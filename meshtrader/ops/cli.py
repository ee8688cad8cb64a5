"""`mesh`: start, stop, inspect and steer a mesh. Every command honours MESH_HOME and MESH_PORT_BASE."""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from meshtrader.domain.risk import BOOK_KEY
from meshtrader.ops.status import mesh_state
from meshtrader.persistence.hotstate import HotState
from meshtrader.persistence.store import Store
from meshtrader.research.metrics import shown
from meshtrader.runtime.config import LIVE_CONFIRMATION, REPO_ROOT, ConfigError, Settings, load_settings
from meshtrader.runtime.supervise import Supervisor, default_paths, local_paths, render
from meshtrader.wire.messages import (
    ControlReply,
    ErrorReply,
    LimitReply,
    ResetRisk,
    RiskReplies,
    RiskStatus,
    RiskStatusReply,
    SetKillSwitch,
    SetPaused,
    SetRiskLimit,
)

START_TIMEOUT_S = 90
UP_POLL_S = 0.1  # how often `mesh up` looks: a supervisord call and, at the end, one HTTP request


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    """Start the mesh with this shell's settings (flags included), recorded in $MESH_HOME/settings.json
    for its services and `mesh status`. In the foreground it returns 0 when the mesh is stopped as
    asked (Ctrl-C, `mesh down`, `supervisorctl shutdown`), 1 if supervisord dies."""
    import signal

    from meshtrader.runtime.config import dashboard_token, dotenv_values, forget_settings, record_settings

    overrides = {k: v for k, v in (("MESH_FEED", args.feed), ("MESH_EXCHANGE", args.exchange),
                                   ("MESH_EXCHANGE_URL", args.exchange_url), ("MESH_MODE", args.mode)) if v}
    if args.mode == "live" and os.environ.get("MESH_LIVE_CONFIRM") != LIVE_CONFIRMATION:
        if not sys.stdin.isatty():
            print(f"live trading sends real orders: set MESH_LIVE_CONFIRM={LIVE_CONFIRMATION}", file=sys.stderr)
            return 2
        answer = input(f"Live trading sends real orders with real money. Type {LIVE_CONFIRMATION} to go on: ")
        if answer.strip() != LIVE_CONFIRMATION:
            print("not confirmed: nothing started")
            return 1
        overrides["MESH_LIVE_CONFIRM"] = LIVE_CONFIRMATION
    if overrides:  # flags are settings too: validate them, and hand them to every program
        os.environ.update(overrides)
        try:
            settings = load_settings()
        except ConfigError as error:
            print(f"config error: {error}", file=sys.stderr)
            return 2
    supervisor = Supervisor(settings)
    if supervisor.running():
        print(f"a mesh is already running in {settings.home_dir} (mesh status; mesh down to stop it)")
        return 1
    if settings.curve_keys:  # every service loads them: a bad key directory is said once, here
        from meshtrader.bus.curve import CurveKeys

        try:
            CurveKeys.load(settings.curve_keys)
        except ConfigError as error:
            print(f"config error: {error}", file=sys.stderr)
            return 2
    settings.prepare_home()
    record_settings(settings)  # every program loads these (credentials excepted), whatever its environment
    dashboard_token(settings)  # made now, before the dashboard starts, unless MESH_DASHBOARD_TOKEN is set
    conf = settings.supervisord_conf
    conf.write_text(render(settings, local_paths(settings), with_redis=settings.redis_url is None))
    command = [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)]
    # Credentials reach the services through supervisord's environment: this shell's, and the .env of
    # this directory (the services run in the repository, whose .env may be another or none).
    env = {**dotenv_values(), **os.environ, "MESH_HOME": str(settings.home_dir),
           "MESH_PORT_BASE": str(settings.port_base)}
    source = (f"live {settings.exchange}" + (f" at {settings.exchange_url}" if settings.exchange_url else "")
              if settings.feed == "live" else "replay of the bundled data")
    trading = ("paper trading, no real money" if settings.mode == "paper" else
               f"LIVE TRADING on {settings.exchange}" + (" (sandbox)" if settings.live_sandbox and
                                                         not settings.exchange_url else ""))
    print(f"starting the mesh in {settings.home_dir} (mode: {settings.mode}, {trading}; market data: {source})")
    started = subprocess.run(command, env=env, cwd=REPO_ROOT)  # supervisord daemonizes itself
    if started.returncode != 0:
        forget_settings(settings)
        print(f"supervisord failed to start (exit {started.returncode}); see {settings.log_dir}/supervisord.log")
        return 1
    stopping: list[int] = []

    def stop(signum: int, frame: object) -> None:  # the first signal stops the mesh; more are not needed
        if not stopping:
            stopping.append(signum)
            raise KeyboardInterrupt

    # Ctrl-C (SIGINT; make also passes it on), SIGTERM or a closed terminal: stop the mesh, exit 0.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        if not _wait_until_up(settings, supervisor):
            print("what did start is still running, for inspection: mesh status; mesh down stops it")
            return 1
        if args.detach:
            return 0
        print("Ctrl-C stops everything (so does mesh down).")
        supervisor.wait_exit(supervisor.pid())
    except KeyboardInterrupt:
        print("\nstopping the mesh...")
        return cmd_down(settings, args)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if supervisor.exited_cleanly():  # stopped as asked: mesh down, supervisorctl shutdown
        forget_settings(settings)
        print("mesh stopped")
        return 0
    print(f"supervisord has died; see {settings.log_dir}/supervisord.log")
    return 1


def _wait_until_up(settings: Settings, supervisor: Supervisor) -> bool:
    """Until this machine's programs run and, if the dashboard is one of them, it answers."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last_report = ""
    dashboard_here = "dashboard" in {p.name for p in settings.local_programs()}
    while time.monotonic() < deadline:
        states = {name: info["statename"] for name, info in supervisor.processes().items()}
        waiting = sorted(name for name, state in states.items() if state != "RUNNING")
        if states and not waiting and (not dashboard_here or _healthy(settings.dashboard_url + "healthz")):
            from meshtrader.runtime.config import dashboard_token
            from meshtrader.runtime.supervise import supervisorctl_command

            token, kept_in = dashboard_token(settings)
            print(f"mesh up: {len(states)} programs RUNNING\n"
                  + (f"dashboard: {settings.dashboard_url}\n" if dashboard_here else "")
                  + (f"dashboard token (its controls ask for it): {token}  (kept in {kept_in})\n"
                     if kept_in and dashboard_here else "")
                  + f"supervisorctl: {supervisorctl_command(settings)} status")
            return True
        report = "waiting for: " + (", ".join(f"{n} ({states[n]})" for n in waiting) if waiting else "dashboard")
        if report != last_report:
            print(report)
            last_report = report
        time.sleep(UP_POLL_S)
    print(f"the mesh did not come up within {START_TIMEOUT_S}s; logs are in {settings.log_dir}")
    return False


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from meshtrader.runtime.config import forget_settings

    supervisor = Supervisor(settings)
    if not supervisor.running():
        if not settings.supervisor_socket.exists():
            forget_settings(settings)  # a stale record of a mesh that is gone
        print(f"no mesh is running in {settings.home_dir}")
        return 0
    supervisor.shutdown()
    for _ in range(300):
        if not supervisor.running() and not settings.supervisor_socket.exists():
            break
        time.sleep(0.1)
    forget_settings(settings)
    print("mesh stopped")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    try:  # the running mesh's settings (mode, strategies, ports), as `mesh up` recorded them
        settings = load_settings(recorded=True, home=settings.home_dir)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    state = mesh_state(settings, HotState(settings.effective_redis_url, settings.redis_prefix))
    if args.json:
        print(json.dumps(state))
        return 0
    print(f"mode {state['mode']}  market {state['market']}  trading {state['trading_state']}  equity {state['equity']}  "
          f"cash {state['cash']}  trades {state['trades']}")
    if state["risk_reason"]:  # why trading is not ACTIVE: who paused it, the halt, the stale data
        print(f"  {state['risk_reason']}")
    for name, service in state["services"].items():
        age = service["heartbeat_age_s"]
        print(f"  {name:22} {service['state']:10} {'healthy' if service['healthy'] else 'UNHEALTHY':10} "
              f"heartbeat {'-' if age is None else f'{age:.1f}s ago'}")
    for p in state["positions"]:
        futures = f"  margin {p['margin']}  liquidation {p['liquidation_price']}" if "margin" in p else ""
        print(f"  position {p['strategy']:12} {p['symbol']:9} qty {p['qty']} avg {p['avg_price']} last {p['last_price']}"
              + futures)
    print("  allocations: " + ", ".join(f"{k} {v:.2f}%" for k, v in state["allocations"].items()))
    return 0


ASK_RISK = (1000, 2)  # a control's wait for the risk guard: ms per try, tries (the controls that set a value)
ASK_RISK_ONCE = (3000, 1)  # a reset moves a baseline each time it is applied: it is never sent twice


def cli_user() -> str:
    """Who is at this terminal, as the controls record it."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return "cli"


def journal_control(store: Store, service: str, control: str, by: str, change: str) -> None:
    """Record a control made from here (persistence.audit), at the market time of the last stored candle."""
    from meshtrader.persistence import views
    from meshtrader.persistence.audit import record_control

    record_control(store, service, control, by, change, views.candles_end(store) or None)


def save_for_risk_guard(settings: Settings, control: str, by: str, change: str, **book: Any) -> str | None:
    """The risk guard did not answer. If it is down, write the change into its stored book, which it reads when
    it starts, record it (in its risk_events and the controls' journal) as made while it was not answering,
    and return None. If it runs but was too slow, write nothing (its next save would overwrite the book and
    lose the change) and say so."""
    if Supervisor(settings).processes().get("risk", {}).get("statename") == "RUNNING":
        return "the risk guard is running but did not answer in time; nothing changed: try again"
    change = f"{change} while the risk guard was not answering"
    with closing(Store(settings.store_location)) as store:
        store.put_state(BOOK_KEY, {**(store.get_state(BOOK_KEY) or {}), **book})
        store.insert_many("risk_events", ("rule", "reason", "created_at"), [(control, change, time.time())])
        journal_control(store, "risk", control, by, change)
    return None


def set_kill_switch(settings: Settings, on: bool, by: str) -> tuple[bool, str]:
    """Ask the risk guard; if it is down, persist the switch where it will read it at start."""
    reply = ask(settings, "risk.rep", RiskReplies, SetKillSwitch(on=on, by=by, src=by), by, *ASK_RISK)
    if isinstance(reply, RiskStatusReply):
        return True, f"kill switch {'ON' if reply.kill_switch else 'OFF'}; trading state {reply.trading_state}"
    busy = save_for_risk_guard(settings, "kill_switch", by, f"kill switch turned {'on' if on else 'off'} by {by}",
                               kill_switch=on)
    return False, busy or (f"the risk guard did not answer; kill switch {'ON' if on else 'OFF'} is saved and applies "
                           "when it starts (no orders are approved while it is down)")


def set_paused(settings: Settings, on: bool, by: str) -> tuple[bool, str]:
    """Pause trading (exits only, REDUCING) or resume it. Ask the risk guard; if it is down, persist the pause
    where it will read it at start."""
    reply = ask(settings, "risk.rep", RiskReplies, SetPaused(on=on, by=by, src=by), by, *ASK_RISK)
    if isinstance(reply, RiskStatusReply):
        return True, (f"trading {'paused: only exposure-reducing orders pass' if reply.paused else 'not paused'}; "
                      f"trading state {reply.trading_state}" + (f" ({reply.reason})" if reply.reason else ""))
    busy = save_for_risk_guard(settings, "pause", by, f"trading {'paused' if on else 'resumed'} by {by}",
                               paused_by=by if on else "")
    return False, busy or (f"the risk guard did not answer; trading {'paused' if on else 'resumed'} is saved and "
                           "applies when it starts (no orders are approved while it is down)")


@dataclass(frozen=True)
class ControlOutcome:
    """What became of a control: applied, refused (`message` says why: the request was wrong) or not
    answered (the service is down or busy; nothing changed)."""

    status: Literal["applied", "refused", "unanswered"]
    message: str
    limit_values: dict[str, str] = field(default_factory=dict)  # the limits in use after it, when answered


def set_risk_limit(settings: Settings, name: str, value: str, by: str) -> ControlOutcome:
    """Change one risk limit (a field of domain.risk.Limits) at run time; the risk guard checks the value,
    applies it and keeps it across restarts."""
    reply = ask(settings, "risk.rep", RiskReplies, SetRiskLimit(name=name, value=value, by=by, src=by), by,
                *ASK_RISK)
    if isinstance(reply, LimitReply):
        if not reply.ok:
            return ControlOutcome("refused", reply.error, reply.limit_values)
        return ControlOutcome("applied", f"{reply.name} {reply.old} -> {reply.new}" if reply.old != reply.new
                              else f"{reply.name} stays {reply.new}", reply.limit_values)
    if isinstance(reply, ErrorReply):  # answered, but not with a verdict on the change
        return ControlOutcome("refused", f"the risk guard could not take it: {reply.error}")
    return ControlOutcome("unanswered", "the risk guard did not answer (is the mesh up? mesh status); nothing changed")


RESETS = {"reset-peak": "peak", "lift-daily-halt": "daily_loss", "reactivate": "strategy"}  # command -> ResetRisk.what


def reset_risk(settings: Settings, what: str, by: str, strategy: str = "", reason: str = "") -> ControlOutcome:
    """Reset what a loss limit measures from, at the equity now (ResetRisk): applied, refused when there is
    nothing to reset, or unanswered (nothing changed: a reset needs the risk guard's current equity)."""
    reply = ask(settings, "risk.rep", RiskReplies, ResetRisk(what=what, strategy=strategy, reason=reason, by=by,
                                                             src=by), by, *ASK_RISK_ONCE)
    if isinstance(reply, ControlReply):
        said = f"{reply.message if reply.ok else reply.error}; trading state {reply.trading_state}"
        return ControlOutcome("applied" if reply.ok else "refused", said)
    if isinstance(reply, ErrorReply):
        return ControlOutcome("refused", f"the risk guard could not take it: {reply.error}")
    return ControlOutcome("unanswered", "the risk guard did not answer in time (is the mesh up? mesh status); if it "
                          "was running, the reset may have been applied: the control history says (Risk view)")


def risk_limits(settings: Settings) -> dict[str, str] | None:
    """The risk limits in use, by name, as the risk guard says; None if it does not answer."""
    reply = ask(settings, "risk.rep", RiskReplies, RiskStatus(src="cli"), "cli", *ASK_RISK)
    return reply.limit_values if isinstance(reply, RiskStatusReply) else None


def cmd_kill_switch(settings: Settings, args: argparse.Namespace) -> int:
    answered, message = set_kill_switch(settings, args.state == "on", cli_user())
    print(message)
    return 0 if answered else 3


def cmd_pause(settings: Settings, args: argparse.Namespace) -> int:
    answered, message = set_paused(settings, args.command == "pause", cli_user())
    print(message)
    return 0 if answered else 3


def cmd_reset(settings: Settings, args: argparse.Namespace) -> int:
    """reset-peak and lift-daily-halt loosen a loss limit's hold: asked for on a terminal, else --yes."""
    what = RESETS[args.command]
    if what != "strategy" and not args.yes:
        question = {"peak": "Measure the portfolio's drawdown afresh from the equity now?",
                    "daily_loss": "Lift today's daily loss halt and count the day's loss from the equity now?"}[what]
        if not sys.stdin.isatty():
            print(f"{args.command}: {question[:-1].lower()}: confirm with --yes", file=sys.stderr)
            return 2
        if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing done")
            return 1
    outcome = reset_risk(settings, what, cli_user(), getattr(args, "strategy", ""), args.reason)
    print(outcome.message, file=sys.stdout if outcome.status == "applied" else sys.stderr)
    return {"applied": 0, "refused": 1, "unanswered": 3}[outcome.status]


def cmd_limit(settings: Settings, args: argparse.Namespace) -> int:
    if args.name is None:
        limits = risk_limits(settings)
        if limits is None:
            print("the risk guard did not answer (is the mesh up? mesh status)", file=sys.stderr)
            return 3
        for name, value in limits.items():
            print(f"{name:28} {value}")
        return 0
    if args.value is None:
        print("mesh limit NAME VALUE changes a limit (mesh limit lists them)", file=sys.stderr)
        return 2
    outcome = set_risk_limit(settings, args.name, args.value, cli_user())
    print(outcome.message, file=sys.stdout if outcome.status == "applied" else sys.stderr)
    return {"applied": 0, "refused": 2, "unanswered": 3}[outcome.status]


def cmd_supervisord_conf(settings: Settings, args: argparse.Namespace) -> int:
    paths = default_paths() if args.default else local_paths(settings)
    print(render(settings, paths, with_redis=args.default or settings.redis_url is None), end="")
    return 0


def cmd_prometheus_targets(settings: Settings, args: argparse.Namespace) -> int:
    """Prometheus file_sd targets for this mesh's /metrics ports, one group per service (the topology's,
    for the running mesh's strategies and port base when one is recorded in MESH_HOME)."""
    try:
        settings = load_settings(recorded=True, home=settings.home_dir)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    groups = [{"targets": [f"{host}:{settings.http_port(name)}" for host in
                           ([args.host] if args.host else settings.addresses(name))],
               "labels": {"mesh_service": name}} for name in settings.service_names()]
    print(json.dumps(groups, indent=2))
    return 0


def _market_time(text: str | None) -> int | None:
    """Epoch milliseconds, or an ISO date / datetime read as UTC."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    from datetime import UTC, datetime

    moment = datetime.fromisoformat(text)
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def cmd_backtest(settings: Settings, args: argparse.Namespace) -> int:
    from meshtrader.domain.candles import resample, timeframe_ms
    from meshtrader.marketdata.files import DataError, find_candle_file, find_series_file, load_bars, load_funding
    from meshtrader.research.backtest import Backtester, FundingGap
    from meshtrader.strategies import ParameterError

    try:
        params = json.loads(args.params) if args.params else settings.strategy_params.get(args.strategy)
        start, end = _market_time(args.start), _market_time(args.end)
    except ValueError as error:
        print(f"invalid --params, --from or --to: {error}", file=sys.stderr)
        return 2
    if args.fork:
        fork = next((f for f in fork_rows(settings) if f["id"] == args.fork), None)
        if fork is None or fork["status"] != "active":
            print(f"backtest: no active fork {args.fork!r} (mesh forks lists them)", file=sys.stderr)
            return 2
        args.db = settings.fork_location(fork["path"])
    symbols = [args.symbol.upper().replace("/", "")] if args.symbol else settings.symbols
    data_dir = args.data.resolve() if args.data else settings.data_dir
    market = args.market or settings.market
    leverage = Decimal(args.leverage) if args.leverage else settings.leverage.get(args.strategy, Decimal(1))
    if market == "spot" and leverage != 1 or not 1 <= leverage <= settings.max_leverage:
        print(f"backtest: --leverage {leverage}: spot has none; usdm allows 1 to MESH_MAX_LEVERAGE "
              f"{settings.max_leverage}", file=sys.stderr)
        return 2
    settings = settings.model_copy(update={"market": market, "leverage": {args.strategy: leverage}})
    if not args.db and timeframe_ms(settings.timeframe) < 60_000:
        print(f"backtest: {settings.timeframe} candles come from trades, not the minute files: backtest them from a "
              "store that recorded them (--db or --fork)", file=sys.stderr)
        return 2
    try:
        backtester = Backtester({args.strategy: params}, symbols, settings, settings.timeframe,
                                funding_gaps=args.funding_gaps)
        series, funding = {}, {}
        store = Store(args.db, read_only=True) if args.db else None
        for symbol in symbols:
            bars = store.bars(symbol, settings.timeframe) if store else load_bars(find_candle_file(data_dir, symbol))[0]
            if not store and settings.timeframe != "1m":
                bars = resample(bars, timeframe_ms(settings.timeframe))
            series[symbol] = [b for b in bars if (start is None or b.open_time >= start) and
                              (end is None or b.open_time < end)]
            funding_file = find_series_file(data_dir, symbol, "funding")
            funding[symbol] = load_funding(funding_file) if funding_file else []
    except (ParameterError, DataError, sqlite3.Error, OSError) as error:
        print(f"backtest: {error}", file=sys.stderr)
        return 2
    if not any(series.values()):
        print("backtest: no candles in that window", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        report = backtester.run(series, funding)
    except FundingGap as error:
        print(f"backtest: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    summary = {**report.summary(), "seconds": round(seconds, 3), "bars_per_s": round(report.bars / seconds)}
    if args.plot:
        from meshtrader.research.plot import plot_equity

        plot_equity(report, args.plot)
        summary["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{args.strategy} on {', '.join(symbols)}: {report.bars} bars in {seconds:.2f}s "
          f"({summary['bars_per_s']:,} bars/s)")
    for key in ("trades", "roi", "sharpe", "sortino", "max_drawdown", "win_rate", "profit_factor", "exposure",
                "fees", "final_equity", "rejected"):
        # Sharpe and Sortino of daily returns, with the days they rest on ("n/a (1 day)": not defined)
        print(f"  {key:14} {shown(summary[key], report.days) if key in ('sharpe', 'sortino') else summary[key]}")
    if report.market == "usdm":
        print(f"  {'market':14} usdm (USD-M perpetual futures, {leverage}x, isolated margin)")
        print(f"  {'funding':14} paid {report.funding_paid:.2f}, received {report.funding_received:.2f} USDT "
              f"(net {report.funding_received - report.funding_paid:+.2f})")
        print(f"  {'liquidations':14} {report.liquidations}")
        for assumption in report.funding_assumed:
            print(f"  {'assumed':14} {assumption}")
    if args.plot:
        print(f"  equity curve and drawdown: {args.plot}")
    return 0


def fork_rows(settings: Settings) -> list[dict]:
    """The fork registry, newest first, destroyed forks included."""
    from meshtrader.persistence.fork_registry import ForkRegistry

    if not settings.db_url and not settings.db_path.exists():
        return []
    store = Store(settings.store_location, read_only=True)
    try:
        rows = ForkRegistry(store).listing()
    finally:
        store.close()
    now = time.time()
    return [{"id": r["fork_id"], "backend": r["backend"], "purpose": r["purpose"], "requester": r["requester"],
             "status": r["status"], "created": r["created_at"], "age_s": round(now - r["created_at"], 1),
             "ttl_s": r["ttl_s"], "expires_et": r["expires_et"], "path": r["path"],
             "writable": bool(r["writable"]), "shared": r["shared"], "kept": bool(r["kept"]),
             "cost_estimate": r["cost_estimate"],
             "results": json.loads(r["results"]) if r["results"] else None} for r in rows]


def ask(settings: Settings, endpoint: str, replies: Any, request: Any, by: str, timeout_ms: int,
        retries: int) -> Any:
    """One question to a service's REP socket (Lazy Pirate); its answer, or None if it does not answer."""
    import zmq

    from meshtrader.bus import ReqClient
    from meshtrader.bus.curve import CurveKeys
    from meshtrader.runtime.log import Logger

    ctx = zmq.Context()
    client = ReqClient(ctx, settings.endpoint(endpoint), replies, timeout_ms, retries, Logger(by, "ERROR"),
                       curve=CurveKeys.load(settings.curve_keys) if settings.curve_keys else None)
    try:
        return client.request(request)
    finally:
        client.close()
        ctx.term()


def request_validation(settings: Settings, reason: str, optimize: bool, by: str) -> str | None:
    """Ask the allocator to validate the strategies now (and optimise one); its answer, or None. An accepted
    request is recorded with who asked (the allocator journals no request of its own)."""
    from meshtrader.wire.messages import Accepted, AllocatorReplies, RunValidation

    reply = ask(settings, "allocator.rep", AllocatorReplies, RunValidation(reason=reason, optimize=optimize, src=by),
                by, 2000, 2)
    if not isinstance(reply, Accepted):
        return None
    with closing(Store(settings.store_location)) as store:
        journal_control(store, "allocator", "validate", by,
                        f"validation requested ({reason})" + (", with a parameter optimisation" if optimize else ""))
    return reply.message


def close_all_positions(settings: Settings, by: str, reason: str) -> str | None:
    """Ask the executor to sell every open position now; its answer, or None if it does not answer."""
    from meshtrader.wire.messages import CloseAll, ClosedAll, ExecutorReplies

    reply = ask(settings, "executor.rep", ExecutorReplies, CloseAll(by=by, reason=reason, src=by), by, 10_000, 1)
    return reply.message if isinstance(reply, ClosedAll) else None


def cmd_close_all(settings: Settings, args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            print("close-all sells every open position at market: confirm with --yes", file=sys.stderr)
            return 2
        if input("Sell every open position at market now? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing done")
            return 1
    message = close_all_positions(settings, cli_user(), args.reason)
    if message is None:
        print("the executor did not answer (is the mesh up? mesh status)", file=sys.stderr)
        return 1
    print(message)
    return 0


def cmd_validate(settings: Settings, args: argparse.Namespace) -> int:
    message = request_validation(settings, args.reason, args.optimize, cli_user())
    if message is None:
        print("the allocator did not answer (is the mesh up? mesh status)", file=sys.stderr)
        return 1
    print(f"{message}; results appear in mesh forks and the allocation's reason")
    return 0


def cmd_forks(settings: Settings, args: argparse.Namespace) -> int:
    forks = fork_rows(settings)
    if args.json:
        print(json.dumps(forks))
        return 0
    if not forks:
        print("no forks yet")
    for f in forks:
        print(f"{f['id']:32} {f['backend']:8} {f['purpose']:12} {f['status']:10} by {f['requester']:10} "
              f"age {f['age_s']:>8.1f}s ttl {f['ttl_s']:>7}s{' kept' if f['kept'] else ''}  {results_line(f['results'])}")
    if forks:
        print("(mesh forks --json has every result in full)")
    return 0


def results_line(results: dict | None) -> str:
    """The gist of a fork's results in one line."""
    if not results:
        return ""
    parts = []
    if "trigger" in results:
        parts.append(f"validation ({results['trigger']})")
    if "whatif" in results:
        parts.append(f"what-if chose {results['whatif'].get('chosen')}")
    if "optimization" in results:
        run = results["optimization"]
        parts.append(run.get("error") or f"optimised {run['strategy']}: {'adopted' if run['adopt'] else 'kept'} "
                     f"{run['best_params'] if run['adopt'] else run['live_params']}")
    for key in ("incident", "interesting", "error"):
        if key in results:
            parts.append(f"{key}: {results[key]}")
    if "method" in results:
        parts.append(results["method"])
    return "; ".join(parts)


# Developer tools that live in the repository beside the package (not installed with it): `mesh TOOL ...`
# runs `python -m MODULE ...` with the repository on the path. `mesh TOOL --help` lists their options.
REPO_TOOLS = (("exchange-sim", "tools.exchange_sim", "a local exchange speaking Binance's wire formats over the data"),
              ("bench", "bench", "run a benchmark suite (--suite latency|feed|backtest|sweep|forks|loops|dashboard, --json)"))
# the assistant's commands: its package sits above ops, so it runs as its own program (python -m meshtrader.assistant)
ASSISTANT = "meshtrader.assistant"
ASSISTANT_COMMANDS = (("ask", 'answer a question from the records and the docs, each fact cited: mesh ask "why did '
                              'momentum stop trading?"'),
                      ("ingest", "index the docs for mesh ask (only what changed); --pages regenerates the pages "
                                 "generated from the code"),
                      ("mcp", "run the MCP server for AI clients: stdio, or --http on loopback"))


def run_repo_tool(module: str, argv: list[str]) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)
    return 0  # not reached: the tool replaces this process


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    """Write a CURVE key directory per host; each host's MESH_CURVE_KEYS points at its own."""
    from meshtrader.bus.curve import write_key_directory

    hosts = args.hosts.split(",") if args.hosts else sorted({a for p in settings.programs()
                                                             for a in settings.addresses(p.name)})
    try:
        made = write_key_directory(args.directory, [host.strip() for host in hosts])
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    for directory in made:
        print(f"{directory}  (copy it to {directory.name}; there MESH_CURVE_KEYS={directory})")
    print("secret keys are readable by their owner only; copy each host only its own directory")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mesh", description="Meshtrader: a paper-trading mesh of processes")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the whole mesh under supervisord and print the dashboard URL")
    up.add_argument("-d", "--detach", action="store_true", help="return once the mesh is up")
    up.add_argument("--feed", choices=["replay", "live"], help="market data source (MESH_FEED)")
    up.add_argument("--exchange", help="ccxt exchange id for live data (MESH_EXCHANGE)")
    up.add_argument("--mode", choices=["paper", "live"], help="live: real orders through ccxt, after a confirmation")
    up.add_argument("--exchange-url", help="point ccxt at this base URL, e.g. mesh exchange-sim (MESH_EXCHANGE_URL)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the mesh").set_defaults(func=cmd_down)
    status = sub.add_parser("status", help="services, equity, positions, trades")
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(func=cmd_status)
    kill = sub.add_parser("kill-switch", help="halt (on) or allow (off) all trading")
    kill.add_argument("state", choices=["on", "off"])
    kill.set_defaults(func=cmd_kill_switch)
    sub.add_parser("pause", help="pause trading: only exposure-reducing orders pass until mesh resume"
                   ).set_defaults(func=cmd_pause)
    sub.add_parser("resume", help="resume trading after mesh pause").set_defaults(func=cmd_pause)
    limit = sub.add_parser("limit", help="list the risk limits in use, or change one at run time (kept across "
                                         "restarts)")
    limit.add_argument("name", nargs="?", help="a limit, e.g. daily_loss_pct (mesh limit lists them)")
    limit.add_argument("value", nargs="?", help="its new value: fractions as 0.03 for 3%%, counts as whole numbers")
    limit.set_defaults(func=cmd_limit)
    for command, what in (("reset-peak", "measure the portfolio's drawdown from the equity now (after a drawdown "
                                         "halt: then mesh kill-switch off)"),
                          ("lift-daily-halt", "end today's daily loss halt now; the day's loss counts from the "
                                              "equity now"),
                          ("reactivate", "bring back a strategy its drawdown deactivated, without a validation")):
        reset = sub.add_parser(command, help=what)
        if command == "reactivate":
            reset.add_argument("strategy", help="the deactivated strategy (mesh status names them)")
        else:
            reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        reset.add_argument("--reason", default="", help="recorded with the control")
        reset.set_defaults(func=cmd_reset)
    conf = sub.add_parser("supervisord-conf", help="print the supervisord config for these settings")
    conf.add_argument("--default", action="store_true", help="the repo's own supervisord.conf (./var)")
    conf.set_defaults(func=cmd_supervisord_conf)
    targets = sub.add_parser("prometheus-targets", help="print Prometheus file_sd targets for /metrics")
    targets.add_argument("--host", help="address Prometheus reaches the mesh at (default: where each program "
                                        "runs, MESH_HOSTS / MESH_HOST)")
    targets.set_defaults(func=cmd_prometheus_targets)
    keys = sub.add_parser("keys", help="write CURVE keys for the mesh's hosts: a directory each (MESH_CURVE_KEYS)")
    keys.add_argument("directory", type=Path, help="where: one subdirectory per host is made (never overwritten)")
    keys.add_argument("--hosts", help="host names, comma-separated (default: the addresses of MESH_HOSTS and "
                                      "MESH_HOST)")
    keys.set_defaults(func=cmd_keys)
    for tool, _module, what in REPO_TOOLS:
        sub.add_parser(tool, help=what, add_help=False)  # listed here; `main` hands it its arguments
    for command, what in ASSISTANT_COMMANDS:
        sub.add_parser(command, help=what, add_help=False)
    close = sub.add_parser("close-all", help="sell every open position at market now (allowed even when halted)")
    close.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    close.add_argument("--reason", default="", help="recorded with the orders")
    close.set_defaults(func=cmd_close_all)
    validate = sub.add_parser("validate", help="validate the strategies on a fork now (the allocator reweights)")
    validate.add_argument("--optimize", action="store_true", help="and optimise the next strategy's parameters")
    validate.add_argument("--reason", default="on demand", help="recorded with the validation")
    validate.set_defaults(func=cmd_validate)
    forks = sub.add_parser("forks", help="forks with purpose, age, TTL and results (destroyed ones too)")
    forks.add_argument("--json", action="store_true")
    forks.set_defaults(func=cmd_forks)
    backtest = sub.add_parser("backtest", help="backtest a strategy through the executor's and risk guard's rules")
    backtest.add_argument("--strategy", required=True)
    backtest.add_argument("--params", help='strategy parameters as JSON, e.g. \'{"fast": 8, "slow": 30}\'')
    backtest.add_argument("--symbol", help="one symbol (default: MESH_SYMBOLS)")
    backtest.add_argument("--from", dest="start", help="first candle: ISO date/time (UTC) or epoch ms")
    backtest.add_argument("--to", dest="end", help="end, exclusive: ISO date/time (UTC) or epoch ms")
    backtest.add_argument("--data", type=Path, help="directory of candle files (default: MESH_DATA)")
    backtest.add_argument("--db", help="candles from a store instead: a mesh.db, a fork of it, or a postgresql:// URL")
    backtest.add_argument("--fork", help="candles from a fork, by id (mesh forks)")
    backtest.add_argument("--market", choices=["spot", "usdm"], help="spot, or USD-M futures: shorts, leverage, "
                          "funding, liquidation (default: MESH_MARKET)")
    backtest.add_argument("--funding-gaps", choices=["error", "carry"], default="error",
                          help="usdm: a settlement the funding data lacks is an error, or gets the last known rate "
                          "(stated in the report)")
    backtest.add_argument("--leverage", help="the strategy's leverage under usdm (default: MESH_LEVERAGE, else 1)")
    backtest.add_argument("--json", action="store_true", help="one JSON object")
    backtest.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the equity curve and drawdown")
    backtest.set_defaults(func=cmd_backtest)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for tool, module, _ in REPO_TOOLS:
        if argv[:1] == [tool]:  # everything after the tool's name is the tool's own
            return run_repo_tool(module, argv[1:])
    if argv[:1] and argv[0] in {command for command, _ in ASSISTANT_COMMANDS}:
        return run_repo_tool(ASSISTANT, argv)
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    try:
        return args.func(settings, args)
    except BrokenPipeError:  # e.g. `mesh status | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
