"""The bare baseline: the mesh's tick-to-fill hops in raw pyzmq, passing raw bytes and nothing else.

feed PUB -> strategy SUB/PUB -> executor SUB, REQ/REP round trip to risk, PUB fill -> collector.
Same transport (ipc), same process count and socket types, same poll-then-drain loops; no codec,
no validation, no store, no logic. Each message carries the feed's monotonic send time.
"""
from __future__ import annotations

import multiprocessing
import struct
import time
from pathlib import Path

import zmq

STAMP = struct.Struct("<q")
STOP = b"stop"


def _strategy(feed: str, out: str) -> None:
    ctx = zmq.Context()
    sub, pub = ctx.socket(zmq.SUB), ctx.socket(zmq.PUB)
    sub.connect(feed)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    pub.bind(out)
    while True:
        sub.poll()
        while True:
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            pub.send_multipart(frames)
            if frames[0] == STOP:
                return


def _risk(endpoint: str) -> None:
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.bind(endpoint)
    while True:
        message = rep.recv()
        rep.send(message)
        if message == STOP:
            return


def _executor(signals: str, risk: str, out: str) -> None:
    ctx = zmq.Context()
    sub, req, pub = ctx.socket(zmq.SUB), ctx.socket(zmq.REQ), ctx.socket(zmq.PUB)
    sub.connect(signals)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    req.connect(risk)
    pub.bind(out)
    while True:
        sub.poll()
        while True:
            try:
                topic, payload = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            req.send(payload if topic != STOP else STOP)
            req.recv()
            pub.send_multipart([topic, payload, STAMP.pack(time.monotonic_ns())])
            if topic == STOP:
                return


def run_bare_chain(directory: Path, samples: int, rate: int, warmup: int) -> list[int]:
    """Latencies (ns) from feed send to fill publish, for `samples` ticks offered at `rate` per second."""
    ep = {name: f"ipc://{directory}/{name}" for name in ("feed", "strategy", "risk", "fills")}
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_risk, args=(ep["risk"],)),
               spawn.Process(target=_executor, args=(ep["strategy"], ep["risk"], ep["fills"])),
               spawn.Process(target=_strategy, args=(ep["feed"], ep["strategy"]))]
    for worker in workers:
        worker.start()
    ctx = zmq.Context()
    feed, fills = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    feed.bind(ep["feed"])
    fills.connect(ep["fills"])
    fills.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        # Wait until the chain carries a message end to end (slow joiners), then time the real run.
        while True:
            feed.send_multipart([b"ping", STAMP.pack(time.monotonic_ns())])
            if fills.poll(200):
                break
        while fills.poll(200):
            fills.recv_multipart()
        latencies: list[int] = []
        interval = 1.0 / rate
        start = time.perf_counter()
        for i in range(samples + warmup):
            pause = start + i * interval - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            feed.send_multipart([b"md.tick", STAMP.pack(time.monotonic_ns())])
            while fills.poll(0):
                _, sent, published = fills.recv_multipart()
                latencies.append(STAMP.unpack(published)[0] - STAMP.unpack(sent)[0])
        while len(latencies) < samples + warmup and fills.poll(2000):
            _, sent, published = fills.recv_multipart()
            latencies.append(STAMP.unpack(published)[0] - STAMP.unpack(sent)[0])
        feed.send_multipart([STOP, STAMP.pack(0)])
        return latencies[warmup:]
    finally:
        for worker in workers:
            worker.join(5)
            if worker.is_alive():
                worker.kill()
        feed.close(0)
        fills.close(0)
        ctx.term()
