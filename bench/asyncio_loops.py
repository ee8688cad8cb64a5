"""asyncio's own event loop against uvloop, in one run, for the mesh's asyncio programs:

- `ws_burst` and `ws_paced`: the ccxt threads (meshtrader.bus.asyncio_thread.AsyncioThread). An aiohttp
  WebSocket client (what ccxt.pro uses) receives small JSON trades from a server on 127.0.0.1; as in
  ccxt.pro, one task reads and parses each, handing it to the task awaiting the stream (`watch_*`), which
  pushes it over inproc PUSH to a PULL reader in another thread (the service). Burst: the server writes
  every message at once, so the client's pace shows (messages/s). Paced: one message every
  PACED_INTERVAL_S, each a wake-up of its own, as a live market sends them (CPU per message, latency
  from the server's write to the PULL reader).
- `zmq_relay`: the dashboard's relay: a zmq.asyncio socket awaited in the loop, each message decoded,
  turned into JSON and handed to a browser's queue through another task.
- `task_round_trip`: two tasks passing a message back and forth over asyncio queues.

Each case runs REPEATS times per loop, the loops taking turns; the medians are reported: messages (or
round trips) per second of wall time, and the CPU time the loop's thread spent per message, which other
programs on the machine disturb less.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import msgspec
import uvloop
import zmq
import zmq.asyncio

from meshtrader.bus import AsyncioThread

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
LOOPS: dict[str, LoopFactory] = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
REPEATS = 5
PACED_INTERVAL_S = 0.0002
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLOSE_FRAME = b"\x88\x02\x03\xe8"  # close, 1000 (normal)
TRADE = '{{"e":"trade","E":{sent_ns},"s":"BTCUSDT","t":{i},"p":"43012.10","q":"0.00120","m":true,"M":true}}'


@dataclass(frozen=True)
class Run:
    per_s: float  # messages (or round trips) per second, first to last
    cpu_us: float  # the loop thread's CPU time per message
    latency_us: float | None = None  # median, the server's write to the service's PULL reader

    @classmethod
    def of(cls, messages: int, wall_s: float, cpu_s: float, latency_us: float | None = None) -> Run:
        return cls(messages / wall_s, cpu_s / messages * 1e6, latency_us)


def trade_json(i: int, sent_ns: int) -> bytes:
    return TRADE.format(i=i, sent_ns=sent_ns).encode()


# ----- ws_burst, ws_paced: the ccxt threads --------------------------------------------------------------------
def text_frame(payload: bytes) -> bytes:
    """A server-to-client (unmasked) WebSocket text frame."""
    if len(payload) < 126:
        return bytes([0x81, len(payload)]) + payload
    return bytes([0x81, 126]) + len(payload).to_bytes(2, "big") + payload


class WebSocketServer:
    """Answers one WebSocket handshake, then sends the messages and a close: all in one write (the server
    costs next to nothing, the client sets the pace), or one every `interval_s`, stamped when written."""

    def __init__(self, messages: int, interval_s: float) -> None:
        self.messages, self.interval_s = messages, interval_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"ws://127.0.0.1:{self.listener.getsockname()[1]}/ws"
        self.thread = threading.Thread(target=self.serve_one, name="bench-ws-server", daemon=True)
        self.thread.start()

    def serve_one(self) -> None:
        connection, _ = self.listener.accept()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with connection, self.listener:
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(4096)
            key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest())
            connection.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                               b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            if self.interval_s:
                for i in range(self.messages):
                    connection.sendall(text_frame(trade_json(i, time.monotonic_ns())))
                    time.sleep(self.interval_s)
            else:
                connection.sendall(b"".join(text_frame(trade_json(i, 0)) for i in range(self.messages)))
            connection.sendall(CLOSE_FRAME)
            connection.recv(4096)  # the client's close frame: it has read everything, the socket may close


class WebSocketToPush(AsyncioThread):
    """The ccxt threads' pattern on the chosen loop (see the module's docstring)."""

    def __init__(self, ctx: zmq.Context, push_endpoint: str, url: str, loop_factory: LoopFactory) -> None:
        super().__init__("bench-ws-client", ctx, push_endpoint)
        self.url, self.loop_factory = url, loop_factory
        self.cpu_s = 0.0  # from the first message to the last pushed

    async def run_async(self) -> None:
        updates: asyncio.Queue[dict | None] = asyncio.Queue()
        watcher = asyncio.create_task(self.watch(updates))
        started_cpu = None
        async with aiohttp.ClientSession() as session, session.ws_connect(self.url) as ws:
            async for message in ws:
                started_cpu = started_cpu or time.thread_time()
                updates.put_nowait(json.loads(message.data))
        updates.put_nowait(None)
        await watcher
        self.cpu_s = time.thread_time() - started_cpu

    async def watch(self, updates: asyncio.Queue[dict | None]) -> None:
        while (trade := await updates.get()) is not None:
            self.push.send_multipart([b"md.tick.BTCUSDT", msgspec.msgpack.encode(trade)])


def ws_to_push(loop_factory: LoopFactory, messages: int, interval_s: float) -> Run:
    """Wall time from the first message at the PULL reader to the last."""
    ctx = zmq.Context()
    inbox = ctx.socket(zmq.PULL)
    inbox.bind("inproc://bench-loops")
    client = WebSocketToPush(ctx, "inproc://bench-loops", WebSocketServer(messages, interval_s).url, loop_factory)
    client.start()
    latencies = []
    try:
        for n in range(messages):
            if not inbox.poll(10_000):
                raise RuntimeError(f"ws_to_push: {n} of {messages} messages arrived")
            _, payload = inbox.recv_multipart()
            if interval_s:
                latencies.append(time.monotonic_ns() - msgspec.msgpack.decode(payload)["E"])
            if n == 0:
                started = time.perf_counter()
        wall_s = time.perf_counter() - started
    finally:
        client.stop()
        inbox.close(0)
        ctx.term()
    return Run.of(messages - 1, wall_s, client.cpu_s, statistics.median(latencies) / 1e3 if latencies else None)


def ws_burst(loop_factory: LoopFactory) -> Run:
    return ws_to_push(loop_factory, 50_000, 0.0)


def ws_paced(loop_factory: LoopFactory) -> Run:
    return ws_to_push(loop_factory, 3_000, PACED_INTERVAL_S)


# ----- zmq_relay: the dashboard -----------------------------------------------------------------------------
def push_events(ctx: zmq.Context, endpoint: str, messages: int) -> None:
    push = ctx.socket(zmq.PUSH)
    push.connect(endpoint)
    payload = msgspec.msgpack.encode(json.loads(trade_json(0, 0)))
    for _ in range(messages):
        push.send_multipart([b"fill", payload])
    push.close()


async def relay(ctx: zmq.Context, messages: int) -> Run:
    """The dashboard relay's steps: await the socket, decode, JSON, a browser's queue, its sender task."""
    pull = zmq.asyncio.Context.shadow(ctx).socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    browser: asyncio.Queue[str] = asyncio.Queue()

    async def send_to_browser() -> None:
        for _ in range(messages):
            await browser.get()

    sender = asyncio.create_task(send_to_browser())
    pusher = threading.Thread(target=push_events, args=(ctx, f"tcp://127.0.0.1:{port}", messages), daemon=True)
    pusher.start()
    try:
        for n in range(messages):
            if not await pull.poll(10_000):
                raise RuntimeError(f"zmq_relay: {n} of {messages} messages arrived")
            topic, payload = await pull.recv_multipart()
            if n == 0:
                started, started_cpu = time.perf_counter(), time.thread_time()
            browser.put_nowait(json.dumps({"topic": topic.decode(), "event": msgspec.msgpack.decode(payload)}))
        await sender
        return Run.of(messages - 1, time.perf_counter() - started, time.thread_time() - started_cpu)
    finally:
        pull.close(0)
        pusher.join(timeout=10)


def zmq_relay(loop_factory: LoopFactory, messages: int = 20_000) -> Run:
    ctx = zmq.Context()
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(relay(ctx, messages))
    finally:
        ctx.term()


# ----- task_round_trip ---------------------------------------------------------------------------------------
async def ping_pong(rounds: int) -> Run:
    ping: asyncio.Queue[int] = asyncio.Queue()
    pong: asyncio.Queue[int] = asyncio.Queue()

    async def echo() -> None:
        while True:
            pong.put_nowait(await ping.get())

    echoing = asyncio.create_task(echo())
    started, started_cpu = time.perf_counter(), time.thread_time()
    for i in range(rounds):
        ping.put_nowait(i)
        await pong.get()
    run = Run.of(rounds, time.perf_counter() - started, time.thread_time() - started_cpu)
    echoing.cancel()
    return run


def task_round_trip(loop_factory: LoopFactory, rounds: int = 100_000) -> Run:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(ping_pong(rounds))


CASES: dict[str, Callable[[LoopFactory], Run]] = {"ws_burst": ws_burst, "ws_paced": ws_paced,
                                                  "zmq_relay": zmq_relay, "task_round_trip": task_round_trip}


def run_loops_suite(progress: bool = True) -> dict:
    """Per case and loop: messages (or round trips) per second, CPU us per message (and latency, paced);
    then uvloop against asyncio, above 1 where uvloop does better: its rate over asyncio's (paced: the
    rate is the server's, so asyncio's latency over uvloop's instead), asyncio's CPU per message over its own."""
    result = {}
    for case, measure in CASES.items():
        if progress:
            print(f"loops bench: {case}, {REPEATS} runs per loop ...", file=sys.stderr)
        runs: dict[str, list[Run]] = {name: [] for name in LOOPS}
        for _ in range(REPEATS):
            for name, factory in LOOPS.items():
                runs[name].append(measure(factory))
        figures = {}
        for name, done in runs.items():
            figures[name] = {"per_s": round(statistics.median(r.per_s for r in done)),
                             "cpu_us_per_msg": round(statistics.median(r.cpu_us for r in done), 2)}
            if done[0].latency_us is not None:
                figures[name]["latency_us_p50"] = round(statistics.median(r.latency_us for r in done), 1)
        asyncio_, uvloop_ = figures["asyncio"], figures["uvloop"]
        better = ({"latency": round(asyncio_["latency_us_p50"] / uvloop_["latency_us_p50"], 2)}
                  if "latency_us_p50" in asyncio_ else {"rate": round(uvloop_["per_s"] / asyncio_["per_s"], 2)})
        better["cpu"] = round(asyncio_["cpu_us_per_msg"] / uvloop_["cpu_us_per_msg"], 2)
        result[case] = {**figures, "uvloop_over_asyncio": better}
    return result


if __name__ == "__main__":
    print(json.dumps(run_loops_suite(), indent=2))
