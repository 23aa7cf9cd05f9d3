"""The egress policy for URLs fetched on a caller's behalf: address classification, the allowlist, a resolver the
tests control (a public-looking name that resolves to loopback), redirects checked hop by hop, and the gateway's
answer to the probes of issue 15 (one generic 422, and no request reaches the target)."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
import requests
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from gateway.egress import GENERIC_REASON, CheckedResolver, EgressFetcher, EgressPolicy, FetchFailed, Refused, is_public
from tests import tasks_support
from tests.infra import free_port
from tests.tasks_support import Gateway
from upscaling.v1 import common_pb2, upscaling_pb2, upscaling_pb2_grpc

tasks_gateway = tasks_support.tasks_gateway

UDP = b'{"id": "probe", "parameters": []}'


class LoggingServer:
    """An HTTP server on loopback that records every request line; `redirect` answers every GET with a 302."""

    def __init__(self, redirect: str | None = None) -> None:
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                if redirect is not None:
                    self.send_response(302)
                    self.send_header("Location", redirect)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(UDP)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target() -> Iterator[LoggingServer]:
    server = LoggingServer()
    yield server
    server.close()


class StaticResolver(AbstractResolver):
    """Answers from a fixed table (the test controls DNS)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if host not in self.table:
            raise OSError(f"unknown host {host}")
        return [ResolveResult(hostname=host, host=a, port=port,
                              family=socket.AF_INET6 if ":" in a else socket.AF_INET, proto=0,
                              flags=socket.AI_NUMERICHOST) for a in self.table[host]]

    async def close(self) -> None:
        pass


def fetcher(policy: EgressPolicy, table: dict[str, list[str]] | None = None) -> EgressFetcher:
    return EgressFetcher(policy, timeout_s=5, resolver=lambda: StaticResolver(table or {}))


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2a00:1450:4001:80b::200e", True), ("127.0.0.1", False), ("10.1.2.3", False),
    ("172.16.0.1", False), ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False),
    ("0.0.0.0", False), ("224.0.0.1", False), ("240.0.0.1", False), ("255.255.255.255", False), ("::1", False),
    ("::", False), ("fe80::1", False), ("fc00::1", False), ("ff02::1", False), ("::ffff:127.0.0.1", False),
    ("::ffff:8.8.8.8", True), ("2002:7f00:1::1", False), ("198.18.0.1", False), ("192.0.2.1", False),
])
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def test_policy_allowlist_and_literals() -> None:
    policy = EgressPolicy.parse("http://127.0.0.1:8081/udp/, internal.example:8443 catalogue.example")
    assert policy.check_url(URL("http://127.0.0.1:8081/udp/x.json")) is True
    assert policy.check_url(URL("https://internal.example:8443/p.json")) is True
    assert policy.check_url(URL("https://CATALOGUE.example/p.json")) is True
    assert policy.check_url(URL("https://example.org/p.json")) is False  # public: checked at resolution
    assert policy.check_url(URL("http://93.184.216.34/p.json")) is False
    assert policy.check_url(URL("https://internal.example/p.json")) is False  # another port: not allowlisted
    for refused in ("http://127.0.0.1:8081/admin/report", "http://127.0.0.1:8082/udp/x.json", "http://[::1]/x",
                    "http://169.254.169.254/latest/meta-data/", "ftp://example.org/x", "http://u:p@example.org/"):
        with pytest.raises(Refused):
            policy.check_url(URL(refused))
    closed = EgressPolicy.parse("catalogue.example", allow_public=False)
    with pytest.raises(Refused):
        closed.check_url(URL("https://example.org/p.json"))
    with pytest.raises(ValueError):
        EgressPolicy.parse("ftp://x/")


async def test_resolver_refuses_any_private_answer() -> None:
    table = {"mixed.example": ["93.184.216.34", "10.0.0.7"], "public.example": ["93.184.216.34"]}
    checked = CheckedResolver(StaticResolver(table), trusted=False)
    assert [a["host"] for a in await checked.resolve("public.example", 80)] == ["93.184.216.34"]
    with pytest.raises(Refused):
        await checked.resolve("mixed.example", 80)
    trusted = CheckedResolver(StaticResolver(table), trusted=True)
    assert len(await trusted.resolve("mixed.example", 80)) == 2


