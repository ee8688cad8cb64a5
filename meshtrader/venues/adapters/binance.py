"""Binance: its own parameter names for client order ids, `recvWindow`, and one market type's markets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshtrader.domain.instruments import MarketType
from meshtrader.venues.adapters import ExchangeAdapter, adapter

BINANCE_MARKETS: dict[MarketType, str] = {"spot": "spot", "usdm": "linear"}  # ccxt binance's fetchMarkets types


@adapter("binance")
@dataclass(frozen=True)
class Binance(ExchangeAdapter):
    """Binance: `newClientOrderId` to place, `origClientOrderId` to find or cancel, and `recvWindow`; only
    the markets of our type are fetched (spot's exchangeInfo, or USD-M's `linear` one)."""

    def options(self) -> dict[str, Any]:
        return {**super().options(), "recvWindow": self.recv_window_ms, "fetchCurrencies": False,
                "fetchMargins": False, "fetchMarkets": {"types": [BINANCE_MARKETS[self.market_type]]}}

    def create_params(self, client_id: str) -> dict[str, Any]:
        return {"newClientOrderId": client_id}

    def lookup_params(self, client_id: str) -> dict[str, Any]:
        return {"origClientOrderId": client_id}
