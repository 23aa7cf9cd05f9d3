"""Caller authentication: who is calling (a `Principal`), decided by the configured mode (none, token, oidc)."""

from upscaling.auth.authenticator import Authenticator, create_authenticator
from upscaling.auth.principal import ANONYMOUS, Principal, bearer_token, caller_or_fail, current_principal
from upscaling.auth.settings import AuthSettings, load_auth_settings

__all__ = ["ANONYMOUS", "AuthSettings", "Authenticator", "Principal", "bearer_token", "caller_or_fail",
           "create_authenticator", "current_principal", "load_auth_settings"]
