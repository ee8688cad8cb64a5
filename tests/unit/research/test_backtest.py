"""`mesh backtest`: deterministic, plots, bad parameters."""
from __future__ import annotations

import subprocess
import sys

from meshtrader.runtime.config import REPO_ROOT


def test_backtest_cli_is_deterministic_and_plots(tmp_path):
    import json as json_module

    command = [sys.executable, "-m", "meshtrader", "backtest", "--strategy", "breakout", "--symbol", "ETHUSDT",
               "--from", "2025-05-10", "--to", "2025-05-11", "--json"]
    first = subprocess.run(command + ["--plot", str(tmp_path / "eq.png")], capture_output=True, text=True,
                           cwd=REPO_ROOT, timeout=120)
    second = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    one, two = json_module.loads(first.stdout), json_module.loads(second.stdout)
    assert set(one) >= {"bars", "trades", "roi", "sharpe", "max_drawdown", "win_rate", "fees"}
    assert one["bars"] == 1440 and one["trades"] > 0
    for volatile in ("seconds", "bars_per_s", "plot"):
        one.pop(volatile, None)
        two.pop(volatile, None)
    assert one == two, "same input, same output"
    assert (tmp_path / "eq.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, "-m", "meshtrader", "backtest", "--strategy", "macd", "--params",
                          '{"fast": 0}'], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert bad.returncode == 2 and "fast" in bad.stderr and "Traceback" not in bad.stderr
