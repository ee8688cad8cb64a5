"""Instruments in live mode: the exchange's own (through the real ccxt, against the exchange simulator), and
a symbol the exchange does not list stopping start-up with one clear line."""
from __future__ import annotations

from decimal import Decimal as D

import httpx
import pytest
from conftest import LIVE_ENV

from meshtrader.domain.instruments import UnknownInstruments, bundled_instruments
from meshtrader.runtime.config import ConfigError, load_settings
from meshtrader.runtime.log import Logger
from meshtrader.venues.instruments import load_instruments

QUIET = Logger("test", "ERROR")


@pytest.fixture
def live_settings(sim, tmp_path, monkeypatch):
    for name, value in LIVE_ENV.items():
        monkeypatch.setenv(name, value)
    return lambda **overrides: load_settings(home=tmp_path, exchange_url=sim, **overrides)


def test_live_instruments_are_the_exchanges(live_settings, sim):
    settings = live_settings()
    assert settings.market_type == "spot"
    info = httpx.get(f"{sim}/api.binance.com/api/v3/exchangeInfo", timeout=5).json()
    served = {entry["symbol"]: {f["filterType"]: f for f in entry["filters"]} for entry in info["symbols"]}
    loaded = load_instruments(settings, QUIET)
    assert loaded.market_type == "spot" and sorted(loaded.by_symbol) == sorted(settings.symbols)
    for symbol, spec in loaded.by_symbol.items():
        filters = served[symbol]
        assert (spec.price_tick, spec.qty_step, spec.min_qty, spec.min_notional) == (
            D(filters["PRICE_FILTER"]["tickSize"]), D(filters["LOT_SIZE"]["stepSize"]),
            D(filters["LOT_SIZE"]["minQty"]), D(filters["NOTIONAL"]["minNotional"]))


def test_a_symbol_the_exchange_does_not_list_stops_start_up(live_settings, monkeypatch):
    with pytest.raises(ConfigError, match="MESH_SYMBOLS: exchange binance lists no spot market DOGEUSDT"):
        load_instruments(live_settings(symbols="BTCUSDT,DOGEUSDT"), QUIET)
    with pytest.raises(UnknownInstruments, match="lists no usdm market DOGEUSDT, XRPUSDT"):
        bundled_instruments().select(["BTCUSDT", "DOGEUSDT", "XRPUSDT"])
    monkeypatch.delenv("BINANCE_API_SECRET")
    with pytest.raises(ConfigError, match="BINANCE_API_SECRET"):
        load_instruments(live_settings(), QUIET)
