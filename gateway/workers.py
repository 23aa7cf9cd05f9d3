"""The gateway's process model: `GATEWAY_WORKERS` worker processes (default: the CPUs this process may use, capped
by a container's CPU quota), each a whole gateway (HTTP/WebSocket, gRPC, its own events queue and task feeds)
listening on the same ports with SO_REUSEPORT, so the kernel spreads connections over the workers.

The supervisor imports everything, freezes the garbage collector's view of those objects (so the workers share
their pages) and forks the workers; it restarts a worker that dies, forwards SIGTERM/SIGINT to all and exits
with 0 once they stopped gracefully. One worker runs in the process itself, without a supervisor.

Recycling: memory that thousands of watchers fragmented is not all returned to the system when they close, even
after `release_memory` (native allocations of gRPC and zlib interleaved with survivors). A worker whose private
memory, once its watchers left and their memory was released, exceeds what it had the first time it was in
that state (its baseline; a replacement inherits it) by more than GATEWAY_RECYCLE_MB asks the supervisor for a
fresh worker (`check_memory`): the supervisor forks the replacement, gives it RECYCLE_HANDOVER_S to start
serving on the shared ports, then tells the old one to retire (SIGUSR2). The old worker stops as at shutdown
(in-flight requests finish, idle connections are closed and their clients reconnect to the other workers) at
once if it still has no watchers, else as soon as its watchers are gone (`install_retire`): a watcher that
arrived meanwhile is never cut. Only with several workers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import gc
import logging
import math
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("gateway")

WORKERS_ENV = "GATEWAY_WORKERS"
RECYCLE_ENV = "GATEWAY_RECYCLE_MB"
DEFAULT_RECYCLE_MB = 8.0
RECYCLE_HANDOVER_S = 2.0  # the replacement starts serving before the old worker stops
RECYCLE_MIN_AGE_S = 20.0  # a worker younger than this does not ask (no replacement chain)
SUPERVISOR_TICK_S = 0.2
WORKER_HEADER = "x-gateway-worker"  # gRPC initial metadata / WebSocket handshake header: the serving worker
_current = 0
_recycle_fd: int | None = None  # in a worker: the write end of the supervisor's recycle pipe
_started = 0.0  # in a worker: when it started (time.monotonic())
_baseline: int | None = None  # a worker's private memory the first time its watchers' memory was released
_recycle_requested = False
_retire: Callable[[], None] | None = None  # set once the supervisor told this worker to retire (stops it)


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


def recycle_limit_mb() -> float:
    """GATEWAY_RECYCLE_MB (default 8; 0: never recycle); ValueError when not a non-negative number."""
    raw = os.environ.get(RECYCLE_ENV, "").strip()
    if not raw:
        return DEFAULT_RECYCLE_MB
    try:
        limit = float(raw)
    except ValueError:
        limit = -1.0
    if not limit >= 0 or math.isinf(limit):
        raise ValueError(f"{RECYCLE_ENV} must be a non-negative number of megabytes, got {raw!r}")
    return limit


def private_memory(rollup: Path = Path("/proc/self/smaps_rollup")) -> int | None:
    """This process's private memory in bytes (Private_Clean + Private_Dirty); None where unknown."""
    try:
        text = rollup.read_text()
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1]) * 1024
    return total or None


def check_memory(watchers: int) -> None:
    """Called after the memory of closed watchers was released (`release_memory`): the first call records this
    worker's private memory; a later one, while the worker has no watchers, asks the supervisor for a fresh worker
    when it grew by more than GATEWAY_RECYCLE_MB since (once per worker)."""
    global _baseline, _recycle_requested
    if retire_if_idle(watchers):
        return
    if _recycle_fd is None or _recycle_requested or watchers:
        return
    now = private_memory()
    if now is None:
        return
    if _baseline is None:
        _baseline = now
        return
    limit = recycle_limit_mb()
    grown = now - _baseline
    if not limit or grown <= limit * 2**20 or time.monotonic() - _started < RECYCLE_MIN_AGE_S:
        return
    _recycle_requested = True
    log.info("gateway worker memory grew since it was last idle; asking for a fresh worker",
             extra={"worker": _current, "grown_mb": round(grown / 2**20, 1), "limit_mb": limit})
    with contextlib.suppress(OSError):
        os.write(_recycle_fd, f"{os.getpid()}:{_baseline}\n".encode())


def retire_if_idle(watchers: int) -> bool:
    """Stop this worker if it was replaced (told to retire) and has no watchers (left); whether it stops."""
    if _retire is None or watchers:
        return False
    _retire()
    return True


def install_retire(stop: Callable[[], None], watchers: Callable[[], int]) -> None:
    """In a worker (on its running loop): on the supervisor's SIGUSR2 (a replacement serves now), call `stop`
    at once when `watchers()` is 0, else at the first `check_memory` without watchers."""
    loop = asyncio.get_running_loop()

    def retire() -> None:
        global _retire
        _retire = stop
        if not watchers():
            stop()
        else:
            log.info("gateway worker replaced; it stops once its watchers are gone", extra={"worker": _current})

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGUSR2, retire)


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


def _child(index: int, run_worker: Callable[[int], None], recycle_fd: int | None = None,
           baseline: int | None = None) -> None:
    global _current, _recycle_fd, _baseline, _started
    _current = index
    _recycle_fd = recycle_fd
    _started = time.monotonic()
    _baseline = baseline  # a replacement keeps the baseline of the worker it replaces
    code = 0
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # until `install_retire`
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
    recycling = recycle_limit_mb() > 0
    gc.collect()
    gc.freeze()  # objects created so far are never touched by the collector: their pages stay shared
    children: dict[int, int] = {}
    retiring: dict[int, float] = {}  # recycled workers: when to tell them to retire (inf: told)
    stopping = False
    recycle_read, recycle_write = os.pipe()  # workers write "<pid>:<baseline>" lines: replace me
    os.set_blocking(recycle_read, False)

    def spawn(index: int, baseline: int | None = None) -> None:
        pid = os.fork()
        if pid == 0:
            os.close(recycle_read)
            _child(index, run_worker, recycle_write if recycling else None, baseline)
        children[pid] = index

    def recycle(requests: list[bytes]) -> None:
        for raw in requests:
            pid_text, _, baseline = raw.decode(errors="replace").partition(":")
            pid = int(pid_text) if pid_text.isdigit() else 0
            if stopping or pid not in children or pid in retiring:
                continue
            index = children[pid]
            retiring[pid] = time.monotonic() + RECYCLE_HANDOVER_S
            spawn(index, int(baseline) if baseline.isdigit() else None)
            log.info("gateway worker recycled", extra={"worker": index, "old_pid": pid,
                                                       "new_pids": sorted(set(children) - set(retiring))})

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
        # Wake on a recycle request, else every SUPERVISOR_TICK_S to reap workers that ended.
        if select.select([recycle_read], [], [], SUPERVISOR_TICK_S)[0]:
            with contextlib.suppress(BlockingIOError):
                recycle(os.read(recycle_read, 4096).split())
        now = time.monotonic()
        for pid, at in list(retiring.items()):
            if at <= now:  # its replacement serves by now
                retiring[pid] = math.inf
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR2)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                break
            if pid == 0:
                break
            if pid not in children:
                continue
            index = children.pop(pid)
            if on_exit is not None:
                with contextlib.suppress(Exception):
                    on_exit(pid)
            code = os.waitstatus_to_exitcode(status)
            if retiring.pop(pid, None) is not None:
                continue
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
