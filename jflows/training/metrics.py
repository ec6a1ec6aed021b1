"""Test-set evaluation in fixed-size batches, and the JSON files of a run directory.

Every evaluation of a run uses the same fixed key (:data:`EVAL_SEED`), so image data get the
same dequantization draw per test image each time, and ``jflows eval`` on the same data with
the same ``eval_batch_size`` reproduces a run's ``test_nll`` exactly.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import numpy as np

from jflows.models.evaluate import stream_rows
from jflows.training.state import TrainState
from jflows.training.step import EvalStep

EVAL_SEED = 0
"""Seed of the key that every evaluation derives its per-batch keys from."""


def evaluation_key() -> jax.Array:
    """The fixed key of every evaluation (dequantization draws, stochastic log-dets)."""
    return jax.random.key(EVAL_SEED)


def evaluate_nll(
    eval_step: EvalStep,
    state: TrainState,
    data: np.ndarray,
    batch_size: int,
    key: jax.Array | None = None,
    sharding: jax.sharding.Sharding | None = None,
) -> np.ndarray:
    """Per-example NLL (nats) of every row of ``data``, computed ``batch_size`` rows at a time.

    The last batch is padded with copies of the first row (their results are dropped), so the
    evaluation compiles once whatever the size of ``data``. Batch ``b`` uses the key
    ``fold_in(key, b)``.

    Args:
        eval_step: from :func:`jflows.training.make_eval_step`.
        state: the trained state.
        data: rows of the model's event shape (integer levels for image models), or
            ``(x, context)`` for a conditional model (:mod:`jflows.training.batches`).
        batch_size: rows per compiled call.
        key: defaults to :func:`evaluation_key`.
        sharding: place each batch with this sharding (data-parallel evaluation; every
            process passes the whole ``data``).

    Returns:
        float64 array of shape ``(len(data),)``.

    Example:
        >>> flow = jflows.models.realnvp((2,), n_couplings=2, hidden=(8,))
        >>> x = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
        >>> state = jflows.training.create_train_state(flow, optax.adam(1e-3), x, key)
        >>> nll = evaluate_nll(jflows.training.make_eval_step(flow), state, x, 4)
        >>> nll.shape, nll.dtype
        ((10,), dtype('float64'))
    """
    key = evaluation_key() if key is None else key

    def one(batch, b):
        if sharding is not None:
            batch = jax.tree.map(
                lambda a: jax.make_array_from_callback(a.shape, sharding, lambda i: a[i]), batch
            )
        return eval_step(state, batch, jax.random.fold_in(key, b))

    return stream_rows(one, data, batch_size).astype(np.float64)


def summarize_nll(nll: np.ndarray, dims: int, is_image: bool) -> dict[str, float]:
    """``{"nll": mean, "nll_stderr": ..., "bits_per_dim": ...}`` (bits/dim for images only)."""
    nll = np.asarray(nll, np.float64)
    out = {
        "nll": float(nll.mean()),
        "nll_stderr": float(nll.std() / math.sqrt(max(len(nll), 1))),
    }
    if is_image:
        out["bits_per_dim"] = out["nll"] / (dims * math.log(2.0))
    return out


def strict_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` made strict JSON: non-finite floats become None, flagged by ``"finite"``.

    Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON. Every jflows file
    instead holds ``null`` for such a value, and the record gets ``"finite": false`` plus
    ``"nonfinite_keys"`` naming the affected keys (dotted paths for nested values).

    Example:
        >>> strict_record({"test_nll": float("nan"), "step": 3})
        {'test_nll': None, 'step': 3, 'finite': False, 'nonfinite_keys': ['test_nll']}
    """
    bad: list[str] = []

    def clean(value, where):
        if isinstance(value, float | np.floating) and not math.isfinite(float(value)):
            bad.append(where)
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, np.generic):
            return value.item()
        return value

    out = clean(dict(record), "")
    if bad:
        out["finite"] = False
        out["nonfinite_keys"] = bad
    return out


def _dumps(record: dict[str, Any], **kw) -> str:
    return json.dumps(strict_record(record), allow_nan=False, sort_keys=True, **kw)


def write_json(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Writes ``record`` to ``path`` atomically (a temporary file, then a rename), strictly.

    Non-finite numbers are written as ``null`` (see :func:`strict_record`).
    """
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w") as f:
        f.write(_dumps(record, indent=2))
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a JSON object."""
    with open(path) as f:
        return json.load(f)


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Appends ``record`` as one strict JSON line (see :func:`strict_record`)."""
    with open(path, "a") as f:
        f.write(_dumps(record) + "\n")


def write_jsonl(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Replaces the file's content by ``records``, one JSON line each (atomically)."""
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w") as f:
        f.writelines(_dumps(record) + "\n" for record in records)
    os.replace(tmp, path)


def read_jsonl(path: str | os.PathLike, max_step: int | None = None) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (none if it does not exist).

    With ``max_step``, records whose ``"step"`` exceeds it are dropped, and so is a last line
    left incomplete by a killed process.
    """
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if max_step is None or record.get("step", 0) <= max_step:
                records.append(record)
    return records
