"""The dashboard in a real browser: Debian's headless Chromium (installed here where missing) driven by
Playwright, against a running mesh replaying the bundled data. Screenshots of each view are saved in the
test's output directory."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import running_mesh, wait_for

from meshtrader.runtime.config import dashboard_token

playwright = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' brings Playwright")


def chromium() -> str:
    """Debian's chromium, installed with apt-get where missing (the tests run as root on a fresh machine)."""
    found = shutil.which("chromium")
    if found is None:
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True, timeout=600)
        installed = subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True, text=True,
                                   timeout=900, env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/bin:/bin"})
        found = shutil.which("chromium")
        assert found, f"headless Chromium is needed and could not be installed: {installed.stderr[-500:]}"
    return found


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def trading_mesh(tmp_path_factory):
    with running_mesh(Path(tmp_path_factory.mktemp("browser")), {"MESH_REPLAY_SPEED": "120"}) as mesh:
        yield mesh


def number(text: str) -> float:
    return float(text.replace(",", ""))


def test_the_dashboard_shows_the_mesh_live_and_its_controls_need_the_token(browser, trading_mesh, tmp_path):
    mesh, base = trading_mesh, trading_mesh.settings.dashboard_url.rstrip("/")
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    dialogs: list[tuple[str, str]] = []
    answers: dict[str, str | None] = {"prompt": None}  # what the operator types into the next prompt (None: cancel)

    def operator(dialog) -> None:
        dialogs.append((dialog.type, dialog.message))
        if dialog.type == "prompt" and answers["prompt"] is None:
            dialog.dismiss()
        elif dialog.type == "prompt":
            dialog.accept(answers["prompt"])
        else:
            dialog.accept()

    page.on("dialog", operator)

    def until(condition, timeout_s: float, what: str):
        """wait_for, letting Playwright run between looks: a dialog is handled only while it has control."""
        return wait_for(lambda: page.wait_for_timeout(100) or condition(), timeout_s, what, interval=0)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(base + "/")
    # the views render real numbers, and the chart drew the candles and the trades on them
    page.wait_for_function("document.getElementById('equity').textContent !== '-'", timeout=30_000)
    page.wait_for_function("/ [1-9][0-9]* trades/.test(document.getElementById('chartnote').textContent)",
                           timeout=60_000)
    page.wait_for_function("/^[1-9][0-9]* points/.test(document.getElementById('equitynote').textContent)",
                           timeout=60_000)
    assert page.locator("#chart canvas").count() > 0 and page.locator("#equitychart canvas").count() > 0
    page.wait_for_function(f"document.querySelectorAll('#services tr').length > {len(mesh.settings.service_names())}",
                           timeout=30_000)  # a header and each service
    page.wait_for_function("document.querySelectorAll('#limits meter').length >= 4", timeout=30_000)
    # messages per second from two refreshes of the services' counters: the feed publishes, so it is > 0
    page.wait_for_function("""[...document.querySelectorAll('#services tr')].some(r =>
        r.cells[0].textContent === 'feed' && Number(r.cells[5].textContent.replace(/,/g, '')) > 0)""",
                           timeout=30_000)
    page.wait_for_function("Number(document.getElementById('trades').textContent) > 0", timeout=30_000)
    shown = int(number(page.text_content("#trades")))
    assert 0 < shown <= mesh.trade_count()
    assert page.text_content("#trading").startswith("ACTIVE")
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    # a new trade shows up without a reload
    until(lambda: int(number(page.text_content("#trades"))) > shown, 60, "a new trade on the page")

    # the kill switch: no token, a wrong one, then the right one
    page.click("#kill")
    until(lambda: "prompt" in [kind for kind, _ in dialogs], 10, "the token prompt")
    assert mesh.status()["trading_state"] == "ACTIVE"
    answers["prompt"] = "guessed"
    page.click("#kill")
    until(lambda: any(kind == "alert" and "wrong dashboard token" in text for kind, text in dialogs), 15,
          "the refusal")
    assert mesh.status()["trading_state"] == "ACTIVE"
    answers["prompt"] = dashboard_token(mesh.settings)[0]
    page.click("#kill")
    until(lambda: mesh.status()["trading_state"] == "HALTED", 15, "the kill switch from the page")
    page.wait_for_function("document.getElementById('trading').textContent.startsWith('HALTED')", timeout=15_000)
    page.screenshot(path=str(tmp_path / "dashboard-halted.png"), full_page=True)
    page.click("#kill")  # the token is kept for the tab: releasing asks for nothing more
    until(lambda: mesh.status()["trading_state"] == "ACTIVE", 15, "trading again")

    assert not errors, errors
    page.goto(base + "/docs")  # the API docs, offline
    page.get_by_text("/api/chart", exact=True).wait_for(timeout=30_000)
    page.screenshot(path=str(tmp_path / "api-docs.png"), full_page=True)
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
