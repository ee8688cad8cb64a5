"""Live market data for real, offline: the real ccxt (websocket + REST) against `mesh exchange-sim`
speaking Binance's wire formats on 127.0.0.1, with the whole mesh trading on it. Each fault the
simulator can inject is repaired: the strategies see a continuous series equal to the bundled data."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import SIM_KEY, SIM_SECRET, chaos, live_feed, running_mesh, wait_for

from meshtrader.marketdata.files import find_candle_file, load_bars
from meshtrader.runtime.config import BUNDLED_DATA

SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture(scope="module")
def live(sim, tmp_path_factory):
    with running_mesh(Path(tmp_path_factory.mktemp("live")), live_feed(sim, MESH_FEED_STALE_S="2")) as mesh:
        yield mesh


def feed_events(mesh, kind: str) -> float:
    return mesh.metric("feed", "mesh_feed_events_total", kind=kind)


def assert_true_series(mesh) -> None:
    """What the feed published (and stored) is continuous and equal, candle for candle, to the data."""
    for symbol in SYMBOLS:
        rows = mesh.query("SELECT open_time, open, high, low, close, volume FROM candles WHERE symbol=? "
                          "ORDER BY open_time", (symbol,))
        assert len(rows) > 10
        times = [r[0] for r in rows]
        assert all(b - a == 60_000 for a, b in zip(times, times[1:], strict=False)), f"{symbol} has a hole"
        bars = {b.open_time: tuple(b) for b in load_bars(find_candle_file(BUNDLED_DATA, symbol))[0]}
        assert [r for r in rows if bars[r[0]] != tuple(r)] == [], f"{symbol} differs from the exchange's candles"
    log = (mesh.home / "logs" / "strategy_momentum.log").read_text()
    assert "candle_gap" not in log, "a strategy saw a hole in the series"


def stored_after(mesh, market_time: int) -> bool:
    return all(mesh.query("SELECT MAX(open_time) FROM candles WHERE symbol=?", (s,))[0][0] or 0 > market_time + 120_000
               for s in SYMBOLS)


def test_live_mesh_streams_and_trades(live):
    wait_for(lambda: live.trade_count() > 0, 90, "a trade on live data")
    status = live.status()
    assert all(s["healthy"] for s in status["services"].values())
    assert live.metric("feed", "mesh_feed_connected") == len(SYMBOLS)
    assert_true_series(live)


@pytest.mark.parametrize("fault, counter", [
    ({"action": "drop", "seconds": 1}, "reconnects"),
    ({"action": "gap", "minutes": 4}, "gaps"),
    ({"action": "malformed"}, "stalls"),
    ({"action": "bad_candle"}, None),
])
def test_each_fault_is_repaired(live, sim, fault, counter):
    before = feed_events(live, counter) if counter else live.metric("feed", "mesh_candles_rejected_total")
    at = chaos(sim, **fault)
    if counter:
        wait_for(lambda: feed_events(live, counter) > before, 30, f"{fault['action']} to be noticed")
    else:
        wait_for(lambda: live.metric("feed", "mesh_candles_rejected_total") > before, 30, "the bad candle rejected")
    wait_for(lambda: stored_after(live, at), 30, "candles after the fault")
    assert_true_series(live)


def test_rate_limit_backs_off_and_still_repairs(live, sim):
    before = feed_events(live, "rate_limited")
    chaos(sim, action="rate_limit", count=3)
    at = chaos(sim, action="drop", seconds=1)  # the reconnect needs REST, which now answers 429
    wait_for(lambda: feed_events(live, "rate_limited") > before, 30, "a 429 to be met")
    wait_for(lambda: stored_after(live, at), 30, "candles after the 429s")
    assert_true_series(live)


def test_stale_feed_restricts_trading_to_exits(live, sim):
    chaos(sim, action="drop", seconds=4)  # longer than MESH_FEED_STALE_S
    wait_for(lambda: live.status()["trading_state"] == "REDUCING", 20, "REDUCING while the data is stale")
    wait_for(lambda: live.status()["trading_state"] == "ACTIVE", 40, "ACTIVE once data flows again")
    reasons = [r[0] for r in live.query("SELECT reason FROM risk_events WHERE rule='stale_data'")]
    assert any("only exits allowed" in r for r in reasons) and any("flowing again" in r for r in reasons)
    kinds = {r[0] for r in live.query("SELECT kind FROM pr_events")}
    assert "market_gap" in kinds
    assert_true_series(live)


def test_rest_polling_fallback_gives_the_same_series(sim):
    """Exchanges without websocket klines in ccxt are polled through REST, under the same rules."""
    import zmq

    from meshtrader.marketdata.live import LiveMarketData
    from meshtrader.runtime.log import Logger
    from meshtrader.wire.codec import decode_event
    from meshtrader.wire.messages import Candle

    ctx = zmq.Context()
    inbox = ctx.socket(zmq.PULL)
    inbox.bind("inproc://rest-test")
    live = LiveMarketData("binance", sim, ["BTCUSDT"], "1m", "inproc://rest-test", ctx, Logger("t", "ERROR"),
                          lambda *_: None, backoff_s=0.2, stale_s=5, transport="rest", poll_s=0.02)
    live.start()
    candles: list[Candle] = []
    try:
        deadline = time.monotonic() + 60
        while len(candles) < 20 and time.monotonic() < deadline:
            if inbox.poll(500):
                topic, payload, _ = inbox.recv_multipart()
                event = decode_event(topic, payload)
                if isinstance(event, Candle):
                    candles.append(event)
    finally:
        live.stop()
        inbox.close(0)
        ctx.term()
    assert len(candles) >= 20
    bars = {b.open_time: b for b in load_bars(find_candle_file(BUNDLED_DATA, "BTCUSDT"))[0]}
    assert all(b.open_time - a.open_time == 60_000 for a, b in zip(candles, candles[1:], strict=False))
    assert all((c.open, c.high, c.low, c.close, c.volume) == tuple(bars[c.open_time])[1:] for c in candles)


def signed_client(sim: str, secret: str = SIM_SECRET):
    import ccxt

    from meshtrader.marketdata.live import point_at

    exchange = ccxt.binance({"apiKey": SIM_KEY, "secret": secret, "options": {
        "defaultType": "spot", "fetchCurrencies": False, "fetchMargins": False, "fetchMarkets": {"types": ["spot"]}}})
    point_at(exchange.urls["api"], sim)
    return exchange


def test_the_simulator_checks_signatures_and_trades_like_binance(sim):
    import ccxt

    with pytest.raises(ccxt.AuthenticationError, match="-1022"):  # signed with the wrong secret
        signed_client(sim, "not-the-secret").fetch_balance()
    exchange = signed_client(sim)
    exchange.load_markets()
    before = exchange.fetch_balance()["total"]
    order = exchange.create_order("ETH/USDT", "market", "buy", 0.5, params={"newClientOrderId": "mt-sim-test-1"})
    assert order["status"] == "closed" and order["filled"] == 0.5 and order["fee"]["currency"] == "USDT"
    after = exchange.fetch_balance()["total"]
    assert after["ETH"] == before.get("ETH", 0) + 0.5
    assert after["USDT"] == pytest.approx(before["USDT"] - order["cost"] - order["fee"]["cost"])
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate"):  # a client order id is used once
        exchange.create_order("ETH/USDT", "market", "buy", 0.5, params={"newClientOrderId": "mt-sim-test-1"})
    assert exchange.fetch_order(None, "ETH/USDT", params={"origClientOrderId": "mt-sim-test-1"})["status"] == "closed"
    chaos(sim, action="reject_orders", count=1)
    with pytest.raises(ccxt.InsufficientFunds):
        exchange.create_order("ETH/USDT", "market", "sell", 0.2)
    chaos(sim, action="partial", count=1)
    half = exchange.create_order("ETH/USDT", "market", "sell", 0.2)
    assert half["status"] == "expired" and half["filled"] == 0.1
    resting = exchange.create_order("ETH/USDT", "limit", "buy", 0.1, 100.0)  # far under the market: rests
    assert [o["id"] for o in exchange.fetch_open_orders("ETH/USDT")] == [resting["id"]]
    assert exchange.cancel_order(resting["id"], "ETH/USDT")["status"] == "canceled"
    assert len(exchange.fetch_my_trades("ETH/USDT")) == 2


def test_the_simulators_user_data_stream_is_binances_websocket_api(sim):
    """`userDataStream.subscribe.signature` checks the signature like Binance, then sends the account's
    executionReports: the real ccxt.pro `watch_orders` follows an order placed through REST."""
    import asyncio
    import hashlib
    import hmac

    import aiohttp
    import ccxt.pro

    from meshtrader.marketdata.live import point_at

    async def refused_with_a_bad_signature() -> dict:
        params = {"apiKey": SIM_KEY, "timestamp": int(time.time() * 1000)}
        payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        params["signature"] = hmac.new(b"not-the-secret", payload.encode(), hashlib.sha256).hexdigest()
        url = sim.replace("http", "ws") + "/ws-api.binance.com:443/ws-api/v3"
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as socket:
            await socket.send_json({"id": "1", "method": "userDataStream.subscribe.signature", "params": params})
            return await socket.receive_json(timeout=10)

    async def followed_by_ccxt() -> list[tuple]:
        exchange = ccxt.pro.binance({"apiKey": SIM_KEY, "secret": SIM_SECRET, "options": {
            "defaultType": "spot", "fetchCurrencies": False, "fetchMargins": False,
            "fetchMarkets": {"types": ["spot"]}}})
        point_at(exchange.urls["api"], sim)
        try:
            await exchange.load_markets()
            async with aiohttp.ClientSession() as session:
                streams = (await (await session.get(f"{sim}/admin/state")).json())["user_streams"]
            watching = asyncio.create_task(exchange.watch_orders())
            async with asyncio.timeout(10), aiohttp.ClientSession() as session:  # subscribed before the order
                while (await (await session.get(f"{sim}/admin/state")).json())["user_streams"] == streams:
                    await asyncio.sleep(0.05)
            await exchange.create_order("ETH/USDT", "market", "buy", 0.1, params={"newClientOrderId": "mt-uds-1"})
            seen = []
            while not any(o["status"] == "closed" for o in seen):
                seen += await asyncio.wait_for(watching, 10)
                watching = asyncio.create_task(exchange.watch_orders())
            watching.cancel()
            return [(o["clientOrderId"], o["status"], o["filled"]) for o in seen]
        finally:
            await exchange.close()

    refused = asyncio.run(refused_with_a_bad_signature())
    assert refused["status"] == 400 and refused["error"]["code"] == -1022
    assert ("mt-uds-1", "closed", 0.1) in asyncio.run(followed_by_ccxt())
