"""The notebooks run (in their quick CI setting), and any stored outputs are of one full run.

``python notebooks/refresh.py`` re-executes the notebooks in place with the full settings; the
test below runs the same code (``execute_notebook``) in the quick setting without writing.
"""

import importlib.util
import os
import pathlib

import nbformat
import pytest
from conftest import FAST_COMPILE_XLA_FLAGS

NOTEBOOK_DIR = pathlib.Path(__file__).parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
OUTPUTS_REQUIRED = True
"""Stored notebooks must carry the outputs of one full `python notebooks/refresh.py` run."""


def _refresh_module():
    spec = importlib.util.spec_from_file_location("refresh", NOTEBOOK_DIR / "refresh.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    # the notebooks run as a user runs them: all XLA optimisations on and XLA:CPU's default
    # code generator (tests/conftest.py sets both up for fast compiles in the test processes;
    # the 02 notebook's 1e-7 solves need the optimisations)
    monkeypatch.delenv("JAX_DISABLE_MOST_OPTIMIZATIONS", raising=False)
    flags = os.environ.get("XLA_FLAGS", "").replace(FAST_COMPILE_XLA_FLAGS, "").strip()
    monkeypatch.setenv("XLA_FLAGS", flags)
    notebook = _refresh_module().execute_notebook(path, small=True, timeout=300)
    # raises CellExecutionError, naming the failing cell, on any error
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert notebook.metadata["jflows"]["small"] is True


def stored_output_problems(notebook) -> list[str]:
    """Why the outputs stored in ``notebook`` are not those of `python notebooks/refresh.py`:
    every code cell run once, in order, without errors, with the full settings."""
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code]
    if all(count is None and not cell.outputs for count, cell in zip(counts, code)):
        return ["stored without outputs"] if OUTPUTS_REQUIRED else []
    problems = []
    if counts != list(range(1, len(code) + 1)):
        problems.append(f"cells not run once each in order (execution counts {counts})")
    if any(out.output_type == "error" for cell in code for out in cell.outputs):
        problems.append("stored with an error output")
    if notebook.metadata.get("jflows", {}).get("small") is not False:
        problems.append("outputs not from a full run of python notebooks/refresh.py")
    return problems


def test_stored_outputs_are_of_one_full_run():
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        problems = stored_output_problems(nbformat.read(path, as_version=4))
        assert not problems, f"{path.name}: {'; '.join(problems)}"


def test_stored_output_check_can_fail():
    cells = [nbformat.v4.new_code_cell("1", execution_count=n) for n in (1, 2)]
    notebook = nbformat.v4.new_notebook(cells=cells, metadata={"jflows": {"small": False}})
    assert stored_output_problems(notebook) == []
    notebook.metadata["jflows"]["small"] = True  # the quick setting of the tests
    assert stored_output_problems(notebook) == [
        "outputs not from a full run of python notebooks/refresh.py"
    ]
    cells[1].execution_count = 5  # a cell run twice, or out of order
    assert len(stored_output_problems(notebook)) == 2


def test_refresh_names_unknown_notebooks():
    with pytest.raises(SystemExit, match="no notebook 'nope.ipynb'"):
        _refresh_module().notebook_paths(["nope.ipynb"])
