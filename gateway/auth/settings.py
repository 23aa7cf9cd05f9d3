"""Authentication settings from the environment (kept apart from `upscaling.config.Settings`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from upscaling.config import from_env

MODES = ("none", "token", "oidc")


@dataclass(frozen=True)
class AuthSettings:
    """How callers of the gateway are authenticated; each field names its variable in `ENV`."""

    mode: str = "none"
    tokens: str = ""
    tokens_file: str = ""
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_jwks_url: str = ""
    oidc_algorithms: str = "RS256,ES256"
    oidc_leeway_s: float = 30.0
    oidc_jwks_min_refresh_s: float = 30.0
    oidc_timeout_s: float = 5.0
    oidc_admin_claim: str = "roles"
    oidc_admin_value: str = ""


ENV: dict[str, str] = {
    "mode": "AUTH_MODE",
    "tokens": "AUTH_TOKENS",
    "tokens_file": "AUTH_TOKENS_FILE",
    "oidc_issuer": "OIDC_ISSUER",
    "oidc_audience": "OIDC_AUDIENCE",
    "oidc_jwks_url": "OIDC_JWKS_URL",
    "oidc_algorithms": "OIDC_ALGORITHMS",
    "oidc_leeway_s": "OIDC_LEEWAY_S",
    "oidc_jwks_min_refresh_s": "OIDC_JWKS_MIN_REFRESH_S",
    "oidc_timeout_s": "OIDC_TIMEOUT_S",
    "oidc_admin_claim": "OIDC_ADMIN_CLAIM",
    "oidc_admin_value": "OIDC_ADMIN_VALUE",
}


def load_auth_settings() -> AuthSettings:
    """Read the authentication settings; ValueError naming the variable when one is wrong."""
    settings = from_env(AuthSettings, ENV)
    mode = settings.mode.strip().lower()
    if mode not in MODES:
        raise ValueError(f"AUTH_MODE must be one of {', '.join(MODES)}, got {settings.mode!r}")
    if mode == "token" and not (settings.tokens or settings.tokens_file):
        raise ValueError("AUTH_MODE=token needs AUTH_TOKENS or AUTH_TOKENS_FILE")
    if mode == "oidc" and not (settings.oidc_issuer and settings.oidc_audience):
        raise ValueError("AUTH_MODE=oidc needs OIDC_ISSUER and OIDC_AUDIENCE")
    return replace(settings, mode=mode)
