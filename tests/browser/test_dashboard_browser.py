"""The dashboard in a real browser: Debian's headless Chromium (installed here where missing) driven by
Playwright, against a running mesh replaying the bundled data. Each view's figures are checked against the
store, the live stream against the page (no reload), the controls against the risk guard, and the page
against the mesh restarting under it. A screenshot of each view is saved in the tests' output directory
(README's screenshots are these)."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import running_mesh, wait_for
from support.debian import debian_program

from meshtrader.runtime.config import dashboard_token

playwright = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' brings Playwright")

VIEWS = ("trading", "strategies", "forks", "market", "services", "risk", "narratives", "ask")


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def trading_mesh(tmp_path_factory):
    # validations every market hour: at 120 candles a second, forks come every half minute
    with running_mesh(Path(tmp_path_factory.mktemp("browser")),
                      {"MESH_REPLAY_SPEED": "120", "MESH_VALIDATION_EVERY_MIN": "60",
                       "MESH_VALIDATION_WINDOWS_MIN": "240,720", "MESH_VALIDATION_WINDOW_WEIGHTS": "0.6,0.4"}) as mesh:
        yield mesh


class Operator:
    """Answers the page's dialogs: confirms, and types `typed` into the next prompt (None: cancels it)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.typed: list[str | None] = []

    def __call__(self, dialog) -> None:
        self.seen.append((dialog.type, dialog.message))
        if dialog.type != "prompt":
            dialog.accept()
        elif self.typed and self.typed[0] is not None:
            dialog.accept(self.typed.pop(0))
        else:
            if self.typed:
                self.typed.pop(0)
            dialog.dismiss()

    def said(self, kind: str, text: str) -> bool:
        return any(k == kind and text in message for k, message in self.seen)


@pytest.fixture(scope="module")
def page(trading_mesh):
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=debian_program("chromium"), args=["--no-sandbox"])
        opened = browser.new_page(viewport={"width": 1400, "height": 1000})
        opened.operator = Operator()
        opened.errors = []
        opened.on("dialog", opened.operator)
        opened.on("pageerror", lambda error: opened.errors.append(str(error)))
        opened.goto(trading_mesh.settings.dashboard_url)
        yield opened
        browser.close()


def until(page, condition, timeout_s: float, what: str):
    """wait_for, letting Playwright run between looks: a dialog is handled only while it has control."""
    return wait_for(lambda: page.wait_for_timeout(100) or condition(), timeout_s, what, interval=0)


def show(page, view: str) -> None:
    page.evaluate("window.scrollTo(0, 0)")
    page.click(f'#tabs a[href="#{view}"]')
    page.wait_for_function(f"!document.getElementById('view-{view}').hidden", timeout=5000)


def cells(page, table: str) -> list[list[str]]:
    """A table's body rows as text (its header row left out)."""
    return page.eval_on_selector_all(f"#{table} tr", "rows => rows.slice(1).map(r => [...r.cells].map(c => c.innerText))")


def number(text: str) -> float:
    return float(text.replace(",", "").replace("%", "").strip())


def test_trading_view_shows_the_store_and_draws_the_charts(page, trading_mesh, screenshots):
    mesh = trading_mesh
    page.wait_for_function("document.getElementById('equity').textContent !== '-'", timeout=30_000)
    page.wait_for_function("/ [1-9][0-9]* trades/.test(document.getElementById('chartnote').textContent)", timeout=60_000)
    page.wait_for_function("/^[1-9][0-9]* points/.test(document.getElementById('equitynote').textContent)",
                           timeout=60_000)
    assert page.locator("#chart canvas").count() > 0 and page.locator("#equitychart canvas").count() > 0
    page.wait_for_function("Number(document.getElementById('trades').textContent) > 0", timeout=30_000)
    assert 0 < int(number(page.text_content("#trades"))) <= mesh.trade_count()
    assert page.text_content("#trading").startswith("ACTIVE")
    page.wait_for_function("document.querySelectorAll('#lasttrades tr').length > 1", timeout=30_000)
    for _, strategy, side, qty, symbol, price, _, _ in cells(page, "lasttrades"):  # each one is the store's
        stored = mesh.query("SELECT price FROM trades WHERE strategy=? AND side=? AND qty=? AND symbol=?",
                            (strategy, side, qty, symbol))
        assert any(abs(float(p) - number(price)) < 0.01 for p, in stored), (strategy, side, qty, symbol, price)
    # a strategy's overlays on the chart: its own lines, replayed with the parameters it trades with
    page.select_option("#overlay", "momentum")
    page.wait_for_function("/momentum: sma_fast, sma_slow/.test(document.getElementById('chartnote').textContent)",
                           timeout=15_000)


