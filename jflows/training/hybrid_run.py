"""``jflows train --hybrid-lambda L``: a hybrid model trained on labelled data, in one call.

The run's settings go through the same checks as any ``jflows train`` run
(:func:`jflows.training.setup.prepare_run`: model, data, options, optimizer); the flow is then
wrapped in :func:`jflows.models.hybrid` with one class per label value and trained by
:func:`jflows.training.hybrid.fit_hybrid` on the whole training split (no validation split,
checkpoints or resumption: the run restarts from scratch). ``config.json`` (the run's config
plus ``hybrid_lambda``, ``n_classes`` and ``labels``) and ``metrics.json`` (``test_accuracy``,
the test NLL and bits/dim labelled as in every run: ``test_bits_per_dim_bound`` for dequantized
images) are written to the run directory.

Example (tested end to end in ``tests/test_hybrid.py``):
    >>> m = train_hybrid_run(  # doctest: +SKIP
    ...     {"model": "realnvp", "data": "digits", "steps": 2, "options": {"n_couplings": 2}},
    ...     "runs/hybrid", lam=0.1)
    >>> sorted(k for k in m if k.startswith("test_"))[:2]  # doctest: +SKIP
    ['test_accuracy', 'test_bits_per_dim_bound']
"""

from __future__ import annotations

import os
from typing import Any

from jflows.data.labels import load_labels
from jflows.errors import ConfigError
from jflows.models.hybrid import hybrid
from jflows.training.figures import estimate_of, figure_key
from jflows.training.hybrid import fit_hybrid
from jflows.training.metrics import write_json
from jflows.training.run_files import METRICS_FILE
from jflows.training.runs import CONFIG_FILE
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
        out_dir: the run directory (created; an existing hybrid run there is overwritten).
        lam: the weight of ``log p(x) / D`` in the loss (``--hybrid-lambda``).
        labels: a ``.npy`` of integer labels for a ``.npy`` data file (``--labels``).
    """
    out_dir = os.fspath(out_dir)
    if os.path.exists(os.path.join(out_dir, CONFIG_FILE)):
        raise ConfigError(f"{out_dir!r} already holds a run; hybrid runs do not resume, pass a "
                          "new --out")
    config, dataset, model, eval_model, optimizer = prepare_run(settings, out_dir)
    train_y, test_y = load_labels(
        settings["data"], labels, seed=config["seed"],
        test_fraction=config.get("test_fraction") or 0.1,
    )
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    model, eval_model = hybrid(model, max(n_classes, 2)), hybrid(eval_model, max(n_classes, 2))
    state, metrics = fit_hybrid(
        model, eval_model, (dataset.train, train_y), (dataset.test, test_y), lam=lam,
        steps=config["steps"], batch_size=config["batch_size"], seed=config["seed"],
        eval_batch_size=config["eval_batch_size"], optimizer=optimizer,
    )
    estimate = estimate_of(eval_model)
    record = {
        "steps": int(state.step),
        "hybrid_lambda": float(lam),
        "test_accuracy": metrics["test_accuracy"],
        figure_key("test", "nll", estimate): metrics["test_nll"],
        "nonfinite_steps": metrics["nonfinite_steps"],
        "train_loss": metrics["train_loss"],
    }
    if dataset.is_image:
        record[figure_key("test", "bits_per_dim", estimate)] = metrics["test_bits_per_dim"]
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, CONFIG_FILE),
               {**config, "hybrid_lambda": float(lam), "n_classes": n_classes,
                "labels": None if labels is None else os.fspath(labels)})
    write_json(os.path.join(out_dir, METRICS_FILE), record)
    return record
