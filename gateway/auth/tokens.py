"""AUTH_MODE=token: static API keys mapped to user ids, compared in constant time.

AUTH_TOKENS (or the file AUTH_TOKENS_FILE) holds a JSON object `{"<token>": "<user id>"}`, where a value may
also be `{"user": "<user id>", "admin": true}` for an operator.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from gateway.auth.principal import Principal
from upscaling.errors import Unauthenticated
from upscaling.logs import register_secret

MIN_TOKEN_LENGTH = 16


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(document: Any) -> list[tuple[bytes, Principal]]:
    """(sha256 of the token, principal) per configured key; ValueError on a malformed list (never echoing a key)."""
    if not isinstance(document, dict) or not document:
        raise ValueError("the API key list must be a non-empty JSON object {token: user id}")
    keys: list[tuple[bytes, Principal]] = []
    for i, (token, value) in enumerate(document.items()):
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"API key #{i + 1} is shorter than {MIN_TOKEN_LENGTH} characters")
        if isinstance(value, str):
            user, admin = value, False
        elif isinstance(value, dict) and isinstance(value.get("user"), str):
            user, admin = value["user"], value.get("admin", False)
            if not isinstance(admin, bool):
                raise ValueError(f"API key #{i + 1}: 'admin' must be true or false")
        else:
            raise ValueError(f"API key #{i + 1}: the value must be a user id or {{\"user\", \"admin\"}}")
        if not user.strip():
            raise ValueError(f"API key #{i + 1}: empty user id")
        register_secret(token)
        keys.append((_digest(token), Principal(user, admin)))
    return keys


def load_tokens(inline: str, path: str) -> list[tuple[bytes, Principal]]:
    """The keys of AUTH_TOKENS (JSON text) or else AUTH_TOKENS_FILE (a path to JSON)."""
    source = "AUTH_TOKENS" if inline else f"AUTH_TOKENS_FILE ({path})"
    try:
        text = inline or Path(path).read_text()
        return parse_tokens(json.loads(text))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{source}: {exc}") from None


class TokenAuthenticator:
    """Looks a bearer token up among the configured keys, comparing digests in constant time."""

    reads_token = True

    def __init__(self, keys: list[tuple[bytes, Principal]]) -> None:
        self.keys = keys

    async def authenticate(self, token: str | None) -> Principal:
        if token is None:
            raise Unauthenticated("missing bearer token (Authorization: Bearer <API key>)")
        digest = _digest(token)
        found: Principal | None = None
        for key, principal in self.keys:  # every key compared: the time does not depend on which one matched
            if hmac.compare_digest(key, digest):
                found = principal
        if found is None:
            raise Unauthenticated("invalid API key")
        return found

    async def close(self) -> None:
        return None
