"""``jflows train --hybrid-lambda L``: a hybrid model trained on labelled data, in one call.

The run's settings go through the same checks as any ``jflows train`` run
(:func:`jflows.training.setup.prepare_run`: model, data, options, optimizer); the config then
gains its hybrid fields (``hybrid_lambda``, ``n_classes``: one class per label value, and
``labels``), from which :func:`jflows.training.runs.build_model` wraps the flow in
:func:`jflows.models.hybrid`. :func:`jflows.training.hybrid.fit_hybrid` trains it on the whole
training split (no validation split, so ``--val-fraction`` and ``--patience`` are refused, and
no resumption: the run restarts from scratch). The run directory then holds what any run's
does: ``config.json``, the final state as an orbax checkpoint in ``checkpoints/`` (so
:func:`jflows.training.load_run`, ``jflows eval`` and ``jflows sample`` take the run), and
``metrics.json`` (``test_accuracy``, the test NLL and bits/dim labelled as in every run:
``test_bits_per_dim_bound`` for dequantized images).

Example (tested end to end in ``tests/test_hybrid_runs.py``):
    >>> m = train_hybrid_run(  # doctest: +SKIP
    ...     {"model": "realnvp", "data": "digits", "steps": 2, "options": {"n_couplings": 2}},
    ...     "runs/hybrid", lam=0.1)
    >>> sorted(k for k in m if k.startswith("test_"))[:2]  # doctest: +SKIP
    ['test_accuracy', 'test_bits_per_dim_bound']
    >>> run = load_run("runs/hybrid")  # doctest: +SKIP
    >>> x, y = load_dataset("digits").test, load_labels("digits")[1]  # doctest: +SKIP
    >>> evaluate_hybrid_run(run, x, y)["accuracy"] == m["test_accuracy"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np

from jflows.data.labels import default_labels_path, load_labels
from jflows.errors import ConfigError, DataError
from jflows.training.checkpoints import CHECKPOINT_DIR, Checkpointer
from jflows.training.figures import estimate_of, figure_key
from jflows.training.hybrid import (
    check_labels,
    check_lambda,
    evaluate_hybrid,
    fit_hybrid,
    make_hybrid_eval_step,
)
from jflows.training.metrics import write_json
from jflows.training.run_config import RunConfig
from jflows.training.run_files import METRICS_FILE
from jflows.training.runs import CONFIG_FILE, LoadedRun, build_model
from jflows.training.setup import prepare_run


def train_hybrid_run(
    settings: dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    lam: float,
    labels: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Trains a hybrid run and returns its metrics (also in ``out_dir/metrics.json``).

    Args:
        settings: what ``jflows train`` takes (``model``, ``data``, ``steps``, ...).
        out_dir: the run directory (created; it must not hold a run already).
        lam: the weight of ``log p(x) / D`` in the loss (``--hybrid-lambda``).
        labels: a ``.npy`` of integer labels for a ``.npy`` data file (``--labels``).

    Raises:
        ConfigError: ``out_dir`` holds a run (hybrid runs do not resume), or a bad setting.
        DataError: unlabelled data or a bad labels file.
    """
    out_dir = os.fspath(out_dir)
    if os.path.exists(os.path.join(out_dir, CONFIG_FILE)):
        raise ConfigError(f"{out_dir!r} already holds a run; hybrid runs do not resume, pass a "
                          "new --out")
    lam = check_lambda(lam)
    for key in ("val_fraction", "patience"):
        if settings.get(key):
            flag = "--" + key.replace("_", "-")
            raise ConfigError(
                f"{flag} {settings[key]} does not apply to a hybrid run, which trains on the "
                f"whole training split and is evaluated once at the end; drop {flag}"
            )
    settings = {**settings, "val_fraction": 0.0, "patience": 0}  # what the run does
    start = time.perf_counter()
    config, dataset, _, _, optimizer = prepare_run(settings, out_dir)
    train_y, test_y = load_labels(
        settings["data"], labels, seed=config["seed"],
        test_fraction=config.get("test_fraction") or 0.1,
    )
    n_classes = max(int(max(train_y.max(), test_y.max())) + 1, 2)
    config = config.replace(
        hybrid_lambda=lam, n_classes=n_classes,
        labels=None if labels is None else os.path.abspath(os.fspath(labels)),
        n_train=len(dataset.train), n_val=0, n_test=len(dataset.test), split_seed=config.seed,
    )  # the split as fit records it
    model, eval_model = build_model(config, training=True), build_model(config, training=False)
    state, metrics = fit_hybrid(
        model, eval_model, (dataset.train, train_y), (dataset.test, test_y), lam=lam,
        steps=config["steps"], batch_size=config["batch_size"], seed=config["seed"],
        eval_batch_size=config["eval_batch_size"], optimizer=optimizer,
    )
    wall_time = time.perf_counter() - start
    estimate = estimate_of(eval_model)
    record = {
        "steps": int(state.step),
        "hybrid_lambda": lam,
        "test_accuracy": metrics["test_accuracy"],
        figure_key("test", "nll", estimate): metrics["test_nll"],
        "nonfinite_steps": metrics["nonfinite_steps"],
        "train_loss": metrics["train_loss"],
        "wall_time_s": wall_time,
    }
    if dataset.is_image:
        record[figure_key("test", "bits_per_dim", estimate)] = metrics["test_bits_per_dim"]
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, CONFIG_FILE), config.to_dict())
    with Checkpointer(os.path.join(out_dir, CHECKPOINT_DIR)) as checkpointer:
        meta = {"wall_time_s": wall_time, "train_loss": metrics["train_loss"]}
        checkpointer.save(int(state.step), state, meta)
    write_json(os.path.join(out_dir, METRICS_FILE), record)
    return record


