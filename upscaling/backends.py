"""openEO backends the service may submit to, with their credentials and limits.

Configured by `OPENEO_BACKENDS` (a JSON list) or `OPENEO_BACKENDS_FILE` (a path to such a list); default:
the built-in local openEO backend at http://127.0.0.1:8081/openeo/1.2 with its demo user. Each entry:

    {"endpoint": "https://openeo.example.org/openeo/1.2",      # what clients put in service.endpoint
     "url": "http://...",                                      # optional: where to connect, if different
     "aliases": ["https://openeo.example.org"],                # optional: other spellings clients use
     "auth": {"method": "basic", "username": "u", "password_env": "OPENEO_PW"},
     "max_running_jobs": 2,                                    # queued+running jobs at once; 0 = no limit
     "starts_per_second": 0.2,                                 # job starts per second; 0 = no limit
     "groups": ["eu"]}                                         # optional: group names a service.endpoint may use

`platform` is `openeo` (default) or `ogc_api_process` (an OGC API - Processes server: `endpoint` is its landing
page; `tag_input` optionally names an input of its processes that carries each job's tag, so that a job whose
execution request lost its answer is found again instead of executed twice; see
`upscaling.openeo_backend.ogc_processes`).

`auth.method` is `none`, `basic` (`password`, `password_env` or `password_file`), `oidc_client_credentials`
(`client_id`, `client_secret`/`client_secret_env`/`client_secret_file`, `provider_id`), or one of the per-user
methods (each job runs with its owner's credentials, `upscaling.credentials`): `user_token_exchange` (`token_endpoint`,
`client_id`, `client_secret*`, optional `audience`, `scope`, and the `provider_id` the backend knows) or
`user_refresh_token` (`provider_id`, `client_id`, optional `client_secret*`). Secrets never leave this module
except into the openEO client and the identity provider's token endpoint.

A task's `service.endpoint` names its candidate backends (`Backends.resolve`): one endpoint, a list of them, or a
group name (every backend whose entry lists that group, in configuration order).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upscaling.logs import register_secret

DEFAULT_BACKENDS = [{
    "endpoint": "http://127.0.0.1:8081/openeo/1.2",
    "aliases": ["http://127.0.0.1:8081", "http://localhost:8081", "http://localhost:8081/openeo/1.2"],
    "auth": {"method": "basic", "username": "demo", "password": "demo"},
    "max_running_jobs": 4,
    "starts_per_second": 0,
}]


def normalize_endpoint(url: str) -> str:
    """The canonical spelling of an endpoint URL (lower-case scheme and host, no trailing slash)."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.rstrip("/")
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}".rstrip("/")


def _secret(spec: dict[str, Any], name: str) -> str | None:
    """A credential given inline, by environment variable (`<name>_env`) or by file (`<name>_file`); registered
    for redaction so that it never appears in a log line."""
    value = _read_secret(spec, name)
    register_secret(value)
    return value


def _read_secret(spec: dict[str, Any], name: str) -> str | None:
    if spec.get(name) is not None:
        return str(spec[name])
    if spec.get(f"{name}_env"):
        value = os.environ.get(spec[f"{name}_env"])
        if value is None:
            raise ValueError(f"environment variable {spec[f'{name}_env']} (backend {name}) is not set")
        return value
    if spec.get(f"{name}_file"):
        try:
            return Path(spec[f"{name}_file"]).read_text().strip()
        except OSError as exc:
            raise ValueError(f"backend {name}_file {spec[f'{name}_file']}: {exc.strerror}") from None
    return None


@dataclass(frozen=True)
class BackendAuth:
    """How to authenticate to a backend. `repr` hides the secrets."""

    method: str = "none"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    provider_id: str | None = None
    token_endpoint: str | None = None
    audience: str | None = None
    scope: str | None = None

    @property
    def per_user(self) -> bool:
        """Whether jobs run with their owner's own credentials (a `user_*` method)."""
        return self.method in USER_METHODS


AUTH_METHODS = ("none", "basic", "oidc_client_credentials", "user_token_exchange", "user_refresh_token")
USER_METHODS = frozenset({"user_token_exchange", "user_refresh_token"})
# What each per-user method needs besides `method`.
_REQUIRED = {"user_token_exchange": ("token_endpoint", "client_id", "provider_id"),
             "user_refresh_token": ("client_id", "provider_id")}


OPENEO = "openeo"
OGC_API_PROCESS = "ogc_api_process"
# The platforms a backend may speak; a task's `label` names its backend's platform.
PLATFORMS = (OPENEO, OGC_API_PROCESS)


@dataclass(frozen=True)
class BackendConfig:
    """One backend: an openEO backend, or an OGC API - Processes server (`platform`)."""

    endpoint: str
    url: str
    aliases: tuple[str, ...] = ()
    auth: BackendAuth = field(default_factory=BackendAuth)
    max_running_jobs: int = 0
    starts_per_second: float = 0.0
    platform: str = OPENEO
    tag_input: str = ""
    groups: tuple[str, ...] = ()