def test_new_trades_and_candles_arrive_without_a_reload(page, trading_mesh):
    show(page, "trading")
    page.evaluate("window.loadedOnce = true")  # gone if the page reloads
    page.wait_for_function("/ [0-9]+ 1m candles/.test(document.getElementById('chartnote').textContent)",
                           timeout=60_000)
    candles = number(page.text_content("#chartnote").split(":")[1].split()[0])
    trades = int(number(page.text_content("#trades")))
    until(page, lambda: int(number(page.text_content("#trades"))) > trades, 60, "a new trade on the page")
    until(page, lambda: number(page.text_content("#chartnote").split(":")[1].split()[0]) > candles, 30,
          "a new candle on the chart")
    assert page.evaluate("window.loadedOnce") and page.text_content("#live").startswith("live")


def test_every_view_renders_the_stores_figures(page, trading_mesh, screenshots):
    mesh = trading_mesh
    show(page, "strategies")
    page.wait_for_function("document.querySelectorAll('#strategytable tr').length > 1", timeout=30_000)
    for name, *figures in cells(page, "strategytable"):
        assert name in mesh.settings.strategies
        shown_trades = int(number(figures[4].split()[0]))
        assert shown_trades <= mesh.query("SELECT COUNT(*) FROM trades WHERE strategy=?", (name,))[0][0]
    assert page.locator("#allocchart canvas").count() > 0
    page.wait_for_function("document.querySelectorAll('#params tr').length > 1")
    page.screenshot(path=str(screenshots / "strategies.png"), full_page=True)

    show(page, "forks")
    until(page, lambda: len(cells(page, "forks")) > 0, 90, "a fork in the table")
    stored = {fork_id for fork_id, in mesh.query("SELECT fork_id FROM fork_tracking")}
    assert {row[0].split()[0] for row in cells(page, "forks")} <= stored
    assert page.locator("#forktimeline svg rect").count() > 0
    assert {row[0] for row in cells(page, "forkpurposes")} <= {p for p, in mesh.query("SELECT purpose FROM fork_tracking")}
    page.screenshot(path=str(screenshots / "forks.png"), full_page=True)

    show(page, "market")
    page.wait_for_function("document.querySelectorAll('#features table').length > 0", timeout=30_000)
    page.wait_for_function("document.querySelectorAll('#gauges meter').length >= 2", timeout=60_000)
    assert page.locator("#regimechart canvas").count() > 0
    page.screenshot(path=str(screenshots / "market.png"), full_page=True)

    show(page, "services")
    page.wait_for_function(f"document.querySelectorAll('#servicegrid .card').length >= "
                           f"{len(mesh.settings.service_names())}", timeout=30_000)
    page.click('#servicegrid .card[data-service="executor"]')
    page.wait_for_function("document.querySelectorAll('#loglines div').length > 0", timeout=15_000)
    page.select_option("#loglevel", "WARNING")
    page.wait_for_function("[...document.querySelectorAll('#loglines div')].every(d => !d.classList.contains('INFO'))",
                           timeout=15_000)
    page.select_option("#loglevel", "")
    page.wait_for_function("document.querySelectorAll('#loglines div.INFO').length > 0", timeout=15_000)
    # messages per second from two looks at the services' counters: the feed publishes, so its rate is > 0
    page.wait_for_function("""/[1-9]/.test(document.querySelector('#servicegrid .card[data-service="feed"] dd:nth-of-type(3)')
                              .textContent.split('·')[1])""", timeout=30_000)
    page.screenshot(path=str(screenshots / "services.png"), full_page=True)

    show(page, "narratives")
    page.wait_for_function("document.querySelectorAll('#narratives article').length > 0", timeout=60_000)
    titles = {title for title, in mesh.query("SELECT title FROM pr_events")}
    assert set(page.eval_on_selector_all("#narratives h4", "hs => hs.map(h => h.textContent)")) <= titles
    page.screenshot(path=str(screenshots / "narratives.png"), full_page=True)

    show(page, "ask")  # a question answered with its sources, offline (no language model here)
    page.fill("#question", "What does MESH_VALIDATION_LOSS_PCT do?")
    page.click("#askbutton")
    page.wait_for_function("document.querySelectorAll('#facts li').length > 0", timeout=30_000)
    sources = page.eval_on_selector_all("#facts code", "cs => cs.map(c => c.textContent)")
    assert sources[0] == "knowledge/config/settings.md#mesh_validation_loss_pct"
    assert all(f"{n}: {source}]" in page.text_content("#answer") for n, source in enumerate(sources, 1))
    assert "no language model configured" in page.text_content("#asknote")
    page.screenshot(path=str(screenshots / "ask.png"), full_page=True)
    assert not page.errors, page.errors


