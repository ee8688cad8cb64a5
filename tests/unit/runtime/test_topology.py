"""The topology table and what derives from it (supervisord.conf, settings' ports and endpoints,
`mesh status`, `mesh prometheus-targets`, the dashboard's relay, the README), and the running mesh's
recorded settings (`mesh up` writes them, services and `mesh status` read them, credentials never)."""
from __future__ import annotations

import configparser
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from meshtrader.runtime import topology
from meshtrader.runtime.config import (
    LIVE_CONFIRMATION,
    REPO_ROOT,
    SETTINGS_FILE,
    ConfigError,
    load_settings,
    record_settings,
)
from meshtrader.runtime.supervise import default_paths, local_paths, render

README = (REPO_ROOT / "README.md").read_text()
STRATEGIES = ["momentum", "macd", "bollinger"]


def clean_env(**extra: str) -> dict[str, str]:
    """A child's environment without the developer's MESH_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    return {**env, **extra}


def mesh_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshtrader", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


# ----- the table -------------------------------------------------------------------------------------
def test_the_table_declares_each_service_once_on_ports_that_never_overlap():
    names = [s.name for s in topology.SERVICES]
    assert len(names) == len(set(names))
    used: dict[int, str] = {}
    for program in topology.programs([f"s{i}" for i in range(topology.MAX_STRATEGIES)], with_redis=True):
        for kind in ("http", "pub", "rep"):
            offset = program.offset(kind)
            if offset is None:
                continue
            assert offset not in used, f"{program.name} {kind} +{offset} is also {used[offset]}"
            assert 0 <= offset < topology.PORT_SPAN
            used[offset] = f"{program.name} {kind}"
        if program.service.module:
            assert program.service.module.startswith("meshtrader.services.")
            assert importlib.util.find_spec(program.service.module) is not None, program.service.module
    with pytest.raises(ValueError, match="at most"):
        topology.programs([f"s{i}" for i in range(topology.MAX_STRATEGIES + 1)])
    from tools.localmesh import PORT_SPAN

    assert PORT_SPAN >= topology.PORT_SPAN  # the harness's free port ranges hold a whole mesh


def test_background_services_are_the_tables():
    for service in topology.SERVICES:
        if service.module and service.name != "dashboard":
            module = importlib.import_module(service.module)
            classes = [c for c in vars(module).values() if isinstance(c, type) and c.__module__ == module.__name__
                       and hasattr(c, "background")]
            for cls in classes:  # a class may still say so itself; it must not contradict the table
                assert not cls.background or service.background, f"{cls.__name__} is background, the table not"


def test_settings_derive_names_ports_and_endpoints_from_the_table(tmp_path):
    settings = load_settings(home=tmp_path, port_base=20000, strategies=STRATEGIES)
    programs = settings.programs()
    assert settings.service_names() == [p.name for p in programs]
    assert settings.service_names() == ["feed", "strategy_momentum", "strategy_macd", "strategy_bollinger",
                                        "allocator", "risk", "executor", "forks", "narrator", "dashboard"]
    assert [settings.http_port(p.name) for p in programs] == [20000 + p.offset("http") for p in programs]
    assert settings.http_port("strategy_bollinger") == 20000 + 10 + 2 and settings.http_port("dashboard") == 20000
    assert settings.dashboard_url == "http://127.0.0.1:20000/"
    assert set(settings.publisher_endpoints()) == {p.name for p in programs if p.service.pub is not None}
    assert settings.endpoint("strategy.macd.pub") == f"ipc://{tmp_path.resolve()}/sock/strategy.macd.pub"
    tcp = load_settings(home=tmp_path, port_base=20000, transport="tcp", strategies=STRATEGIES)
    endpoints = [tcp.endpoint(p.endpoint_name(kind)) for p in programs for kind in ("pub", "rep")
                 if p.offset(kind) is not None]
    assert len(endpoints) == len(set(endpoints)) == 9 + 5  # 9 publishers, 5 REP sockets
    assert tcp.endpoint("risk.rep") == "tcp://127.0.0.1:20044"
    assert tcp.endpoint("strategy.bollinger.pub") == "tcp://127.0.0.1:20062"
    for wrong in ("narrator.rep", "dashboard.pub", "strategy.yolo.pub", "nothing.pub", "feed.sub"):
        with pytest.raises(KeyError):
            tcp.endpoint(wrong)


def test_programs_placed_on_hosts_bind_their_own_address_and_subscribers_hear_every_instance(tmp_path):
    """MESH_HOSTS: a program's endpoints are at its host; a strategy worker on several hosts has an endpoint on
    each, which subscribers all connect to, and signs its messages with its address. Binding is never wider than
    configured: the service's own address, or MESH_BIND_HOST."""
    hosts = {"risk": "10.9.0.1", "executor": ["10.9.0.1"], "strategy_macd": ["127.0.0.1", "192.0.2.1"]}
    settings = load_settings(home=tmp_path, port_base=20000, transport="tcp", host="10.9.0.2",
                             hosts=json.dumps(hosts), strategies=STRATEGIES)
    assert settings.endpoint("risk.rep") == settings.bind_endpoint("risk.rep") == "tcp://10.9.0.1:20044"
    assert settings.endpoint("feed.pub") == "tcp://10.9.0.2:20040" and settings.addresses("executor") == ["10.9.0.1"]
    assert settings.dashboard_url == "http://10.9.0.2:20000/"
    macd = ["tcp://127.0.0.1:20061", "tcp://192.0.2.1:20061"]
    assert settings.endpoints("strategy.macd.pub") == macd
    assert settings.instances(settings.endpoint("strategy.macd.pub")) == macd
    assert settings.instances(settings.endpoint("feed.pub")) == [settings.endpoint("feed.pub")]
    # this machine holds 127.0.0.1 of macd's addresses (192.0.2.1 is a documentation address: nobody's)
    assert settings.bind_endpoint("strategy.macd.pub") == "tcp://127.0.0.1:20061"
    assert settings.instance_name("strategy_macd") == "strategy_macd@127.0.0.1"
    assert settings.instance_name("risk") == "risk"
    wide = load_settings(home=tmp_path, port_base=20000, transport="tcp", hosts=json.dumps(hosts), bind_host="0.0.0.0")
    assert wide.bind_endpoint("risk.rep") == "tcp://0.0.0.0:20044"
    assert wide.endpoint("risk.rep") == "tcp://10.9.0.1:20044"
    default = load_settings(home=tmp_path, port_base=20000, transport="tcp")
    assert default.bind_endpoint("risk.rep") == "tcp://127.0.0.1:20044" and default.bind_address("feed") == "127.0.0.1"
    both_here = load_settings(home=tmp_path, transport="tcp", hosts='{"strategy_macd": ["127.0.0.1", "127.0.0.2"]}',
                              strategies=STRATEGIES)
    with pytest.raises(ConfigError, match="2 of them are this machine's"):
        both_here.bind_endpoint("strategy.macd.pub")


