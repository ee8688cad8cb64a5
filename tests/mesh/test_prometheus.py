"""The mesh as Prometheus sees it: Debian's real Prometheus (installed where missing) scrapes a running mesh
with deploy/'s scrape configuration and alerting rules, its targets from `mesh prometheus-targets`. Every
service is up, every key series has values and follows the naming conventions, every rule loads and one
fires when its condition is caused, and every query of the Grafana dashboard has data.

The mesh trades live through the real ccxt against the exchange simulator (paper trading sends no request
to an exchange, so the exchange's series would have none); it costs what a paper mesh does."""
from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import LIVE_ENV, chaos, running_mesh, wait_for
from support.debian import debian_program

from meshtrader.runtime.config import REPO_ROOT, dashboard_token
from tools.localmesh import free_port_base

DEPLOY = REPO_ROOT / "deploy"
# the trading series the specs name, and the service health ones: each must have values
KEY_SERIES = ("mesh_equity_usdt", "mesh_daily_pnl_usdt", "mesh_daily_pnl_ratio", "mesh_drawdown_ratio",
              "mesh_exposure_usdt", "mesh_open_positions", "mesh_strategy_equity_usdt", "mesh_trades_total",
              "mesh_signals_total", "mesh_allocation_ratio", "mesh_exchange_request_seconds_count",
              "mesh_exchange_errors_total", "mesh_forks_active", "mesh_fork_creation_seconds_count",
              "mesh_tick_to_fill_seconds_count", "mesh_feed_lag_seconds", 'mesh_feed_events_total{kind="gaps"}',
              "mesh_feed_stale", "mesh_feed_connected", "mesh_risk_decisions_total", "mesh_kill_switch",
              "mesh_trading_state", "mesh_orders_total", "mesh_handler_seconds_count", "mesh_messages_in_total",
              "mesh_up", "process_resident_memory_bytes", "process_cpu_seconds_total")
BY_STRATEGY = ("mesh_signals_total", "mesh_allocation_ratio", "mesh_strategy_equity_usdt", "mesh_open_positions")


@pytest.fixture(scope="module")
def live_mesh(sim, tmp_path_factory):
    # validations every 2 market hours: at the simulator's 20 candles a second, a fork every 6 s; no parameter
    # optimisation (its worker processes would only slow the mesh down)
    with running_mesh(Path(tmp_path_factory.mktemp("prometheus-mesh")), {
            **LIVE_ENV, "MESH_EXCHANGE_URL": sim, "MESH_VALIDATION_EVERY_MIN": "120", "MESH_OPTIMIZE_EVERY": "0",
            "MESH_VALIDATION_WINDOWS_MIN": "240,720", "MESH_VALIDATION_WINDOW_WEIGHTS": "0.6,0.4"}) as mesh:
        yield mesh


def rendered_config(folder: Path, targets: str) -> Path:
    """deploy/'s configuration with this mesh's targets, scraped and evaluated every second, and the rules
    with every `for:` cut to 0s (so a condition, once caused, fires at the next evaluation)."""
    (folder / "targets.json").write_text(targets)
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    (folder / "alerts.yml").write_text(yaml.safe_dump(rules))
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(folder / "alerts.yml")]
    [job] = config["scrape_configs"]
    job["file_sd_configs"] = [{"files": [str(folder / "targets.json")]}]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    return folder / "prometheus.yml"


