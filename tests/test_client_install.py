"""`pip install ./client` in a fresh virtual environment (no server code, no project venv) gives a working
`upscale` that talks to the stack."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import client_support
from tests.client_support import ClientStack
from tests.infra import ROOT

client_stack = client_support.client_stack  # one stack per module


@pytest.mark.timeout(600)
def test_pip_install_client_in_a_fresh_venv(client_stack: ClientStack, tmp_path: Path) -> None:
    source = tmp_path / "client"  # a copy, so the build leaves nothing in the work tree
    shutil.copytree(ROOT / "client", source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)],
                             capture_output=True, text=True, timeout=540, cwd=tmp_path)
    assert install.returncode == 0, install.stderr[-3000:]
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "UPSCALE_ADDRESS": client_stack.grpc, "HOME": str(tmp_path)}
    listed = subprocess.run([str(venv / "bin" / "upscale"), "ls", "--json"], capture_output=True, text=True,
                            timeout=60, env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert isinstance(json.loads(listed.stdout), list)
    grids = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import importlib.util, upscaling_client; "
                            "print(importlib.util.find_spec('upscaling') is None, upscaling_client.__file__)"],
                           capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    alone, location = grids.stdout.split()
    assert alone == "True" and location.startswith(str(venv)), grids.stdout + grids.stderr
