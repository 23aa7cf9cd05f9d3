"""Users' backend tokens at the identity provider (blocking: run it in a worker thread).

- `exchange`: RFC 8693 token exchange of a caller's OIDC access token for one the backend accepts
  (`user_token_exchange`: `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` at the configured
  `token_endpoint`, with the backend's client credentials, `audience` and `scope`).
- `refresh`: a `refresh_token` grant, at the configured `token_endpoint` (`user_token_exchange`) or at the token
  endpoint of the backend's OIDC provider `provider_id` (`user_refresh_token`: the provider's issuer from the
  backend's `GET /credentials/oidc`, its token endpoint from the issuer's discovery document, both through the
  openeo client; kept DISCOVERY_TTL_S).

Every token that passes through is registered for log redaction. A refusal of the identity provider (4xx,
e.g. `invalid_grant`) raises `CredentialsRefused` (the user must sign in or register again); an unreachable or
failing provider raises `BackendTransientError` (try again later).
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from openeo.rest.auth.oidc import OidcProviderInfo

from upscaling.backends import BackendConfig
from upscaling.logs import redact, register_secret
from upscaling.openeo_backend import connection
from upscaling.openeo_backend.errors import BackendPermanentError, BackendTransientError

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
# Lifetime assumed for an access token whose answer and payload say nothing about it.
DEFAULT_LIFETIME_S = 300.0
# How long a discovered token endpoint is used before the backend's provider list is read again.
DISCOVERY_TTL_S = 300.0
_discovered: dict[tuple[str, str], tuple[str, float]] = {}  # (backend, provider) -> (token endpoint, expiry)
# A whole JWT: every log line is redacted of these by pattern (`upscaling.logs`).
_JWT = re.compile(r"eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*")


def register_token(token: str | None) -> None:
    """Redact `token` from every log line: registered as a secret unless it is a JWT, which the log patterns
    redact anyway (registering each rotated JWT would grow the list of exact values checked on every line)."""
    if token and not _JWT.fullmatch(token):
        register_secret(token)


class CredentialsRefused(BackendPermanentError):
    """The identity provider refused the user's token (expired, revoked, not exchangeable)."""


@dataclass(frozen=True)
class Tokens:
    """A backend access token, when it expires (epoch seconds) and the refresh token that renews it, if any."""

    access_token: str = field(repr=False)
    expires_at: float
    refresh_token: str | None = field(default=None, repr=False)


def _jwt_exp(token: str) -> float | None:
    """The `exp` of a JWT (unverified: only to plan the refresh), or None when the token is not a JWT."""
    try:
        payload = token.split(".")[1]
        exp = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("exp")
    except (IndexError, ValueError, UnicodeDecodeError, AttributeError):
        return None
    return float(exp) if isinstance(exp, int | float) else None


def tokens_of(answer: dict[str, Any], now: float | None = None) -> Tokens:
    """The tokens of a token endpoint's JSON answer (expiry from `expires_in`, else the JWT's `exp`)."""
    access = answer.get("access_token")
    if not isinstance(access, str) or not access:
        raise BackendPermanentError("the identity provider's answer has no access_token")
    now = time.time() if now is None else now
    expires_in = answer.get("expires_in")
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        expires_at = now + float(expires_in)
    else:
        expires_at = _jwt_exp(access) or now + DEFAULT_LIFETIME_S
    refresh = answer.get("refresh_token")
    tokens = Tokens(access, expires_at, refresh if isinstance(refresh, str) and refresh else None)
    register_token(tokens.access_token)
    register_token(tokens.refresh_token)
    return tokens


def _post(url: str, data: dict[str, str], timeout_s: float) -> Tokens:
    try:
        reply = requests.post(url, data=data, timeout=timeout_s, headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise BackendTransientError(f"the identity provider cannot be reached: {type(exc).__name__}") from None
    if reply.status_code >= 500 or reply.status_code == 429:
        raise BackendTransientError(f"the identity provider answered HTTP {reply.status_code}",
                                    http_status=reply.status_code)
    try:
        body = reply.json()
    except ValueError:
        body = None
    if reply.status_code != 200 or not isinstance(body, dict):
        # An OAuth error answer: `error` and `error_description` name the reason, never a token.
        reason = body.get("error_description") or body.get("error") if isinstance(body, dict) else None
        raise CredentialsRefused(f"the identity provider refused the token: "
                                 f"{redact(str(reason or reply.status_code))[:200]}",
                                 code=str(body.get("error", "")) if isinstance(body, dict) else "",
                                 http_status=reply.status_code)
    return tokens_of(body)


def _client(backend: BackendConfig) -> dict[str, str]:
    auth = backend.auth
    data = {"client_id": auth.client_id or ""}
    if auth.client_secret:
        data["client_secret"] = auth.client_secret
    return data


def exchange(backend: BackendConfig, subject_token: str, timeout_s: float) -> Tokens:
    """Exchange a caller's access token for a token of `backend` (`user_token_exchange`)."""
    auth = backend.auth
    assert auth.token_endpoint, "user_token_exchange needs a token_endpoint"
    data = {**_client(backend), "grant_type": TOKEN_EXCHANGE_GRANT, "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE, "requested_token_type": ACCESS_TOKEN_TYPE}
    if auth.audience:
        data["audience"] = auth.audience
    if auth.scope:
        data["scope"] = auth.scope
    return _post(auth.token_endpoint, data, timeout_s)


def token_endpoint(backend: BackendConfig, timeout_s: float) -> str:
    """Where refresh tokens of `backend` are redeemed: the configured endpoint, or the token endpoint of the
    backend's OIDC provider `provider_id`."""
    if backend.auth.token_endpoint:
        return backend.auth.token_endpoint
    key = (backend.endpoint, backend.auth.provider_id or "")
    cached = _discovered.get(key)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]
    url = _discover(backend, timeout_s)
    _discovered[key] = (url, time.monotonic() + DISCOVERY_TTL_S)
    return url


def _discover(backend: BackendConfig, timeout_s: float) -> str:
    listing = connection.call_anonymous(backend, timeout_s, lambda conn: conn.get("/credentials/oidc").json())
    for provider in (listing or {}).get("providers") or ():
        if isinstance(provider, dict) and provider.get("id") == backend.auth.provider_id:
            try:
                info = OidcProviderInfo.from_dict(provider)
            except Exception as exc:
                raise BackendTransientError(f"the OIDC provider {backend.auth.provider_id!r} cannot be discovered: "
                                            f"{type(exc).__name__}") from None
            url = info.config.get("token_endpoint")
            if isinstance(url, str) and url:
                return url
            raise BackendPermanentError(f"OIDC provider {backend.auth.provider_id!r} has no token_endpoint")
    raise BackendPermanentError(f"the backend lists no OIDC provider {backend.auth.provider_id!r}")


def refresh(backend: BackendConfig, refresh_token: str, timeout_s: float) -> Tokens:
    """A new access token (and the rotated refresh token, when the provider rotates them) for a refresh token.
    The refresh token is kept when the answer carries no new one."""
    data = {**_client(backend), "grant_type": "refresh_token", "refresh_token": refresh_token}
    if backend.auth.scope:
        data["scope"] = backend.auth.scope
    tokens = _post(token_endpoint(backend, timeout_s), data, timeout_s)
    if tokens.refresh_token is None:
        return Tokens(tokens.access_token, tokens.expires_at, refresh_token)
    return tokens
