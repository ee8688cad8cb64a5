"""MessagePack codec: msgspec encodes and decodes, validating the schema as it decodes."""
from __future__ import annotations

from typing import Any

import msgspec

from meshtrader.wire.messages import TOPIC_SCHEMAS, Event

_encoder = msgspec.msgpack.Encoder()
encode = _encoder.encode

DecodeError = (msgspec.DecodeError, msgspec.ValidationError)


class UnknownTopic(ValueError):
    pass


_decoders_by_type: dict[type, msgspec.msgpack.Decoder] = {}
_decoders_by_topic: dict[bytes, msgspec.msgpack.Decoder] = {}


def decoder_for(schema: Any) -> msgspec.msgpack.Decoder:
    """A cached decoder for a Struct type or a tagged Union of them."""
    decoder = _decoders_by_type.get(schema)
    if decoder is None:
        decoder = _decoders_by_type[schema] = msgspec.msgpack.Decoder(schema)
    return decoder


def schema_for_topic(topic: bytes) -> type[Event]:
    for prefix, schema in TOPIC_SCHEMAS:
        if topic.startswith(prefix):
            return schema
    raise UnknownTopic(f"no schema for topic {topic!r}")


def decode_event(topic: bytes, payload: bytes) -> Event:
    """Decode and validate a stream payload by its topic; raises UnknownTopic or a DecodeError."""
    decoder = _decoders_by_topic.get(topic)
    if decoder is None:
        decoder = _decoders_by_topic[topic] = decoder_for(schema_for_topic(topic))
    return decoder.decode(payload)


def to_json_ready(message: msgspec.Struct) -> dict:
    """A plain dict (Decimals as strings) for JSON consumers such as the dashboard."""
    return msgspec.to_builtins(message)
