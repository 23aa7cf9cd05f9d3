"""Watchers benchmark: 1,000 gRPC streams + 1,000 WebSockets on one task whose jobs change status continuously,
against the gateway with GATEWAY_WORKERS workers and, as the baselines of the same run, with one worker and with
the plain WatchTask instead of WatchTaskBatches (several events per stream message, the Python client's default).

Starts, on free loopback ports against the machine's PostgreSQL (a fresh database) and RabbitMQ (private names):
the local openEO backend, the gateway, a monitor, and (once every watcher is connected) a dispatcher limited to
`--starts` job starts per second, so a task of `--jobs` jobs keeps changing for about jobs / starts seconds.
The watchers live in separate client processes (half of each kind per process, each watcher on a TCP connection
of its own); they report their own CPU. WebSockets use `?interval=15` as the seed notebook (and a second run
with `interval=1`).

Printed per run: delay p50/p99/max per kind: gRPC, event time -> receipt of every event; WebSocket, how late
each snapshot arrived against when the gateway was due to send it (the first change after the previous snapshot,
but not before `interval` after it: the throttle is by design), and the terminal snapshot (sent at once) from
its event's time; streams lost (ended without the terminal
state: cancelled, errors, abnormal closes), sequences missed or duplicated (gRPC: each stream must receive
every sequence exactly once and in order; WebSocket: snapshot sequences strictly increasing up to the last),
gateway PSS summed over all its processes (fresh: just started; idle: after a warm-up of 20 + 20 watchers on a
short task and before the run's watchers connect; peak; after the watchers closed), gateway CPU per delivered
message, and the load generator's CPU.

    .venv/bin/python bench/bench_watchers.py [--grpc 1000] [--ws 1000] [--jobs 260] [--starts 3]
        [--workers N (default: CPUs)] [--intervals 15,1] [--plain-intervals 15] [--baseline-intervals 15]

Runs: WatchTaskBatches with N workers for each of --intervals, plain WatchTask with N workers for each of
--plain-intervals, WatchTaskBatches with one worker for each of --baseline-intervals.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_pipeline import _exec, cpu_seconds, create_task, start_local_openeo  # noqa: E402
from tests import infra  # noqa: E402
from tests.infra import ServiceProcess, free_port  # noqa: E402
from tests.support import drop_private_resources  # noqa: E402

OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 1 << 26)]
TERMINAL = ("finished", "failed", "canceled")
LINGER_S = 10.0  # the gateway keeps a task's feed this long after its last watcher (gateway.events_hub)


# ---- client processes ------------------------------------------------------------------------------------------

def client_main(args: argparse.Namespace) -> int:
    """One load-generator process: `--count` watchers of one kind; writes its results to `--out`."""
    from upscaling import event_loop

    results: dict[str, Any] = {}
    event_loop.run(_client(args, results))
    Path(args.out + ".delays").write_bytes(results.pop("delays").tobytes())
    Path(args.out).write_text(json.dumps(results))
    return 0


async def _client(args: argparse.Namespace, results: dict[str, Any]) -> None:
    ready = 0
    delays = array.array("d")  # gRPC: receipt - event time, seconds
    ws_receipts: list[list[tuple[int, float]]] = []  # WebSocket: (snapshot sequence, receipt time) per socket
    counts: dict[str, Any] = {"lost": 0, "missed": 0, "duplicated": 0, "messages": 0, "events": 0, "errors": []}
    connected = asyncio.Event()

    def one_ready() -> None:
        nonlocal ready
        ready += 1
        if ready == args.count:
            connected.set()

    async def grpc_watcher() -> None:
        import grpc

        from upscaling.v1 import upscaling_pb2, upscaling_pb2_grpc

        async with grpc.aio.insecure_channel(args.address, options=OWN_CONNECTION) as channel:
            stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
            expected, first, terminal = -1, True, False
            if args.form == "batches":
                call: Any = stub.WatchTaskBatches(upscaling_pb2.WatchTaskBatchesRequest(task_id=args.task),
                                                  timeout=3600)
            else:
                call = stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=args.task), timeout=3600)
            try:
                async for message in call:
                    now = time.time()
                    counts["messages"] += 1
                    for item in (message.events if args.form == "batches" else (message,)):
                        counts["events"] += 1
                        if first:
                            first = False
                            expected = item.sequence + 1
                            one_ready()
                            continue
                        kind = item.WhichOneof("update")
                        stamp = item.job_event.time if kind == "job_event" else item.task_event.time
                        delays.append(now - stamp.seconds - stamp.nanos / 1e9)
                        if item.sequence < expected:
                            counts["duplicated"] += 1
                        else:
                            counts["missed"] += item.sequence - expected
                            expected = item.sequence + 1
                        terminal = kind == "task_event" and item.task_event.status in (4, 5, 6)
            except grpc.aio.AioRpcError as exc:
                counts["errors"].append(exc.code().name)
            if not terminal:
                counts["lost"] += 1
                if first:
                    one_ready()

    async def ws_watcher() -> None:
        import websockets

        receipts: list[tuple[int, float]] = []
        ws_receipts.append(receipts)
        terminal = first = False
        try:
            async with websockets.connect(f"ws://{args.address}/ws/upscale_tasks/{args.task}?interval={args.interval}",
                                          max_size=None, open_timeout=120) as ws:  # deflate, as the notebook
                async for text in ws:
                    now = time.time()
                    counts["messages"] += 1
                    counts["events"] += 1
                    if not isinstance(text, str) or not text.startswith('{"type":"status"'):
                        continue
                    # no full parse: the task status is the body's 4th key, its sequence its last one
                    at = text.rfind('"sequence":')
                    sequence = int(text[at + 11:text.index("}", at)])
                    status = text[text.index('"status":"') + 10:][:8]
                    receipts.append((sequence, now))
                    terminal = status.startswith(TERMINAL)
                    if not first:
                        first = True
                        one_ready()
        except Exception as exc:  # every way a socket ends early counts as lost
            counts["errors"].append(type(exc).__name__)
        if not terminal:
            counts["lost"] += 1
            if not first:
                one_ready()

    watcher = grpc_watcher if args.client == "grpc" else ws_watcher
    tasks = []
    for _ in range(args.count):
        tasks.append(asyncio.ensure_future(watcher()))
        await asyncio.sleep(0.002)
    await connected.wait()
    print("ready", flush=True)
    cpu0 = time.process_time()
    await asyncio.gather(*tasks)
    counts["cpu_s"] = time.process_time() - cpu0
    counts["errors"] = sorted(set(counts["errors"]))
    results.update(counts)
    results["delays"] = delays
    if args.client == "ws":
        results["receipts"] = ws_receipts


# ---- the run -----------------------------------------------------------------------------------------------------

def pss_bytes(pid: int) -> int:
    """Proportional set size of a process (shared pages counted once over the processes sharing them)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pss_parts(pids: list[int]) -> str:
    """Anonymous (heap) and file-backed (code, libraries) PSS of processes, in MB, for the progress lines."""
    parts = {"Pss_Anon:": 0, "Pss_File:": 0}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                key = line.split(" ", 1)[0]
                if key in parts:
                    parts[key] += int(line.split()[1]) * 1024
        except OSError:
            pass
    return f"anonymous {parts['Pss_Anon:'] / 2**20:.0f}, files {parts['Pss_File:'] / 2**20:.0f}"


