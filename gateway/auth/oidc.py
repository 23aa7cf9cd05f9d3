"""AUTH_MODE=oidc: bearer JWTs checked against the issuer's JWKS (signature, iss, aud, exp/nbf with leeway).

The JWKS comes from OIDC_JWKS_URL or the issuer's `/.well-known/openid-configuration`. A token signed with an
unknown `kid` (key rotation) makes the keys be fetched again, at most once per OIDC_JWKS_MIN_REFRESH_S, and
concurrent callers share one fetch. The user id is the `sub` claim; the caller is an admin when the claim
OIDC_ADMIN_CLAIM (a dotted path such as `realm_access.roles`) equals or contains OIDC_ADMIN_VALUE.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import jwt

from gateway.auth.principal import Principal
from gateway.auth.settings import AuthSettings
from upscaling.errors import Unauthenticated, Unavailable

log = logging.getLogger(__name__)

MAX_SUB_LENGTH = 255
ALLOWED_ALGORITHMS = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """The value at a dotted claim path (`realm_access.roles`), or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def is_admin(claims: dict[str, Any], claim: str, wanted: str) -> bool:
    """Whether the claim equals `wanted` or is a list (or space-separated string) containing it."""
    if not claim or not wanted:
        return False
    value = claim_at(claims, claim)
    if isinstance(value, list):
        return wanted in value
    if isinstance(value, str):
        return wanted in value.split()
    return False


class JwksCache:
    """The issuer's signing keys by kid, refetched on an unknown kid no more often than `min_refresh_s`."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at = -float("inf")
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self.fetches = 0

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.oidc_timeout_s))
        return self._session

    async def _get_json(self, url: str) -> Any:
        async with self._http().get(url) as reply:
            if reply.status != 200:
                raise RuntimeError(f"{url} answered HTTP {reply.status}")
            return await reply.json(content_type=None)

    async def _jwks_url(self) -> str:
        if self.settings.oidc_jwks_url:
            return self.settings.oidc_jwks_url
        issuer = self.settings.oidc_issuer.rstrip("/")
        config = await self._get_json(f"{issuer}/.well-known/openid-configuration")
        if not isinstance(config, dict) or not isinstance(config.get("jwks_uri"), str):
            raise RuntimeError("the OpenID configuration has no jwks_uri")
        if config.get("issuer") and config["issuer"].rstrip("/") != issuer:
            raise RuntimeError(f"the OpenID configuration names issuer {config['issuer']!r}, not {issuer!r}")
        jwks_uri: str = config["jwks_uri"]
        return jwks_uri

    async def _fetch(self) -> None:
        document = await self._get_json(await self._jwks_url())
        keys: dict[str, jwt.PyJWK] = {}
        for entry in (document or {}).get("keys", []) if isinstance(document, dict) else []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK.from_dict(entry)
            except jwt.PyJWTError as exc:
                log.warning("JWKS key skipped", extra={"kid": entry.get("kid"), "reason": str(exc)})
                continue
            keys[entry.get("kid") or ""] = key
        self.keys = keys
        self.fetches += 1
        log.info("JWKS fetched", extra={"keys": len(keys)})

    async def key(self, kid: str | None) -> jwt.PyJWK:
        """The signing key of `kid` (the only key when the token names none)."""
        found = self._lookup(kid)
        if found is not None:
            return found
        async with self._lock:
            found = self._lookup(kid)
            if found is not None:
                return found
            if time.monotonic() - self.fetched_at >= self.settings.oidc_jwks_min_refresh_s:
                self.fetched_at = time.monotonic()
                try:
                    await self._fetch()
                except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError) as exc:
                    log.warning("JWKS fetch failed", extra={"reason": str(exc) or type(exc).__name__})
                    if not self.keys:
                        raise Unavailable("the identity provider's signing keys cannot be fetched") from None
        found = self._lookup(kid)
        if found is None:
            raise Unauthenticated("the token is signed with an unknown key")
        return found

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return next(iter(self.keys.values())) if len(self.keys) == 1 else None
        return self.keys.get(kid)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class OidcAuthenticator:
    """Validates bearer JWTs of the configured issuer and audience."""

    reads_token = True

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        algorithms = [a.strip() for a in settings.oidc_algorithms.split(",") if a.strip()]
        bad = [a for a in algorithms if a not in ALLOWED_ALGORITHMS]
        if bad or not algorithms:
            raise ValueError(f"OIDC_ALGORITHMS: unsupported {bad or algorithms}; asymmetric ones only "
                             f"({', '.join(sorted(ALLOWED_ALGORITHMS))})")
        self.algorithms = algorithms
        self.jwks = JwksCache(settings)

    async def authenticate(self, token: str | None) -> Principal:
        if token is None:
            raise Unauthenticated("missing bearer token (Authorization: Bearer <JWT>)")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the bearer token is not a JWT") from None
        if header.get("alg") not in self.algorithms:
            raise Unauthenticated(f"token algorithm {str(header.get('alg'))[:20]!r} is not accepted")
        kid = header.get("kid")
        key = await self.jwks.key(kid if isinstance(kid, str) else None)
        try:
            claims = jwt.decode(token, key=key, algorithms=self.algorithms, audience=self.settings.oidc_audience,
                                issuer=self.settings.oidc_issuer, leeway=self.settings.oidc_leeway_s,
                                options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("the token is not valid yet (nbf/iat)") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the token is not issued for this service (aud)") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the token is not issued by the configured issuer (iss)") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {type(exc).__name__}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip() or len(sub) > MAX_SUB_LENGTH:
            raise Unauthenticated("the token has no usable subject (sub)")
        return Principal(sub, is_admin(claims, self.settings.oidc_admin_claim, self.settings.oidc_admin_value),
                         access_token=token)

    async def close(self) -> None:
        await self.jwks.close()