@pytest.mark.parametrize("settings, problem", [
    ({"hosts": '{"risk": "10.9.0.1"}'}, "needs MESH_TRANSPORT=tcp"),
    ({"transport": "tcp", "hosts": '{"riskk": "10.9.0.1"}'}, "no program 'riskk' to place"),
    ({"transport": "tcp", "hosts": '{"redis": "10.9.0.1"}'}, "no program 'redis' to place"),
    ({"transport": "tcp", "hosts": '{"executor": ["10.9.0.1", "10.9.0.2"]}'}, "only strategy workers"),
    ({"transport": "tcp", "hosts": '{"executor": []}'}, "needs an address"),
    ({"transport": "tcp", "hosts": "{not json"}, "not valid JSON"),
    ({"services": "risk,executr"}, "MESH_SERVICES: no program 'executr'"),
    ({"curve_keys": "/nonexistent/keys"}, "MESH_CURVE_KEYS: not a directory"),
])
def test_placements_that_cannot_be_are_refused_with_one_line(tmp_path, settings, problem):
    with pytest.raises(ConfigError, match=problem):
        load_settings(home=tmp_path, **settings)


def test_a_host_runs_its_share_of_the_programs(tmp_path):
    """MESH_SERVICES: `mesh up` on this machine starts only these (the watchdog always: it supervises them)."""
    settings = load_settings(home=tmp_path, strategies=STRATEGIES, services="redis,risk,executor,strategy_macd")
    assert [p.name for p in settings.local_programs(with_redis=True)] == ["redis", "strategy_macd", "risk", "executor"]
    assert settings.service_names() == load_settings(home=tmp_path, strategies=STRATEGIES).service_names()
    parser = configparser.RawConfigParser()
    parser.read_string(render(settings, local_paths(settings), with_redis=False))
    assert [s.removeprefix("program:") for s in parser.sections() if s.startswith("program:")] == [
        "strategy_macd", "risk", "executor"]
    assert "eventlistener:watchdog" in parser.sections()


def test_prometheus_targets_follow_the_programs_to_their_hosts(tmp_path):
    env = clean_env(MESH_HOME=str(tmp_path / "home"), MESH_PORT_BASE="21000", MESH_STRATEGIES="macd",
                    MESH_TRANSPORT="tcp", MESH_HOSTS='{"risk": "10.9.0.1", "strategy_macd": ["10.9.0.1", "10.9.0.2"]}')
    groups = {g["labels"]["mesh_service"]: g["targets"] for g in json.loads(
        mesh_cli("prometheus-targets", env=env, cwd=tmp_path).stdout)}
    assert groups["risk"] == ["10.9.0.1:21003"] and groups["feed"] == ["127.0.0.1:21001"]
    assert groups["strategy_macd"] == ["10.9.0.1:21010", "10.9.0.2:21010"]


