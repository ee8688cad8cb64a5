"""Live feed figures: ticks/s decoded (JSON, by ccxt), validated and published, and the feed's added
latency from websocket message received to frame published, p50/p99/p99.9.

Runs `mesh exchange-sim` on a free port at a fast market speed, the real ccxt, the feed's
LiveMarketData and a real ZeroMQ publisher, in this process, as the feed service wires them.
Throughput is what the simulator offers (4 kline updates per candle per symbol); the added latency
is the feed's own.
"""
from __future__ import annotations

import subprocess
import sys
import time

import httpx
import zmq

from bench.stats import percentiles_us
from meshtrader.bus import Publisher
from meshtrader.marketdata.live import LiveMarketData
from meshtrader.runtime.config import load_settings
from meshtrader.runtime.log import Logger
from meshtrader.runtime.metrics import ServiceMetrics
from meshtrader.wire.codec import decode_event
from meshtrader.wire.messages import Candle, Tick
from tools.localmesh import free_port_base


def run_feed_suite(seconds: float = 10.0, speed: float = 200.0, progress: bool = True) -> dict:
    port = free_port_base() + 99
    sim = subprocess.Popen([sys.executable, "-m", "meshtrader", "exchange-sim", "--port", str(port), "--speed",
                            str(speed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    ctx = zmq.Context()
    inbox = ctx.socket(zmq.PULL)
    inbox.bind("inproc://bench-feed")
    publisher = Publisher(ctx, f"tcp://127.0.0.1:{port - 1}", "feed", ServiceMetrics("bench"))
    settings = load_settings()
    live = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/admin/state", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        live = LiveMarketData("binance", url, settings.symbols, "1m", "inproc://bench-feed", ctx,
                              Logger("bench", "ERROR"), lambda *_: None, backoff_s=0.2, stale_s=30)
        live.start()
        if progress:
            print(f"feed bench: simulator at {speed} candles/s, measuring {seconds}s ...", file=sys.stderr)
        latencies: list[int] = []
        ticks = candles = 0
        warm_until = time.monotonic() + 3  # markets loaded, streams subscribed
        end = warm_until + seconds
        while time.monotonic() < end:
            if not inbox.poll(100):
                continue
            topic, payload, received = inbox.recv_multipart()
            event = decode_event(topic, payload)
            publisher.publish(topic, event)
            if time.monotonic() < warm_until:
                continue
            received_ns = int.from_bytes(received, "little")
            if isinstance(event, Tick):
                ticks += 1
                if received_ns:
                    latencies.append(time.monotonic_ns() - received_ns)
            elif isinstance(event, Candle):
                candles += 1
        return {"feed_ticks_per_s": round(ticks / seconds, 1), "feed_candles_per_s": round(candles / seconds, 1),
                "ws_to_publish_us": percentiles_us(latencies), "samples": len(latencies),
                "simulator_speed_candles_per_s": speed, "symbols": len(settings.symbols)}
    finally:
        if live:
            live.stop()
        publisher.close()
        inbox.close(0)
        ctx.term()
        sim.terminate()
        sim.wait(10)


if __name__ == "__main__":
    import json

    print(json.dumps(run_feed_suite(), indent=2))
