"""Tick-to-fill over the real mesh processes, and the bare pyzmq chain of the same hops, in one run.

The mesh runs in its own temp MESH_HOME with one symbol and the `bench` strategy, which signals on
every tick, so every tick is timed: from the feed's send (the tick's monotonic `st`, carried as the
signal's and fill's `origin_ns`) to the executor publishing the fill (the fill's `st`). That path
includes both PUB/SUB hops, the risk guard's REQ/REP round trip and the SQLite commit of the order, and
is split into its stages (`hops_us`) by the time stamps the messages carry: the feed's send, the
strategy's signal published, the executor receiving it, the risk guard's approval, the fill published.
A second, shorter run puts every service under cProfile and prints where each hop spends its CPU per
fill (`cpu_us_per_fill_under_cprofile`: decode, strategy, risk judge, Decimal work, the SQLite commit,
metrics, logging, Redis, zmq), see bench/profile_breakdown.py.
Fees, slippage and loss limits are off so the alternating buy/sell never trips a halt mid-run, and the
allocator's validations are off: at this replay speed its 6-hourly schedule would fire every 1.2 s.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import zmq

from bench.bare_chain import run_bare_chain
from bench.profile_breakdown import hop_breakdowns
from bench.stats import percentiles_us
from meshtrader.wire.codec import decode_event
from tools.localmesh import LocalMesh

WARMUP = 200
PROFILED_SAMPLES = 2000
# the path's stages, between the five time stamps each fill carries back
STAGES = ("feed_to_strategy_signal", "signal_to_executor", "executor_to_risk_approved", "approved_to_fill_published")


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def run_mesh_chain(directory: Path, samples: int, rate: int, progress: bool,
                   profile_dir: Path | None = None) -> tuple[list[int], float, dict]:
    """Tick-to-fill latencies (ns) of `samples` fills, the fill rate, and each hop's share of every fill:
    feed send -> strategy's signal published -> executor received it -> risk approved -> fill published."""
    ticks_per_candle = 1  # evenly spaced ticks, as the bare chain sends them
    overrides = {
        "MESH_STRATEGIES": "bench", "MESH_SYMBOLS": "BTCUSDT", "MESH_TICKS_PER_CANDLE": str(ticks_per_candle),
        "MESH_REPLAY_SPEED": str(rate / ticks_per_candle), "MESH_TAKER_FEE_BP": "0", "MESH_SLIPPAGE_BP": "0",
        "MESH_DAILY_LOSS_PCT": "1", "MESH_STRATEGY_DRAWDOWN_PCT": "1", "MESH_PORTFOLIO_DRAWDOWN_PCT": "1",
        "MESH_MAX_TRADES_PER_DAY": "1000000", "MESH_LOG_LEVEL": "WARNING",
        # At 300 candles/s the 6-hourly validation would run every 1.2 s of wall time: research off here.
        "MESH_VALIDATION_EVERY_MIN": "100000000", "MESH_OPTIMIZE_EVERY": "0",
    }
    if profile_dir is not None:
        overrides["MESH_PROFILE_DIR"] = str(profile_dir)
    mesh = LocalMesh(directory / ("mesh-profiled" if profile_dir else "mesh"), overrides)
    ctx = zmq.Context()
    fills = ctx.socket(zmq.SUB)
    fills.connect(mesh.settings.endpoint("executor.pub"))
    fills.setsockopt(zmq.SUBSCRIBE, b"fill")
    _say(progress, f"starting a bench mesh in {mesh.home}{' under cProfile' if profile_dir else ''} ...")
    mesh.start()
    try:
        latencies: list[int] = []
        stages: dict[str, list[int]] = {name: [] for name in STAGES}
        started = time.monotonic()
        deadline = started + 60 + 3 * (samples + WARMUP) / rate
        while len(latencies) < samples + WARMUP and time.monotonic() < deadline:
            if fills.poll(1000):
                fill = decode_event(*fills.recv_multipart())
                if fill.origin_ns:
                    latencies.append(fill.st - fill.origin_ns)
                    marks = (fill.origin_ns, fill.signal_ns, fill.received_ns, fill.approved_ns, fill.st)
                    for name, begin, end in zip(STAGES, marks[:-1], marks[1:], strict=True):
                        stages[name].append(end - begin)
                    if len(latencies) % 1000 == 0:
                        _say(progress, f"  mesh: {len(latencies)} fills timed")
        elapsed = time.monotonic() - started
        return (latencies[WARMUP:], len(latencies) / elapsed if elapsed else 0.0,
                {name: values[WARMUP:] for name, values in stages.items()})
    finally:
        fills.close(0)
        ctx.term()
        mesh.stop()


def run_latency_suite(samples: int = 5000, rate: int = 300, progress: bool = True, profile: bool = True) -> dict:
    with tempfile.TemporaryDirectory(prefix="meshbench-") as tmp:
        directory = Path(tmp)
        mesh_ns, mesh_rate, hops = run_mesh_chain(directory, samples, rate, progress)
        _say(progress, f"bare pyzmq chain: {samples} ticks at {rate}/s ...")
        bare_ns = run_bare_chain(directory, samples, rate, WARMUP)
        cpu = None
        if profile:
            profiled = min(samples, PROFILED_SAMPLES)
            profiled_ns, _, _ = run_mesh_chain(directory, profiled, rate, progress, directory / "profiles")
            cpu = hop_breakdowns(directory / "profiles", len(profiled_ns) + WARMUP)
    mesh_us, bare_us = percentiles_us(mesh_ns), percentiles_us(bare_ns)
    result = {
        "tick_to_fill_us": mesh_us,
        "hops_us": {name: percentiles_us(values) for name, values in hops.items()},
        "bare_chain_us": bare_us,
        "ratio_p50": round(mesh_us["p50"] / bare_us["p50"], 2) if bare_ns and mesh_ns else None,
        "p99_over_p50": round(mesh_us["p99"] / mesh_us["p50"], 2) if mesh_ns else None,
        "samples": len(mesh_ns),
        "bare_samples": len(bare_ns),
        "offered_ticks_per_s": rate,
        "mesh_fills_per_s": round(mesh_rate, 1),
        "targets": {"ratio_p50": 1.6, "p99_over_p50": 4},
    }
    if cpu is not None:
        result["cpu_us_per_fill_under_cprofile"] = cpu
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(run_latency_suite(), indent=2))
