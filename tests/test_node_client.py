"""The Node.js gRPC client example (examples/node) against a whole stack: tiles an AOI, creates a task, follows
WatchTask through a deliberate disconnect (resumed with after_sequence), prints the results."""

from __future__ import annotations

import json
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.full_stack import AOI, FullStack, full_stack
from tests.infra import ROOT, wait_grpc_serving

EXAMPLE = ROOT / "examples" / "node"


@pytest.fixture(scope="module")
def node_stack(infra: Any, service_env: dict[str, str], stack: Any,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullStack]:
    """Jobs queue 0.5 s and run 1 s, 2 at a time: the task lasts long enough to be disconnected from."""
    with full_stack(infra, service_env, stack.tiler_address, tmp_path_factory.mktemp("node-stack"),
                    queue_seconds=0.5, run_seconds=1, max_running_jobs=2) as s:
        yield s


def run_example(s: FullStack, *args: str) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node, "node is missing: scripts/ensure-test-tools.sh installs it"
    assert (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir(), "run `make node-example` (npm ci)"
    return subprocess.run(
        [node, str(EXAMPLE / "upscale.js"), "--gateway", s.grpc, "--endpoint", s.backend.endpoint,
         "--application", s.backend.application, *args],
        capture_output=True, text=True, timeout=300, cwd=EXAMPLE)


def test_node_client_follows_a_task_through_a_disconnect(node_stack: FullStack) -> None:
    result = run_example(node_stack, "--grid", "5x5km", "--disconnect-after", "3", "-p", "year=2024")
    out = result.stdout
    assert result.returncode == 0, f"{out}\n{result.stderr}\n{node_stack.logs()}"
    expected_tiles = node_stack.tiles(AOI, "5x5km")
    tiles_line = re.search(r"^tiles: (\d+) of grid 5x5km: (.+)$", out, re.M)
    assert tiles_line and int(tiles_line.group(1)) == len(expected_tiles) > 1, out
    task_id = int(re.search(r"^created task (\d+): (\d+) jobs", out, re.M).group(1))

    # The deliberate disconnect and the resume from the last sequence seen.
    dropped = re.search(r"^disconnected on purpose after sequence (\d+)$", out, re.M)
    resumed = re.search(r"^resuming after sequence (\d+)$", out, re.M)
    assert dropped and resumed and dropped.group(1) == resumed.group(1), out
    lines = out.splitlines()
    before = [ln for ln in lines[:lines.index(dropped.group(0))] if ln.startswith("[")]
    after = [ln for ln in lines[lines.index(resumed.group(0)):] if ln.startswith("[")]
    assert len(before) == 3 and before[0].startswith("[") and "snapshot" in before[0], out
    assert after and "snapshot" not in " ".join(after), out  # resumed with events, not a new snapshot
    sequences = [int(re.match(r"\[(\d+)\]", ln).group(1)) for ln in before[1:] + after]
    assert sequences == sorted(set(sequences)), "each event once, in order"
    assert sequences[0] == int(re.match(r"\[(\d+)\]", before[0]).group(1)) + 1
    assert sequences == list(range(sequences[0], sequences[-1] + 1)), "no event missed across the disconnect"
    assert re.search(rf"^\[\d+\] task {task_id} finished", out, re.M), out

    # Results: one per tile, each with the backend's job id and asset href.
    summary = json.loads(re.search(r"^summary (\{.*\})$", out, re.M).group(1))
    assert summary == {**summary, "task_id": task_id, "status": "finished", "tiles": len(expected_tiles),
                       "results": len(expected_tiles)}
    result_lines = re.findall(r"^result of job (\d+) \(backend job (\S+)\): (http\S+)$", out, re.M)
    assert len(result_lines) == len(expected_tiles)
    task = requests.get(f"{node_stack.http}/upscale_tasks/{task_id}", timeout=30).json()
    assert task["status"] == "finished"
    assert {int(job_id) for job_id, _, _ in result_lines} == {job["id"] for job in task["jobs"]}


def test_node_client_reports_server_errors(node_stack: FullStack) -> None:
    result = run_example(node_stack, "--grid", "7x7miles")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gRPC error INVALID_ARGUMENT" in result.stderr and "7x7miles" in result.stderr, result.stderr
    usage = run_example(node_stack, "-p", "year")
    assert usage.returncode == 2 and "NAME=VALUE" in usage.stderr


def test_node_client_resumes_after_the_gateway_restarts(node_stack: FullStack) -> None:
    """A stream broken by the server (the gateway stops and comes back) is resumed after the last sequence."""
    node = shutil.which("node")
    assert node
    process = subprocess.Popen(
        [node, str(EXAMPLE / "upscale.js"), "--gateway", node_stack.grpc, "--endpoint", node_stack.backend.endpoint,
         "--application", node_stack.backend.application, "--disconnect-after", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=EXAMPLE)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    out: list[str] = []
    try:
        while not any(re.match(r"\[\d+\] job \d+ running", ln) for ln in out):  # watching a running task
            line = lines.get(timeout=120)
            assert line is not None, "\n".join(out)
            out.append(line)
        gateway = node_stack.processes[0]
        gateway.stop()
        gateway.start()
        wait_grpc_serving(node_stack.grpc, gateway)
        while (line := lines.get(timeout=300)) is not None:
            out.append(line)
        assert process.wait(timeout=30) == 0, "\n".join(out)
    finally:
        if process.poll() is None:
            process.kill()
    text = "\n".join(out)
    broken = re.search(r"^stream broken \((\w+)\); resuming after sequence (\d+)$", text, re.M)
    assert broken, text
    events = [int(m) for m in re.findall(r"^\[(\d+)\] (?:job|task) ", text, re.M)]
    assert events == list(range(events[0], events[-1] + 1)), "no event missed or repeated across the restart"
    assert re.search(r'^summary \{.*"status":"finished"', text, re.M), text
