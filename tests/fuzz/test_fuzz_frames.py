"""Garbage, truncated and oversized frames on the gateway's WebSockets and on the gRPC ports: every connection
ends in a clean error or a clean close, and the services stay healthy (checked after every test)."""

from __future__ import annotations

import base64
import os
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.fuzz import counts
from tests.fuzz.stack import GRPC_MAX_MESSAGE_BYTES, FuzzStack
from tests.fuzz.strategies import ODD_TEXT
from upscaling.v1 import tiler_pb2, upscaling_pb2

INTERVALS = st.none() | st.sampled_from(["", "0", "-1", "1e-300", "1e300", "nan", "inf", "0x10", "1_0", "5",
                                         "0.5", "86401", "%00", "a" * 3000, "\u0661"]) | st.text(max_size=20)
TASK_IDS = st.sampled_from(["<task>", "<task>", "1", "0", "-1", "\u00b2", "\u0661\u0662", "9" * 20, "1e3",
                            "%00", "abc", " 1"]) | st.integers(0, 2**64).map(str) | st.text(min_size=1, max_size=10)
FRAMES = st.lists(st.one_of(st.binary(max_size=2000), st.text(max_size=200), ODD_TEXT,
                            st.sampled_from(['{"type": "subscribe"', "null", "{}", '{"interval": -1}'])), max_size=4)
CLEAN_CLOSE_CODES = {1000, 1001, 1005, 1006, 1007, 1008, 1009}
# The sync client is used without a context manager on purpose: the tests also drop the TCP connection.
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")


def _ws_url(stack: FuzzStack, path: str, interval: str | None) -> str:
    query = "" if interval is None else "?" + urllib.parse.urlencode({"interval": interval})
    return f"{stack.ws}{path}{query}"


def _exercise(url: str, frames: list[Any], abrupt: bool) -> None:
    """Connect, read the first message, send the frames, leave (abruptly or with a close frame)."""
    import json

    try:
        ws = connect(url, open_timeout=20, close_timeout=5, max_size=None)
    except InvalidStatus as exc:  # refused at the handshake (a path that is not a route)
        assert exc.response.status_code < 500, exc.response.status_code
        return
    try:
        first = json.loads(ws.recv(timeout=20))
        assert first["type"] in ("init", "error"), first
        if first["type"] == "error":
            assert first["message"]
            try:
                ws.recv(timeout=20)
                raise AssertionError("an error must be followed by a close")
            except ConnectionClosed as exc:
                # 1011 with the error code as reason, as APEx closes; 1008 for limits and credentials
                assert exc.rcvd is not None and exc.rcvd.code in (1008, 1011) and exc.rcvd.reason, exc.rcvd
            return
        for frame in frames:
            ws.send(frame)
    except ConnectionClosed as exc:
        assert exc.rcvd is None or exc.rcvd.code in CLEAN_CLOSE_CODES, exc.rcvd
        return
    finally:
        if abrupt:
            ws.socket.close()  # no close frame: the TCP connection just ends
        else:
            ws.close()


@pytest.fixture(scope="module")
def task_id(fuzz_stack: FuzzStack) -> int:
    import requests

    reply = requests.post(f"{fuzz_stack.http}/upscale_tasks", json=fuzz_stack.task_body(1), timeout=60)
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


@given(tid=TASK_IDS, interval=INTERVALS, frames=FRAMES, abrupt=st.booleans())
@example(tid="\u00b2", interval="5", frames=[], abrupt=False)  # once: ValueError in int() -> handler crash
@example(tid="1", interval="1e300", frames=[], abrupt=False)
def test_ws_task_watch_garbage(fuzz_stack: FuzzStack, task_id: int, tid: str, interval: str | None,
                               frames: list[Any], abrupt: bool) -> None:
    counts.record("WebSocket /ws/upscale_tasks/{id}")
    path = "/ws/upscale_tasks/" + urllib.parse.quote(tid if tid != "<task>" else str(task_id), safe="")
    _exercise(_ws_url(fuzz_stack, path, interval), frames, abrupt)