@pytest.fixture(scope="module")
def prometheus(live_mesh, tmp_path_factory) -> Iterator[str]:
    """The URL of a Prometheus scraping the mesh, stopped when the module ends."""
    binary = debian_program("prometheus", recommends=False)
    folder = tmp_path_factory.mktemp("prometheus")
    config = rendered_config(folder, live_mesh.cli("prometheus-targets", "--host", "127.0.0.1").stdout)
    checked = subprocess.run([debian_program("promtool", "prometheus", recommends=False), "check", "config", str(config)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    address = f"127.0.0.1:{free_port_base()}"
    with open(folder / "prometheus.log", "w") as log:
        process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
                                    f"--web.listen-address={address}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{address}"
    try:
        wait_for(lambda: ready(url), 30, "Prometheus to be ready")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def api(url: str, path: str, **params: str) -> object:
    answer = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]


def query(url: str, expr: str) -> list[dict]:
    return api(url, "query", query=expr)["result"]


def has_values(url: str, expr: str) -> bool:
    """At least one sample, and a number (a quantile of an empty window is NaN)."""
    return any(math.isfinite(float(sample["value"][1])) for sample in query(url, expr))


def wait_for_values(url: str, exprs: list[str], what: str) -> None:
    missing = list(exprs)

    def all_have_values() -> bool:
        missing[:] = [expr for expr in missing if not has_values(url, expr)]
        return not missing

    try:
        wait_for(all_have_values, 60, what, interval=1.0)
    except AssertionError as error:
        raise AssertionError(f"{error}: no values for {missing}") from None


def test_every_service_is_a_target_that_is_up(prometheus, live_mesh):
    services = set(live_mesh.settings.service_names())

    def all_up() -> bool:
        targets = api(prometheus, "targets")["activeTargets"]
        return {t["labels"]["service"] for t in targets if t["health"] == "up"} == services and len(targets) == len(services)

    wait_for(all_up, 30, "every service's target to be up")
    assert {s["metric"]["service"] for s in query(prometheus, 'up{job="meshtrader"} == 1')} == services


def test_every_key_series_has_values_with_service_and_instance(prometheus, live_mesh, sim):
    chaos(sim, action="reject_orders", count=1)  # an error of a type: the exchange refuses the next order
    wait_for_values(prometheus, list(KEY_SERIES), "the key series")
    for name in BY_STRATEGY:
        assert {s["metric"]["strategy"] for s in query(prometheus, name)} == set(live_mesh.settings.strategies), name
    assert has_values(prometheus, 'mesh_exchange_errors_total{method="create_order", error="InsufficientFunds"}')
    # every series names the service that exports it, and its scrape target as the instance
    assert query(prometheus, '{job="meshtrader", service=""}') == []
    assert query(prometheus, '{job="meshtrader", instance=""}') == []


def test_series_follow_the_naming_conventions(prometheus):
    """Counters end in _total, histograms are latencies in seconds, gauges are no totals; money is in USDT."""
    wait_for_values(prometheus, ["mesh_trades_total"], "the executor's series")
    kinds = {family: types[0]["type"] for family, types in api(prometheus, "metadata").items()
             if family.startswith("mesh_")}
    series = {name for name in api(prometheus, "label/__name__/values") if name.startswith("mesh_")}
    # a counter's family is named without _total in OpenMetrics (the services'), with it in the text format
    # (the dashboard's); its series end in _total either way
    wrong = [f"{family} ({kind})" for family, kind in kinds.items()
             if (kind == "counter" and family in series and not family.endswith("_total"))
             or (kind == "histogram" and not family.endswith("_seconds"))
             or (kind == "gauge" and family.endswith("_total"))]
    wrong += [name for name in series if name.endswith("_total")
              and "counter" not in (kinds.get(name), kinds.get(name.removesuffix("_total")))]
    assert kinds and not wrong, f"not named by the conventions: {wrong}"
    assert {"mesh_equity_usdt", "mesh_exposure_usdt", "mesh_strategy_equity_usdt", "mesh_daily_pnl_usdt"} <= series


def test_every_alert_rule_loads_and_the_kill_switch_fires_its_alert(prometheus, live_mesh):
    checked = subprocess.run([debian_program("promtool", "prometheus", recommends=False), "check", "rules",
                              str(DEPLOY / "alerts.yml")], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    names = {rule["alert"] for group in yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
             for rule in group["rules"]}

    def loaded_and_evaluated() -> dict[str, str]:
        rules = {rule["name"]: rule["health"] for group in api(prometheus, "rules")["groups"]
                 for rule in group["rules"]}
        return set(rules) == names and all(health == "ok" for health in rules.values()) and rules

    wait_for(loaded_and_evaluated, 30, "every rule loaded and evaluated")
    dashboard = f"http://127.0.0.1:{live_mesh.settings.http_port('dashboard')}"
    control = {"Authorization": f"Bearer {dashboard_token(live_mesh.settings)[0]}"}

    def firing(alert: str) -> bool:
        return any(a["labels"]["alertname"] == alert and a["state"] == "firing" for a in api(prometheus, "alerts")["alerts"])

    assert not firing("MeshKillSwitchOn")
    httpx.post(f"{dashboard}/api/kill-switch", json={"on": True}, headers=control, timeout=10).raise_for_status()
    try:
        wait_for(lambda: firing("MeshKillSwitchOn"), 30, "the kill switch alert to fire")
    finally:
        httpx.post(f"{dashboard}/api/kill-switch", json={"on": False}, headers=control, timeout=10).raise_for_status()
    wait_for(lambda: not firing("MeshKillSwitchOn"), 30, "the kill switch alert to end")
    assert live_mesh.status()["trading_state"] == "ACTIVE"


def test_every_dashboard_query_has_data(prometheus):
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "meshtrader.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 30
    wait_for_values(prometheus, exprs, "every dashboard query")
