"""What the soak (bench/soak.py) found growing, pinned in-process: repeated work must leave no descriptors
and no retained memory behind (issue 13: a strategy worker's descriptors grew with every adopted parameter
set; the allocator's memory grew with every optimisation)."""
from __future__ import annotations

import os
import threading

import pytest
import zmq
from support.candles import bundled_candles

from meshtrader.bus import RepServer
from meshtrader.runtime.config import load_settings
from meshtrader.runtime.log import SilentLogger
from meshtrader.runtime.metrics import ServiceMetrics
from meshtrader.services.strategy import StrategyWorker
from meshtrader.wire.messages import CandlesReply, FeedRequests, ParamsUpdate, RecentCandles
from tools.localmesh import free_port_base

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def settings(tmp_path):
    settings = load_settings(home=tmp_path / "h", port_base=free_port_base(), strategies=["momentum"], symbols=SYMBOLS)
    settings.prepare_home()
    return settings


@pytest.fixture
def feed(settings):
    """The feed's REP socket, answering "last N candles" from the bundled data, in a thread."""
    ctx = zmq.Context()
    candles = {s: bundled_candles(s, 200) for s in SYMBOLS}

    def answer(request: RecentCandles) -> CandlesReply:
        return CandlesReply(candles=candles[request.symbol][-request.n:])

    server = RepServer(ctx, settings.endpoint("feed.rep"), FeedRequests, answer, ServiceMetrics("feed"),
                       SilentLogger("feed"))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if server.socket.poll(50):
                server.on_readable()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(5)
    server.close()
    ctx.term()


def test_adopting_parameter_sets_leaves_no_descriptors_behind(settings, feed):
    worker = StrategyWorker(settings, "momentum")
    worker.setup()
    try:
        def adopt(fast: int) -> None:
            worker.on_params(b"params.momentum", ParamsUpdate(strategy="momentum", params={"fast": fast, "slow": 30},
                                                              reason="test", et=0))
            assert worker.params["fast"] == fast and worker.last_bar["BTCUSDT"] >= 0  # warmed from the feed

        adopt(3)
        after_one = open_fds()
        for fast in (5, 8, 12, 3, 5):
            adopt(fast)
        assert open_fds() == after_one
    finally:
        for closable in worker._closables:
            closable.close()
        worker.store.close()
        worker.hot.close()
        worker.ctx.term()
