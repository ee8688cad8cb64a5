"""Instruments: the bundled data's USD-M perpetuals by default, spot and USD-M never confused (the exchange's
own in live mode, through the real ccxt against the exchange simulator: tests/live/test_live_instruments.py)."""
from __future__ import annotations

import json
from decimal import Decimal as D

import ccxt
import pytest

from meshtrader.domain.instruments import (
    Instrument,
    InstrumentSet,
    active_instruments,
    bundled_instruments,
    install_instruments,
)
from meshtrader.domain.money import instrument
from meshtrader.runtime.config import ConfigError, load_settings
from meshtrader.runtime.log import Logger
from meshtrader.venues.adapters import adapter_for
from meshtrader.venues.ccxt_venue import instrument_of
from meshtrader.venues.instruments import load_instruments

QUIET = Logger("test", "ERROR")

# One exchange id, two markets: exchangeInfo records of Binance spot and USD-M BTCUSDT, as ccxt reads them.
SPOT_BTCUSDT = {
    "symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT", "baseAssetPrecision": 8,
    "quotePrecision": 8, "isSpotTradingAllowed": True, "isMarginTradingAllowed": False, "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000", "tickSize": "0.01"},
        {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000", "stepSize": "0.00001"},
        {"filterType": "NOTIONAL", "minNotional": "5", "maxNotional": "9000000"}]}
USDM_BTCUSDT = {
    "symbol": "BTCUSDT", "pair": "BTCUSDT", "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
    "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT", "marginAsset": "USDT", "pricePrecision": 2,
    "quantityPrecision": 3, "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "261.10", "maxPrice": "809484", "tickSize": "0.10"},
        {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
        {"filterType": "MIN_NOTIONAL", "notional": "100"}]}


@pytest.fixture
def restored_instruments():
    """Tests that install instruments leave the process's set as they found it."""
    before = active_instruments()
    yield
    install_instruments(before)


def test_the_bundled_data_instruments_are_the_default():
    assert active_instruments() == bundled_instruments()
    btc = instrument("BTCUSDT")
    assert (btc.market_type, btc.price_tick, btc.qty_step, btc.min_qty, btc.min_notional) == (
        "usdm", D("0.1"), D("0.001"), D("0.001"), D("100"))
    assert instrument("ETHUSDT").min_notional == D("20")
    other = instrument("SOLUSDT")  # not described by the data: conservative, of the same market type
    assert (other.market_type, other.price_tick, other.min_notional) == ("usdm", D("0.00001"), D("5"))
    settings = load_settings()
    assert settings.market_type == "usdm"
    assert load_instruments(settings, QUIET) == bundled_instruments()


def test_an_instruments_file_beside_ones_own_data_is_used(tmp_path):
    (tmp_path / "instruments.json").write_text(json.dumps({"spot": {"SOLUSDT": {
        "price_tick": "0.01", "qty_step": "0.001", "min_qty": "0.001", "min_notional": "5"}}}))
    loaded = load_instruments(load_settings(data=tmp_path, market_type="spot"), QUIET)
    assert loaded.get("SOLUSDT") == Instrument("SOLUSDT", "spot", D("0.01"), D("0.001"), D("0.001"), D("5"))
    (tmp_path / "instruments.json").write_text(json.dumps({"spot": {"SOLUSDT": {"price_tick": "0.01"}}}))
    with pytest.raises(ConfigError, match="MESH_DATA: unreadable instruments file: .* need price_tick, qty_step"):
        load_instruments(load_settings(data=tmp_path, market_type="spot"), QUIET)


def test_spot_and_usdm_are_kept_apart(restored_instruments):
    assert bundled_instruments("spot").get("BTCUSDT") is None  # the bundled candles are USD-M only
    with pytest.raises(ValueError, match="usdm BTCUSDT filed as spot"):
        InstrumentSet.of("spot", "test", [instrument("BTCUSDT")])
    install_instruments(InstrumentSet.of("spot", "test", [
        Instrument("BTCUSDT", "spot", D("0.01"), D("0.00001"), D("0.00001"), D("5"))]))
    assert instrument("BTCUSDT").price_tick == D("0.01")

    # fetch_markets sets these before it parses markets
    exchange = ccxt.binance({"options": {"crossMarginPairsData": [], "isolatedMarginPairsData": []}})
    markets = [exchange.parse_market(SPOT_BTCUSDT), exchange.parse_market(USDM_BTCUSDT)]
    assert {m["id"] for m in markets} == {"BTCUSDT"}
    for market_type, expected in (("spot", (D("0.01"), D("0.00001"), D("0.00001"), D("5"))),
                                  ("usdm", (D("0.1"), D("0.001"), D("0.001"), D("100")))):
        adapter = adapter_for("binance", market_type)
        [market] = [m for m in markets if adapter.lists(m)]
        spec = instrument_of(market, market_type, exchange.precisionMode)
        assert (spec.market_type, spec.price_tick, spec.qty_step, spec.min_qty, spec.min_notional) == (
            market_type, *expected)
    assert adapter_for("binance", "usdm").options()["fetchMarkets"] == {"types": ["linear"]}
    with pytest.raises(ConfigError, match="MESH_MARKET_TYPE usdm: the live spot feed streams spot markets only"):
        load_settings(feed="live", market_type="usdm")
