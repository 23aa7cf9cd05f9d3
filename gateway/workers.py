"""The gateway's process model: `GATEWAY_WORKERS` worker processes (default: the CPUs this process may use, capped
by a container's CPU quota), each a whole gateway (HTTP/WebSocket, gRPC, its own events queue and task feeds)
listening on the same ports with SO_REUSEPORT, so the kernel spreads connections over the workers.

The supervisor imports everything, freezes the garbage collector's view of those objects (so the workers share
their pages) and forks the workers; it restarts a worker that dies, forwards SIGTERM/SIGINT to all and exits
with 0 once they stopped gracefully. One worker runs in the process itself, without a supervisor.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import gc
import logging
import math
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("gateway")

WORKERS_ENV = "GATEWAY_WORKERS"
WORKER_HEADER = "x-gateway-worker"  # gRPC initial metadata / WebSocket handshake header: the serving worker
_current = 0


def current() -> int:
    """This process's worker index (0 with a single worker)."""
    return _current


def available_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a container's CPU limit)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    return max(1, cpus)


def worker_count() -> int:
    """GATEWAY_WORKERS, or the CPUs available; ValueError when not a positive integer."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if not raw:
        return available_cpus()
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{WORKERS_ENV} must be a positive integer, got {raw!r}")
    return count


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEPORT (every worker binds its own; the kernel balances)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


ALLOCATOR_ENV = "GATEWAY_PYMALLOC"


def use_system_allocator() -> None:
    """Run the gateway on the C library's allocator rather than Python's own small-object allocator, unless
    GATEWAY_PYMALLOC=true or PYTHONMALLOC is set: re-executes the same command with PYTHONMALLOC=malloc (which
    takes effect only at interpreter start). Why: 1,000s of watchers leave Python's 1 MiB arenas fragmented after
    they close, and Python returns an arena only when all of it is free (measured: PSS after close +33 % over
    idle); glibc's malloc_trim (`release_memory`) returns every free page (+10 %)."""
    if os.environ.get("PYTHONMALLOC") or os.environ.get(ALLOCATOR_ENV, "").strip().lower() in ("1", "true", "yes"):
        return
    if not sys.platform.startswith("linux") or not getattr(sys, "orig_argv", None):
        return
    os.environ["PYTHONMALLOC"] = "malloc"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


def release_memory() -> None:
    """Give the memory freed by closed watchers back to the system: a full collection, then glibc's malloc_trim
    (freed heap pages otherwise stay in the process; no-op where there is no glibc)."""
    gc.collect()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).malloc_trim(0)


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervisor dies (never leave orphans holding the ports)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _child(index: int, run_worker: Callable[[int], None]) -> None:
    global _current
    _current = index
    code = 0
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        _die_with_parent()
        run_worker(index)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run(count: int, run_worker: Callable[[int], None], on_exit: Callable[[int], None] | None = None) -> int:
    """Run `count` workers (`run_worker(index)` each) until SIGTERM/SIGINT; returns the exit code. `on_exit(pid)`
    is called for every worker that ended."""
    if count == 1:
        run_worker(0)
        return 0
    gc.collect()
    gc.freeze()  # objects created so far are never touched by the collector: their pages stay shared
    children: dict[int, int] = {}
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            _child(index, run_worker)
        children[pid] = index

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(count):
        spawn(index)
    log.info("gateway workers started", extra={"workers": count, "pids": sorted(children)})
    exit_code = 0
    recent: collections.deque[float] = collections.deque()
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        index = children.pop(pid)
        if on_exit is not None:
            with contextlib.suppress(Exception):
                on_exit(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            exit_code = exit_code or (code if code > 0 else 0)
            continue
        now = time.monotonic()
        recent.append(now)
        while recent and recent[0] < now - 60:
            recent.popleft()
        if len(recent) > 3 * count:
            log.error("gateway workers keep failing; stopping", extra={"worker": index, "exit_code": code})
            exit_code = 1
            stop(signal.SIGTERM, None)
            continue
        log.error("gateway worker exited; restarting it", extra={"worker": index, "exit_code": code})
        time.sleep(1.0)
        if not stopping:
            spawn(index)
    return exit_code
