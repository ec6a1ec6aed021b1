"""The project's file-size limit: every module of the package holds at most 300 lines."""

import pathlib

LIMIT = 300
PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "jflows"


def test_every_module_is_at_most_300_lines():
    long = {
        str(path.relative_to(PACKAGE.parent)): n
        for path in sorted(PACKAGE.rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > LIMIT
    }
    assert not long, f"split these modules by responsibility (limit {LIMIT} lines): {long}"
