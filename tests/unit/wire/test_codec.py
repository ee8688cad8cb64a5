"""The wire: events and requests through the MessagePack codec."""
from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from meshtrader.wire.codec import DecodeError, UnknownTopic, decode_event, decoder_for, encode
from meshtrader.wire.messages import (
    Fill,
    RiskRequests,
    SetKillSwitch,
    Tick,
    candle_topic,
    tick_topic,
)

D = Decimal


def test_events_round_trip_and_validate_on_decode():
    tick = Tick(symbol="BTCUSDT", price=95505.4, et=1, tid=7, src="feed", seq=3)
    assert decode_event(tick_topic("BTCUSDT"), encode(tick)) == tick
    fill = Fill(trade_id="t", order_id="o", signal_id="s", strategy="m", symbol="BTCUSDT", side="buy",
                qty=D("0.052"), price=D("95545.1"), fee=D("4.96834520"), realized_pnl=D(0),
                cash_after=D("45026.01"), position_after=D("0.052"))
    decoded = decode_event(b"fill", encode(fill))
    assert decoded.fee == D("4.96834520") and isinstance(decoded.qty, Decimal)
    with pytest.raises(DecodeError):
        decode_event(candle_topic("BTCUSDT"), encode(tick))  # a tick is not a candle
    with pytest.raises(DecodeError):
        decode_event(b"fill", encode({**msgspec.to_builtins(fill), "side": "sideways"}))
    with pytest.raises(UnknownTopic):
        decode_event(b"nonsense", encode(tick))


def test_requests_are_a_tagged_union():
    decoder = decoder_for(RiskRequests)
    assert decoder.decode(encode(SetKillSwitch(on=True))) == SetKillSwitch(on=True)
    with pytest.raises(DecodeError):
        decoder.decode(encode({"kind": "drop_tables"}))
