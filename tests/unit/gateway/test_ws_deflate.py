"""Shared permessage-deflate: the same large message is compressed once for every socket, and every socket's
peer decodes it."""

from __future__ import annotations

import json

from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, PerMessageDeflate
from websockets.frames import TEXT as OP_TEXT
from websockets.frames import Frame

from gateway import ws_deflate
from gateway.ws_deflate import SHARED_MIN_BYTES, CompressedCache, SharedDeflateFactory, SharedPerMessageDeflate


def _pair() -> tuple[SharedPerMessageDeflate, PerMessageDeflate]:
    """A server extension and the client extension of one negotiation (as a `websockets` client offers it)."""
    client_factory = ClientPerMessageDeflateFactory(client_max_window_bits=True)
    offer = client_factory.get_request_params()
    response, server = SharedDeflateFactory().process_request_params(offer, [])
    client = client_factory.process_response_params(response, [])
    assert isinstance(server, SharedPerMessageDeflate) and isinstance(client, PerMessageDeflate)
    assert ("server_no_context_takeover", None) in response
    return server, client


def _text(n: int) -> bytes:
    return json.dumps({"jobs": [{"id": i, "status": "running", "progress": i % 100} for i in range(n)]}).encode()


def test_a_large_message_is_compressed_once_for_every_socket_and_decodes(monkeypatch) -> None:
    monkeypatch.setattr(ws_deflate, "SHARED", CompressedCache())
    pairs = [_pair() for _ in range(3)]
    data = _text(400)
    assert len(data) > SHARED_MIN_BYTES
    frames = [server.encode(Frame(OP_TEXT, data)) for server, _ in pairs]
    assert ws_deflate.SHARED.misses == 1 and ws_deflate.SHARED.hits == 2
    assert frames[0].data is frames[1].data is frames[2].data and frames[0].rsv1
    assert len(frames[0].data) < len(data) / 3
    for (_, client), frame in zip(pairs, frames, strict=True):
        assert client.decode(frame).data == data
    # the next version of the text is a new entry; the previous one stays decodable by every socket
    newer = _text(401)
    for (server, client) in pairs:
        assert client.decode(server.encode(Frame(OP_TEXT, newer))).data == newer
        assert client.decode(server.encode(Frame(OP_TEXT, data))).data == data
    assert ws_deflate.SHARED.misses == 2


def test_small_messages_and_a_bounded_cache(monkeypatch) -> None:
    monkeypatch.setattr(ws_deflate, "SHARED", CompressedCache(entries=2))
    server, client = _pair()
    small = b'{"type": "init"}'
    assert client.decode(server.encode(Frame(OP_TEXT, small))).data == small
    assert ws_deflate.SHARED.misses == 0  # below SHARED_MIN_BYTES: per socket
    for n in range(300, 305):
        text = _text(n)
        assert client.decode(server.encode(Frame(OP_TEXT, text))).data == text
    assert len(ws_deflate.SHARED._items) == 2


def test_a_checksum_collision_never_sends_another_message(monkeypatch) -> None:
    monkeypatch.setattr(ws_deflate, "SHARED", CompressedCache())
    monkeypatch.setattr(ws_deflate.zlib, "crc32", lambda data: 7)  # every message collides
    server, client = _pair()
    first, second = _text(400), _text(400).replace(b"running", b"queued!")
    assert len(first) == len(second) and first != second
    assert client.decode(server.encode(Frame(OP_TEXT, first))).data == first
    assert client.decode(server.encode(Frame(OP_TEXT, second))).data == second
    assert ws_deflate.SHARED.hits == 0 and ws_deflate.SHARED.misses == 2
