"""`mesh bench --suite NAME` (or `python -m bench` from the repository): run one benchmark suite and print
its figures, as JSON with --json."""
from __future__ import annotations

import argparse
import json
import sys

SUITES = ("latency", "feed", "backtest", "sweep", "forks", "loops", "dashboard", "soak", "bus", "chaos", "cluster")


def run_suite(args: argparse.Namespace) -> dict:
    progress = not args.json
    if args.suite == "latency":
        from bench.latency import run_latency_suite

        return run_latency_suite(samples=args.samples, rate=args.rate, progress=progress)
    if args.suite == "backtest":
        from bench.backtest import run_backtest_suite

        return run_backtest_suite(progress=progress)
    if args.suite == "forks":
        from bench.forks import run_forks_suite

        return run_forks_suite()
    if args.suite == "sweep":
        from bench.sweep import run_sweep_suite

        return run_sweep_suite(progress=progress)
    if args.suite == "loops":
        from bench.asyncio_loops import run_loops_suite

        return run_loops_suite(progress=progress)
    if args.suite == "dashboard":
        from bench.dashboard import run_dashboard_suite

        return run_dashboard_suite(progress=progress)
    if args.suite == "soak":
        from bench.soak import run_soak_suite

        return run_soak_suite(progress=progress, seconds=args.seconds)
    if args.suite == "bus":
        from bench.bus import run_bus_suite

        return run_bus_suite(progress=progress)
    if args.suite == "chaos":
        from bench.chaos import run_chaos_suite

        return run_chaos_suite(progress=progress)
    if args.suite == "cluster":
        from bench.cluster import run_cluster_suite

        return run_cluster_suite(progress=progress)
    from bench.feed import run_feed_suite

    return run_feed_suite(progress=progress)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mesh bench", description="run a benchmark suite")
    parser.add_argument("--suite", default="latency", choices=SUITES)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=300, help="ticks per second offered (below saturation)")
    parser.add_argument("--seconds", type=float, default=180.0, help="soak: how long the mesh is sampled")
    args = parser.parse_args(argv)
    result = run_suite(args)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
