"""`mesh bench --suite NAME` (or `python -m bench` from the repository): run one benchmark suite and print
its figures, as JSON with --json."""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
from collections.abc import Callable

# Each suite: its module (imported only when it runs: a suite's imports are heavy) and what it takes of the
# command line beside `progress` (False with --json).
SUITES: dict[str, tuple[str, Callable[[argparse.Namespace], dict]]] = {
    "latency": ("bench.latency", lambda args: {"samples": args.samples, "rate": args.rate}),
    "feed": ("bench.feed", lambda args: {}),
    "backtest": ("bench.backtest", lambda args: {}),
    "sweep": ("bench.sweep", lambda args: {}),
    "forks": ("bench.forks", lambda args: {}),
    "loops": ("bench.asyncio_loops", lambda args: {}),
    "dashboard": ("bench.dashboard", lambda args: {}),
    "soak": ("bench.soak", lambda args: {"seconds": args.seconds}),
    "bus": ("bench.bus", lambda args: {}),
    "chaos": ("bench.chaos", lambda args: {}),
    "cluster": ("bench.cluster", lambda args: {}),
    "cash": ("bench.cash", lambda args: {}),
    "optimize": ("bench.optimize", lambda args: {}),
}


def run_suite(args: argparse.Namespace) -> dict:
    module, options = SUITES[args.suite]
    run = getattr(importlib.import_module(module), f"run_{args.suite}_suite")
    if "progress" in inspect.signature(run).parameters:  # the forks suite prints nothing as it goes
        return run(progress=not args.json, **options(args))
    return run(**options(args))


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