def is_hybrid(config: RunConfig) -> bool:
    """Whether ``config`` is the config of a hybrid run."""
    return config.get("n_classes") is not None


def labels_for_eval(
    spec: str, config: RunConfig, n: int, labels: str | os.PathLike | None = None
) -> tuple[np.ndarray | None, str]:
    """The labels of the ``n`` rows ``jflows eval`` scores for a hybrid run, or a reason.

    As at training: ``digits`` has its own (the test split's), a ``.npy`` file takes
    ``labels`` if given, else the run's ``--labels`` file when it is the run's own data, else
    ``<stem>_labels.npy`` beside it (every row, as :func:`jflows.training.run_data.data_for_run`
    scores every row).

    Returns:
        ``(labels, "")``, or ``(None, why)`` when the data have no labels file.

    Raises:
        DataError: a labels file that is not one integer per row.
    """
    if labels is None and spec == "digits":
        return load_labels("digits")[1], ""
    if labels is None and not spec.endswith(".npy"):
        return None, f"{spec!r} has no labels"
    path = labels
    if path is None:
        own = os.path.abspath(spec) == config["data"] and config.get("labels")
        path = config["labels"] if own else default_labels_path(spec)
        if not os.path.exists(path):
            return None, f"no labels file {os.fspath(path)!r} (pass --labels FILE)"
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"--labels {path!r} does not exist; pass a .npy of integer labels")
    y = np.load(path, allow_pickle=False)
    if y.ndim != 1 or len(y) != n:
        raise DataError(
            f"{path!r} holds labels of shape {y.shape}, but {spec!r} has {n} rows; pass one "
            f"integer label per row"
        )
    return y, ""


def evaluate_hybrid_run(
    run: LoadedRun, x: np.ndarray, y: np.ndarray, key: jax.Array | None = None
) -> dict[str, float]:
    """``nll`` (nats), ``bits_per_dim`` and ``accuracy`` of a loaded hybrid run on ``(x, y)``.

    The batches and the key are those of :func:`jflows.training.hybrid.fit_hybrid`'s final
    evaluation, so the run's own test split gives its ``metrics.json`` figures again.

    Raises:
        ConfigError: the run is not a hybrid run.
        DataError: labels that are not one class of the run per row of ``x``.
    """
    if not is_hybrid(run.config):
        raise ConfigError("evaluate_hybrid_run needs a hybrid run (jflows train --hybrid-lambda)")
    y = check_labels(x, y, run.config["n_classes"])
    batch_size = max(1, min(run.config["eval_batch_size"], len(x)))
    key = jax.random.key(0) if key is None else key
    return evaluate_hybrid(make_hybrid_eval_step(run.eval_model), run.state, x, y, batch_size,
                           key)
