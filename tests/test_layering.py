"""The layering rule of docs/design.md ("Layering"): a package imports only the layers above it."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jflows"
ORDER = ["kernels", "bijectors", "models", "data", "training", "cli"]
SHARED = {"names", "errors"}  # constants and exceptions every layer may use


def _layer(path: pathlib.Path) -> str | None:
    rel = path.relative_to(ROOT)
    head = rel.parts[0].removesuffix(".py")
    return head if head in ORDER else None


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


FILES = sorted(p for p in ROOT.rglob("*.py") if _layer(p))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_upward_imports(path):
    layer = _layer(path)
    allowed = set(ORDER[: ORDER.index(layer) + 1]) | SHARED
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "jflows" and len(parts) > 1:
            assert parts[1] in allowed, f"{path.name} ({layer}) imports {name}, above its layer"
        if layer == "kernels":
            assert parts[0] != "flax", f"{path.name} is a kernel but imports flax"


def test_the_check_can_fail(tmp_path):
    bad = ROOT / "kernels" / "_layering_probe.py"
    try:
        bad.write_text("import flax\nfrom jflows.models import Flow\n")
        with pytest.raises(AssertionError):
            test_no_upward_imports(bad)
    finally:
        bad.unlink()
