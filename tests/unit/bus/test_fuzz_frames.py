"""Random and mutated frames at a real SUB and a real REP socket of the bus: nothing crashes, every bad
frame is counted (and, at the REP, answered with an ErrorReply), and good frames still get through."""
from __future__ import annotations

import itertools

import msgspec
import pytest
import zmq
from bus_rig import Recorder, counted, read_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshtrader.bus import RepServer, Subscriber
from meshtrader.runtime.log import Logger
from meshtrader.runtime.metrics import ServiceMetrics
from meshtrader.wire.codec import DecodeError, UnknownTopic, decode_stream, encode
from meshtrader.wire.messages import (
    CandlesReply,
    ErrorReply,
    FeedReplies,
    FeedRequests,
    RecentCandles,
    Tick,
    candle_topic,
    tick_topic,
)

EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
GOOD_TICK = encode(Tick(symbol="BTCUSDT", price=95505.4, qty=0.5, src="feed", seq=1, et=1, tid=7))
GOOD_REQUEST = encode(RecentCandles(symbol="BTCUSDT", n=3))
HUGE = encode(b"\x00" * (4 << 20))  # a 4 MiB MessagePack bin: well formed, and no message
TOPICS = st.sampled_from([tick_topic("BTCUSDT"), candle_topic("BTCUSDT"), b"fill", b"hb.feed"]) | st.binary(max_size=40)
ANY_VALUE = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=20)
                         | st.binary(max_size=20),
                         lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                         max_leaves=10)


def mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """A valid payload truncated, with bytes overwritten, with a field missing or of the wrong type."""
    fields = msgspec.msgpack.decode(valid)
    truncated = st.integers(0, len(valid) - 1).map(lambda n: valid[:n])
    flipped = st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), min_size=1, max_size=4).map(
        lambda flips: bytes(_flip(bytearray(valid), flips)))
    missing = st.sampled_from(sorted(fields)).map(lambda key: encode({k: v for k, v in fields.items() if k != key}))
    wrong = st.tuples(st.sampled_from(sorted(fields)), ANY_VALUE).map(lambda kv: encode({**fields, kv[0]: kv[1]}))
    return truncated | flipped | missing | wrong


def _flip(data: bytearray, flips: list[tuple[int, int]]) -> bytearray:
    for at, value in flips:
        data[at] = value
    return data


PAYLOADS = mutated(GOOD_TICK) | st.binary(max_size=300) | ANY_VALUE.map(encode) | st.just(HUGE)
# [topic, payload] with a topic and a payload of any kind, or any other number of parts
STREAM_FRAMES = (st.tuples(TOPICS, PAYLOADS).map(list)
                 | st.lists(st.binary(max_size=64), min_size=1, max_size=5).filter(lambda parts: len(parts) != 2))
REQUEST_FRAMES = (mutated(GOOD_REQUEST) | PAYLOADS).map(lambda payload: [payload]) | st.lists(
    st.binary(max_size=64), min_size=2, max_size=5)


def delivered(frames: list[bytes]) -> int:
    """How many events the subscriber should hand over for these frames (0: it must count an error)."""
    if len(frames) != 2:
        return 0
    try:
        decoded = decode_stream(*frames)
    except (UnknownTopic, *DecodeError):
        return 0
    return len(decoded) if isinstance(decoded, list) else 1


@pytest.fixture
def stream(ctx):
    """A raw PUB (the fuzzer) and the bus's Subscriber on every topic, joined."""
    raw = ctx.socket(zmq.PUB)
    raw.bind("inproc://fuzz-sub")
    recorder, metrics = Recorder(), ServiceMetrics("fuzzed")
    subscriber = Subscriber(ctx, ["inproc://fuzz-sub"], [b""], recorder, metrics, Logger("fuzzed", "ERROR"))
    sentinels = itertools.count(1)

    def good_frame_arrives() -> None:
        tid = next(sentinels)
        raw.send_multipart([b"md.tick.SENTINEL", encode(Tick(symbol="X", price=1.0, src="feed", seq=tid, tid=tid))])
        read_until(subscriber, lambda: any(e.tid == tid for e in recorder.on(b"md.tick.SENTINEL")), "a good frame")

    while not subscriber.socket.poll(0):  # join: a subscription reaches the PUB asynchronously
        raw.send_multipart([b"md.tick.SENTINEL", GOOD_TICK])
    good_frame_arrives()  # past the join's frames
    recorder.events.clear()
    return raw, subscriber, recorder, metrics, good_frame_arrives


@EXAMPLES
@given(frames=STREAM_FRAMES)
def test_the_subscriber_counts_every_bad_frame_and_keeps_serving(stream, frames):
    raw, subscriber, recorder, metrics, good_frame_arrives = stream
    errors_before, events_before = subscriber.errors, len(recorder.events)
    raw.send_multipart(frames)
    good_frame_arrives()  # frames keep their order: once this is in, the fuzzed frame was handled
    expected = delivered(frames)
    assert len(recorder.events) - events_before == expected + 1
    assert subscriber.errors - errors_before == (0 if expected else 1)
    assert counted(metrics, "mesh_decode_errors_total") == subscriber.errors


@pytest.fixture
def requests(ctx):
    """A raw REQ (the fuzzer) and the bus's RepServer answering candle requests."""
    metrics = ServiceMetrics("fuzzed-rep")
    server = RepServer(ctx, "inproc://fuzz-rep", FeedRequests, lambda request: CandlesReply(), metrics,
                       Logger("fuzzed-rep", "ERROR"))
    req = ctx.socket(zmq.REQ)
    req.connect("inproc://fuzz-rep")
    replies = msgspec.msgpack.Decoder(FeedReplies)

    def ask(frames: list[bytes]) -> object:
        req.send_multipart(frames)
        assert server.socket.poll(5000), "the request never reached the server"
        server.on_readable()
        assert req.poll(5000), "no reply"
        return replies.decode(req.recv())

    return ask, metrics


@EXAMPLES
@given(frames=REQUEST_FRAMES)
def test_the_reply_server_answers_every_bad_request_with_an_error(requests, frames):
    ask, metrics = requests
    errors_before = counted(metrics, "mesh_decode_errors_total", kind="req")
    try:
        well_formed = len(frames) == 1 and bool(msgspec.msgpack.Decoder(FeedRequests).decode(frames[0]))
    except DecodeError:
        well_formed = False
    reply = ask(frames)
    if well_formed:
        assert isinstance(reply, CandlesReply)
    else:
        assert isinstance(reply, ErrorReply) and reply.error
        assert counted(metrics, "mesh_decode_errors_total", kind="req") == errors_before + 1
    assert isinstance(ask([GOOD_REQUEST]), CandlesReply)  # and it serves the next good one
