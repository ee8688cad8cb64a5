"""MessagePack codec: msgspec encodes and decodes, validating the schema as it decodes."""
from __future__ import annotations

from typing import Annotated, Any

import msgspec

from meshtrader.wire.messages import TOPIC_SCHEMAS, Event

_encoder = msgspec.msgpack.Encoder()
encode = _encoder.encode

DecodeError = (msgspec.DecodeError, msgspec.ValidationError)
NON_EMPTY = msgspec.Meta(min_length=1)  # a batch frame carries at least one event


class UnknownTopic(ValueError):
    pass


TOPIC_CACHE_LIMIT = 1000  # topics whose decoder is remembered: a stream of made-up topics must not grow it

_decoders_by_type: dict[Any, msgspec.msgpack.Decoder] = {}
_event_decoders: dict[bytes, msgspec.msgpack.Decoder] = {}
_stream_decoders: dict[bytes, msgspec.msgpack.Decoder] = {}


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


def _topic_decoder(cache: dict[bytes, msgspec.msgpack.Decoder], topic: bytes, batches: bool) -> msgspec.msgpack.Decoder:
    decoder = cache.get(topic)
    if decoder is None:
        schema = schema_for_topic(topic)
        decoder = decoder_for(schema | Annotated[list[schema], NON_EMPTY] if batches else schema)
        if len(cache) < TOPIC_CACHE_LIMIT:
            cache[topic] = decoder
    return decoder


def decode_event(topic: bytes, payload: bytes) -> Event:
    """Decode and validate a stream payload by its topic; raises UnknownTopic or a DecodeError."""
    return _topic_decoder(_event_decoders, topic, batches=False).decode(payload)


def decode_stream(topic: bytes, payload: bytes) -> Event | list[Event]:
    """As `decode_event`, and a batch too: a MessagePack array of the topic's events (`Publisher.publish_batch`)
    decodes in one call, as a list. A Struct encodes as a map, so the one decoder tells the two apart."""
    return _topic_decoder(_stream_decoders, topic, batches=True).decode(payload)


def to_json_ready(message: msgspec.Struct) -> dict:
    """A plain dict (Decimals as strings) for JSON consumers such as the dashboard."""
    return msgspec.to_builtins(message)
