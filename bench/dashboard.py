"""How fast the dashboard is with a day of 1-minute candles and thousands of trades on the chart.

A store holding the bundled candles (a month of both symbols) and TRADES trades over the chart's last
day is served by the dashboard alone (no mesh: its Redis is absent, as when the mesh is down). Printed:
each read's median time over HTTP (candles, trades, the state, the equity curves), and, where headless
Chromium is installed, the page's time from navigation to the chart drawn with every candle and trade,
and a redraw of the trades (what a fill costs the page)."""
from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import uvicorn

from meshtrader.dashboard.app import create_app
from meshtrader.marketdata.files import find_candle_file, load_bars
from meshtrader.persistence.store import Store
from meshtrader.runtime.config import BUNDLED_DATA, load_settings
from meshtrader.wire.messages import Candle
from tools.localmesh import free_port_base

CANDLES = 1440
TRADES = 5000
READS = 20


def fill_store(path: Path, symbols: list[str]) -> int:
    """The bundled candles, and TRADES alternating buys and sells of the first symbol over its last day."""
    store = Store(path)
    last_open = 0
    for symbol in symbols:
        bars, _ = load_bars(find_candle_file(BUNDLED_DATA, symbol))
        store.insert_candles(Candle(symbol=symbol, tf="1m", open_time=b.open_time, open=b.open, high=b.high,
                                    low=b.low, close=b.close, volume=b.volume) for b in bars)
        if symbol == symbols[0]:
            last_open, close = bars[-1].open_time, Decimal(str(bars[-1].close))
    start = last_open - (CANDLES - 1) * 60_000
    now = time.time()
    orders, trades = [], []
    for i in range(TRADES):
        side, at = ("buy", "sell")[i % 2], start + i * (CANDLES * 60_000 // TRADES)
        orders.append((f"o{i}", f"s{i}", "bench", symbols[0], side, "0.001", "FILLED", at, now))
        trades.append((f"t{i}", f"o{i}", "bench", symbols[0], side, "0.001", str(close), "0.01", "0", at, 1, now))
    store.insert_many("orders", ("order_id", "signal_id", "strategy", "symbol", "side", "qty", "status", "event_time",
                                 "created_at"), orders)
    store.insert_many("trades", ("trade_id", "order_id", "strategy", "symbol", "side", "qty", "price", "fee",
                                 "realized_pnl", "event_time", "published", "created_at"), trades)
    store.close()
    return start


def median_ms(client: httpx.Client, path: str) -> float:
    times = []
    for _ in range(READS):
        started = time.perf_counter()
        client.get(path).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def page_timings(url: str) -> dict:
    """Navigation to the chart drawn with every candle and trade, and one redraw of the trades, in Chromium."""
    chromium = shutil.which("chromium")
    if chromium is None:
        return {"page": "not measured: no headless Chromium here (the browser tests install Debian's)"}
    from playwright.sync_api import sync_playwright

    drawn = f"document.getElementById('chartnote').textContent.includes('{TRADES} trades')"
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        started = time.perf_counter()
        page.goto(url)
        page.wait_for_function(drawn, timeout=60_000)
        first = (time.perf_counter() - started) * 1000
        redraw = page.evaluate("""async () => { const {loadTrades} = await import('/static/js/trading.js');
            const t0 = performance.now(); await loadTrades(); return performance.now() - t0; }""")
        browser.close()
    return {"page_first_chart_ms": round(first, 1), "page_trades_redraw_ms": round(redraw, 1)}


def run_dashboard_suite(progress: bool = True) -> dict:
    with tempfile.TemporaryDirectory(prefix="meshdash-") as tmp:
        home = Path(tmp)
        settings = load_settings(home=home, port_base=free_port_base(), log_level="WARNING")
        start = fill_store(settings.db_path, settings.symbols)
        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1",
                                               port=settings.http_port("dashboard"), log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        base = settings.dashboard_url.rstrip("/")
        with httpx.Client(base_url=base, timeout=30) as client:
            while not server.started:
                time.sleep(0.05)
            if progress:
                print(f"dashboard on {base}: {CANDLES} candles and {TRADES} trades on the chart", flush=True)
            symbol = settings.symbols[0]
            reads = {"candles_1440_ms": median_ms(client, f"/api/candles?symbol={symbol}&n={CANDLES}"),
                     f"trades_{TRADES}_ms": median_ms(client, f"/api/trades?symbol={symbol}&since_et={start}"),
                     "state_ms": median_ms(client, "/api/state"),
                     "equity_ms": median_ms(client, "/api/equity")}
            shown = client.get(f"/api/trades?symbol={symbol}&since_et={start}").json()["trades"]
            assert len(shown) == TRADES, len(shown)
        result = {"candles": CANDLES, "trades": TRADES, "http_median": reads, **page_timings(base + "/")}
        server.should_exit = True
        thread.join(timeout=10)
    return result