def test_supervisord_programs_are_the_tables(tmp_path):
    settings = load_settings(home=tmp_path, strategies=STRATEGIES)
    for paths, with_redis in ((default_paths(), True), (local_paths(settings), False)):
        parser = configparser.RawConfigParser()
        parser.read_string(render(settings, paths, with_redis=with_redis))
        sections = [s.removeprefix("program:") for s in parser.sections() if s.startswith("program:")]
        assert sections == (["redis"] if with_redis else []) + settings.service_names()
        for program in settings.programs(with_redis=with_redis):
            section = parser[f"program:{program.name}"]
            assert int(section["priority"]) == program.service.priority
            if program.service.module:
                assert section["command"] == " ".join([paths.python, *program.args])
            # the settings come from $MESH_HOME/settings.json: the environment names nothing else
            assert section["environment"] == f'MESH_HOME="{paths.home}",PYTHONUNBUFFERED="1"'
    assert "supervisorctl -c $MESH_HOME/supervisord.conf" in (REPO_ROOT / "supervisord.conf").read_text()


def test_dashboard_relays_what_the_table_says(tmp_path):
    from meshtrader.dashboard.stream import relayed

    settings = load_settings(home=tmp_path, strategies=STRATEGIES)
    relays = relayed(settings)
    assert set(relays) == {s.name for s in topology.SERVICES if s.relays}
    assert sorted(p.decode() for _, prefixes in relays.values() for p in prefixes) == sorted(topology.relayed_topics())
    assert relays["executor"] == (settings.endpoint("executor.pub"), [b"fill", b"order", b"acct"])


def test_prometheus_targets_are_the_tables_and_deploy_has_them(tmp_path):
    env = clean_env(MESH_HOME=str(tmp_path / "home"), MESH_PORT_BASE="21000", MESH_STRATEGIES="macd,bollinger")
    result = mesh_cli("prometheus-targets", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    groups = json.loads(result.stdout)
    settings = load_settings(home=tmp_path / "home", port_base=21000, strategies=["macd", "bollinger"])
    assert [(g["labels"]["mesh_service"], g["targets"]) for g in groups] == [
        (name, [f"127.0.0.1:{settings.http_port(name)}"]) for name in settings.service_names()]
    defaults = mesh_cli("prometheus-targets", "--host", "mesh", env=clean_env(MESH_HOME=str(tmp_path / "x")),
                        cwd=tmp_path)
    assert json.loads(defaults.stdout) == json.loads((REPO_ROOT / "deploy" / "targets.json").read_text())


def test_readme_services_table_and_metrics_ports_are_the_tables():
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z_<>]+)` \|.*$", README, re.M)}
    metrics = README.split("## Metrics", 1)[1].split("##", 1)[0]
    metrics = " ".join(metrics.split())
    for service in topology.SERVICES:
        name = f"{service.name}_<name>" if service.per_strategy else service.name
        row = rows.get(name)
        assert row, f"README's services table lacks {name}"
        cells = [c.strip() for c in row.strip("|").split("|")]
        if service.module:
            assert cells[1].startswith(f"`{service.module}{' <name>' if service.per_strategy else ''}`"), row
        assert cells[2] == f"{service.priority}{', background' if service.background else ''}", row
        index = "+i" if service.per_strategy else ""
        ports = [f"{label} +{offset}{index}" for label, offset in (("HTTP", service.http), ("PUB", service.pub),
                                                                    ("REP", service.rep)) if offset is not None]
        assert cells[3] == ", ".join(ports), row
        if service.http is not None and not service.per_strategy:
            assert f"{service.name} {7100 + service.http}" in metrics
    assert f"strategy workers {7100 + topology.BY_NAME['strategy'].http}+" in metrics
    dashboard = rows["dashboard"]
    assert all(f"`{prefix}`" in dashboard for prefix in topology.relayed_topics())


def test_readme_is_current():
    assert "not part of this release" not in README
    assert "USD-M perpetual" in README and "defaults to Binance spot" in README
    assert not re.search(r"`core/|^core/|^services/", README, re.M), "module paths are meshtrader's"
    assert "supervisorctl -c $MESH_HOME/supervisord.conf" in README
    assert "from the repo root, no flags" not in README
    extending = README.split("## Extending Meshtrader", 1)[1].split("\n## ", 1)[0]
    assert "### A strategy is one file" in extending and "### A venue" in extending
    assert "@register" in extending and "MESH_STRATEGY_FILES" in extending


