"""A strategy is one file: modules of meshtrader/strategies/ register themselves (@register, found by
pkgutil), and files outside the package come in through MESH_STRATEGY_FILES, known to the settings,
`mesh backtest`, the backtester and spawned optimiser workers (a strategy worker running one:
tests/mesh/test_strategy_worker.py; the `outside` fixture is in tests/conftest.py)."""
from __future__ import annotations

import json
import os
import pickle
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.strategy_files import readme_example

import meshtrader.strategies as strategies_package
from meshtrader.runtime import config
from meshtrader.runtime.config import REPO_ROOT, ConfigError, load_settings
from meshtrader.strategies import REGISTRY, ParameterError, builtin, create, known, load_files, register
from meshtrader.strategies.base import Strategy

README = (REPO_ROOT / "README.md").read_text()


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MESH_")}, **extra}


# ----- the package -----------------------------------------------------------------------------------
def test_every_module_of_the_package_registers_itself():
    modules = [m.name for m in pkgutil.iter_modules(strategies_package.__path__) if m.name != "base"]
    registered = {cls.__module__.rsplit(".", 1)[1] for cls in REGISTRY.values()
                  if cls.__module__.startswith("meshtrader.strategies.")}
    assert set(modules) == registered, "a module of meshtrader/strategies/ that registers nothing"
    assert len(builtin()) >= 11 and set(builtin()) <= set(known())
    assert not hasattr(config, "KNOWN_STRATEGIES")  # the registry is the one list


def test_readme_lists_every_registered_strategy_and_no_other():
    table = README.split("## Strategies and backtesting", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([a-z0-9_]+)` \|", table, re.M)
    assert sorted(listed) == sorted(builtin()), "the README's strategies table and the registry differ"


def test_register_refuses_what_it_cannot_name():
    with pytest.raises(ValueError, match="name"):
        register(type("Nameless", (Strategy,), {}))
    with pytest.raises(ValueError, match="lower-case"):
        register(type("Dotted", (Strategy,), {"name": "a.b"}))
    with pytest.raises(ValueError, match="defined twice"):
        register(type("Impostor", (Strategy,), {"name": "macd"}))
    with pytest.raises(TypeError):
        register(dict)
    assert REGISTRY["macd"].__module__ == "meshtrader.strategies.macd"


# ----- a file outside the package -------------------------------------------------------------------
def test_a_strategy_file_outside_the_package_is_known_to_the_settings(outside, monkeypatch):
    for name in [n for n in os.environ if n.startswith("MESH_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(outside.parent)
    with pytest.raises(ConfigError, match="MESH_STRATEGIES.*unknown strategy 'rsi_dip'"):
        load_settings(strategies=["rsi_dip"], strategy_files=[])
    monkeypatch.setenv("MESH_STRATEGY_FILES", f"{outside.name}/rsi_dip.py, {outside / 'every_bar.py'}")
    monkeypatch.setenv("MESH_STRATEGIES", "momentum,rsi_dip,every_bar")
    monkeypatch.setenv("MESH_STRATEGY_PARAMS", '{"rsi_dip": {"period": 7}}')
    settings = load_settings()
    assert settings.strategies == ["momentum", "rsi_dip", "every_bar"]
    assert settings.strategy_files == [outside / "rsi_dip.py", outside / "every_bar.py"]  # absolute
    assert {"rsi_dip", "every_bar"} <= set(known()) and "rsi_dip" not in builtin()
    assert create("rsi_dip", "BTCUSDT", {"period": 7}).warmup == 8
    assert settings.service_names()[1:4] == ["strategy_momentum", "strategy_rsi_dip", "strategy_every_bar"]
    monkeypatch.setenv("MESH_STRATEGY_PARAMS", '{"rsi_dip": {"periodd": 7}}')
    with pytest.raises(ConfigError, match="MESH_STRATEGY_PARAMS.*rsi_dip.*periodd"):
        load_settings()
    assert load_files([outside / "rsi_dip.py"]) == ["rsi_dip"]  # loading again is a no-op


@pytest.mark.parametrize("content, problem", [
    ("def broken(:\n", "SyntaxError"),
    ("import no_such_module_anywhere\n", "ModuleNotFoundError"),
    ("from meshtrader.strategies import Strategy\n\nclass Forgot(Strategy):\n    name = 'forgot'\n",
     "registers no strategy"),
    ("from meshtrader.strategies import Strategy, register\n\n@register\nclass Twin(Strategy):\n    name = 'macd'\n",
     "defined twice"),
])
def test_a_bad_strategy_file_stops_start_up_with_one_line(tmp_path, monkeypatch, content, problem):
    for name in [n for n in os.environ if n.startswith("MESH_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "bad_strategy.py"
    path.write_text(content)
    monkeypatch.setenv("MESH_STRATEGY_FILES", str(path))
    with pytest.raises(ConfigError) as error:
        load_settings()
    message = str(error.value)
    assert "MESH_STRATEGY_FILES" in message and str(path) in message and problem in message and "\n" not in message
    assert "forgot" not in REGISTRY and REGISTRY["macd"].__module__ == "meshtrader.strategies.macd"
    with pytest.raises(ConfigError, match="not a readable .py file"):
        load_settings(strategy_files=[tmp_path / "missing.py"])


def test_mesh_backtest_runs_a_strategy_file(outside, tmp_path):
    command = [sys.executable, "-m", "meshtrader", "backtest", "--strategy", "rsi_dip", "--symbol", "BTCUSDT",
               "--from", "2025-05-10", "--to", "2025-05-11", "--json"]
    env = clean_env(MESH_HOME=str(tmp_path / "home"), MESH_STRATEGY_FILES=f"{outside.name}/rsi_dip.py")
    result = subprocess.run(command, env=env, cwd=outside.parent, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bars"] == 1440 and report["trades"] > 0
    tuned = subprocess.run([*command, "--params", '{"period": 7, "buy_below": 25}'], env=env, cwd=outside.parent,
                           capture_output=True, text=True, timeout=120)
    assert tuned.returncode == 0 and json.loads(tuned.stdout)["trades"] != report["trades"]
    unknown = subprocess.run(command, env=clean_env(MESH_HOME=str(tmp_path / "home")), cwd=outside.parent,
                             capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "unknown strategy 'rsi_dip'" in unknown.stderr


def test_settings_carry_their_strategy_files_into_a_spawned_process(outside, tmp_path):
    """The allocator's optimiser sends its settings to spawned workers: the file is loaded there too."""
    settings = load_settings(home=tmp_path, strategy_files=[outside / "every_bar.py"], strategies=["every_bar"])
    (tmp_path / "settings.pickle").write_bytes(pickle.dumps(settings))
    code = ("import pickle, sys; s = pickle.load(open(sys.argv[1], 'rb')); "
            "from meshtrader.strategies import create; print(create(s.strategies[0], 'BTCUSDT').name)")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "settings.pickle")], env=clean_env(),
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "every_bar", result.stderr


def test_a_worker_for_a_strategy_outside_the_mesh_says_so(tmp_path):
    env = clean_env(MESH_HOME=str(tmp_path), MESH_STRATEGIES="momentum")
    result = subprocess.run([sys.executable, "-m", "meshtrader.services.strategy", "macd"], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not one of MESH_STRATEGIES" in result.stderr and "Traceback" not in result.stderr


def test_the_readme_example_is_the_tested_file():
    assert Path(readme_example().splitlines()[0]).name.startswith('"""rsi_dip')
    with pytest.raises(ParameterError, match="unknown strategy"):
        create("no_such_strategy", "BTCUSDT")
