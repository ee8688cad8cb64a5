"""What is one exchange's own when the ccxt venue talks to it: parameter names for client order ids,
the signed requests' receive window, which of its markets are of the configured market type.

A new exchange is one module in this package defining an `ExchangeAdapter` subclass decorated with
`@adapter("<ccxt exchange id>")` (see binance.py); exchanges without one use ccxt's unified way."""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from meshtrader.domain.instruments import MarketType

CCXT_DEFAULT_TYPE: dict[MarketType, str] = {"spot": "spot", "usdm": "swap"}  # ccxt's name of the market type


@dataclass(frozen=True)
class ExchangeAdapter:
    """The unified ccxt way, for exchanges without an adapter of their own."""

    market_type: MarketType = "spot"
    recv_window_ms: int = 5000  # a signed request older than this is refused by the exchange

    @property
    def lost_after_s(self) -> float:
        """An order still unknown this long after sending never arrived (+ clock skew)."""
        return self.recv_window_ms / 1000 + 2

    def options(self) -> dict[str, Any]:
        return {"defaultType": CCXT_DEFAULT_TYPE[self.market_type]}

    def lists(self, market: dict[str, Any]) -> bool:
        """Whether a ccxt market is of our market type: spot BTC/USDT and the USD-M perpetual
        BTC/USDT:USDT share the exchange id BTCUSDT."""
        if self.market_type == "spot":
            return bool(market.get("spot"))
        return bool(market.get("contract") and market.get("linear"))

    def create_params(self, client_id: str) -> dict[str, Any]:
        return {"clientOrderId": client_id}

    def lookup_params(self, client_id: str) -> dict[str, Any]:
        return {"clientOrderId": client_id}

    def pointed(self, exchange: Any) -> None:
        """The ccxt client was pointed at another base URL (MESH_EXCHANGE_URL): whatever the exchange's
        driver derived from its own hosts is made to hold there too."""


ADAPTERS: dict[str, ExchangeAdapter] = {}  # ccxt exchange id -> its adapter, filled by @adapter


def adapter(exchange_id: str) -> Callable[[type[ExchangeAdapter]], type[ExchangeAdapter]]:
    """Class decorator: the adapter of the ccxt exchange `exchange_id`."""

    def register(cls: type[ExchangeAdapter]) -> type[ExchangeAdapter]:
        ADAPTERS[exchange_id] = cls()
        return cls

    return register


def adapter_for(exchange_id: str, market_type: MarketType) -> ExchangeAdapter:
    """The exchange's adapter (every module of this package is imported once, so each registers itself),
    or the unified ccxt way, set to the market type."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")  # a no-op once imported
    return replace(ADAPTERS.get(exchange_id, ExchangeAdapter()), market_type=market_type)
