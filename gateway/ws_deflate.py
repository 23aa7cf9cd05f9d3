"""permessage-deflate that compresses a message once per gateway worker, however many sockets send it; and the
whole frame of a text, built once per worker for every socket with the same compression (`FRAMES`).

Every WebSocket of a task sends the same snapshot text (`gateway.task_feed`); with per-socket compression each
socket would still compress its own copy, and 1,000 sockets on a 260-job task spend more CPU compressing than
everything else together. Here the server always answers `server_no_context_takeover` (RFC 7692 lets it), so
each message is compressed on its own, with the same settings for every socket of the worker: the compressed
payload of a given text is the same bytes for all of them and is computed once (a small cache of the latest
texts). Small messages are compressed per socket as before (the cache is not worth it).
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from typing import Any, Generic, TypeVar

from websockets.extensions import Extension
from websockets.extensions.permessage_deflate import PerMessageDeflate, ServerPerMessageDeflateFactory
from websockets.frames import CONT, CTRL_OPCODES, Frame, Opcode

SHARED_MIN_BYTES = 4096  # messages below this are compressed per socket
CACHE_ENTRIES = 8         # latest messages kept with their payloads (a few tasks' current snapshots)
WINDOW_BITS = 12
COMPRESS_SETTINGS = {"memLevel": 5}
_EMPTY_BLOCK = b"\x00\x00\xff\xff"
K = TypeVar("K")
V = TypeVar("V")


class _Latest(Generic[K, V]):
    """The latest `entries` items by key, the least recently used dropped first."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        if len(self._items) > self.entries:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class CompressedCache:
    """Compressed payloads of the latest messages, least recently used dropped first. Looked up by length,
    CRC-32 and window size (a few microseconds for a 50 kB snapshot), then confirmed byte for byte against the
    kept message (a memcmp), so a CRC collision can never send another message's payload."""

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self._items: _Latest[tuple[int, int, int], tuple[bytes, bytes]] = _Latest(entries)
        self.hits = 0
        self.misses = 0

    def compressed(self, data: bytes, window_bits: int, settings: dict[str, Any]) -> bytes:
        """The raw deflate payload of one whole message (no trailing empty block), as permessage-deflate sends it
        without context takeover."""
        key = (len(data), zlib.crc32(data), window_bits)
        item = self._items.get(key)
        if item is not None and item[0] == data:
            self.hits += 1
            return item[1]
        self.misses += 1
        encoder = zlib.compressobj(wbits=-window_bits, **settings)
        payload = encoder.compress(data) + encoder.flush(zlib.Z_SYNC_FLUSH)
        assert payload.endswith(_EMPTY_BLOCK)
        payload = payload[:-4]
        self._items.put(key, (data, payload))
        return payload

    def clear(self) -> None:
        """Forget every payload (the watchers are gone)."""
        self._items.clear()


SHARED = CompressedCache()


class SharedPerMessageDeflate(PerMessageDeflate):
    """PerMessageDeflate whose whole, large, independently compressed messages come from `SHARED`."""

    def encode(self, frame: Frame) -> Frame:
        if (frame.opcode in CTRL_OPCODES or frame.opcode is CONT or not frame.fin
                or not self.local_no_context_takeover or len(frame.data) < SHARED_MIN_BYTES):
            return super().encode(frame)
        payload = SHARED.compressed(bytes(frame.data), self.local_max_window_bits, self.compress_settings)
        return Frame(frame.opcode, payload, frame.fin, True, frame.rsv2, frame.rsv3)


class SharedDeflateFactory(ServerPerMessageDeflateFactory):
    """Negotiates permessage-deflate with `server_no_context_takeover` and hands out SharedPerMessageDeflate."""

    def __init__(self) -> None:
        super().__init__(server_no_context_takeover=True, server_max_window_bits=WINDOW_BITS,
                         client_max_window_bits=WINDOW_BITS, compress_settings=dict(COMPRESS_SETTINGS))

    def process_request_params(self, params: Any, accepted_extensions: Any) -> tuple[Any, PerMessageDeflate]:
        response, extension = super().process_request_params(params, accepted_extensions)
        shared = SharedPerMessageDeflate(extension.remote_no_context_takeover, extension.local_no_context_takeover,
                                         extension.remote_max_window_bits, extension.local_max_window_bits,
                                         extension.compress_settings)
        return response, shared


Signature = tuple[Any, ...]


def signature(extensions: list[Extension]) -> Signature | None:
    """What the bytes of a server's text frame depend on, for a connection's negotiated extensions: none, or
    permessage-deflate without context takeover (each message compressed on its own, so the bytes depend only on
    the settings); None for anything else (its frames cannot be shared)."""
    if not extensions:
        return ("plain",)
    if len(extensions) == 1 and isinstance(extensions[0], SharedPerMessageDeflate):
        ext = extensions[0]
        if ext.local_no_context_takeover:
            return ("deflate", ext.local_max_window_bits, tuple(sorted(ext.compress_settings.items())))
    return None


class FrameCache:
    """The serialized text frames of the latest texts, per extension signature. Looked up by the identity of the
    text (a task feed hands every socket the same str object for a version; the entry keeps the text alive, so
    its id cannot be reused while cached)."""

    def __init__(self, entries: int = 2 * CACHE_ENTRIES) -> None:
        self._items: _Latest[tuple[int, Signature], tuple[str, bytes]] = _Latest(entries)

    def frame(self, text: str, extensions: list[Extension]) -> bytes | None:
        """The bytes of `text` as one unmasked text frame for a connection with these extensions (None when its
        frames cannot be shared)."""
        sig = signature(extensions)
        if sig is None:
            return None
        key = (id(text), sig)
        item = self._items.get(key)
        if item is not None and item[0] is text:
            return item[1]
        data = Frame(Opcode.TEXT, text.encode(), True).serialize(mask=False, extensions=extensions)
        self._items.put(key, (text, data))
        return data

    def clear(self) -> None:
        self._items.clear()


FRAMES = FrameCache()


def forget() -> None:
    """Drop every cached payload and frame (the watchers are gone)."""
    SHARED.clear()
    FRAMES.clear()