def gateway_pids(gateway: ServiceProcess) -> list[int]:
    assert gateway.process is not None
    pid = gateway.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(p) for p in children.read_text().split()] if children.exists() else []
    return [pid, *kids]


@dataclass
class Run:
    workers: int
    interval: float
    form: str  # the gRPC watchers' RPC: "batches" (WatchTaskBatches) or "plain" (WatchTask)
    grpc: dict[str, Any] = field(default_factory=dict)
    ws: dict[str, Any] = field(default_factory=dict)
    pss_fresh: int = 0
    pss_idle: int = 0
    pss_peak: int = 0
    pss_after: int = 0
    gateway_cpu_s: float = 0.0
    change_s: float = 0.0
    events: int = 0
    load: float = 0.0  # mean 1-minute load average while the jobs changed


def percentiles(values: list[float] | array.array) -> tuple[float, float, float]:
    data = sorted(values)
    if not data:
        return (float("nan"),) * 3
    return (data[len(data) // 2], data[min(len(data) - 1, int(len(data) * 0.99))], data[-1])


class Stack:
    """The local backend, monitor and gateway of the benchmark (the gateway restarted per worker count)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.admin_url = os.environ.get("DATABASE_URL", infra.DEFAULT_DATABASE_URL)
        self.db_name = f"upscaling_bench_{uuid.uuid4().hex[:8]}"
        asyncio.run(_exec(self.admin_url, f'CREATE DATABASE "{self.db_name}"'))
        self.db_url = infra.with_database(self.admin_url, self.db_name)
        self.logs = Path(tempfile.mkdtemp(prefix="bench-watchers-"))
        self.backend = start_local_openeo("watchers")
        self.openeo_url = self.backend.url
        self.backend.admin("PUT", "config", {"queue_seconds": args.queue_s, "run_seconds": args.run_s,
                                                 "job_error_fraction": 0.1})
        self.http_port, self.grpc_port = free_port(), free_port()
        self.env = {
            **os.environ, "DATABASE_URL": self.db_url,
            "RABBITMQ_URL": os.environ.get("RABBITMQ_URL", infra.DEFAULT_RABBITMQ_URL),
            "BROKER_PREFIX": f"bench_{uuid.uuid4().hex[:8]}", "LOG_LEVEL": "WARNING", "MAX_WATCHES_PER_USER": "0",
            "GATEWAY_HOST": "127.0.0.1", "GATEWAY_HTTP_PORT": str(self.http_port),
            "GATEWAY_GRPC_PORT": str(self.grpc_port), "TILER_ADDRESS": f"127.0.0.1:{free_port()}",
            "DISPATCHER_HEALTH_PORT": str(free_port()), "MONITOR_HEALTH_PORT": str(free_port()),
            "MONITOR_INTERVAL_MIN_S": "0.5", "MONITOR_INTERVAL_MAX_S": "2", "METRICS_PORT": "0", "DB_POOL_MAX": "5",
            "UDP_ALLOWED_URLS": f"{self.openeo_url}/udp/",
            "OPENEO_BACKENDS": json.dumps([{"endpoint": f"{self.openeo_url}/openeo/1.2", "auth": {
                "method": "basic", "username": "demo", "password": "demo"}, "starts_per_second": args.starts}])}
        self.monitor = ServiceProcess("monitor", "services.monitor", {**self.env, "MIGRATE_ON_START": "false"},
                                      self.logs / "monitor.log")
        self.gateway: ServiceProcess | None = None
        self.workers = 0
        self.pss_fresh = 0

    def start_gateway(self, workers: int) -> ServiceProcess:
        """A fresh gateway of `workers` workers, warmed up by a few watchers of a short task (so that its idle
        memory is that of a gateway that has served watchers before, not of one that never did)."""
        if self.gateway is not None:
            self.gateway.stop()
        extra = dict(item.split("=", 1) for item in self.args.gateway_env)
        self.gateway = ServiceProcess("gateway", "gateway", {**self.env, "GATEWAY_WORKERS": str(workers), **extra},
                                      self.logs / f"gateway-{workers}.log")
        self.gateway.start()
        self.workers = workers
        infra.wait_grpc_serving(f"127.0.0.1:{self.grpc_port}", self.gateway)
        if not self.monitor.process:
            self.monitor.start()
        time.sleep(3)  # every worker up (they bind the ports at slightly different times)
        self.pss_fresh = sum(pss_bytes(p) for p in gateway_pids(self.gateway))
        task_id = self.create_task(5, "bench warm-up")
        clients = self.spawn_clients(task_id, 20, 20, 1.0, self.logs / f"warm-up-{workers}")
        self.stub().CancelTask(self.pb().CancelTaskRequest(task_id=task_id), timeout=60)
        for _, _, process in clients:
            process.wait(timeout=120)
        time.sleep(LINGER_S + 5)
        return self.gateway

    def stub(self) -> Any:
        import grpc

        from upscaling.v1 import upscaling_pb2_grpc

        channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}",
                                        options=[("grpc.max_send_message_length", 1 << 28)])
        return upscaling_pb2_grpc.UpscalingServiceStub(channel)

    @staticmethod
    def pb() -> Any:
        from upscaling.v1 import upscaling_pb2

        return upscaling_pb2

    def create_task(self, jobs: int, title: str) -> int:
        return create_task(self.stub(), self.backend, jobs, title)

    def spawn_clients(self, task_id: int, n_grpc: int, n_ws: int, interval: float, out: Path, form: str = "batches"
                      ) -> list[tuple[str, str, subprocess.Popen[str]]]:
        """Client processes (`--client-processes` per kind) watching a task; returned once all are connected."""
        clients = []
        for kind, total, address in (("grpc", n_grpc, f"127.0.0.1:{self.grpc_port}"),
                                     ("ws", n_ws, f"127.0.0.1:{self.http_port}")):
            for i, count in enumerate(_split(total, self.args.client_processes)):
                if count:
                    path = f"{out}-{kind}-{i}.json"
                    clients.append((kind, path, subprocess.Popen(
                        [sys.executable, __file__, "--client", kind, "--count", str(count), "--task", str(task_id),
                         "--address", address, "--interval", f"{interval:g}", "--out", path, "--form", form],
                        cwd=REPO, stdout=subprocess.PIPE, text=True, env=self.env)))
        for _, _, process in clients:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.strip() == "ready", f"a client process did not get ready: {line!r}"
        return clients

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        self.monitor.stop()
        self.backend.stop()
        # the run's broker names (`BROKER_PREFIX`: exchanges, the jobs and dead-letter queues) and its database
        asyncio.run(drop_private_resources(self.admin_url, self.db_name, self.env["RABBITMQ_URL"],
                                           self.env["BROKER_PREFIX"]))

    def run(self, workers: int, interval: float, form: str) -> Run:
        args = self.args
        result = Run(workers, interval, form)
        if self.gateway is None or self.workers != workers:
            self.start_gateway(workers)
        gateway = self.gateway
        assert gateway is not None
        result.pss_fresh = self.pss_fresh
        self.backend.admin("POST", "reset", {"jobs": True, "counters": False})
        task_id = self.create_task(args.jobs, f"bench watchers {workers}w {interval}s {form}")
        time.sleep(2)
        result.pss_idle = sum(pss_bytes(p) for p in gateway_pids(gateway))
        print(f"  {workers} worker(s), interval={interval:g}, gRPC {form}: task {task_id} ({args.jobs} jobs); "
              f"gateway PSS idle {result.pss_idle / 2**20:.0f} MB ({pss_parts(gateway_pids(gateway))}); "
              f"connecting {args.grpc} gRPC + {args.ws} WebSocket "
              f"watchers ...", flush=True)
        clients = self.spawn_clients(task_id, args.grpc, args.ws, interval,
                                     self.logs / f"run-{workers}-{interval:g}-{form}", form)
        peak = sum(pss_bytes(p) for p in gateway_pids(gateway))
        print(f"  every watcher connected (gateway PSS {peak / 2**20:.0f} MB); dispatching ...", flush=True)
        pids = gateway_pids(gateway)
        cpu0 = sum(cpu_seconds(p) for p in pids)
        dispatcher = ServiceProcess("dispatcher", "services.dispatcher", {**self.env, "MIGRATE_ON_START": "false"},
                                    self.logs / f"dispatcher-{workers}-{interval:g}.log")
        dispatcher.start()
        t0 = time.monotonic()
        try:
            loads = []
            while any(p.poll() is None for _, _, p in clients):
                peak = max(peak, sum(pss_bytes(p) for p in pids))
                loads.append(os.getloadavg()[0])
                time.sleep(0.5)
                if time.monotonic() - t0 > 1800:
                    raise TimeoutError("the task did not end within 30 minutes")
        finally:
            dispatcher.stop()
        result.change_s = time.monotonic() - t0
        result.load = sum(loads) / max(1, len(loads))
        result.gateway_cpu_s = sum(cpu_seconds(p) for p in pids) - cpu0
        result.pss_peak = peak
        time.sleep(LINGER_S + 5)
        result.pss_after = sum(pss_bytes(p) for p in gateway_pids(gateway))
        print(f"  watchers closed: gateway PSS {result.pss_after / 2**20:.0f} MB ({pss_parts(gateway_pids(gateway))})",
              flush=True)
        times = asyncio.run(_event_times(self.db_url, task_id))
        result.events = len(times)
        for kind, path, _ in clients:
            part = json.loads(Path(path).read_text())
            into = result.grpc if kind == "grpc" else result.ws
            for key in ("lost", "missed", "duplicated", "messages", "events", "cpu_s"):
                into[key] = into.get(key, 0) + part[key]
            into.setdefault("errors", set()).update(part["errors"])
            if kind == "grpc":
                delays = array.array("d")
                delays.frombytes(Path(path + ".delays").read_bytes())
                into.setdefault("delays", array.array("d")).extend(delays)
            else:
                last = max(times)
                for receipts in part["receipts"]:
                    seqs = [s for s, _ in receipts]
                    into["duplicated"] += len(seqs) - len(set(seqs)) + sum(b < a for a, b in itertools.pairwise(seqs))
                    into["missed"] += 0 if seqs and seqs[-1] == last else 1
                    into.setdefault("delays", []).extend(ws_delays(receipts, times, interval))
                    if seqs and seqs[-1] == last:
                        into.setdefault("terminal", []).append(receipts[-1][1] - times[last])
        return result


def ws_delays(receipts: list[tuple[int, float]], times: dict[int, float], interval: float) -> list[float]:
    """How late each snapshot after the first arrived against when the gateway was due to send it: the first
    change after the initial snapshot at once, later ones at the first change after the previous snapshot but
    not before `interval` after it (the throttle) — 0 when the snapshot was exactly on time."""
    out = []
    for k in range(1, len(receipts)):
        (prev_seq, prev_at), (_, at) = receipts[k - 1], receipts[k]
        first_change = times.get(prev_seq + 1)
        if first_change is None:
            continue
        due = first_change if k == 1 else max(first_change, prev_at + interval)
        out.append(max(0.0, at - due))
    return out


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def _event_times(db_url: str, task_id: int) -> dict[int, float]:
    """Sequence -> event time of every stored event of the task."""
    import asyncpg

    from upscaling.v1 import upscaling_pb2

    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch("SELECT sequence, payload FROM task_events WHERE task_id = $1", task_id)
    finally:
        await conn.close()
    out = {}
    for row in rows:
        event = upscaling_pb2.WatchTaskResponse.FromString(row["payload"])
        kind = event.WhichOneof("update")
        stamp = event.job_event.time if kind == "job_event" else event.task_event.time
        out[row["sequence"]] = stamp.seconds + stamp.nanos / 1e9
    return out


FORMS = {"batches": "WatchTaskBatches", "plain": "WatchTask"}


def report(runs: list[Run], args: argparse.Namespace) -> bool:
    def ms(value: float) -> str:
        return f"{value * 1000:.0f}"

    def p99(values: Any) -> float:
        return percentiles(values)[1]

    print(f"\n{args.grpc} gRPC + {args.ws} WebSocket watchers, one task of {args.jobs} jobs "
          f"({args.starts:g} starts/s; queued {args.queue_s:g} s, running {args.run_s:g} s, 10 % fail); "
          f"clients in {2 * args.client_processes} processes")
    print("| gateway workers | gRPC RPC | WS interval | jobs changing | events | kind | delay p50 / p99 / max (ms) | "
          "lost | missed / duplicated | messages (events) | client CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        for kind, data, delays in (("gRPC", r.grpc, r.grpc.get("delays", [])),
                                   ("WebSocket", r.ws, r.ws.get("delays", [])),
                                   ("WebSocket terminal", r.ws, r.ws.get("terminal", []))):
            p50, p99_, top = percentiles(delays)
            print(f"| {r.workers} | {FORMS[r.form]} | {r.interval:g} s | {r.change_s:.0f} s | "
                  f"{r.events} ({r.events / max(1e-9, r.change_s):.0f}/s) | {kind} | {ms(p50)} / {ms(p99_)} / "
                  f"{ms(top)} | {data.get('lost', 0)}"
                  f"{' (' + ', '.join(sorted(data['errors'])) + ')' if data.get('errors') else ''} | "
                  f"{data.get('missed', 0)} / {data.get('duplicated', 0)} | {data.get('messages', 0)} "
                  f"({data.get('events', 0)}) | {data.get('cpu_s', 0):.1f} s |")
    print("\n| gateway workers | gRPC RPC | WS interval | PSS fresh / idle / peak / after close (MB) | gateway CPU | "
          "CPU per message | CPU per event delivered |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        messages = r.grpc.get("messages", 0) + r.ws.get("messages", 0)
        events = r.grpc.get("events", 0) + r.ws.get("events", 0)
        print(f"| {r.workers} | {FORMS[r.form]} | {r.interval:g} s | {r.pss_fresh / 2**20:.0f} / "
              f"{r.pss_idle / 2**20:.0f} / {r.pss_peak / 2**20:.0f} / {r.pss_after / 2**20:.0f} | "
              f"{r.gateway_cpu_s:.1f} s | {1e6 * r.gateway_cpu_s / max(1, messages):.0f} us | "
              f"{1e6 * r.gateway_cpu_s / max(1, events):.1f} us |")
    ok = True
    one_worker = {r.interval: r for r in runs if r.workers == 1 and r.form == "batches"}
    plain = {r.interval: r for r in runs if r.workers == args.workers and r.form == "plain"}
    for r in runs:
        if r.form != "batches" or (r.workers == 1 and args.workers != 1):
            continue
        p99s = [p99(d) for d in (r.grpc.get("delays", []), r.ws.get("delays", []), r.ws.get("terminal", []))]
        good = (all(p < 0.2 for p in p99s) and not r.grpc.get("lost") and not r.ws.get("lost")
                and not r.grpc.get("missed") and not r.grpc.get("duplicated") and not r.ws.get("duplicated")
                and r.pss_peak < 300 * 2**20 and r.pss_after <= 1.1 * r.pss_idle)
        ok = ok and good
        for name, base in (("1 worker", one_worker.get(r.interval)), ("plain WatchTask", plain.get(r.interval))):
            if base is None or base is r:
                continue
            ratios = [p99(b_.get("delays", [])) / max(1e-9, p99(r_.get("delays", [])))
                      for b_, r_ in ((base.grpc, r.grpc), (base.ws, r.ws))]
            cpu = base.gateway_cpu_s / max(1e-9, r.gateway_cpu_s)
            print(f"\n{r.workers} workers, WatchTaskBatches vs {name} (interval {r.interval:g} s): p99 gRPC "
                  f"{ratios[0]:.1f}x lower, WebSocket {ratios[1]:.1f}x lower; gateway CPU {cpu:.1f}x less")
    print(f"\nTargets (p99 < 200 ms both kinds, 0 lost, 0 missed/duplicated, PSS < 300 MB, after close within 10 % "
          f"of idle; {args.workers} workers, WatchTaskBatches): {'met' if ok else 'NOT met'}")
    print(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())} (2 shared cores)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpc", type=int, default=1000)
    parser.add_argument("--ws", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=260)
    parser.add_argument("--starts", type=float, default=3.0, help="job starts per second (the dispatcher's limit)")
    parser.add_argument("--queue-s", type=float, default=1.0, help="seconds a started job stays queued")
    parser.add_argument("--run-s", type=float, default=1.5, help="seconds a job runs")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--intervals", default="15,1", help="WebSocket intervals with --workers workers")
    parser.add_argument("--plain-intervals", default="15",
                        help="WebSocket intervals with --workers workers and gRPC watchers on plain WatchTask")
    parser.add_argument("--baseline-intervals", default="15", help="WebSocket intervals with one worker")
    parser.add_argument("--client-processes", type=int, default=2, help="client processes per kind")
    parser.add_argument("--gateway-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable of the gateway only (e.g. an allocator setting to compare)")
    # client mode (internal)
    parser.add_argument("--client", choices=("grpc", "ws"))
    parser.add_argument("--count", type=int)
    parser.add_argument("--task", type=int)
    parser.add_argument("--address")
    parser.add_argument("--interval", default="15")
    parser.add_argument("--out")
    parser.add_argument("--form", choices=tuple(FORMS), default="batches")
    args = parser.parse_args()
    if args.client:
        return client_main(args)

    stack = Stack(args)
    runs = []
    try:
        def intervals(text: str) -> list[float]:
            return [float(i) for i in text.split(",") if i]

        plan = [(args.workers, i, "batches") for i in intervals(args.intervals)]
        plan += [(args.workers, i, "plain") for i in intervals(args.plain_intervals)]
        if args.workers != 1:
            plan += [(1, i, "batches") for i in intervals(args.baseline_intervals)]
        print(f"Watchers benchmark: {len(plan)} runs {plan} (workers, WebSocket interval, gRPC form)", flush=True)
        for workers, interval, form in plan:
            runs.append(stack.run(workers, interval, form))
            print(f"  load average (1 min) during the run: {runs[-1].load:.1f}", flush=True)
    finally:
        stack.close()
    report(runs, args)
    print(f"load average (1 min) during each run: {', '.join(f'{r.load:.1f}' for r in runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
