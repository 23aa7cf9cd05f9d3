"""Run the seed notebook (../shared/seed/upscaling_notebook.txt) cell by cell in an IPython shell.

The notebook is an export: code cells start with `In [N]:`, followed by their outputs and markdown. A cell's
code is the longest run of its paragraphs that compiles (outputs and prose do not); top-level `await` is
allowed as in Jupyter. Only the values of named assignments may be replaced (host, endpoint, application).
"""

from __future__ import annotations

import ast
import re
from typing import Any

from tests.shared_data import seed_notebook

NOTEBOOK = seed_notebook()
_CELL = re.compile(r"^In \[\d*\]:\s*$", re.MULTILINE)


def _compiles(source: str) -> bool:
    try:
        compile(source, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        return True
    except SyntaxError:
        return False


def code_cells(text: str | None = None) -> list[str]:
    """The code of every `In [N]:` cell of the notebook export, in order."""
    text = NOTEBOOK.read_text() if text is None else text
    cells = []
    for chunk in _CELL.split(text)[1:]:
        chunk = re.split(r"^## ", chunk, flags=re.MULTILINE)[0]
        paragraphs = re.split(r"\n\s*\n", chunk.strip("\n"))
        code = ""
        for paragraph in paragraphs:
            candidate = f"{code}\n\n{paragraph}" if code else paragraph
            if not _compiles(candidate) or _looks_like_output(paragraph):
                break
            code = candidate
        if code:
            cells.append(code)
    return cells


def _looks_like_output(paragraph: str) -> bool:
    """A repr printed by a cell (e.g. `{'id': 13, ...}`) compiles but is output, not code."""
    first = paragraph.lstrip()
    return first.startswith("{'") or first.startswith("Map(")


def replace_assignments(cell: str, values: dict[str, str]) -> str:
    """Replace the right-hand side of `name = "..."` string assignments; everything else stays verbatim."""
    for name, value in values.items():
        cell = re.sub(rf'^({re.escape(name)}\s*=\s*)"[^"\n]*"', lambda m, v=value: f'{m.group(1)}"{v}"', cell,
                      flags=re.MULTILINE)
    return cell


def run_seed_notebook(dispatch_api: str, openeo: str, tls: bool = False) -> dict[str, Any]:
    """Run every code cell against the gateway at `dispatch_api` (host:port) and the local openEO backend at
    `openeo`; returns the shell's namespace. With `tls`, the notebook's `http://` and `ws://` gateway URLs become
    `https://` and `wss://` (the only other change; trust comes from REQUESTS_CA_BUNDLE / SSL_CERT_FILE)."""
    from IPython.core.interactiveshell import InteractiveShell

    cells = [replace_assignments(cell, {
        "dispatch_api": dispatch_api,
        "endpoint": f"{openeo}/openeo/1.2",
        "application": f"{openeo}/udp/wind_turbine_detection.json",
    }) for cell in code_cells()]
    if tls:
        cells = [c.replace('f"http://{dispatch_api}', 'f"https://{dispatch_api}')
                 .replace('f"ws://{dispatch_api}', 'f"wss://{dispatch_api}') for c in cells]
    assert any("await listen_for_updates()" in cell for cell in cells)
    shell = InteractiveShell.instance()
    for cell in cells:
        result = shell.run_cell(cell)
        assert result.success, f"cell failed: {result.error_before_exec or result.error_in_exec}\n{cell}"
    return shell.user_ns
