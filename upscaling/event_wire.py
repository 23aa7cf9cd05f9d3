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


def batch_body(bodies: list[bytes]) -> bytes:
    """The serialized `WatchTaskResponseBatch` of serialized `WatchTaskResponse`s."""
    return b"".join(_EVENTS_TAG + _varint(len(body)) + body for body in bodies)


def decode(body: bytes, message_type: str | None) -> list[upscaling_pb2.WatchTaskResponse]:
    """The events of a broker message (a batch when its type says so); DecodeError when it is not one."""
    if message_type == BATCH_TYPE:
        return list(upscaling_pb2.WatchTaskResponseBatch.FromString(body).events)
    return [upscaling_pb2.WatchTaskResponse.FromString(body)]
