"""The pure parts of users' own backend credentials: the cipher and its key rotation, the start-up check of
CREDENTIALS_KEY, the backend configuration of the per-user methods, and token answers."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.fernet import Fernet

from upscaling.backends import Backends, parse_backend
from upscaling.credentials import Cipher, CredentialsError, load_cipher
from upscaling.logs import redact
from upscaling.openeo_backend.user_tokens import DEFAULT_LIFETIME_S, tokens_of

EXCHANGE = {"endpoint": "https://openeo.example.org/openeo/1.2",
            "auth": {"method": "user_token_exchange", "token_endpoint": "https://idp.example.org/token",
                     "client_id": "svc", "client_secret": "s3cret-value", "audience": "openeo", "provider_id": "egi"}}
REFRESH = {"endpoint": "https://other.example.org/openeo/1.2",
           "auth": {"method": "user_refresh_token", "client_id": "public", "provider_id": "egi"}}


def test_the_cipher_round_trips_and_old_keys_still_decrypt_after_a_rotation() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    stored = Cipher([old]).encrypt("token-of-alice")
    assert b"token-of-alice" not in stored
    rotated = Cipher([new, old])
    assert rotated.decrypt(stored) == "token-of-alice"
    assert Cipher([new]).decrypt(rotated.encrypt("x-token")) == "x-token"  # the first key encrypts
    with pytest.raises(CredentialsError, match="cannot be decrypted"):
        Cipher([new]).decrypt(stored)
    assert "token-of-alice" not in redact("stored token-of-alice")  # decrypted tokens are redacted in logs


def test_a_key_is_required_exactly_when_a_backend_uses_per_user_credentials() -> None:
    per_user = Backends([parse_backend(EXCHANGE), parse_backend(REFRESH)])
    with pytest.raises(ValueError, match="CREDENTIALS_KEY is not set") as info:
        load_cipher(per_user, {})
    assert "https://openeo.example.org/openeo/1.2 (user_token_exchange)" in str(info.value)
    service_only = Backends([parse_backend({"endpoint": "http://x/openeo/1.2"})])
    assert load_cipher(service_only, {}) is None
    assert load_cipher(per_user, {"CREDENTIALS_KEY": f" {Fernet.generate_key().decode()} "}) is not None
    with pytest.raises(ValueError, match="Fernet key"):
        load_cipher(per_user, {"CREDENTIALS_KEY": "not-a-key"})


def test_per_user_methods_are_parsed_and_checked() -> None:
    exchange = parse_backend(EXCHANGE)
    assert exchange.auth.per_user and exchange.auth.token_endpoint == "https://idp.example.org/token"
    assert exchange.auth.audience == "openeo" and "s3cret-value" not in repr(exchange)
    assert parse_backend(REFRESH).auth.per_user
    assert not parse_backend({"endpoint": "http://x", "auth": {"method": "basic", "username": "u"}}).auth.per_user
    with pytest.raises(ValueError, match="needs token_endpoint, provider_id"):
        parse_backend({"endpoint": "http://x", "auth": {"method": "user_token_exchange", "client_id": "c"}})
    with pytest.raises(ValueError, match="unknown auth method 'user_password'"):
        parse_backend({"endpoint": "http://x", "auth": {"method": "user_password"}})


def _jwt(payload: dict[str, object]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJub25lIn0.{body}.sig"


def test_token_answers_give_the_expiry_and_the_rotated_refresh_token() -> None:
    tokens = tokens_of({"access_token": "at-1", "expires_in": 120, "refresh_token": "rt-rotated-2"}, now=1000.0)
    assert (tokens.expires_at, tokens.refresh_token) == (1120.0, "rt-rotated-2")
    assert "at-1" not in repr(tokens) and "rt-rotated-2" not in repr(tokens)
    assert tokens_of({"access_token": _jwt({"exp": 5000})}, now=1000.0).expires_at == 5000.0
    assert tokens_of({"access_token": "opaque"}, now=1000.0).expires_at == 1000.0 + DEFAULT_LIFETIME_S
    assert "rt-rotated-2" not in redact("refresh_token rotated to rt-rotated-2 ok")


def test_tokens_are_redacted_from_logs_and_only_opaque_ones_are_kept_as_exact_values() -> None:
    from upscaling import logs
    from upscaling.openeo_backend.user_tokens import register_token

    jwt_token = _jwt({"exp": 5000, "sub": "alice"})
    register_token(jwt_token)
    register_token("opaque-refresh-token-1234")
    assert jwt_token not in logs._secrets and "opaque-refresh-token-1234" in logs._secrets
    assert jwt_token not in redact(f"got {jwt_token}") and "opaque-refresh-token-1234" not in redact(
        "got opaque-refresh-token-1234")
