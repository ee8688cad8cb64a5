"""Binance: its own parameter names for client order ids, `recvWindow`, and one market type's markets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshtrader.domain.instruments import MarketType
from meshtrader.venues.adapters import ExchangeAdapter, adapter

BINANCE_MARKETS: dict[MarketType, str] = {"spot": "spot", "usdm": "linear"}  # ccxt binance's fetchMarkets types


@adapter("binance")
@adapter("binanceusdm")
@dataclass(frozen=True)
class Binance(ExchangeAdapter):
    """Binance (and ccxt's `binanceusdm`, the same driver set to USD-M): `newClientOrderId` to place,
    `origClientOrderId` to find or cancel, and `recvWindow`; only the markets of our type are fetched
    (spot's exchangeInfo, or USD-M's `linear` one)."""

    def options(self) -> dict[str, Any]:
        return {**super().options(), "recvWindow": self.recv_window_ms, "fetchCurrencies": False,
                "fetchMargins": False, "fetchMarkets": {"types": [BINANCE_MARKETS[self.market_type]]}}

    def create_params(self, client_id: str) -> dict[str, Any]:
        return {"newClientOrderId": client_id}

    def lookup_params(self, client_id: str) -> dict[str, Any]:
        return {"origClientOrderId": client_id}

    def pointed(self, exchange: Any) -> None:
        """ccxt picks Binance's error classes by the host that answered (fapi.binance.com: USD-M's table);
        at another URL it falls back to the common table, where USD-M's refusals (a reduce-only order
        rejected, -2022) are mere ExchangeErrors. Under USD-M its table becomes the common one."""
        if self.market_type == "usdm":
            exchange.exceptions["exact"] = {**exchange.exceptions["exact"],
                                            **exchange.exceptions.get("linear", {}).get("exact", {})}
