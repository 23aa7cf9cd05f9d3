"""Structured JSON logging with a correlation id that follows a request through every service; every line is
redacted (bearer tokens, JWTs, Authorization headers, password/secret/token values, URL credentials, and any
secret registered with `register_secret`) before it is written."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


REDACTED = "[REDACTED]"
_SECRET_KEYS = r"authorization|password|passwd|client_secret|secret|api_key|apikey|access_token|refresh_token|token"
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # "Bearer <token>" (a token has a digit or a symbol: plain words such as "bearer token" stay)
    (re.compile(r"(?i)\b(bearer)(\s+)(?=[A-Za-z._~+/=\-]*[0-9._~+/=\-])[A-Za-z0-9._~+/=\-]{6,}"), rf"\1\2{REDACTED}"),
    (re.compile(r"eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"), REDACTED),
    (re.compile(rf"(?i)(\b(?:{_SECRET_KEYS})\\?[\"']?\s*[:=]\s*\\?[\"']?)(?!\[REDACTED\])(?:bearer\s+|basic\s+)?"
                rf"[^\"'\s,&}}\\]+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^:/@\s\"']+):[^@/\s\"']+@"), rf"\1:{REDACTED}@"),
]
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Redact this exact value wherever it would appear in a log line (values shorter than 6 are ignored)."""
    if value and len(value) >= 6:
        _secrets.add(value)


def redact(text: str) -> str:
    """`text` with credentials replaced by [REDACTED]."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats with another formatter, then redacts the whole line (message, extras and traceback alike)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


def new_correlation_id() -> str:
    """A fresh correlation id."""
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message, correlation id and extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        cid = correlation_id.get()
        if cid:
            entry["correlation_id"] = cid
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Route the root logger to stderr, as JSON lines (or plain text when fmt is "text")."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "text":
        formatter = logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")
    else:
        formatter = JsonFormatter(service)
    handler.setFormatter(RedactingFormatter(formatter))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiormq", "aio_pika", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
