"""Benchmark of the local openEO backend: ``POST /jobs`` rate against a trivial ``GET`` baseline.

Starts ``python -m local_openeo`` as a subprocess on a free loopback port (zero queue/run durations),
authenticates, then fires requests concurrently with an aiohttp client, bounded by a request count and
a time limit per phase:

1. ``POST /jobs`` with the wind-turbine UDP call (namespace = the server's own UDP catalogue URL),
   each with a unique title tag, as the upscaling dispatcher submits them;
2. baseline ``GET /openeo/1.2/`` (capabilities, a pre-serialised answer) on the same server.

Prints the rates, their ratio and the server's CPU time per request (from /proc), which shows the
server's own capacity independently of the client sharing the machine. Exits 1 when the POST rate is
below ``--min-rate`` (default 1000/s).

    .venv/bin/python bench/bench_local_openeo.py [--requests 20000] [--seconds 10] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
USER, PASSWORD = "bench", "bench"


@dataclass
class Phase:
    name: str
    ok: int
    failed: int
    seconds: float
    server_cpu: float

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        per_request = 1e6 * self.server_cpu / max(1, self.ok + self.failed)
        capacity = (self.ok + self.failed) / self.server_cpu if self.server_cpu else float("inf")
        return (
            f"{self.name:<28} {self.ok:>7} ok {self.failed:>4} failed in {self.seconds:6.2f} s"
            f" = {self.rate:8.0f}/s | server CPU {per_request:6.0f} us/request"
            f" (~{capacity:,.0f}/s per server core)"
        )


def server_cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def start_server() -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "local_openeo",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--users",
        f"{USER}:{PASSWORD}",
        "--queue-seconds",
        "0",
        "--run-seconds",
        "0",
    ]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"listening on (\S+)", line)
    if not match:
        process.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return process, match.group(1)


async def run_phase(
    name: str,
    session: aiohttp.ClientSession,
    pid: int,
    make_request,  # (session, n) -> awaitable status
    expected: int,
    requests: int,
    seconds: float,
    concurrency: int,
) -> Phase:
    counter = iter(range(requests))
    ok = failed = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal ok, failed
        for n in counter:
            if time.perf_counter() > deadline:
                return
            try:
                status = await make_request(session, n)
            except aiohttp.ClientError:
                status = -1
            if status == expected:
                ok += 1
            else:
                failed += 1

    cpu_before = server_cpu_seconds(pid)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return Phase(name, ok, failed, elapsed, server_cpu_seconds(pid) - cpu_before)


async def bench(url: str, pid: int, args: argparse.Namespace) -> tuple[Phase, Phase]:
    api = f"{url}/openeo/1.2"
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        basic = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
        async with session.get(f"{api}/credentials/basic", headers=basic) as response:
            token = (await response.json())["access_token"]
        headers = {"Authorization": f"Bearer basic//{token}", "Content-Type": "application/json"}
        udp_url = f"{url}/udp/wind_turbine_detection.json"
        template = json.dumps(
            {
                "title": "Wind turbines - Processing Job @N@",
                "description": "bench [unit-job:@N@]",
                "process": {
                    "process_graph": {
                        "windturbinedetection1": {
                            "process_id": "wind_turbine_detection",
                            "namespace": udp_url,
                            "arguments": {
                                "spatial_extent": {"west": 14.37, "south": 47.26, "east": 14.41, "north": 47.28},
                                "year": "2024",
                            },
                        },
                        "saveresult1": {
                            "process_id": "save_result",
                            "arguments": {
                                "data": {"from_node": "windturbinedetection1"},
                                "format": "GTiff",
                                "options": {},
                            },
                            "result": True,
                        },
                    }
                },
            }
        ).encode()

        async def post_job(session: aiohttp.ClientSession, n: int) -> int:
            body = template.replace(b"@N@", str(n).encode())
            async with session.post(f"{api}/jobs", data=body, headers=headers) as response:
                await response.read()
                return response.status

        async def get_capabilities(session: aiohttp.ClientSession, n: int) -> int:
            async with session.get(f"{api}/") as response:
                await response.read()
                return response.status

        warmup = min(500, args.requests)
        await run_phase("warm-up", session, pid, post_job, 201, warmup, args.seconds, args.concurrency)
        await run_phase("warm-up", session, pid, get_capabilities, 200, warmup, args.seconds, args.concurrency)
        post = await run_phase("POST /jobs", session, pid, post_job, 201, args.requests, args.seconds, args.concurrency)
        baseline = await run_phase(
            "GET /openeo/1.2/ (baseline)",
            session,
            pid,
            get_capabilities,
            200,
            args.requests,
            args.seconds,
            args.concurrency,
        )
        return post, baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per phase (default 20000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="time limit per phase (default 10)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (default 64)")
    parser.add_argument("--min-rate", type=float, default=1000.0, help="required POST /jobs rate (default 1000)")
    args = parser.parse_args()

    process, url = start_server()
    try:
        post, baseline = asyncio.run(bench(url, process.pid, args))
    finally:
        process.terminate()
        process.wait(timeout=10)
    ratio = post.rate / baseline.rate if baseline.rate else 0.0
    print(f"local openEO backend at {url}: {os.cpu_count()} CPUs, concurrency {args.concurrency}")
    print(post.line())
    print(baseline.line())
    print(f"ratio POST /jobs / baseline: {ratio:.2f}")
    verdict = "OK" if post.rate >= args.min_rate and post.failed == 0 else "BELOW TARGET"
    print(f"POST /jobs rate {post.rate:.0f}/s vs target {args.min_rate:.0f}/s: {verdict}")
    if verdict != "OK":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
