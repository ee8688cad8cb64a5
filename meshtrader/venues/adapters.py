"""What is one exchange's own when the ccxt venue talks to it: parameter names for client order ids,
the signed requests' receive window, the market type. A new exchange is one adapter here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ExchangeAdapter:
    """The unified ccxt way, for exchanges without an adapter of their own."""

    market_type: str = "spot"
    recv_window_ms: int = 5000  # a signed request older than this is refused by the exchange

    @property
    def lost_after_s(self) -> float:
        """An order still unknown this long after sending never arrived (+ clock skew)."""
        return self.recv_window_ms / 1000 + 2

    def options(self) -> dict[str, Any]:
        return {"defaultType": self.market_type}

    def create_params(self, client_id: str) -> dict[str, Any]:
        return {"clientOrderId": client_id}

    def lookup_params(self, client_id: str) -> dict[str, Any]:
        return {"clientOrderId": client_id}


@dataclass(frozen=True)
class Binance(ExchangeAdapter):
    """Binance spot: `newClientOrderId` to place, `origClientOrderId` to find or cancel, and `recvWindow`."""

    def options(self) -> dict[str, Any]:
        return {"defaultType": self.market_type, "recvWindow": self.recv_window_ms, "fetchCurrencies": False,
                "fetchMargins": False, "fetchMarkets": {"types": [self.market_type]}}

    def create_params(self, client_id: str) -> dict[str, Any]:
        return {"newClientOrderId": client_id}

    def lookup_params(self, client_id: str) -> dict[str, Any]:
        return {"origClientOrderId": client_id}


ADAPTERS: dict[str, ExchangeAdapter] = {"binance": Binance()}


def adapter_for(exchange_id: str) -> ExchangeAdapter:
    return ADAPTERS.get(exchange_id, ExchangeAdapter())
