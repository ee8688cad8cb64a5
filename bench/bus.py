"""Bus throughput: messages per second one subscriber takes through the mesh's own Publisher, codec and
Subscriber in its Loop, single ticks and batched ticks, beside raw pyzmq bytes PUB/SUB in the same run.

The publisher is a process of its own (spawned, as a service is), sending as fast as it can over ipc,
the mesh's default transport; the subscriber is this process. The rate is what the subscriber handled
between its first and last measured message: when the publisher outruns it, PUB drops at the high-water
mark (the subscriber counts those as sequence gaps, reported as `dropped`), and the rate is still the
subscriber's. Raw is the same shape with no codec, no envelope, no metrics: [topic, bytes] of the size
of an encoded tick, drained with NOBLOCK as the mesh's loop does.
"""
from __future__ import annotations

import multiprocessing
import sys
import tempfile
import time
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import zmq

from meshtrader.bus import Loop, Publisher, Subscriber
from meshtrader.runtime.log import Logger
from meshtrader.runtime.metrics import ServiceMetrics
from meshtrader.wire.codec import encode
from meshtrader.wire.messages import Tick

SINGLE = 300_000  # ticks per run, single and batched
RAW = 1_000_000  # raw frames: raw is several times faster, so more of them to time it as long
BATCH = 50  # ticks per batched frame: a burst of trades, or a candle's intrabar path for every symbol
TOPIC, WARM, END = b"md.tick.BTCUSDT", b"md.tick.WARMUP", b"md.tick.END"
MODES = ("single", "batched", "raw")


def _tick(i: int) -> Tick:
    return Tick(symbol="BTCUSDT", price=95505.4 + (i % 100) / 10, qty=0.012, et=1_700_000_000_000 + i,
                tid=(i * 2654435761) & (2**63 - 1))


def _publisher_main(mode: str, endpoint: str, count: int, ready: EventType, done: EventType) -> None:
    """Publish warm-up frames until the subscriber has joined, then `count` ticks, then END until it has
    arrived (an END past the high-water mark is dropped like any frame)."""
    ctx = zmq.Context()
    if mode == "raw":
        socket = ctx.socket(zmq.PUB)
        socket.bind(endpoint)
        payload = encode(_tick(0))
        send = socket.send_multipart

        def warm() -> None:
            send([WARM, payload])

        def run() -> None:
            frame = [TOPIC, payload]
            for _ in range(count):
                send(frame)

        def end() -> None:
            send([END, payload])
    else:
        publisher = Publisher(ctx, endpoint, "bench", ServiceMetrics("bench-publisher"))

        def warm() -> None:
            publisher.publish(WARM, _tick(0))

        def run() -> None:
            ticks = [_tick(i) for i in range(BATCH)]
            if mode == "batched":
                for _ in range(count // BATCH):
                    publisher.publish_batch(TOPIC, ticks)
            else:
                for i in range(count):
                    publisher.publish(TOPIC, ticks[i % BATCH])

        def end() -> None:
            publisher.publish(END, _tick(0))
    while not ready.wait(0.01):
        warm()
    run()
    while not done.wait(0.01):
        end()
    ctx.destroy(linger=0)


class _Count:
    """What the subscriber records: how many measured messages, when the first and last came, and END."""

    def __init__(self, ready: EventType, done: EventType) -> None:
        self.ready, self.done = ready, done
        self.received = 0
        self.first = self.last = 0.0

    def frame(self, topic: bytes) -> bool:
        """Count one frame; True at END."""
        if topic == TOPIC:
            self.last = time.perf_counter()
            if not self.received:
                self.first = self.last
            self.received += 1
            return False
        if topic == WARM:
            self.ready.set()
            return False
        self.done.set()
        return True


def _subscribe_mesh(ctx: zmq.Context, endpoint: str, count: _Count) -> tuple[Loop, Subscriber]:
    log = Logger("bench-bus", "ERROR")
    loop = Loop(log)

    def handle(topic: bytes, _event: object) -> None:
        if count.frame(topic):
            loop.stop()

    subscriber = Subscriber(ctx, [endpoint], [b"md.tick."], handle, ServiceMetrics("bench-subscriber"), log)
    loop.add_reader(subscriber.socket, subscriber.on_readable)
    loop.every(30.0, loop.stop)  # a lost END must not hang the bench
    return loop, subscriber


def _subscribe_raw(socket: zmq.Socket, count: _Count) -> None:
    """The raw baseline's subscriber: poll, then drain with NOBLOCK, counting frames by topic. Frames are
    read as the mesh reads them (copy=False, for their `more` flag: recv_multipart's RCVMORE getsockopt
    per part would make raw slower than the mesh)."""
    recv, noblock = socket.recv, int(zmq.NOBLOCK)  # an int: pyzmq's enum flag costs an enum operation per call
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not socket.poll(200):
            continue
        while True:
            try:
                topic = recv(noblock, copy=False)
            except zmq.Again:
                break
            while recv(noblock, copy=False).more:
                pass
            if count.frame(topic.bytes):
                return


def run_mode(mode: str, directory: Path, count: int) -> dict:
    """One publisher process against this process's subscriber; messages per second the subscriber took."""
    endpoint = f"ipc://{directory}/bus-{mode}"
    spawn = multiprocessing.get_context("spawn")
    ready, done = spawn.Event(), spawn.Event()
    publisher = spawn.Process(target=_publisher_main, args=(mode, endpoint, count, ready, done))
    ctx = zmq.Context()
    tally = _Count(ready, done)
    try:
        if mode == "raw":
            socket = ctx.socket(zmq.SUB)
            socket.setsockopt(zmq.RCVHWM, 100_000)
            socket.connect(endpoint)
            socket.setsockopt(zmq.SUBSCRIBE, b"md.tick.")
            publisher.start()
            _subscribe_raw(socket, tally)
            socket.close(0)
        else:
            loop, subscriber = _subscribe_mesh(ctx, endpoint, tally)
            publisher.start()
            loop.run()
            subscriber.close()
    finally:
        publisher.join(10)
        if publisher.is_alive():
            publisher.kill()
        ctx.destroy(linger=0)
    if not done.is_set() or tally.received < 2:
        raise RuntimeError(f"bus bench {mode}: the publisher's END never arrived ({tally.received} received)")
    return {"msgs_per_s": round(tally.received / (tally.last - tally.first)), "received": tally.received,
            "sent": count, "dropped": count - tally.received}


def run_bus_suite(progress: bool = True) -> dict:
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mesh-bench-bus-") as directory:
        for mode in MODES:
            if progress:
                print(f"bus bench: {mode}", file=sys.stderr, flush=True)
            runs[mode] = run_mode(mode, Path(directory), RAW if mode == "raw" else SINGLE)
    single, batched, raw = (runs[mode]["msgs_per_s"] for mode in MODES)
    return {"msgs_per_s": single, "batched_msgs_per_s": batched, "raw_msgs_per_s": raw,
            "ratio": round(single / raw, 3), "batched_ratio": round(batched / raw, 3), "batch_size": BATCH,
            "runs": runs}