@given(interval=INTERVALS, filters=st.lists(st.sampled_from(["upscaling", "processing", "", "x"]) | ODD_TEXT,
                                              max_size=3), frames=FRAMES, abrupt=st.booleans())
@example(interval=None, filters=["upscaling", "x" * 5000, "x" * 5000], frames=[], abrupt=False)  # once hung
def test_ws_jobs_status_garbage(fuzz_stack: FuzzStack, interval: str | None, filters: list[str],
                                frames: list[Any], abrupt: bool) -> None:
    counts.record("WebSocket /ws/jobs_status")
    filters = [f.encode("utf-8", "replace").decode() for f in filters]  # a URL cannot carry lone surrogates
    query = urllib.parse.urlencode([("filter", f) for f in filters]
                                   + ([] if interval is None else [("interval", interval)]))
    _exercise(f"{fuzz_stack.ws}/ws/jobs_status?{query}", frames, abrupt)


@pytest.mark.parametrize("length", [10_000, 20_000, 70_000])
def test_ws_handshake_with_an_overlong_request_line_is_answered(fuzz_stack: FuzzStack, length: int) -> None:
    """Once hung without any answer (uvicorn's sansio protocol dropped websockets' 414 response)."""
    counts.record("WebSocket raw frames")
    sock = _raw_ws_handshake(fuzz_stack, "/ws/jobs_status?filter=" + "x" * length, expect=None)
    with sock:
        answer = sock.recv(4096)
    assert answer.startswith((b"HTTP/1.1 414", b"HTTP/1.1 400")), answer[:100]


def test_ws_oversized_message_closes_with_1009(fuzz_stack: FuzzStack) -> None:
    counts.record("WebSocket /ws/jobs_status")
    with connect(f"{fuzz_stack.ws}/ws/jobs_status?interval=1", max_size=None) as ws:  # a socket that stays open
        assert '"init"' in ws.recv(timeout=20)
        try:
            ws.send("x" * (17 * 1024 * 1024))
            for _ in range(10):
                ws.recv(timeout=20)
            raise AssertionError("an oversized message must close the connection")
        except ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 1009, exc.rcvd


def _raw_ws_handshake(stack: FuzzStack, path: str, expect: bytes | None = b"HTTP/1.1 101") -> socket.socket:
    host, port = stack.http.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=20)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    if expect is not None:
        answer = sock.recv(4096)
        assert answer.startswith(expect), answer[:200]
    return sock


@given(garbage=st.binary(min_size=1, max_size=3000) | st.sampled_from([
    b"\x81",  # a text frame header, then nothing
    b"\x81\xfe\xff\xff",  # a 64 KiB masked length announced, no mask or payload
    b"\x82\xff" + b"\x7f" * 8,  # a binary frame announcing 2^63 bytes
    b"\x81\x85\x00\x00\x00\x00\xff\xfe\xfd\xfc\xfb",  # a masked text frame of invalid UTF-8
    b"\x88\x02\x03",  # a truncated close frame, unmasked
]))
def test_ws_raw_garbage_and_truncated_frames(fuzz_stack: FuzzStack, task_id: int, garbage: bytes) -> None:
    counts.record("WebSocket raw frames")
    sock = _raw_ws_handshake(fuzz_stack, f"/ws/upscale_tasks/{task_id}?interval=1")
    try:
        sock.sendall(garbage)
        sock.settimeout(0.5)
        try:
            while sock.recv(65536):
                pass
        except (TimeoutError, ConnectionResetError):
            pass
    finally:
        sock.close()


# ---- gRPC ----------------------------------------------------------------------------------------------------

GRPC_METHODS = ["/upscaling.v1.UpscalingService/CreateTask", "/upscaling.v1.UpscalingService/GetTask",
                "/upscaling.v1.UpscalingService/ListTasks", "/upscaling.v1.UpscalingService/CancelTask",
                "/upscaling.v1.UpscalingService/DescribeService", "/upscaling.v1.TilerService/TileAoi",
                "/upscaling.v1.TilerService/ListGrids"]
