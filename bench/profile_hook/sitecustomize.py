"""Per-job cost counters for `bench/bench_pipeline.py --profile` (never imported by the product).

The benchmark puts this folder first on a service's PYTHONPATH and sets BENCH_PROFILE_DIR; Python then imports
this module at start-up, before the service's own code. It counts, per process, what a job costs in round
trips and serialisations: every asyncpg statement (by SQL text) and transaction, every broker publish (and its
bytes) and ack, every HTTP request to a backend (by method and path shape), every json.dumps/json.loads. On
SIGUSR1 it writes the counts so far to ``BENCH_PROFILE_DIR/<service>-<pid>-<n>.json`` (the benchmark takes one
snapshot before and one after a phase and divides the difference by the jobs of the phase).
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

_DIR = os.environ.get("BENCH_PROFILE_DIR")
_COUNTS: Counter[str] = Counter()
_LOCK = threading.Lock()
_SNAPSHOTS = [0]
_ID = re.compile(r"/(?:[0-9a-f]{8,}|j-[0-9a-z-]+|\d+)(?=/|$)")


def _count(key: str, n: int = 1) -> None:
    with _LOCK:
        _COUNTS[key] += n


def _sql_key(query: object) -> str:
    return " ".join(str(query).split())[:110]


def _wrap_async(cls: Any, name: str, kind: str) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    async def wrapper(self: Any, query: object = "", *args: Any, **kwargs: Any) -> Any:
        _count(f"sql {kind}: {_sql_key(query)}")
        _count("sql round trips")
        return await original(self, query, *args, **kwargs)

    setattr(cls, name, wrapper)


def _install_asyncpg() -> None:
    import asyncpg.connection
    import asyncpg.prepared_stmt

    for name in ("execute", "executemany", "fetch", "fetchrow", "fetchval", "prepare"):
        _wrap_async(asyncpg.connection.Connection, name, name)
    statement = asyncpg.prepared_stmt.PreparedStatement
    for name in ("fetch", "fetchrow", "fetchval", "executemany"):
        original = getattr(statement, name)

        def make(original: Callable[..., Any], name: str) -> Callable[..., Any]:
            @functools.wraps(original)
            async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
                _count(f"sql prepared.{name}: {_sql_key(self.get_query())}")
                _count("sql round trips")
                return await original(self, *args, **kwargs)

            return wrapper

        setattr(statement, name, make(original, name))


def _install_aio_pika() -> None:
    import aio_pika.exchange
    import aio_pika.message

    publish = aio_pika.exchange.Exchange.publish

    @functools.wraps(publish)
    async def counted_publish(self: Any, message: Any, routing_key: str, *args: Any, **kwargs: Any) -> Any:
        shape = re.sub(r"\d+", "N", routing_key)
        _count(f"broker publish: {self.name.rsplit('.', 1)[-1]} {shape}")
        _count("broker publishes")
        _count("broker bytes published", len(message.body))
        return await publish(self, message, routing_key, *args, **kwargs)

    aio_pika.exchange.Exchange.publish = counted_publish  # type: ignore[method-assign]
    for name in ("ack", "nack", "reject"):
        original = getattr(aio_pika.message.IncomingMessage, name)

        def make(original: Callable[..., Any], name: str) -> Callable[..., Any]:
            @functools.wraps(original)
            async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
                _count(f"broker {name}s")
                return await original(self, *args, **kwargs)

            return wrapper

        setattr(aio_pika.message.IncomingMessage, name, make(original, name))


def _install_requests() -> None:
    import requests

    request = requests.Session.request

    @functools.wraps(request)
    def counted(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        path = str(url).split("?", 1)[0].split("/openeo/", 1)[-1]
        _count(f"http {method.upper()} {_ID.sub('/{id}', path)}")
        _count("http requests")
        return request(self, method, url, *args, **kwargs)

    requests.Session.request = counted  # type: ignore[assignment]


def _install_json() -> None:
    dumps, loads = json.dumps, json.loads

    def counted_dumps(*args: Any, **kwargs: Any) -> str:
        _count("json.dumps")
        return dumps(*args, **kwargs)

    def counted_loads(*args: Any, **kwargs: Any) -> Any:
        _count("json.loads")
        return loads(*args, **kwargs)

    json.dumps = counted_dumps
    json.loads = counted_loads


def _dump(_signum: int, _frame: object) -> None:
    assert _DIR is not None
    with _LOCK:
        counts = dict(_COUNTS)
    _SNAPSHOTS[0] += 1
    name = Path(sys.argv[0]).parent.name or "python"
    target = Path(_DIR) / f"{name}-{os.getpid()}-{_SNAPSHOTS[0]}.json"
    target.write_text(json.JSONEncoder(indent=1, sort_keys=True).encode(counts))


if _DIR:
    _install_json()
    for install in (_install_asyncpg, _install_aio_pika, _install_requests):
        try:
            install()
        except ImportError:
            pass
    signal.signal(signal.SIGUSR1, _dump)
