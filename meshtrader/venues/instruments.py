"""The instruments a mesh trades with, for the services that size and check orders (executor, risk guard)
to install at start-up: the exchange's in live mode, else the data's (MESH_DATA's instruments.json, or
the bundled one)."""
from __future__ import annotations

import time

from meshtrader.domain.instruments import InstrumentSet, UnknownInstruments
from meshtrader.execution.venue import VenueRejected, VenueUnavailable
from meshtrader.marketdata.files import DataError, load_data_instruments
from meshtrader.marketdata.live import Backoff
from meshtrader.runtime.config import ConfigError, Settings
from meshtrader.runtime.log import Logger
from meshtrader.runtime.metrics import ServiceMetrics
from meshtrader.venues.ccxt_venue import CcxtVenue, MissingCredentials


def load_instruments(settings: Settings, log: Logger, metrics: ServiceMetrics | None = None) -> InstrumentSet:
    """Live: the exchange's instruments for MESH_SYMBOLS, waiting (with backoff) until the exchange answers,
    since without them no order can be sized (its requests counted in `metrics`: the service's, or a
    one-off set for a caller that serves none). A symbol it does not list, missing credentials or a refusal
    is a ConfigError. Paper: every instrument the data describes (other symbols get conservative ones)."""
    if settings.mode != "live":
        try:
            return load_data_instruments(settings.data_dir, settings.market_type)
        except DataError as error:
            raise ConfigError(f"MESH_DATA: {error}") from None
    venue, backoff = CcxtVenue(settings, metrics or ServiceMetrics("instruments")), Backoff(0.5, 16.0)
    while True:
        try:
            return venue.instruments(settings.symbols)
        except MissingCredentials as error:
            raise ConfigError(str(error)) from None
        except (UnknownInstruments, ValueError) as error:
            raise ConfigError(f"MESH_SYMBOLS: {error} (MESH_MARKET_TYPE={settings.market_type})") from None
        except VenueRejected as error:
            raise ConfigError(f"MESH_EXCHANGE {settings.exchange} refused to list its markets: {error}") from None
        except VenueUnavailable as error:
            delay = backoff.next_delay()
            log.warning("instruments_unavailable", error=str(error), retry_in_s=round(delay, 2))
            time.sleep(delay)
