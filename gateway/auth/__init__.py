"""Caller authentication: who is calling (a `Principal`), decided by the configured mode (none, token, oidc)."""

from gateway.auth.authenticator import Authenticator, create_authenticator
from gateway.auth.principal import ANONYMOUS, Principal, bearer_token, caller_or_fail, current_principal
from gateway.auth.settings import AuthSettings, load_auth_settings

__all__ = ["ANONYMOUS", "AuthSettings", "Authenticator", "Principal", "bearer_token", "caller_or_fail",
           "create_authenticator", "current_principal", "load_auth_settings"]
