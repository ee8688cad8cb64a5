"""Back-pressure: a subscriber that stops reading holds back neither its publisher nor the other
subscribers; what it lost is counted as sequence gaps once it reads again."""
from __future__ import annotations

import zmq
from bus_rig import Recorder, counted, join, publisher, read_until

from meshtrader.bus import Subscriber
from meshtrader.runtime.log import Logger
from meshtrader.runtime.metrics import ServiceMetrics
from meshtrader.wire.messages import Heartbeat, Tick

HWM = 500  # per side: an inproc pipe holds about both marks, so the stalled one can hold ~1,000
BURSTS, BURST = 20, 400  # 8,000 ticks: eight times what the stalled subscriber can queue
TICKS, BEAT = b"md.tick.BTCUSDT", b"hb.feed"


def subscriber(ctx: zmq.Context, endpoint: str, name: str) -> tuple[Subscriber, Recorder, ServiceMetrics]:
    recorder, metrics = Recorder(), ServiceMetrics(name)
    sub = Subscriber(ctx, [endpoint], [b"md.tick.", b"hb."], recorder, metrics, Logger(name, "ERROR"), rcvhwm=HWM)
    return sub, recorder, metrics


def test_a_stalled_subscriber_holds_back_nobody_and_counts_what_it_lost(ctx):
    endpoint = "inproc://backpressure"
    pub = publisher(ctx, endpoint, sndhwm=HWM)
    stalled, stalled_got, stalled_metrics = subscriber(ctx, endpoint, "stalled")
    reading, reading_got, _ = subscriber(ctx, endpoint, "reading")
    join(lambda: pub.publish(BEAT, Heartbeat(service="feed", pid=1, started=0.0)),
         [(stalled, stalled_got), (reading, reading_got)], BEAT)

    sent = 0
    for _ in range(BURSTS):  # the reading one keeps up burst by burst; the stalled one reads nothing
        for _ in range(BURST):
            sent += 1
            pub.publish(TICKS, Tick(symbol="BTCUSDT", price=100.0 + sent, et=sent))
        read_until(reading, lambda n=sent: len(reading_got.on(TICKS)) == n, f"{sent} ticks at the reading one")

    assert not stalled_got.on(TICKS)  # the publisher finished every send while this one read nothing
    assert [tick.seq for tick in reading_got.on(TICKS)] == list(range(1, sent + 1))
    assert reading.gaps == 0

    # the stalled one wakes: it gets what its queue held, then the next tick shows the rest as a gap
    read_until(stalled, lambda: stalled_got.on(TICKS), "the stalled one's queue")
    while stalled.socket.poll(0):
        stalled.on_readable()
    held = len(stalled_got.on(TICKS))
    assert 0 < held < sent
    pub.publish(TICKS, Tick(symbol="BTCUSDT", price=1.0, et=sent + 1))
    read_until(stalled, lambda: stalled_got.on(TICKS)[-1].seq == sent + 1, "the tick after the stall")
    assert stalled.gaps == sent - held
    assert counted(stalled_metrics, "mesh_sequence_gaps_total", source="feed") == sent - held
