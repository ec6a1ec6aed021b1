"""Re-executes the notebooks in place, so that they are stored with the outputs of a full run.

Usage, from the repository root after ``pip install -e ".[notebooks]"``::

    python notebooks/refresh.py                  # every notebooks/*.ipynb, full settings
    python notebooks/refresh.py 03_glow.ipynb    # only the notebooks named
    python notebooks/refresh.py --small --out /tmp/nb   # CI-sized run, written elsewhere

Each notebook runs top to bottom in a fresh ``python3`` kernel with its own directory as the
working directory, and is written back with its outputs. The full settings take several minutes
per notebook on two CPU cores; ``--small`` sets ``JFLOWS_NOTEBOOK_SMALL=1`` (the quick setting
the tests use). A notebook that raises is not written, and the command exits with status 1
after trying the others. The notebook's metadata records how its outputs were made
(``metadata.jflows``), which ``tests/test_notebooks.py`` checks.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = pathlib.Path(__file__).resolve().parent
SMALL_ENV = "JFLOWS_NOTEBOOK_SMALL"
"""The environment variable the notebooks read to run in their quick (CI) setting."""
METADATA_KEY = "jflows"
"""Notebook metadata key that records how the stored outputs were made."""


def notebook_paths(names: list[str] | None = None) -> list[pathlib.Path]:
    """The notebooks in this directory, or those named (file names or paths)."""
    if not names:
        return sorted(HERE.glob("*.ipynb"))
    paths = []
    for name in names:
        path = pathlib.Path(name)
        if not path.exists():
            path = HERE / path.name
        if not path.exists():
            raise SystemExit(f"refresh: no notebook {name!r}; choose from "
                             f"{', '.join(p.name for p in sorted(HERE.glob('*.ipynb')))}")
        paths.append(path)
    return paths


def execute_notebook(
    path: pathlib.Path, *, small: bool = False, timeout: int = 3600
) -> nbformat.NotebookNode:
    """Runs ``path`` in a fresh kernel and returns the notebook with its outputs.

    Args:
        path: the notebook.
        small: run in the quick setting (``JFLOWS_NOTEBOOK_SMALL=1``) instead of the full one.
        timeout: seconds one cell may take.

    Raises:
        CellExecutionError: a cell raised (the error names the cell).
    """
    notebook = nbformat.read(path, as_version=4)
    saved = {key: os.environ.get(key) for key in (SMALL_ENV, "MPLBACKEND")}
    os.environ[SMALL_ENV] = "1" if small else "0"
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend keeps the figures
    try:
        client = NotebookClient(
            notebook, timeout=timeout, kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        )
        client.execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    notebook.metadata[METADATA_KEY] = {"small": small, "refreshed_by": "notebooks/refresh.py"}
    return notebook


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: all)")
    parser.add_argument("--small", action="store_true",
                        help="the quick CI setting (JFLOWS_NOTEBOOK_SMALL=1)")
    parser.add_argument("--out", help="write the executed notebooks to this directory instead")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)
    failed = []
    for path in notebook_paths(args.notebooks):
        start = time.perf_counter()
        try:
            notebook = execute_notebook(path, small=args.small, timeout=args.timeout)
        except CellExecutionError as err:
            print(f"{path.name}: FAILED, not written\n{err}", file=sys.stderr)
            failed.append(path.name)
            continue
        out = pathlib.Path(args.out) / path.name if args.out else path
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, out)
        print(f"{path.name}: {time.perf_counter() - start:.0f} s -> {out}")
    if failed:
        print(f"refresh: {len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
