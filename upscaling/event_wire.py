"""Status events on the broker: one `WatchTaskResponse` per message, or several events of one task in one
`WatchTaskResponseBatch` message (changes recorded together cost the broker and every subscriber one message).

A batch body is built from the already serialized events without parsing them again: a repeated message field
is encoded as (tag, length, bytes) per element.
"""

from __future__ import annotations

from upscaling.v1 import upscaling_pb2

EVENT_TYPE = "upscaling.v1.WatchTaskResponse"
BATCH_TYPE = "upscaling.v1.WatchTaskResponseBatch"
MAX_BATCH = 500  # events per batch message
_EVENTS_TAG = b"\x0a"  # field 1 (`events`), wire type 2 (length-delimited)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def element_head(size: int) -> bytes:
    """What precedes a serialized event of `size` bytes in a batch (also a `WatchTaskBatchesResponse`, which is
    encoded the same way): the field's tag and the event's length."""
    return _EVENTS_TAG + _varint(size)


def batch_body(bodies: list[bytes]) -> bytes:
    """The serialized `WatchTaskResponseBatch` of serialized `WatchTaskResponse`s."""
    return b"".join(_EVENTS_TAG + _varint(len(body)) + body for body in bodies)


def split_batch(body: bytes) -> list[bytes]:
    """The serialized events of a serialized `WatchTaskResponseBatch` (the inverse of `batch_body`), sliced out of
    the body without parsing them; ValueError when the body is not such a batch."""
    out: list[bytes] = []
    view = memoryview(body)
    i, end = 0, len(body)
    while i < end:
        if body[i] != _EVENTS_TAG[0]:
            raise ValueError(f"unexpected field tag {body[i]} at byte {i} of a batch")
        i += 1
        length = shift = 0
        while True:
            if i >= end or shift > 63:
                raise ValueError("truncated length in a batch")
            byte = body[i]
            i += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if i + length > end:
            raise ValueError("truncated event in a batch")
        out.append(bytes(view[i:i + length]))
        i += length
    return out


def decode_raw(body: bytes, message_type: str | None) -> list[tuple[bytes, upscaling_pb2.WatchTaskResponse]]:
    """Each event of a broker message as (its serialized bytes, the parsed event): the bytes are what watchers
    are sent, never serialized again; DecodeError/ValueError when the body is not events."""
    if message_type != BATCH_TYPE:
        bodies = [body]
    else:
        try:
            bodies = split_batch(body)
        except ValueError:  # a batch encoded some other way (other fields, other order): parse it as a whole
            bodies = [e.SerializeToString() for e in upscaling_pb2.WatchTaskResponseBatch.FromString(body).events]
    return [(raw, upscaling_pb2.WatchTaskResponse.FromString(raw)) for raw in bodies]


def decode(body: bytes, message_type: str | None) -> list[upscaling_pb2.WatchTaskResponse]:
    """The events of a broker message (a batch when its type says so); DecodeError when it is not one."""
    return [event for _, event in decode_raw(body, message_type)]
