"""Dashboard process: serves meshtrader.dashboard.app with uvicorn on MESH_PORT_BASE + 0."""
from __future__ import annotations

import os

import uvicorn

from meshtrader.runtime.config import Settings
from meshtrader.services.base import BACKGROUND_NICENESS
from meshtrader.services.base import main as service_main


def run(settings: Settings) -> None:
    from meshtrader.dashboard.app import create_app

    # uvloop: the relay (zmq.asyncio, JSON, a queue per browser) spends 1.15-1.6x less CPU per event than
    # on asyncio's loop (bench/asyncio_loops.py, zmq_relay)
    uvicorn.run(create_app(settings), host=settings.bind_address("dashboard"), port=settings.http_port("dashboard"),
                log_level="warning", access_log=False, loop="uvloop")


class _Dashboard:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def run(self) -> None:
        os.nice(BACKGROUND_NICENESS)  # off the tick-to-trade path
        self.settings.prepare_home()
        run(self.settings)


if __name__ == "__main__":
    service_main(_Dashboard)
