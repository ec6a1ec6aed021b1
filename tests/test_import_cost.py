"""Importing jflows leaves out the heavy libraries that only some commands use."""

import json
import subprocess
import sys

DEFERRED = ("orbax", "tensorstore", "sklearn", "matplotlib")
"""Checkpoints (orbax, with TensorStore), the digits and toy data (scikit-learn) and
pictures (matplotlib): imported by the functions that use them, not by ``import jflows``."""


def test_importing_jflows_defers_checkpoints_data_and_pictures():
    code = ("import json, sys; import jflows, jflows.training, jflows.cli, jflows.models; "
            f"print(json.dumps([m for m in {DEFERRED!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
