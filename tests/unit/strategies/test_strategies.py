"""The package's strategies: deterministic, parameters checked, all in the README."""
from __future__ import annotations

import pytest
from support.candles import bundled_candles

from meshtrader.runtime.config import REPO_ROOT
from meshtrader.strategies import ParameterError, create


@pytest.mark.parametrize("name", ["momentum", "macd"])
def test_strategies_are_deterministic_and_trade_the_bundled_data(name):
    candles = bundled_candles("BTCUSDT", 3000)
    runs = []
    for _ in range(2):
        strategy = create(name, "BTCUSDT")
        runs.append([(c.open_time, d.side) for c in candles if (d := strategy.decide(c))])
    assert runs[0] == runs[1] and len(runs[0]) > 10
    assert {side for _, side in runs[0]} == {"buy", "sell"}


def test_bad_strategy_parameters_fail_clearly():
    with pytest.raises(ParameterError, match="momentum: invalid parameters.*fast"):
        create("momentum", "BTCUSDT", {"fast": 30, "slow": 20})
    with pytest.raises(ParameterError, match="unknown strategy"):
        create("astrology", "BTCUSDT")


def test_readme_lists_every_strategy():
    from meshtrader.strategies import builtin

    readme = (REPO_ROOT / "README.md").read_text()  # strategy files loaded by other tests are not the package's
    assert not [name for name in builtin() if name != "bench" and f"| `{name}` |" not in readme]
