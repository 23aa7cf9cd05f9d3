"""Settings of the local openEO backend: defaults, ``LOCAL_OPENEO_*`` env vars and CLI flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local_openeo.faults import FaultSpec, parse_fault_spec

ENV_PREFIX = "LOCAL_OPENEO_"
API_VERSION = "1.2.0"
API_PREFIX = "/openeo/1.2"
DEFAULT_UDP_DIR = Path(__file__).resolve().parent / "catalogue"  # the project's own UDPs


def parse_users(value: str | Mapping[str, str]) -> dict[str, str]:
    """Parse ``"alice:secret,bob:pw"`` (or a mapping) into ``{user: password}``."""
    if isinstance(value, Mapping):
        users = {str(k): str(v) for k, v in value.items()}
    else:
        users = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, sep, password = item.partition(":")
            if not sep or not name:
                raise ValueError(f"invalid user {item!r}: expected name:password")
            users[name] = password
    if not users:
        raise ValueError("at least one user is required")
    return users


def parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    if value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if value.strip().lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"invalid boolean {value!r}")


def parse_concurrency_status(value: str | int) -> int:
    status = int(value)
    if status not in (400, 429):
        raise ValueError("concurrency_status must be 400 (ConcurrentJobLimit) or 429 (TooManyRequests)")
    return status


@dataclass
class Settings:
    """All switches; the ones in RUNTIME_KEYS can also be changed through ``PUT /admin/config``."""

    host: str = "127.0.0.1"
    port: int = 8081
    public_url: str | None = None  # base of absolute hrefs; default: the request's own scheme://host
    users: dict[str, str] = field(default_factory=lambda: {"demo": "demo"})
    udp_dir: Path = DEFAULT_UDP_DIR
    admin_token: str | None = None  # admin endpoints exist only when set
    queue_seconds: float = 1.0
    run_seconds: float = 3.0
    max_concurrent: int = 0  # queued+running jobs per user; 0 = unlimited
    concurrency_status: int = 400  # 400 ConcurrentJobLimit or 429 TooManyRequests
    start_rate: float = 0.0  # job starts per second per user; 0 = unlimited
    start_burst: int = 1  # starts allowed at once before the rate applies
    seed: int = 0
    faults: FaultSpec = field(default_factory=dict)
    fault_delay: float = 30.0  # seconds a "delay" fault holds the request
    job_error_fraction: float = 0.0
    udp_fetch_timeout: float = 10.0
    udp_cache_seconds: float = 300.0
    result_size: int = 256  # maximum raster width/height in pixels
    job_costs: float | None = None  # what every ended job reports it cost; None: 0.05 + 0.01 per run second
    costs_in_listing: bool = True  # whether job listings carry costs and usage (as GET /jobs/{id} always does)
    access_log: bool = False
    oidc_issuer: str | None = None  # accept OIDC bearer tokens (`Bearer oidc/<provider>/<JWT>`) of this issuer
    oidc_provider_id: str = "local"  # the provider's id in /credentials/oidc and in the bearer tokens
    oidc_audience: str | None = None  # the audience tokens must carry (default: any)

    def runtime_view(self) -> dict[str, Any]:
        """The runtime-tunable settings as JSON-able dict."""
        return {key: getattr(self, key) for key in RUNTIME_KEYS}

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply validated runtime changes (raises ValueError on unknown keys or bad values)."""
        unknown = set(changes) - set(RUNTIME_KEYS)
        if unknown:
            raise ValueError(f"unknown or read-only settings: {', '.join(sorted(unknown))}")
        parsed = {key: _PARSERS[key](value) for key, value in changes.items()}
        candidate = dataclasses.replace(self, **parsed)
        candidate.validate()
        for key, value in parsed.items():
            setattr(self, key, value)

    def validate(self) -> None:
        if self.queue_seconds < 0 or self.run_seconds < 0:
            raise ValueError("durations must be >= 0")
        if self.max_concurrent < 0 or self.start_rate < 0 or self.start_burst < 1:
            raise ValueError("max_concurrent and start_rate must be >= 0, start_burst >= 1")
        if not 0.0 <= self.job_error_fraction <= 1.0:
            raise ValueError("job_error_fraction must be within [0, 1]")
        if self.fault_delay < 0 or self.udp_fetch_timeout <= 0 or self.udp_cache_seconds < 0:
            raise ValueError("fault_delay and udp_cache_seconds must be >= 0, udp_fetch_timeout > 0")
        if self.job_costs is not None and self.job_costs < 0:
            raise ValueError("job_costs must be >= 0")
        if not 2 <= self.result_size <= 4096:
            raise ValueError("result_size must be within [2, 4096]")
        parse_concurrency_status(self.concurrency_status)