# ----- the running mesh's settings -----------------------------------------------------------------
def test_recorded_settings_hold_no_credential_and_come_back(tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith("MESH_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env here
    settings = load_settings(home=tmp_path / "home", db_url="postgresql://mesh:pg-s3cret@db.example/mesh",
                             alert_webhook_url="https://hooks.example/T0/planted-webhook-token",
                             mode="live", feed="live", live_confirm=LIVE_CONFIRMATION, strategies=["macd"],
                             strategy_params={"macd": {"fast": 8}}, data=Path("elsewhere"))
    path = record_settings(settings)
    assert path == tmp_path / "home" / SETTINGS_FILE and oct(path.stat().st_mode & 0o777) == "0o600"
    text = path.read_text()
    assert "pg-s3cret" not in text and "planted-webhook-token" not in text and "hooks.example" not in text
    recorded = json.loads(text)
    assert recorded["db_url"] == "postgresql://mesh@db.example/mesh" and recorded["home"] == str(tmp_path / "home")
    assert recorded["data"] == str(tmp_path / "elsewhere")

    monkeypatch.setenv("MESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MESH_MODE", "paper")  # this shell says paper: the running mesh is live
    monkeypatch.setenv("MESH_STRATEGIES", "momentum")
    running = load_settings(recorded=True)
    assert running.mode == "live" and running.feed == "live" and running.strategies == ["macd"]
    assert running.strategy_params == {"macd": {"fast": 8}} and running.data == tmp_path / "elsewhere"
    assert running.db_url == "postgresql://mesh@db.example/mesh"  # no password: PGPASSWORD or the environment's
    assert running.alert_webhook_url is None
    monkeypatch.setenv("MESH_DB_URL", "postgresql://mesh:pg-s3cret@db.example/mesh")
    monkeypatch.setenv("MESH_ALERT_WEBHOOK_URL", "https://hooks.example/T0/planted-webhook-token")
    running = load_settings(recorded=True)
    assert running.db_url.endswith(":pg-s3cret@db.example/mesh") and running.alert_webhook_url.endswith("token")
    assert load_settings().mode == "paper"  # without `recorded`, the shell's settings as before
    assert load_settings(recorded=True, strategies=["bollinger"]).strategies == ["bollinger"]  # overrides win
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="recorded settings"):
        load_settings(recorded=True)


def test_mesh_status_reports_the_running_meshs_settings_not_the_shells(tmp_path):
    """`mesh up --mode live` then `mesh status` said "paper": status read the shell's settings."""
    home = tmp_path / "home"
    record_settings(load_settings(home=home, port_base=22000, mode="live", feed="live",
                                  live_confirm=LIVE_CONFIRMATION, strategies=["bollinger", "macd"]))
    shell = clean_env(MESH_HOME=str(home))  # another shell: none of the mesh's settings
    status = mesh_cli("status", "--json", env=shell, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert state["mode"] == "live"
    assert set(state["services"]) == {"feed", "strategy_bollinger", "strategy_macd", "allocator", "risk", "executor",
                                      "forks", "narrator", "dashboard"}
    targets = json.loads(mesh_cli("prometheus-targets", env=shell, cwd=tmp_path).stdout)
    assert "127.0.0.1:22011" in [t for g in targets for t in g["targets"]]  # strategy_macd of the recorded mesh
    down = mesh_cli("down", env=shell, cwd=tmp_path)  # nothing runs there: the stale record goes
    assert down.returncode == 0 and "no mesh is running" in down.stdout
    assert not (home / SETTINGS_FILE).exists()
    assert json.loads(mesh_cli("status", "--json", env=shell, cwd=tmp_path).stdout)["mode"] == "paper"


def test_a_service_loads_the_recorded_settings_whatever_its_environment(tmp_path):
    """supervisord.conf gives each program only MESH_HOME: the rest comes from settings.json."""
    home = tmp_path / "home"
    record_settings(load_settings(home=home, order_pct="0.5", max_order_pct="0.6"))
    code = ("from meshtrader.runtime.config import load_settings; s = load_settings(recorded=True); "
            "print(s.order_pct, s.max_order_pct)")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MESH_HOME": str(home), "MESH_ORDER_PCT": "0.9"}
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.split() == ["0.5", "0.6"], result.stderr
    # and the service entry point reads it: the same bad environment alone would stop the feed (exit 2)
    env["MESH_ORDER_PCT"], env["MESH_MAX_ORDER_PCT"] = "0.9", "0.2"
    check = subprocess.run([sys.executable, "-c", "import types; from meshtrader.services.base import main; "
                            "main(lambda s: types.SimpleNamespace(run=lambda: print('order_pct', s.order_pct)))"],
                           env=env, cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and check.stdout.strip() == "order_pct 0.5", check.stderr
