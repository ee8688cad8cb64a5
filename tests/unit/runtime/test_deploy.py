"""deploy/ and docker-compose.yml without a Docker engine: the compose file against the Compose
specification's JSON schema (vendored in deploy/schema), every file the containers are given exists where
the configurations look for it, the target list is what `mesh prometheus-targets` prints, and the Grafana
dashboard asks the data source Grafana is provisioned with. tests/mesh/test_prometheus.py runs all of it
against a real Prometheus."""
from __future__ import annotations

import json
from pathlib import PurePosixPath

import jsonschema
import pytest
import yaml

from meshtrader.ops.cli import main
from meshtrader.runtime.config import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"


def load_yaml(path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(REPO_ROOT / "docker-compose.yml")


def mounts(service: dict) -> dict[str, str]:
    """A service's bind mounts of the repository's files: path inside the container -> path in the repository."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = source[2:]
    return found


def test_the_compose_file_follows_the_compose_specification(compose):
    schema = json.loads((DEPLOY / "schema" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)  # the draft its $schema names
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, errors
    assert not validator.is_valid({"services": {"mesh": {"image": "x", "restart_policy": "always"}}})  # it does check


def test_every_mounted_file_exists_where_the_configurations_look(compose):
    services = compose["services"]
    assert {"redis", "mesh", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        for source in mounts(service).values():
            assert (REPO_ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    prometheus = mounts(services["prometheus"])
    config = load_yaml(REPO_ROOT / prometheus["/etc/prometheus/prometheus.yml"])
    [job] = config["scrape_configs"]
    wanted = [*config["rule_files"], *(f for sd in job["file_sd_configs"] for f in sd["files"])]
    assert all(path in prometheus for path in wanted), f"{wanted} are not all mounted: {prometheus}"
    grafana = mounts(services["grafana"])
    provisioning = REPO_ROOT / grafana["/etc/grafana/provisioning"]
    [provider] = load_yaml(provisioning / "dashboards" / "meshtrader.yml")["providers"]
    dashboards = provider["options"]["path"]
    assert (REPO_ROOT / grafana[dashboards] / "meshtrader.json").is_file()
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert str(PurePosixPath(home).parent) == dashboards


def test_the_target_list_is_what_mesh_prometheus_targets_prints(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no .env of a working directory
    monkeypatch.setenv("MESH_HOME", str(tmp_path / "home"))  # no running mesh: the defaults
    assert main(["prometheus-targets", "--host", "mesh"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((DEPLOY / "targets.json").read_text())


def test_the_dashboard_asks_the_provisioned_data_source():
    [source] = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "meshtrader.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == ["Trading", "Latency and market data", "Service health", "Forks"]
    for panel in (p for p in panels if p["type"] != "row"):
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"] and all(t["expr"] and t["datasource"]["uid"] == source["uid"] for t in panel["targets"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