def test_controls_need_the_token_and_are_recorded(page, trading_mesh, screenshots):
    mesh, operator = trading_mesh, page.operator
    show(page, "risk")
    page.wait_for_function("document.querySelectorAll('#limits meter').length >= 4", timeout=30_000)
    operator.typed = [None]  # no token: nothing happens
    page.click("#kill")
    until(page, lambda: operator.said("prompt", "Dashboard token"), 10, "the token prompt")
    assert mesh.status()["trading_state"] == "ACTIVE"
    operator.typed = ["guessed"]
    page.click("#kill")
    until(page, lambda: operator.said("alert", "wrong dashboard token"), 15, "the refusal")
    assert mesh.status()["trading_state"] == "ACTIVE"
    operator.typed = [dashboard_token(mesh.settings)[0]]
    page.click("#kill")
    until(page, lambda: mesh.status()["trading_state"] == "HALTED", 15, "the kill switch from the page")
    page.wait_for_function("document.getElementById('trading').textContent.startsWith('HALTED') && "
                           "document.getElementById('kill').textContent.startsWith('Release')", timeout=15_000)
    page.click("#kill")  # the token is kept for the tab: releasing asks for nothing more
    until(page, lambda: mesh.status()["trading_state"] == "ACTIVE", 15, "trading again")

    # a poll read before the pause and answered after it (a slow /api/state on a busy machine) must not put the
    # old state back on the button: the operator's next click would pause again instead of resuming
    held, released = [], []  # (route, its response as it was when the page asked): polls wait until released

    def hold(route) -> None:
        if released:
            route.continue_()
        else:
            held.append((route, None if held else route.fetch()))
    page.route("**/api/state", hold)
    until(page, lambda: held, 10, "a poll of the state held back")
    page.click("#pause")
    until(page, lambda: mesh.status()["trading_state"] == "REDUCING", 15, "paused from the page")
    page.wait_for_function("document.getElementById('pause').textContent.startsWith('Resume')", timeout=15_000)
    page.evaluate("window.pauseLabels = []; new MutationObserver(() => window.pauseLabels.push("
                  "document.getElementById('pause').textContent)).observe(document.getElementById('pause'), "
                  "{childList: true, characterData: true, subtree: true})")  # every label from now on
    late_route, late = held[0]
    assert late.json()["paused"] is False
    late_route.fulfill(response=late, json={**late.json(), "trades": 987654321})  # a mark: the late state drawn
    until(page, lambda: page.text_content("#trades") == "987654321", 10, "the late state on the page")
    assert not [label for label in page.evaluate("window.pauseLabels") if not label.startswith("Resume")]
    released.append(True)
    for route, _ in held[1:]:
        route.continue_()
    page.unroute("**/api/state")
    page.click("#pause")
    until(page, lambda: mesh.status()["trading_state"] == "ACTIVE", 15, "resumed from the page")

    page.wait_for_function("document.querySelector('#limitvalues button[data-limit=\"daily_loss_pct\"]') !== null",
                           timeout=15_000)
    operator.typed = ["0.04"]
    page.click('#limitvalues button[data-limit="daily_loss_pct"]')
    until(page, lambda: mesh.status().get("limit_values", {}).get("daily_loss_pct") == "0.04", 15, "the new limit")
    page.wait_for_function("[...document.querySelectorAll('#controls tr')].some(r => r.innerText.includes('daily_loss_pct'))",
                           timeout=15_000)
    page.click('#resets button[data-reset="peak"]')  # the drawdown measured from the equity now
    until(page, lambda: operator.said("alert", "portfolio peak"), 15, "the peak reset")
    page.wait_for_function("[...document.querySelectorAll('#controls tr')].some(r => r.innerText.includes('reset_peak'))",
                           timeout=15_000)
    recorded = cells(page, "controls")
    assert any("daily_loss_pct" in row[-1] and "dashboard" in row[3] for row in recorded), recorded
    assert {"kill_switch", "pause", "reset_peak"} <= {row[2] for row in recorded}, recorded
    page.screenshot(path=str(screenshots / "risk.png"), full_page=True)
    assert not page.errors, page.errors


