"""The `upscale` command line (console entry point of client/) against a real stack: every command, `--json`
output and the exit codes."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
import rasterio
from upscaling_client.cli import ExitCode

from tests import client_support
from tests.client_support import UPSCALE, ClientStack

pytestmark = pytest.mark.timeout(240)

client_stack = client_support.client_stack  # one stack per module


def upscale(stack: ClientStack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([UPSCALE, *args], env=stack.cli_env(**env), capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)


def json_out(result: subprocess.CompletedProcess[str]) -> object:
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def cs(client_stack: ClientStack) -> ClientStack:
    client_stack.backend.reset()
    return client_stack


def test_tiles_run_show_ls_watch_results(cs: ClientStack, tmp_path: Path) -> None:
    aoi = cs.aoi_file(tmp_path)
    tiles = upscale(cs, "tiles", str(aoi), "--grid", "5x5km", "-o", str(tmp_path / "tiles.geojson"), "--json")
    assert tiles.returncode == 0, tiles.stderr
    written = json.loads((tmp_path / "tiles.geojson").read_text())
    assert json_out(tiles)["tiles"] == len(written["features"]) >= 4
    human = upscale(cs, "tiles", str(aoi), "--grid", "5x5km")
    assert human.returncode == 0 and f"{len(written['features'])} tiles of 5x5km in zones 31N, 32N" in human.stdout

    run = upscale(cs, "run", "--udp", cs.udp, "--aoi", str(aoi), "--grid", "5x5km", "-p", "year=2024")
    assert run.returncode == ExitCode.OK, run.stderr
    assert "finished" in run.stdout and "jobs done" in run.stderr  # the progress summary went to stderr
    task_id = int(run.stdout.split()[1])

    run_json = upscale(cs, "run", "--udp", cs.udp, "--aoi", str(aoi), "--grid", "5x5km", "-p", "year=2024",
                       "--json")
    assert run_json.returncode == 0, run_json.stderr
    lines = [json.loads(line) for line in run_json.stdout.splitlines()]
    assert lines[0]["kind"] == "snapshot" and lines[-1]["status"] == "finished"
    assert lines[-1]["job_counts"]["finished"] == lines[-1]["job_count"]

    shown = json_out(upscale(cs, "show", str(task_id), "--json"))
    assert shown["id"] == task_id and shown["status"] == "finished" and len(shown["jobs"]) == shown["job_count"]
    assert upscale(cs, "show", str(task_id), "--jobs").returncode == 0
    listed = json_out(upscale(cs, "ls", "--json", "--status", "finished"))
    assert task_id in [t["id"] for t in listed] and all(t["status"] == "finished" for t in listed)
    assert upscale(cs, "ls").returncode == 0
    watched = upscale(cs, "watch", str(task_id), "--json")
    assert watched.returncode == 0 and json.loads(watched.stdout.splitlines()[0])["kind"] == "snapshot"

    results = upscale(cs, "results", str(task_id), "--json")
    assert results.returncode == 0 and len(json_out(results)["features"]) == shown["job_count"]
    mosaic = upscale(cs, "results", str(task_id), "--download", str(tmp_path / "tiles"), "--mosaic",
                     str(tmp_path / "region.tif"), "--json")
    assert mosaic.returncode == 0, mosaic.stderr
    body = json_out(mosaic)
    assert len(body["downloaded"]) == shown["job_count"] and Path(body["vrt"]).exists()
    with rasterio.open(body["mosaic"]) as src:
        assert src.count == 3 and src.width > 0


def test_exit_codes_of_failures(cs: ClientStack, tmp_path: Path) -> None:
    aoi = cs.aoi_file(tmp_path)
    missing = upscale(cs, "show", "987654321", "--json")
    assert missing.returncode == ExitCode.NOT_FOUND and "987654321" in json_out(missing)["message"]
    bad_grid = upscale(cs, "tiles", str(aoi), "--grid", "3x7km")
    assert bad_grid.returncode == ExitCode.INVALID and "3x7km" in bad_grid.stderr
    assert upscale(cs, "ls", UPSCALE_ADDRESS="127.0.0.1:1").returncode == ExitCode.UNAVAILABLE
    assert upscale(cs, "run", "--aoi", str(aoi)).returncode == ExitCode.USAGE
    assert upscale(cs, "tiles", str(tmp_path / "nope.geojson")).returncode == ExitCode.USAGE
    assert upscale(cs, "run", "--udp", cs.udp, "--aoi", str(aoi), "-p", "novalue").returncode == ExitCode.USAGE

    cs.backend.configure(job_error_fraction=1.0)
    failed = upscale(cs, "run", "--udp", cs.udp, "--aoi", str(aoi), "--grid", "5x5km", "--json")
    assert failed.returncode == ExitCode.TASK_FAILED, failed.stdout[-600:]
    task_id = json_out(failed)["id"]
    cs.backend.configure(job_error_fraction=0)
    retried = upscale(cs, "retry", str(task_id), "--json")
    assert retried.returncode == 0 and json_out(retried)["retried"] == json_out(failed)["job_count"]
    assert upscale(cs, "watch", str(task_id)).returncode == ExitCode.OK


def test_cancel_and_ctrl_c(cs: ClientStack, tmp_path: Path) -> None:
    aoi = cs.aoi_file(tmp_path)
    cs.backend.configure(run_seconds=60)
    created = upscale(cs, "run", "--udp", cs.udp, "--aoi", str(aoi), "--grid", "5x5km", "--no-wait", "--json")
    assert created.returncode == 0
    task_id = json_out(created)["id"]
    canceled = upscale(cs, "cancel", str(task_id), "--json")
    assert canceled.returncode == 0 and json_out(canceled)["id"] == task_id
    assert upscale(cs, "watch", str(task_id)).returncode == ExitCode.TASK_CANCELED

    # Ctrl-C with nobody to answer the question: the task keeps running, exit 130
    proc = subprocess.Popen([UPSCALE, "run", "--udp", cs.udp, "--aoi", str(aoi), "--grid", "5x5km"],
                            env=cs.cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    listed: list = []
    while time.monotonic() < deadline and not listed:
        listed = json_out(upscale(cs, "ls", "--json", "--status", "queued", "--status", "running"))
        time.sleep(0.3)
    assert listed
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    assert "keeps running" in stderr
    running = int(stderr.split("upscale watch ")[1].split()[0])
    assert json_out(upscale(cs, "show", str(running), "--json"))["status"] in ("created", "queued", "running")
    assert upscale(cs, "cancel", str(running)).returncode == 0


def test_ctrl_c_in_a_terminal_asks_and_cancels(cs: ClientStack, tmp_path: Path) -> None:
    """In a (pseudo-)terminal `run` draws the live bar; Ctrl-C asks whether to cancel, and "y" cancels."""
    aoi = cs.aoi_file(tmp_path)
    cs.backend.configure(run_seconds=60)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([UPSCALE, "run", "--udp", cs.udp, "--aoi", str(aoi), "--grid", "5x5km"],
                            env=cs.cli_env(TERM="xterm"), stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    screen = b""

    def read_until(text: bytes, limit_s: float = 60) -> None:
        nonlocal screen
        deadline = time.monotonic() + limit_s
        while text not in screen:
            assert time.monotonic() < deadline and proc.poll() is None, screen.decode(errors="replace")[-2000:]
            if select.select([leader], [], [], 0.2)[0]:
                screen += os.read(leader, 65536)

    try:
        read_until(b"jobs/s")  # the live bar is drawn
        proc.send_signal(signal.SIGINT)
        read_until(b"Cancel task")
        os.write(leader, b"y\n")
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.2)[0]:
                try:
                    screen += os.read(leader, 65536)
                except OSError:
                    break
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        assert code == ExitCode.TASK_CANCELED, screen.decode(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    task_id = int(screen.split(b"task ")[1].split()[0])
    assert json_out(upscale(cs, "show", str(task_id), "--json"))["status"] == "canceled"
