"""Configuration from environment variables (one frozen dataclass, read once per process)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


_PARSERS: dict[type, tuple[Callable[[str], Any], str]] = {
    bool: (_parse_bool, "a boolean"),
    int: (int, "an integer"),
    float: (float, "a number"),
    str: (str, "a string"),
}


def _env(name: str, default: Any) -> Any:
    """The environment variable `name` parsed to the type of `default` (the default when unset or empty)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    parse, kind = _PARSERS[type(default)]
    try:
        return parse(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be {kind}, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """Every setting of every service; each field names its environment variable in `ENV` below."""

    database_url: str = "postgresql://postgres@127.0.0.1:5432/test"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    broker_prefix: str = "upscaling"
    log_level: str = "INFO"
    log_format: str = "json"
    migrate_on_start: bool = True
    tiler_host: str = "0.0.0.0"
    tiler_port: int = 50052
    tiler_address: str = "127.0.0.1:50052"
    tiler_timeout_s: float = 120.0
    max_tiles: int = 100_000
    tiler_workers: int = 2
    gateway_host: str = "0.0.0.0"
    gateway_http_port: int = 8000
    gateway_grpc_port: int = 50051
    gateway_tls_cert: str = ""
    gateway_tls_key: str = ""
    gateway_tls_client_ca: str = ""
    gateway_plaintext_http_port: int = 0
    gateway_plaintext_grpc_port: int = 0
    http_max_body_bytes: int = 16 * 1024 * 1024
    grpc_max_message_bytes: int = 256 * 1024 * 1024
    grpc_grace_s: float = 10.0
    db_pool_min: int = 1
    db_pool_max: int = 10
    max_dimension_values: int = 10_000
    udp_cache_ttl_s: float = 300.0
    udp_fetch_timeout_s: float = 15.0
    udp_allowed_urls: str = ""
    udp_allow_public: bool = True
    udp_max_redirects: int = 3
    outbox_poll_s: float = 1.0
    dispatcher_prefetch: int = 256
    dispatcher_threads: int = 64  # concurrent backend calls per dispatcher (worker threads of the openeo client)
    submit_max_attempts: int = 8
    submit_backoff_base_s: float = 0.5
    submit_backoff_max_s: float = 30.0
    openeo_timeout_s: float = 30.0
    submit_settle_s: float = 5.0
    backend_health_interval_s: float = 5.0  # GET / of every backend by each dispatcher (several-backend tasks)
    backend_drain_failures: int = 3  # consecutive transient errors that drain a backend
    backend_drain_cooldown_s: float = 5.0  # first pause before a drained backend is probed (doubles to 60 s)
    monitor_interval_min_s: float = 1.0
    monitor_interval_max_s: float = 30.0
    monitor_page_size: int = 100
    monitor_threads: int = 8
    reconcile_interval_s: float = 15.0
    reconcile_after_s: float = 120.0
    dead_letter_prefetch: int = 16
    dead_letter_backoff_base_s: float = 1.0
    dead_letter_backoff_max_s: float = 60.0
    dead_letter_max: int = 10
    poison_failures: int = 3
    dispatcher_heartbeat_s: float = 5.0
    health_host: str = "0.0.0.0"
    monitor_health_port: int = 50054
    dispatcher_health_port: int = 50053
    metrics_host: str = "0.0.0.0"
    metrics_port: int = -1  # -1: the service's default (tiler 9101, dispatcher 9102, monitor 9103); 0: none


# Environment variable for each setting.
ENV: dict[str, str] = {
    "database_url": "DATABASE_URL",
    "rabbitmq_url": "RABBITMQ_URL",
    "broker_prefix": "BROKER_PREFIX",
    "log_level": "LOG_LEVEL",
    "log_format": "LOG_FORMAT",
    "migrate_on_start": "MIGRATE_ON_START",
    "tiler_host": "TILER_HOST",
    "tiler_port": "TILER_PORT",
    "tiler_address": "TILER_ADDRESS",
    "tiler_timeout_s": "TILER_TIMEOUT_S",
    "max_tiles": "MAX_TILES",
    "tiler_workers": "TILER_WORKERS",
    "gateway_host": "GATEWAY_HOST",
    "gateway_http_port": "GATEWAY_HTTP_PORT",
    "gateway_grpc_port": "GATEWAY_GRPC_PORT",
    "gateway_tls_cert": "GATEWAY_TLS_CERT",
    "gateway_tls_key": "GATEWAY_TLS_KEY",
    "gateway_tls_client_ca": "GATEWAY_TLS_CLIENT_CA",
    "gateway_plaintext_http_port": "GATEWAY_PLAINTEXT_HTTP_PORT",
    "gateway_plaintext_grpc_port": "GATEWAY_PLAINTEXT_GRPC_PORT",
    "http_max_body_bytes": "HTTP_MAX_BODY_BYTES",
    "grpc_max_message_bytes": "GRPC_MAX_MESSAGE_BYTES",
    "grpc_grace_s": "GRPC_GRACE_S",
    "db_pool_min": "DB_POOL_MIN",
    "db_pool_max": "DB_POOL_MAX",
    "max_dimension_values": "MAX_DIMENSION_VALUES",
    "udp_cache_ttl_s": "UDP_CACHE_TTL_S",
    "udp_fetch_timeout_s": "UDP_FETCH_TIMEOUT_S",
    "udp_allowed_urls": "UDP_ALLOWED_URLS",
    "udp_allow_public": "UDP_ALLOW_PUBLIC",
    "udp_max_redirects": "UDP_MAX_REDIRECTS",
    "outbox_poll_s": "OUTBOX_POLL_S",
    "dispatcher_prefetch": "DISPATCHER_PREFETCH",
    "dispatcher_threads": "DISPATCHER_THREADS",
    "submit_max_attempts": "SUBMIT_MAX_ATTEMPTS",
    "submit_backoff_base_s": "SUBMIT_BACKOFF_BASE_S",
    "submit_backoff_max_s": "SUBMIT_BACKOFF_MAX_S",
    "openeo_timeout_s": "OPENEO_TIMEOUT_S",
    "submit_settle_s": "SUBMIT_SETTLE_S",
    "backend_health_interval_s": "BACKEND_HEALTH_INTERVAL_S",
    "backend_drain_failures": "BACKEND_DRAIN_FAILURES",
    "backend_drain_cooldown_s": "BACKEND_DRAIN_COOLDOWN_S",
    "monitor_interval_min_s": "MONITOR_INTERVAL_MIN_S",
    "monitor_interval_max_s": "MONITOR_INTERVAL_MAX_S",
    "monitor_page_size": "MONITOR_PAGE_SIZE",
    "monitor_threads": "MONITOR_THREADS",
    "reconcile_interval_s": "RECONCILE_INTERVAL_S",
    "reconcile_after_s": "RECONCILE_AFTER_S",
    "dead_letter_prefetch": "DEAD_LETTER_PREFETCH",
    "dead_letter_backoff_base_s": "DEAD_LETTER_BACKOFF_BASE_S",
    "dead_letter_backoff_max_s": "DEAD_LETTER_BACKOFF_MAX_S",
    "dead_letter_max": "DEAD_LETTER_MAX",
    "poison_failures": "POISON_FAILURES",
    "dispatcher_heartbeat_s": "DISPATCHER_HEARTBEAT_S",
    "health_host": "HEALTH_HOST",
    "monitor_health_port": "MONITOR_HEALTH_PORT",
    "dispatcher_health_port": "DISPATCHER_HEALTH_PORT",
    "metrics_host": "METRICS_HOST",
    "metrics_port": "METRICS_PORT",
}


def from_env(cls: type[T], names: dict[str, str]) -> T:
    """An instance of the dataclass `cls` whose fields named in `names` are read from those environment variables
    (parsed to the type of the field's default; the default when unset or empty)."""
    defaults = cls()
    return cls(**{f.name: _env(names[f.name], getattr(defaults, f.name))
                  for f in fields(cls) if f.name in names})


def load_settings() -> Settings:
    """Read every setting from the environment, falling back to the defaults above."""
    settings = from_env(Settings, ENV)
    if settings.max_tiles < 1:
        raise ValueError("MAX_TILES must be at least 1")
    if not -1 <= settings.metrics_port <= 65535:
        raise ValueError("METRICS_PORT must be a port number (0: no metrics endpoint)")
    return settings
