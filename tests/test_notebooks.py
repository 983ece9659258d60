"""Every notebook runs top to bottom, offline (the session's hub cache is empty: they fall back to random weights)."""

from pathlib import Path

import os

import nbformat
import pytest
from helpers import QUICK_COMPILE_FLAGS
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    # a notebook trains for real: its kernel compiles as a user's does, with XLA's optimisations
    flags = [flag for flag in os.environ.get("XLA_FLAGS", "").split() if flag not in QUICK_COMPILE_FLAGS]
    monkeypatch.setenv("XLA_FLAGS", " ".join(flags))
    notebook = nbformat.read(path, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{path.name} is committed with outputs; strip them"
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