async def test_public_looking_name_resolving_to_loopback_is_refused(target: LoggingServer) -> None:
    port = URL(target.url).port
    with pytest.raises(FetchFailed) as refused:
        await fetcher(EgressPolicy(), {"udp.example.org": ["127.0.0.1"]}).get(
            f"http://udp.example.org:{port}/udp.json", 1 << 20)
    assert str(refused.value) == GENERIC_REASON
    assert target.requests == []
    # the same server, allowlisted by host:port, is fetched (so the refusal above was the policy's)
    reply = await fetcher(EgressPolicy.parse(f"udp.example.org:{port}"), {"udp.example.org": ["127.0.0.1"]}).get(
        f"http://udp.example.org:{port}/udp.json", 1 << 20)
    assert (reply.status, reply.body) == (200, UDP) and target.requests == ["/udp.json"]


async def test_redirect_to_loopback_is_refused_before_any_request(target: LoggingServer) -> None:
    bouncer = LoggingServer(redirect=f"{target.url}/metrics")
    try:
        policy = EgressPolicy.parse(f"{bouncer.url}/")
        with pytest.raises(FetchFailed):
            await fetcher(policy).get(f"{bouncer.url}/udp.json", 1 << 20)
        assert bouncer.requests == ["/udp.json"]
        assert target.requests == []  # the loopback target never saw a request
        # a redirect to an allowlisted target is followed
        both = EgressPolicy.parse(f"{bouncer.url}/ {target.url}/")
        reply = await fetcher(both).get(f"{bouncer.url}/udp.json", 1 << 20)
        assert (reply.url, reply.status) == (f"{target.url}/metrics", 200)
    finally:
        bouncer.close()


async def test_redirects_are_bounded(target: LoggingServer) -> None:
    loop_server = LoggingServer(redirect="/again")
    try:
        policy = EgressPolicy.parse(f"{loop_server.url}/", max_redirects=2)
        with pytest.raises(FetchFailed):
            await fetcher(policy).get(f"{loop_server.url}/start", 1 << 20)
        assert loop_server.requests == ["/start", "/again", "/again"]
    finally:
        loop_server.close()


async def test_unreachable_and_refused_read_the_same() -> None:
    closed_port = free_port()
    policy = EgressPolicy.parse(f"http://127.0.0.1:{closed_port}/")
    with pytest.raises(FetchFailed) as unreachable:
        await fetcher(policy).get(f"http://127.0.0.1:{closed_port}/udp.json", 1 << 20)
    with pytest.raises(FetchFailed) as refused:
        await fetcher(EgressPolicy()).get("http://10.0.0.1/udp.json", 1 << 20)
    assert str(unreachable.value) == str(refused.value) == GENERIC_REASON


def test_gateway_probes_get_one_generic_answer(tasks_gateway: Gateway, target: LoggingServer) -> None:
    """The probes of issue 15 through the gateway's HTTP and gRPC APIs: 422 / INVALID_ARGUMENT with the same
    message, and the target sees nothing."""
    gw = tasks_gateway
    port = URL(target.url).port
    probes = [f"{target.url}/metrics", f"http://127.0.0.1:{free_port()}/", f"{target.url}/admin/report",
              f"http://localhost:{port}/udp.json", f"{gw.backend.url}/admin/report",
              "http://169.254.169.254/latest/meta-data/", f"http://[::1]:{port}/x"]
    messages = set()
    channel = grpc.insecure_channel(gw.grpc)
    stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
    try:
        for probe in probes:
            service = {"endpoint": gw.backend.endpoint, "application": probe}
            reply = requests.post(f"{gw.http}/params", json={"label": "openeo", "service": service}, timeout=30)
            assert reply.status_code == 422, reply.text
            messages.add(reply.json()["message"].replace(probe, "<url>"))
            created = requests.post(f"{gw.http}/upscale_tasks", json=gw.task_body(1, service=service), timeout=30)
            assert created.status_code == 422 and GENERIC_REASON in created.text, created.text
            with pytest.raises(grpc.RpcError) as rpc:
                stub.DescribeService(upscaling_pb2.DescribeServiceRequest(
                    label="openeo", service=common_pb2.ServiceRef(**service)), timeout=30)
            assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert GENERIC_REASON in (rpc.value.details() or "")
    finally:
        channel.close()
    assert len(messages) == 1 and GENERIC_REASON in messages.pop()
    assert target.requests == []
    # the allowlisted catalogue still works
    service = {"endpoint": gw.backend.endpoint, "application": gw.backend.application}
    assert requests.post(f"{gw.http}/params", json={"label": "openeo", "service": service},
                         timeout=30).status_code == 200
