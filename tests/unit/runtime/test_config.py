"""Settings: validation, precedence, ports, secrets, live mode."""
from __future__ import annotations

import subprocess
import sys

import pytest

from meshtrader.runtime.config import LIVE_CONFIRMATION, REPO_ROOT, ConfigError, load_settings


def test_invalid_setting_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("MESH_REPLAY_SPEED", "-3")
    with pytest.raises(ConfigError) as error:
        load_settings()
    message = str(error.value)
    assert "MESH_REPLAY_SPEED" in message and "greater than 0" in message and "\n" not in message


def test_settings_precedence_defaults_file_env(tmp_path, monkeypatch):
    config = tmp_path / "mesh.toml"
    config.write_text('replay_speed = 3.5\nstrategies = ["macd"]\nport_base = 9000\n')
    monkeypatch.setenv("MESH_CONFIG", str(config))
    monkeypatch.setenv("MESH_PORT_BASE", "9100")
    settings = load_settings()
    assert settings.replay_speed == 3.5 and settings.strategies == ["macd"]  # file over default
    assert settings.port_base == 9100  # environment over file
    monkeypatch.setenv("MESH_STRATEGIES", "momentum, macd")
    assert load_settings().strategies == ["momentum", "macd"]
    monkeypatch.setenv("MESH_STRATEGIES", "momentum,yolo")
    with pytest.raises(ConfigError, match="MESH_STRATEGIES.*unknown strategy 'yolo'"):
        load_settings()


def test_service_exits_with_config_error(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "MESH_HOME": str(tmp_path), "MESH_ORDER_PCT": "0.5"}
    result = subprocess.run([sys.executable, "-m", "meshtrader.services.feed"], env=env, capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "MESH_ORDER_PCT 0.5 exceeds MESH_MAX_ORDER_PCT" in result.stderr


def test_meshes_with_different_home_and_ports_do_not_clash(tmp_path):
    a = load_settings(home=tmp_path / "a", port_base=20000)
    b = load_settings(home=tmp_path / "b", port_base=20100)
    assert a.endpoint("feed.pub") != b.endpoint("feed.pub")
    assert a.http_port("executor") != b.http_port("executor") and a.redis_prefix != b.redis_prefix
    tcp = load_settings(transport="tcp", port_base=20000)
    assert tcp.endpoint("risk.rep").startswith("tcp://127.0.0.1:")


def test_readme_documents_every_setting_and_both_commands():
    from meshtrader.runtime.config import Settings

    readme = (REPO_ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    missing = [name for name in Settings.model_fields if f"`MESH_{name.upper()}`" not in readme]
    assert not missing, f"README lacks settings: {missing}"


def test_store_urls_never_show_a_password(tmp_path, monkeypatch):
    from meshtrader.runtime.redaction import redact, unredact

    url = "postgresql://mesh:s3cret@db.internal:5432/mesh"
    assert redact(url) == "postgresql://mesh:***@db.internal:5432/mesh" and redact("/var/mesh.db") == "/var/mesh.db"
    assert unredact(redact(url) + "#snapshot=00000003-1", url) == url + "#snapshot=00000003-1"
    with pytest.raises(ConfigError) as error:
        load_settings(db_url="mysql://mesh:s3cret@db/mesh")
    assert "s3cret" not in str(error.value) and "postgresql://" in str(error.value)
    config = tmp_path / "mesh.toml"
    config.write_text(f'db_url = "{url}"\n')
    monkeypatch.setenv("MESH_CONFIG", str(config))
    with pytest.raises(ConfigError, match="only from the environment"):
        load_settings()


def test_live_mode_needs_consent_and_live_data():
    with pytest.raises(ConfigError, match=LIVE_CONFIRMATION):
        load_settings(mode="live", feed="live")
    with pytest.raises(ConfigError, match="MESH_FEED=live"):
        load_settings(mode="live", live_confirm=LIVE_CONFIRMATION)
    assert load_settings(mode="live", feed="live", live_confirm=LIVE_CONFIRMATION).live_sandbox


def test_the_dashboard_token_comes_from_the_environment_or_is_made_once_and_kept_private(tmp_path, monkeypatch):
    import stat

    from meshtrader.runtime.config import dashboard_token

    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("MESH_DASHBOARD_TOKEN", raising=False)
    settings = load_settings(home=str(tmp_path / "home"))
    token, kept_in = dashboard_token(settings)
    assert len(token) >= 32 and kept_in == settings.home_dir / "dashboard.token"
    assert stat.S_IMODE(kept_in.stat().st_mode) == 0o600
    assert dashboard_token(settings) == (token, kept_in)  # the same token at every start
    monkeypatch.setenv("MESH_DASHBOARD_TOKEN", "from-the-environment")
    assert dashboard_token(settings) == ("from-the-environment", None)