CLEAN_GRPC = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
              grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED}


@pytest.fixture(scope="module", params=["gateway", "tiler"])
def raw_channel(request: pytest.FixtureRequest, fuzz_stack: FuzzStack) -> Iterator[tuple[str, grpc.Channel]]:
    address = fuzz_stack.gateway_grpc if request.param == "gateway" else fuzz_stack.tiler
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]) as channel:
        yield request.param, channel


@given(method=st.sampled_from(GRPC_METHODS), body=st.binary(max_size=2000) | st.sampled_from([
    b"\x0a\x05\xff\xfe\xfd\xfc\xfb",  # field 1 (a string) holding invalid UTF-8
    b"\x0a\xff\xff\xff\xff\x0f",  # field 1 announcing 4 GiB, truncated
    b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # an over-long varint
    upscaling_pb2.GetTaskRequest(task_id=-1).SerializeToString(),
    tiler_pb2.TileAoiRequest(aoi_geojson="{", grid="1x1km").SerializeToString(),
]))
@example(method="/upscaling.v1.UpscalingService/CreateTask", body=b"\x0a\x05\xff\xfe\xfd\xfc\xfb")
def test_grpc_random_bytes(raw_channel: tuple[str, grpc.Channel], method: str, body: bytes) -> None:
    name, channel = raw_channel
    counts.record(f"gRPC raw bytes ({name})")
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    try:
        call(body, timeout=30)
    except grpc.RpcError as exc:
        if name == "tiler" and "UpscalingService" in method:
            assert exc.code() == grpc.StatusCode.UNIMPLEMENTED
        else:
            assert exc.code() in CLEAN_GRPC, f"{exc.code()}: {exc.details()}"


@given(metadata=st.lists(st.tuples(
    st.sampled_from(["x-correlation-id", "authorization", "x-custom", "grpc-timeout-x", "user-agent-x"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300)), max_size=4)
    | st.lists(st.tuples(st.just("x-data-bin"), st.binary(max_size=300)), max_size=2)
    | st.just([("x-correlation-id", "c" * 20000)]))
def test_grpc_odd_metadata(raw_channel: tuple[str, grpc.Channel], metadata: list[tuple[str, Any]]) -> None:
    name, channel = raw_channel
    counts.record(f"gRPC metadata ({name})")
    call = channel.unary_unary("/upscaling.v1.TilerService/ListGrids", request_serializer=None,
                               response_deserializer=None)
    try:
        call(b"", metadata=metadata, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() in CLEAN_GRPC | {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL} and \
            "internal error" not in (exc.details() or ""), f"{exc.code()}: {exc.details()}"


def test_grpc_oversized_message_is_resource_exhausted(raw_channel: tuple[str, grpc.Channel]) -> None:
    name, channel = raw_channel
    counts.record(f"gRPC raw bytes ({name})")
    request = tiler_pb2.TileAoiRequest(aoi_geojson="[" * (GRPC_MAX_MESSAGE_BYTES + 1024), grid="20x20km")
    call = channel.unary_unary("/upscaling.v1.TilerService/TileAoi", request_serializer=None,
                               response_deserializer=None)
    with pytest.raises(grpc.RpcError) as caught:
        call(request.SerializeToString(), timeout=60)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()


@given(garbage=st.binary(min_size=1, max_size=5000) | st.sampled_from([
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # the HTTP/2 preface, then nothing
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00",  # a truncated SETTINGS frame
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\x00\x00\x00\x00\x00\x01",  # a 16 MiB DATA frame announced
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
]))
def test_grpc_port_raw_tcp_garbage(fuzz_stack: FuzzStack, garbage: bytes) -> None:
    counts.record("gRPC port raw TCP")
    for address in (fuzz_stack.gateway_grpc, fuzz_stack.tiler):
        host, port = address.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            try:
                sock.sendall(garbage)
                sock.settimeout(1)
                sock.recv(65536)
            except (TimeoutError, ConnectionResetError, BrokenPipeError):
                pass
