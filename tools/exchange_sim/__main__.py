"""`mesh exchange-sim` (or `python -m tools.exchange_sim` from the repository): serve the simulator."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from meshtrader.execution.planning import OrderRules
from meshtrader.runtime.config import ConfigError, load_settings
from tools.exchange_sim.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mesh exchange-sim",
                                     description="a local exchange speaking Binance's wire formats over the data")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--data", type=Path, help="directory of candle files (default: the bundled data)")
    parser.add_argument("--symbols", help="comma-separated (default MESH_SYMBOLS)")
    parser.add_argument("--speed", type=float, default=1 / 60, help="candles per second (default: real time)")
    parser.add_argument("--chaos", type=float, default=0.0, metavar="SECONDS",
                        help="drop every websocket every SECONDS (0: never); see also POST /admin/chaos")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    symbols = [x.strip().upper().replace("/", "") for x in args.symbols.split(",")] if args.symbols else settings.symbols
    # The exchange charges the fees the mesh plans with (MESH_TAKER_FEE_BP, MESH_MAKER_FEE_BP), so a mesh
    # and its simulator started in one environment agree on what every fill costs.
    serve(args.port, args.data.resolve() if args.data else settings.data_dir, symbols, args.speed,
          OrderRules.from_settings(settings).fees, chaos_every_s=args.chaos, host=args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
