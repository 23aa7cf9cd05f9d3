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


def _read_frame(data: bytes, client: PerMessageDeflate) -> Frame:
    """The frame a client reads from `data` (a server's unmasked frame bytes)."""
    from websockets.streams import StreamReader

    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=False, extensions=[client])
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("an incomplete frame")


def test_a_text_frame_is_built_once_per_compression_and_every_peer_reads_it(monkeypatch) -> None:
    monkeypatch.setattr(ws_deflate, "FRAMES", ws_deflate.FrameCache(entries=4))
    pairs = [_pair() for _ in range(2)]
    for size in (5, 400):  # below and above SHARED_MIN_BYTES
        text = _text(size).decode()
        built = [ws_deflate.FRAMES.frame(text, [server]) for server, _ in pairs]
        assert built[0] is not None and built[0] is built[1]  # one frame for both sockets
        plain = ws_deflate.FRAMES.frame(text, [])
        assert plain is not None and plain != built[0]
        assert plain == Frame(OP_TEXT, text.encode()).serialize(mask=False, extensions=[])
        assert ws_deflate.FRAMES.frame(text, []) is plain  # same text object: a cache hit
        for (_, client), data in zip(pairs, built, strict=True):
            assert data is not None
            frame = _read_frame(data, client)
            assert frame.opcode is OP_TEXT and bytes(frame.data).decode() == text


def test_frames_are_not_shared_when_messages_depend_on_a_connection(monkeypatch) -> None:
    server, _ = _pair()
    keeps_context = SharedPerMessageDeflate(False, False, 15, 15, {})  # context takeover: per-socket state
    assert ws_deflate.signature([server]) is not None and ws_deflate.signature([]) == ("plain",)
    assert ws_deflate.signature([keeps_context]) is None
    assert ws_deflate.FRAMES.frame("x" * 10, [keeps_context]) is None
