"""`examples/upscaling.ipynb` executed headless (nbclient, a real IPython kernel) against the stack: tiles on a
map, a task run with a progress bar, STAC results, the mosaic drawn on the map."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import rasterio
from nbclient import NotebookClient

from tests import client_support
from tests.client_support import ClientStack
from tests.infra import ROOT

NOTEBOOK = ROOT / "examples" / "upscaling.ipynb"

client_stack = client_support.client_stack  # one stack per module


@pytest.mark.timeout(300)
def test_example_notebook_runs(client_stack: ClientStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client_stack.backend.reset()
    for name, value in {"UPSCALE_ADDRESS": client_stack.grpc, "UPSCALE_BACKEND": client_stack.backend.endpoint,
                        "UPSCALE_UDP": client_stack.udp, "UPSCALE_WORKDIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        "commit the notebook without outputs"
    NotebookClient(notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                   ).execute()
    texts = "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.outputs)
    assert "Job finished with status finished" in texts, texts
    assert "STAC items; first asset: http" in texts
    widgets = {i: [o for o in cell.outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
               for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"}
    cells = {i: notebook.cells[i].source for i in widgets}
    # the tiles map, the progress bar (rich's live display in Jupyter is a widget), the map with the mosaic
    assert [bool(widgets[i]) for i in widgets if "Map(" in cells[i] or "m.add(ImageOverlay" in cells[i]] == [True] * 2
    assert [bool(widgets[i]) for i in widgets if "task.wait(progress=True)" in cells[i]] == [True]
    with rasterio.open(tmp_path / "region.tif") as src:
        west, south, east, north = src.bounds
    assert 14.0 < west < 14.31 and 14.74 < east < 15.1 and 47.0 < south < 47.21 and 47.44 < north < 47.7