def parse_backend(entry: dict[str, Any]) -> BackendConfig:
    """One backend from its JSON entry; ValueError with a message on a bad entry."""
    if not isinstance(entry, dict) or not isinstance(entry.get("endpoint"), str):
        raise ValueError(f"backend entry needs an 'endpoint' string: {entry!r}")
    auth_spec = entry.get("auth") or {"method": "none"}
    method = auth_spec.get("method", "none")
    if method not in AUTH_METHODS:
        raise ValueError(f"backend {entry['endpoint']}: unknown auth method {method!r} "
                         f"(one of {', '.join(AUTH_METHODS)})")
    missing = [name for name in _REQUIRED.get(method, ()) if not auth_spec.get(name)]
    if missing:
        raise ValueError(f"backend {entry['endpoint']}: auth method {method} needs {', '.join(missing)}")
    auth = BackendAuth(
        method=method,
        username=auth_spec.get("username"),
        password=_secret(auth_spec, "password"),
        client_id=auth_spec.get("client_id"),
        client_secret=_secret(auth_spec, "client_secret"),
        provider_id=auth_spec.get("provider_id"),
        token_endpoint=auth_spec.get("token_endpoint"),
        audience=auth_spec.get("audience"),
        scope=auth_spec.get("scope"),
    )
    platform = entry.get("platform", OPENEO)
    if platform not in PLATFORMS:
        raise ValueError(f"backend {entry['endpoint']}: unknown platform {platform!r} (one of {', '.join(PLATFORMS)})")
    tag_input = entry.get("tag_input") or ""
    if not isinstance(tag_input, str) or (tag_input and platform != OGC_API_PROCESS):
        raise ValueError(f"backend {entry['endpoint']}: tag_input is the name of an input of an ogc_api_process "
                         "backend's processes")
    endpoint = normalize_endpoint(entry["endpoint"])
    groups = entry.get("groups", ())
    if not isinstance(groups, list | tuple) or not all(isinstance(g, str) and g.strip() for g in groups):
        raise ValueError(f"backend {entry['endpoint']}: 'groups' must be a list of non-empty names")
    if any("://" in g for g in groups):
        raise ValueError(f"backend {entry['endpoint']}: a group name cannot look like a URL")
    return BackendConfig(
        endpoint=endpoint,
        url=entry.get("url") or endpoint,
        aliases=tuple(normalize_endpoint(a) for a in entry.get("aliases", ())),
        auth=auth,
        max_running_jobs=int(entry.get("max_running_jobs", 0)),
        starts_per_second=float(entry.get("starts_per_second", 0.0)),
        platform=platform,
        tag_input=tag_input,
        groups=tuple(g.strip() for g in groups),
    )


class Backends:
    """The configured backends, looked up by any spelling of their endpoint."""

    def __init__(self, configs: list[BackendConfig]) -> None:
        self.configs = configs
        self._by_name: dict[str, BackendConfig] = {}
        for config in configs:
            for name in (config.endpoint, *config.aliases):
                self._by_name[name] = config

    def find(self, endpoint: str) -> BackendConfig | None:
        """The backend of an endpoint URL as a client wrote it, or None when it is not configured."""
        return self._by_name.get(normalize_endpoint(endpoint))

    def endpoints(self) -> list[str]:
        """Canonical endpoints, for error messages."""
        return [c.endpoint for c in self.configs]

    def per_user(self) -> list[BackendConfig]:
        """The backends whose jobs run with their owners' own credentials."""
        return [c for c in self.configs if c.auth.per_user]

    def group(self, name: str) -> list[BackendConfig]:
        """The backends of a group (configuration order); empty when no backend lists it."""
        return [c for c in self.configs if name in c.groups]

    def group_names(self) -> list[str]:
        """Every configured group name, sorted."""
        return sorted({g for c in self.configs for g in c.groups})

    def resolve(self, endpoint: Any) -> list[BackendConfig]:
        """The candidate backends of a `service.endpoint`: an endpoint URL (any spelling), a group name, or a
        non-empty list of endpoint URLs and group names. ValueError with a message for a client: an unknown
        backend or group, a backend named twice, backends of different platforms."""
        names = endpoint if isinstance(endpoint, list) else [endpoint]
        if not names:
            raise ValueError("service.endpoint is an empty list; name at least one backend")
        found: list[BackendConfig] = []
        for i, name in enumerate(names):
            where = f"service.endpoint[{i}]" if isinstance(endpoint, list) else "service.endpoint"
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"{where} must be a non-empty string (a backend URL or a group name)")
            config = self.find(name)
            members = [config] if config is not None else self.group(name.strip())
            if not members:
                groups = f"; groups: {', '.join(self.group_names())}" if self.group_names() else ""
                raise ValueError(f"{where} {name!r} is not a configured backend or group; configured: "
                                 f"{', '.join(self.endpoints())}{groups}")
            for member in members:
                if any(member is seen for seen in found):
                    raise ValueError(f"{where} {name!r} names backend {member.endpoint} a second time")
                found.append(member)
        platforms = {c.platform for c in found}
        if len(platforms) > 1:
            raise ValueError(f"service.endpoint names backends of different platforms ({', '.join(sorted(platforms))});"
                             " one task runs on one platform")
        return found


def load_backends() -> Backends:
    """Backends from OPENEO_BACKENDS / OPENEO_BACKENDS_FILE, or the local default."""
    raw = os.environ.get("OPENEO_BACKENDS")
    path = os.environ.get("OPENEO_BACKENDS_FILE")
    if raw:
        entries = json.loads(raw)
    elif path:
        entries = json.loads(Path(path).read_text())
    else:
        entries = DEFAULT_BACKENDS
    if not isinstance(entries, list) or not entries:
        raise ValueError("OPENEO_BACKENDS must be a non-empty JSON list")
    return Backends([parse_backend(e) for e in entries])
