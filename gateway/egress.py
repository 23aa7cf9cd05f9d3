"""The egress policy for URLs fetched on a caller's behalf (UDP documents), and the fetcher that enforces it.

A URL may be fetched when it matches the allowlist (`UDP_ALLOWED_URLS`: URL prefixes or hosts), or, unless
`UDP_ALLOW_PUBLIC` is off, when every address its host resolves to is public: loopback, private, link-local,
shared (CGNAT), multicast, reserved and unspecified ranges are refused. The check happens in the resolver the
connection uses, so the connection goes to the very address that was checked (no second lookup that DNS
rebinding could answer differently). Redirects are followed by hand, each target checked the same way, at most
`UDP_MAX_REDIRECTS` of them. A refused URL and an unreachable one get the same error (`FetchFailed`) so the
answer is no oracle for what sits inside the network; the precise reason is logged for operators.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

log = logging.getLogger(__name__)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
GENERIC_REASON = "it could not be fetched (not reachable, or not allowed by this service's egress policy)"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(OSError):
    """The egress policy refuses a URL or an address (an OSError, so aiohttp reports it as a connect error)."""


class BodyTooLarge(ValueError):
    """The document is larger than the cap."""


class FetchFailed(Exception):
    """A URL could not be fetched: refused by the policy or unreachable (deliberately not saying which)."""

    def __init__(self) -> None:
        super().__init__(GENERIC_REASON)


@dataclass(frozen=True)
class Reply:
    """What a fetch got: the final URL, the HTTP status and reason, and the body (capped)."""

    url: str
    status: int
    reason: str
    body: bytes


def is_public(address: IpAddress) -> bool:
    """Whether `address` is a public unicast address (IPv4 embedded in IPv6 judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        embedded = address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None and not is_public(embedded):
            return False
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified
                                      or address.is_loopback or address.is_link_local or address.is_private)


def _ip_literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class EgressPolicy:
    """Which URLs may be fetched: allowlisted ones anywhere, others only at public addresses (if allowed)."""

    allowed_prefixes: tuple[str, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()
    allow_public: bool = True
    max_redirects: int = 3

    @classmethod
    def parse(cls, allowed: str, allow_public: bool = True, max_redirects: int = 3) -> EgressPolicy:
        """A policy from `UDP_ALLOWED_URLS` (comma/space separated; an entry with `://` is a URL prefix,
        otherwise a host or host:port)."""
        if max_redirects < 0:
            raise ValueError("UDP_MAX_REDIRECTS must not be negative")
        prefixes: list[str] = []
        hosts: set[str] = set()
        for entry in allowed.replace(",", " ").split():
            if "://" in entry:
                url = URL(entry)
                if url.scheme not in ("http", "https") or not url.host:
                    raise ValueError(f"UDP_ALLOWED_URLS: {entry!r} is not an http(s) URL prefix")
                prefixes.append(entry)
            else:
                hosts.add(entry.lower())
        return cls(tuple(prefixes), frozenset(hosts), allow_public, max_redirects)

    def allowlisted(self, url: URL) -> bool:
        """Whether `url` matches an allowlist entry (a URL prefix, or its host / host:port)."""
        text = str(url)
        if any(text.startswith(prefix) for prefix in self.allowed_prefixes):
            return True
        host = (url.host or "").lower()
        return host in self.allowed_hosts or f"{host}:{url.port}" in self.allowed_hosts

    def check_url(self, url: URL) -> bool:
        """Refused unless `url` may be requested; True when it is allowlisted (any address then)."""
        if url.scheme not in ("http", "https") or not url.host:
            raise Refused(f"not an http(s) URL: {str(url)[:200]}")
        if url.user is not None or url.password is not None:
            raise Refused("URLs with credentials are not fetched")
        if self.allowlisted(url):
            return True
        if not self.allow_public:
            raise Refused(f"{url.host} is not in UDP_ALLOWED_URLS")
        literal = _ip_literal(url.host)
        if literal is not None and not is_public(literal):
            raise Refused(f"{literal} is not a public address")
        return False


class CheckedResolver(AbstractResolver):
    """Resolves through `inner` and refuses any answer holding a non-public address (unless `trusted`)."""

    def __init__(self, inner: AbstractResolver, trusted: bool) -> None:
        self.inner = inner
        self.trusted = trusted

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self.inner.resolve(host, port, family)
        if not self.trusted:
            for answer in answers:
                address = _ip_literal(answer["host"].split("%", 1)[0])
                if address is None or not is_public(address):
                    raise Refused(f"{host} resolves to {answer['host']}, not a public address")
        return answers

    async def close(self) -> None:
        await self.inner.close()


class EgressFetcher:
    """GETs URLs under an `EgressPolicy`: a fresh connection per hop through a `CheckedResolver`, redirects
    followed by hand and checked, the body capped at `max_bytes`. `resolver` makes the underlying resolver
    (tests pass one whose answers they control)."""

    def __init__(self, policy: EgressPolicy, timeout_s: float,
                 resolver: Callable[[], AbstractResolver] = aiohttp.ThreadedResolver) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        self.resolver = resolver

    async def get(self, url: str, max_bytes: int, headers: dict[str, str] | None = None) -> Reply:
        """The reply to GET `url` after redirects; FetchFailed when refused, unreachable or too slow; ValueError
        (with the size) when the body exceeds `max_bytes`."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._follow(URL(url), max_bytes, headers or {})
        except BodyTooLarge:
            raise
        except (Refused, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            log.info("egress: %s not fetched: %s", url[:300], exc or type(exc).__name__)
            raise FetchFailed() from None

    async def _follow(self, url: URL, max_bytes: int, headers: dict[str, str]) -> Reply:
        for _ in range(self.policy.max_redirects + 1):
            trusted = self.policy.check_url(url)
            connector = aiohttp.TCPConnector(resolver=CheckedResolver(self.resolver(), trusted),
                                             use_dns_cache=False, force_close=True)
            async with aiohttp.ClientSession(connector=connector, trust_env=False) as session, \
                    session.get(url, headers=headers, allow_redirects=False) as reply:
                location = reply.headers.get("Location")
                if reply.status in REDIRECT_STATUSES and location:
                    url = url.join(URL(location))
                    continue
                return Reply(str(url), reply.status, reply.reason or "", await _read_capped(reply, max_bytes))
        raise Refused(f"more than {self.policy.max_redirects} redirects")


async def _read_capped(reply: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    body = bytearray()
    async for chunk in reply.content.iter_chunked(65536):
        body.extend(chunk)
        if len(body) > max_bytes:
            raise BodyTooLarge(f"the document is larger than {max_bytes} bytes")
    return bytes(body)


def policy_from_settings(settings: Any) -> EgressPolicy:
    """The policy configured by `UDP_ALLOWED_URLS`, `UDP_ALLOW_PUBLIC` and `UDP_MAX_REDIRECTS`."""
    return EgressPolicy.parse(settings.udp_allowed_urls, settings.udp_allow_public, settings.udp_max_redirects)