RUNTIME_KEYS = (
    "users",
    "queue_seconds",
    "run_seconds",
    "max_concurrent",
    "concurrency_status",
    "start_rate",
    "start_burst",
    "seed",
    "faults",
    "fault_delay",
    "job_error_fraction",
    "udp_fetch_timeout",
    "udp_cache_seconds",
    "result_size",
    "job_costs",
    "costs_in_listing",
)

_PARSERS: dict[str, Any] = {
    "host": str,
    "port": int,
    "public_url": lambda v: str(v).rstrip("/") or None,
    "users": parse_users,
    "udp_dir": lambda v: Path(v).expanduser().resolve(),
    "admin_token": lambda v: str(v) or None,
    "queue_seconds": float,
    "run_seconds": float,
    "max_concurrent": int,
    "concurrency_status": parse_concurrency_status,
    "start_rate": float,
    "start_burst": int,
    "seed": int,
    "faults": parse_fault_spec,
    "fault_delay": float,
    "job_error_fraction": float,
    "udp_fetch_timeout": float,
    "udp_cache_seconds": float,
    "result_size": int,
    "job_costs": lambda v: None if v is None or v == "" else float(v),
    "costs_in_listing": parse_bool,
    "access_log": parse_bool,
    "oidc_issuer": lambda v: str(v).rstrip("/") or None,
    "oidc_provider_id": str,
    "oidc_audience": lambda v: str(v) or None,
}

_HELP = {
    "host": "interface to bind (default 127.0.0.1)",
    "port": "port to bind; 0 picks a free one (default 8081)",
    "public_url": "base URL used in absolute hrefs (default: scheme://host of each request)",
    "users": "basic-auth users as name:password,... (default demo:demo)",
    "udp_dir": "folder of UDP JSON files served at /udp/<name>.json (default local_openeo/catalogue)",
    "admin_token": "enables /admin/* with this bearer token (default: admin disabled)",
    "queue_seconds": "time a started job stays queued (default 1.0)",
    "run_seconds": "time a job runs before finishing (default 3.0)",
    "max_concurrent": "max queued+running jobs per user, 0 = unlimited (default 0)",
    "concurrency_status": "answer to starts over the limit: 400 ConcurrentJobLimit or 429 (default 400)",
    "start_rate": "job starts per second per user, 0 = unlimited (default 0)",
    "start_burst": "starts allowed back to back before start_rate applies (default 1)",
    "seed": "seed of all fault injection (default 0)",
    "faults": 'JSON {"create_job": {"503": 0.1, "lost": 0.05}} or create_job:503=0.1,get_job:delay=0.2',
    "fault_delay": "seconds a 'delay' fault holds a request before handling it (default 30)",
    "job_error_fraction": "fraction of started jobs that end in error (default 0)",
    "udp_fetch_timeout": "timeout in seconds for fetching a remote UDP (default 10)",
    "udp_cache_seconds": "how long a resolved UDP definition is cached (default 300)",
    "result_size": "max raster width/height of generated results in pixels (default 256)",
    "job_costs": "costs every ended job reports (default: 0.05 + 0.01 per run second)",
    "costs_in_listing": "whether job listings carry costs and usage (default true)",
    "access_log": "log every request (default off)",
    "oidc_issuer": "accept OIDC bearer tokens of this issuer (JWKS-verified; the user is `sub`) (default: off)",
    "oidc_provider_id": "id of that OIDC provider in /credentials/oidc and bearer tokens (default local)",
    "oidc_audience": "audience OIDC tokens must carry (default: any)",
}


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults, overridden by ``LOCAL_OPENEO_<NAME>`` env vars, overridden by ``--<name>`` flags."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m local_openeo",
        description="Local openEO backend for development, tests and benchmarks.",
        epilog=f"Every flag can also be set as env var {ENV_PREFIX}<NAME>, e.g. {ENV_PREFIX}RUN_SECONDS=0.",
    )
    for name in _PARSERS:
        flag = "--" + name.replace("_", "-")
        if name == "access_log":
            parser.add_argument(flag, action="store_const", const="true", default=None, help=_HELP[name])
        else:
            parser.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=_HELP[name])
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for name, parse in _PARSERS.items():
        raw = getattr(args, name)
        source = f"--{name.replace('_', '-')}"
        if raw is None:
            raw = environ.get(ENV_PREFIX + name.upper())
            source = ENV_PREFIX + name.upper()
        if raw is None:
            continue
        try:
            values[name] = parse(raw)
        except (ValueError, json.JSONDecodeError) as exc:
            parser.error(f"{source}: {exc}")
    settings = Settings(**values)
    try:
        settings.validate()
    except ValueError as exc:
        parser.error(str(exc))
    return settings
