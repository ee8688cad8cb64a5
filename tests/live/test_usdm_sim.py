"""USD-M futures for real, offline: the real ccxt `binanceusdm` (sync and ccxt.pro) and the mesh's CcxtVenue
against the exchange simulator's Binance USD-M endpoints. A short is opened, held over a funding
settlement and closed reduce-only; what the exchange reports (positions, entry and liquidation prices,
trades, the income history, the user-data stream) is checked against the futures accounting computed
here from its own reported trades, and its wallet balance equals deposits + realized - commissions +
funding to the last digit. Each test trades on an account of its own."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from decimal import Decimal as D

import ccxt
import ccxt.pro
import httpx
import pytest
import uvicorn
import zmq
from conftest import wait_for

from meshtrader.domain.futures import BINANCE_BRACKETS
from meshtrader.domain.instruments import bundled_instruments
from meshtrader.domain.money import FeeModel, cash
from meshtrader.execution.venue import OrderRequest, VenueRejected
from meshtrader.marketdata.live import point_at
from meshtrader.runtime.config import BUNDLED_DATA, load_settings
from meshtrader.runtime.log import Logger
from meshtrader.runtime.metrics import ServiceMetrics
from meshtrader.venues.adapters import adapter_for
from meshtrader.venues.ccxt_venue import CcxtVenue, UserStream
from tools.exchange_sim.server import ExchangeSim

SPEED = 240  # candles a second: a funding settlement (8 market hours) every 2 s
FEES = FeeModel(taker=D("0.0005"), maker=D("0.0002"))
ACCOUNTS = {"usdm-ccxt-key": "usdm-ccxt-secret", "usdm-stream-key": "usdm-stream-secret",
            "usdm-venue-key": "usdm-venue-secret"}
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"


@pytest.fixture(scope="module")
def usdm_sim():
    """The simulator in this process (its accounts readable for the user-data stream's readiness)."""
    sim = ExchangeSim(BUNDLED_DATA, ["BTCUSDT", "ETHUSDT"], SPEED, FEES, credentials=ACCOUNTS)
    server = uvicorn.Server(uvicorn.Config(sim.app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 15, "the exchange simulator")
    port = server.servers[0].sockets[0].getsockname()[1]
    yield sim, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def binanceusdm(module, url: str, key: str, secret: str | None = None):
    """ccxt's binanceusdm with the mesh's Binance options, pointed at the simulator; not throttled to
    Binance's request weights (the income history weighs 30: 1.5 s a request)."""
    exchange = module.binanceusdm({"apiKey": key, "secret": secret or ACCOUNTS[key], "enableRateLimit": False,
                                   "options": adapter_for("binanceusdm", "usdm").options()})
    point_at(exchange.urls["api"], url)
    return exchange


def streaming(sim: ExchangeSim, key: str) -> bool:
    """Whether the account of `key` has a user-data stream connected (events before it are not kept)."""
    return any(account is sim.usdm.accounts.accounts[key] for _, account in sim.usdm.user_streams)


def deposits(income: list[dict]) -> D:
    return sum((D(entry["income"]) for entry in income if entry["incomeType"] == "TRANSFER"), D(0))


def test_a_short_through_ccxt_books_exactly_as_specified(usdm_sim):
    sim, url = usdm_sim
    exchange = binanceusdm(ccxt, url, "usdm-ccxt-key")
    exchange.load_markets()
    assert exchange.set_leverage(3, BTC)["leverage"] == 3
    assert exchange.fetch_leverages([BTC])[BTC]["info"]["leverage"] == 3
    tier = exchange.fetch_leverage_tiers([BTC])[BTC][0]["info"]  # Binance's first bracket, as served
    mmr, cum = D(repr(tier["maintMarginRatio"])), D(repr(tier["cum"]))

    resting = exchange.create_order(BTC, "limit", "buy", 0.005, 50000)  # far under the market: it rests
    assert [o["id"] for o in exchange.fetch_open_orders(BTC)] == [resting["id"]]
    assert exchange.cancel_order(resting["id"], BTC)["status"] == "canceled" and not exchange.fetch_open_orders(BTC)

    exchange.create_order(BTC, "market", "sell", 0.005)
    [sold] = exchange.fetch_my_trades(BTC)
    qty, entry = D(sold["info"]["qty"]), D(sold["info"]["price"])
    cost, margin = -qty * entry, cash(qty * entry / 3)
    [position] = exchange.fetch_positions([BTC])
    info = position["info"]
    assert (D(info["positionAmt"]), D(info["entryPrice"]), D(info["isolatedWallet"])) == (-qty, cash(cost / -qty),
                                                                                            margin)
    assert D(info["liquidationPrice"]) == cash((cost - margin - cum) / (-qty - qty * mmr))
    assert position["side"] == "short" and position["marginMode"] == "isolated"

    wait_for(lambda: exchange.fetch_funding_history(BTC, sold["timestamp"]), 15, "a funding settlement")
    exchange.create_order(BTC, "market", "buy", 0.005, None, {"reduceOnly": True})
    assert exchange.fetch_positions([BTC]) == []
    with pytest.raises(ccxt.ExchangeError, match="-2022"):  # nothing left to reduce
        exchange.create_order(BTC, "market", "buy", 0.005, None, {"reduceOnly": True})

    trades = [t["info"] for t in exchange.fetch_my_trades(BTC)]
    assert [t["side"] for t in trades] == ["SELL", "BUY"]
    exit_price = D(trades[1]["price"])
    realized = -qty * exit_price - cost  # the whole short closed: its whole cost released
    commissions = [cash(D(t["qty"]) * D(t["price"]) * FEES.taker) for t in trades]
    assert [D(t["realizedPnl"]) for t in trades] == [0, realized]
    assert [D(t["commission"]) for t in trades] == commissions

    funded = exchange.fetch_funding_history(BTC, sold["timestamp"])
    rates = {r["timestamp"]: r["info"] for r in exchange.fetch_funding_rate_history(BTC, sold["timestamp"])}
    payments = [D(f["info"]["income"]) for f in funded]
    assert payments == [cash(qty * D(rates[f["timestamp"]]["markPrice"]) * D(rates[f["timestamp"]]["fundingRate"]))
                        for f in funded]  # -(-qty) x mark x rate: a short receives a positive rate
    income = exchange.fapiPrivateGetIncome({"limit": 1000})
    by_trade = {(i["tradeId"], i["incomeType"]): D(i["income"]) for i in income if i["tradeId"]}
    assert by_trade == {(str(trades[0]["id"]), "COMMISSION"): -commissions[0],
                        (str(trades[1]["id"]), "COMMISSION"): -commissions[1],
                        (str(trades[1]["id"]), "REALIZED_PNL"): realized}
    assert len({i["tranId"] for i in income}) == len(income)
    wallet = deposits(income) + realized - sum(commissions) + sum(payments)
    [usdt] = exchange.fetch_balance()["info"]["assets"]
    assert D(usdt["walletBalance"]) == wallet == D(usdt["marginBalance"])


def test_signed_requests_are_checked_as_binance_does(usdm_sim):
    sim, url = usdm_sim
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        binanceusdm(ccxt, url, "usdm-ccxt-key", "not-the-secret").fetch_balance()
    query = f"timestamp={int(time.time() * 1000)}&recvWindow=5000"
    signature = hmac.new(b"usdm-ccxt-secret", query.encode(), hashlib.sha256).hexdigest()
    account = f"{url}/fapi.binance.com/fapi/v3/account"
    answers = [httpx.get(f"{account}?{query}&signature={signature[::-1]}", headers={"X-MBX-APIKEY": "usdm-ccxt-key"}),
               httpx.get(f"{account}?{query}&signature={signature}", headers={"X-MBX-APIKEY": "no-such-key"}),
               httpx.get(f"{account}?{query}&signature={signature}", headers={"X-MBX-APIKEY": "usdm-ccxt-key"})]
    assert [(a.status_code, a.json().get("code")) for a in answers] == [(400, -1022), (401, -2015), (200, None)]

    listen_key, key = f"{url}/fapi.binance.com/fapi/v1/listenKey", {"X-MBX-APIKEY": "usdm-ccxt-key"}
    opened = httpx.post(listen_key, headers=key).json()["listenKey"]
    assert httpx.post(listen_key, headers=key).json() == httpx.put(listen_key, headers=key).json() == {
        "listenKey": opened}  # the open key again, and kept alive
    assert httpx.delete(listen_key, headers=key).json() == {}
    assert httpx.put(listen_key, headers=key).json()["code"] == -1125
    assert httpx.post(listen_key, headers={"X-MBX-APIKEY": "no-such-key"}).json()["code"] == -2015


def test_the_user_data_stream_and_market_streams_through_ccxt_pro(usdm_sim):
    sim, url = usdm_sim
    events = asyncio.run(stream_a_short(sim, url))
    updates = [e["o"] for e in events if e.get("e") == "ORDER_TRADE_UPDATE"]
    accounts = [e["a"] for e in events if e.get("e") == "ACCOUNT_UPDATE"]
    opened, closed = [u for u in updates if u["x"] == "TRADE"]
    assert [(u["X"], u["R"], u["ps"], u["c"]) for u in (opened, closed)] == [
        ("FILLED", False, "BOTH", "open-eth-short"), ("FILLED", True, "BOTH", "close-eth-short")]
    for update in (opened, closed):
        assert update["l"] == update["z"] == "0.05" and D(update["ap"]) == D(update["L"]) and update["t"] > 0
        assert D(update["n"]) == cash(D("0.05") * D(update["L"]) * FEES.taker)
    assert D(closed["rp"]) == D("0.05") * (D(opened["L"]) - D(closed["L"]))
    reasons = [a["m"] for a in accounts]
    assert reasons[0] == "ORDER" and "FUNDING_FEE" in reasons and reasons[-1] == "ORDER"
    [short] = accounts[0]["P"]
    assert (short["s"], D(short["pa"]), D(short["ep"]), short["mt"], D(short["iw"])) == (
        "ETHUSDT", D("-0.05"), D(opened["L"]), "isolated", cash(D("0.05") * D(opened["L"]) / 20))
    assert D(accounts[0]["B"][0]["wb"]) == 100000 - D(opened["n"])
    funding = next(a for a in accounts if a["m"] == "FUNDING_FEE")
    assert D(funding["B"][0]["wb"]) == D(accounts[0]["B"][0]["wb"]) + D(funding["B"][0]["bc"])


async def stream_a_short(sim: ExchangeSim, url: str) -> list[dict]:
    """Market streams, then a short on ETH held until a funding settlement comes over the user-data
    stream, then closed: every user-data event the stream carried, as sent."""
    exchange = binanceusdm(ccxt.pro, url, "usdm-stream-key")
    received: list[dict] = []
    handle = exchange.handle_message

    def keep(client, message):
        received.append(message)
        return handle(client, message)

    exchange.handle_message = keep
    try:
        await exchange.load_markets()
        candles = await exchange.watch_ohlcv(ETH, "1m")
        mark = await exchange.watch_mark_price(ETH)
        trades = await exchange.watch_trades(ETH)
        assert candles[-1][4] > 0 and mark["markPrice"] > 0 and trades[-1]["price"] > 0
        watching = asyncio.ensure_future(exchange.watch_orders())
        while not streaming(sim, "usdm-stream-key"):
            await asyncio.sleep(0.02)
        await exchange.create_order(ETH, "market", "sell", 0.05, None, {"newClientOrderId": "open-eth-short"})
        deadline = time.monotonic() + 15
        while not any(m.get("a", {}).get("m") == "FUNDING_FEE" for m in received if isinstance(m, dict)):
            assert time.monotonic() < deadline, "no FUNDING_FEE account update"
            await asyncio.sleep(0.05)
        await exchange.create_order(ETH, "market", "buy", 0.05, None,
                                    {"newClientOrderId": "close-eth-short", "reduceOnly": True})
        while not any(m.get("o", {}).get("c") == "close-eth-short" and m["o"]["x"] == "TRADE"
                      for m in received if isinstance(m, dict)):
            await asyncio.sleep(0.02)
        watching.cancel()
        return [m for m in received if isinstance(m, dict) and m.get("e") in ("ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE")]
    finally:
        await exchange.close()


def test_the_mesh_venue_trades_usdm(usdm_sim, tmp_path, monkeypatch):
    sim, url = usdm_sim
    monkeypatch.setenv("BINANCEUSDM_API_KEY", "usdm-venue-key")
    monkeypatch.setenv("BINANCEUSDM_API_SECRET", "usdm-venue-secret")
    settings = load_settings(home=tmp_path, exchange="binanceusdm", exchange_url=url, market="usdm")
    venue = CcxtVenue(settings, ServiceMetrics("test"))
    spot = load_settings(home=tmp_path, exchange="binanceusdm", exchange_url=url, market_type="spot")
    assert CcxtVenue(spot, ServiceMetrics("spot")).positions(["ETHUSDT"]) is None  # spot holds balances only
    assert venue.instruments(["BTCUSDT", "ETHUSDT"]).by_symbol == bundled_instruments("usdm").by_symbol

    assert venue.leverage_brackets(["BTCUSDT", "ETHUSDT"]) == {s: BINANCE_BRACKETS[s] for s in ("BTCUSDT", "ETHUSDT")}
    venue.set_leverage("ETHUSDT", D(2))
    with pytest.raises(VenueRejected, match="whole leverages"):
        venue.set_leverage("ETHUSDT", D("2.5"))
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind("inproc://userstream")
    stream = UserStream(settings, "inproc://userstream", ctx, Logger("test", "ERROR"))
    stream.start()
    try:
        wait_for(lambda: streaming(sim, "usdm-venue-key"), 15, "the venue's user-data stream")
        since = sim.market.now_ms()
        opened = venue.submit(OrderRequest("venue-short", "test", "ETHUSDT", "sell", D("0.05"), D(0), False))
        assert pull.poll(5000) and pull.recv() == b"venue-short"  # the stream names the order by its client id
    finally:
        stream.stop()
        pull.close()
        ctx.term()
    [sold] = opened.fills
    [position] = venue.positions(["BTCUSDT", "ETHUSDT"])
    assert (position.symbol, position.qty, position.entry_price, position.leverage) == (
        "ETHUSDT", D("-0.05"), sold.price, 2)
    assert position.liquidation_price > sold.price
    watcher = binanceusdm(ccxt, url, "usdm-venue-key")  # polls unthrottled; the venue reads the history once
    wait_for(lambda: watcher.fetch_funding_history(ETH, since), 15, "a funding payment")
    closed = venue.submit(OrderRequest("venue-cover", "test", "ETHUSDT", "buy", D("0.05"), D(0), False, True))
    with pytest.raises(VenueRejected, match="ReduceOnly"):
        venue.submit(OrderRequest("venue-cover-again", "test", "ETHUSDT", "buy", D("0.05"), D(0), False, True))
    [bought] = closed.fills
    funding = venue.funding_payments(["BTCUSDT", "ETHUSDT"], since)
    assert [(p.payment_id, p.amount) for p in funding] == [(f["id"], D(f["info"]["income"]))
                                                           for f in watcher.fetch_funding_history(ETH, since)]
    assert venue.positions(["ETHUSDT"]) == [] and {p.symbol for p in funding} == {"ETHUSDT"}
    realized = D("0.05") * (sold.price - bought.price)
    assert venue.balances()["USDT"] == 100000 + realized - sold.fee - bought.fee + sum(p.amount for p in funding)
