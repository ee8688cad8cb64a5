"""A strategy worker running a strategy file outside the package (the `outside` fixture, in
tests/conftest.py), started as supervisord starts it, fed candles over its sockets."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import zmq

from meshtrader.runtime.config import REPO_ROOT, load_settings, record_settings
from tools.localmesh import free_port_base


def test_a_strategy_worker_runs_a_strategy_file_from_the_recorded_settings(outside, tmp_path):
    """The worker is started as supervisord starts it (only MESH_HOME in its environment, in the repo);
    it learns the file, its strategies and ports from settings.json, and signals on the candles it gets."""
    from meshtrader.bus import Publisher
    from meshtrader.runtime.metrics import ServiceMetrics
    from meshtrader.wire.codec import decode_event
    from meshtrader.wire.messages import Candle, candle_topic

    home = tmp_path / "h"
    settings = load_settings(home=home, port_base=free_port_base(), strategy_files=[outside / "every_bar.py"],
                             strategies=["momentum", "every_bar"], symbols=["BTCUSDT"], heartbeat_s=0.5)
    record_settings(settings)
    ctx = zmq.Context()
    feed = Publisher(ctx, settings.endpoint("feed.pub"), "feed", ServiceMetrics("feed"))
    signals = ctx.socket(zmq.SUB)
    signals.connect(settings.endpoint("strategy.every_bar.pub"))
    signals.setsockopt(zmq.SUBSCRIBE, b"sig.")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MESH_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "meshtrader.services.strategy", "every_bar"], env=env,
                              cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    received = []
    try:
        minute, deadline = 60_000, time.monotonic() + 60
        bar = 1_746_000_000_000
        while len(received) < 2 and time.monotonic() < deadline and worker.poll() is None:
            bar += minute
            feed.publish(candle_topic("BTCUSDT", "1m"), Candle(symbol="BTCUSDT", tf="1m", open_time=bar, open=100.0,
                                                               high=101.0, low=99.0, close=100.5, volume=3.0,
                                                               et=bar + minute))
            if signals.poll(200):
                received.append(decode_event(*signals.recv_multipart()))
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(20)
        log.close()
        signals.close(0)
        feed.close()
        ctx.term()
    output = (tmp_path / "worker.log").read_text()
    assert len(received) == 2, output
    assert [s.strategy for s in received] == ["every_bar", "every_bar"] and received[0].side != received[1].side
    assert received[0].signal_id.startswith("every_bar:BTCUSDT:")
    assert code == 0 and '"service_stopped"' in output