def test_the_page_survives_the_mesh_restarting_under_it(page, trading_mesh, screenshots):
    mesh = trading_mesh
    show(page, "trading")  # the last view taken: the longest history by now
    page.wait_for_function("/^([2-9]|[1-9][0-9]+) points/.test(document.getElementById('equitynote').textContent)",
                           timeout=60_000)
    page.screenshot(path=str(screenshots / "trading.png"), full_page=True)
    show(page, "services")
    executor = mesh.pid("executor")
    mesh.ctl("restart", "executor")  # a restart however brief shows: a new process
    page.wait_for_function("document.querySelector('#servicegrid .card[data-service=\"executor\"]').innerText"
                           ".includes('seen')", timeout=30_000)
    assert mesh.pid("executor") != executor
    others = [name for name in mesh.settings.service_names() if name != "dashboard"]
    mesh.ctl("stop", *others)
    page.wait_for_function("document.getElementById('banner').textContent.includes('The mesh is down')", timeout=30_000)
    # still, nothing moving: the page shows the books' last figures to the last digit
    status = mesh.status()
    until(page, lambda: page.get_attribute("#equity span", "title") == status["equity"], 10, "the last equity")
    assert int(page.text_content("#trades")) == mesh.trade_count() == status["trades"]
    assert page.get_attribute("#pnl span", "title") == status["pnl"]
    page.screenshot(path=str(screenshots / "mesh-down.png"), full_page=True)
    mesh.ctl("restart", "dashboard")  # the page's own server goes away and comes back: a new epoch, a new snapshot
    mesh.ctl("start", *others)
    until(page, lambda: mesh.all_running(), 60, "the mesh back up")
    page.wait_for_function("!document.getElementById('banner').textContent.includes('down') && "
                           "document.getElementById('live').textContent.startsWith('live')", timeout=60_000)
    page.goto(trading_mesh.settings.dashboard_url.rstrip("/") + "/docs")  # the API docs, offline
    page.get_by_text("/api/candles", exact=True).wait_for(timeout=30_000)
    page.screenshot(path=str(screenshots / "api-docs.png"), full_page=True)
    assert not page.errors, page.errors
