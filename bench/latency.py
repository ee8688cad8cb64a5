"""Tick-to-fill over the real mesh processes, and the bare pyzmq chain of the same hops, in one run.

The mesh runs in its own temp MESH_HOME with one symbol and the `bench` strategy, which signals on
every tick, so every tick is timed: from the feed's send (the tick's monotonic `st`, carried as the
signal's and fill's `origin_ns`) to the executor publishing the fill (the fill's `st`). That path
includes both PUB/SUB hops, the risk guard's REQ/REP round trip and the SQLite commit of the order. The order path
inside the executor is split too (`order_path_us`): signal received -> risk approved -> fill published.
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
from bench.stats import percentiles_us
from meshtrader.wire.codec import decode_event
from tools.localmesh import LocalMesh

WARMUP = 200


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def run_mesh_chain(directory: Path, samples: int, rate: int, progress: bool) -> tuple[list[int], float, dict]:
    ticks_per_candle = 1  # evenly spaced ticks, as the bare chain sends them
    mesh = LocalMesh(directory / "mesh", {
        "MESH_STRATEGIES": "bench", "MESH_SYMBOLS": "BTCUSDT", "MESH_TICKS_PER_CANDLE": str(ticks_per_candle),
        "MESH_REPLAY_SPEED": str(rate / ticks_per_candle), "MESH_TAKER_FEE_BP": "0", "MESH_SLIPPAGE_BP": "0",
        "MESH_DAILY_LOSS_PCT": "1", "MESH_STRATEGY_DRAWDOWN_PCT": "1", "MESH_PORTFOLIO_DRAWDOWN_PCT": "1",
        "MESH_MAX_TRADES_PER_DAY": "1000000", "MESH_LOG_LEVEL": "WARNING",
        # At 300 candles/s the 6-hourly validation would run every 1.2 s of wall time: research off here.
        "MESH_VALIDATION_EVERY_MIN": "100000000", "MESH_OPTIMIZE_EVERY": "0",
    })
    ctx = zmq.Context()
    fills = ctx.socket(zmq.SUB)
    fills.connect(mesh.settings.endpoint("executor.pub"))
    fills.setsockopt(zmq.SUBSCRIBE, b"fill")
    _say(progress, f"starting a bench mesh in {mesh.home} ...")
    mesh.start()
    try:
        latencies: list[int] = []
        stages: dict[str, list[int]] = {"received_to_approved": [], "approved_to_filled": [], "received_to_filled": []}
        started = time.monotonic()
        deadline = started + 60 + 3 * (samples + WARMUP) / rate
        while len(latencies) < samples + WARMUP and time.monotonic() < deadline:
            if fills.poll(1000):
                fill = decode_event(*fills.recv_multipart())
                if fill.origin_ns:
                    latencies.append(fill.st - fill.origin_ns)
                    stages["received_to_approved"].append(fill.approved_ns - fill.received_ns)
                    stages["approved_to_filled"].append(fill.st - fill.approved_ns)
                    stages["received_to_filled"].append(fill.st - fill.received_ns)
                    if len(latencies) % 1000 == 0:
                        _say(progress, f"  mesh: {len(latencies)} fills timed")
        elapsed = time.monotonic() - started
        return (latencies[WARMUP:], len(latencies) / elapsed if elapsed else 0.0,
                {name: values[WARMUP:] for name, values in stages.items()})
    finally:
        fills.close(0)
        ctx.term()
        mesh.stop()


def run_latency_suite(samples: int = 5000, rate: int = 300, progress: bool = True) -> dict:
    with tempfile.TemporaryDirectory(prefix="meshbench-") as tmp:
        directory = Path(tmp)
        mesh_ns, mesh_rate, order_path = run_mesh_chain(directory, samples, rate, progress)
        _say(progress, f"bare pyzmq chain: {samples} ticks at {rate}/s ...")
        bare_ns = run_bare_chain(directory, samples, rate, WARMUP)
    mesh_us, bare_us = percentiles_us(mesh_ns), percentiles_us(bare_ns)
    return {
        "tick_to_fill_us": mesh_us,
        "order_path_us": {name: percentiles_us(values) for name, values in order_path.items()},
        "bare_chain_us": bare_us,
        "ratio_p50": round(mesh_us["p50"] / bare_us["p50"], 2) if bare_ns and mesh_ns else None,
        "samples": len(mesh_ns),
        "bare_samples": len(bare_ns),
        "offered_ticks_per_s": rate,
        "mesh_fills_per_s": round(mesh_rate, 1),
        "targets": {"p50_us": 200, "p99_us": 1000, "ratio_p50": 2},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run_latency_suite(), indent=2))
