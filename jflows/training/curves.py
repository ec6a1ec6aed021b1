"""Training curves of one or several runs: ``curves.png`` and ``jflows plot``.

A run's curves come from its ``evals.jsonl`` (one record per evaluation: ``step``, ``test_nll``,
``test_bits_per_dim`` for images, ``train_loss``, ``nonfinite_steps``, ``wall_time_s``, and
``val_nll``/``val_bits_per_dim`` with a validation split) and, when the run has one, from
``losses.jsonl`` (``{"step", "train_loss"}`` lines logged between evaluations). The left panel
shows the training loss (nats per example; bits/dim for image runs whose ``config.json`` gives
the event shape), the right one the held-out figure against steps:
bits/dim for images, NLL in nats otherwise, the validation figure dashed and the best step
(``best_step`` of ``metrics.json`` or of the records) marked. Non-finite figures (``null`` in
strict JSON, or NaN) leave gaps and are counted in the legend; axes spanning many orders of
magnitude switch to a symmetric log scale.

Example:
    >>> save_training_curves("runs/moons", "runs/moons/curves.png")  # a run of jflows train
    'runs/moons/curves.png'

A list of run directories (``["runs/a", "runs/b"]``) draws them in one figure, for comparison.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jflows.errors import CheckpointError
from jflows.training.figures import find_figure
from jflows.training.plots import new_figure

EVALS_FILE = "evals.jsonl"
LOSSES_FILE = "losses.jsonl"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
CURVES_FILE = "curves.png"
PLOT_FORMATS = (".png", ".pdf", ".svg")
"""Extensions ``jflows plot --out`` accepts."""

Records = list[dict[str, Any]]


def _read_jsonl(path: str) -> Records:
    records = []
    with open(path) as f:
        for line in f:
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a kill: skip it
                    continue
    return records


def read_run_curves(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The records a run's curves are drawn from.

    Returns:
        ``{"label", "evals", "losses", "best_step"}``: the directory's name, the evaluation
        records, the logged training losses (empty without ``losses.jsonl``) and the best step
        (None unless recorded).

    Raises:
        CheckpointError: ``run_dir`` does not exist or has no ``evals.jsonl``.

    Example:
        >>> curves = read_run_curves("runs/moons")  # a run of 4 steps, evaluated every 2
        >>> curves["label"], [record["step"] for record in curves["evals"]]
        ('moons', [2, 4])
    """
    run = os.fspath(run_dir)
    path = os.path.join(run, EVALS_FILE)
    if not os.path.isdir(run):
        raise CheckpointError(
            f"run directory {run!r} does not exist; pass the --out directory of a `jflows train`"
        )
    if not os.path.isfile(path):
        raise CheckpointError(
            f"{run!r} has no {EVALS_FILE}: it is not a jflows run, or the run has not reached "
            f"its first evaluation yet (see --eval-every)"
        )
    evals = _read_jsonl(path)
    losses_path = os.path.join(run, LOSSES_FILE)
    losses = _read_jsonl(losses_path) if os.path.isfile(losses_path) else []
    metrics = _read_optional_json(os.path.join(run, METRICS_FILE))
    config = _read_optional_json(os.path.join(run, CONFIG_FILE))
    label = os.path.basename(os.path.normpath(os.path.abspath(run)))
    what = " on ".join(str(v) for v in (config.get("model"), config.get("data_name")) if v)
    return {
        "label": label, "evals": evals, "losses": losses, "best_step": metrics.get("best_step"),
        "title": f"{label}: {what}" if what else label,
        "dims": math.prod(config["event_shape"]) if config.get("event_shape") else None,
    }


def _read_optional_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _values(records: Records, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of ``key`` (NaN where null or non-finite) in records that have it."""
    rows = [(r["step"], r[key]) for r in records if key in r and "step" in r]
    steps = np.array([s for s, _ in rows], dtype=np.float64)
    values = np.array([np.nan if v is None else float(v) for _, v in rows], dtype=np.float64)
    values[~np.isfinite(values)] = np.nan
    return steps, values


def _figure_values(records: Records, split: str, figure: str):
    """:func:`_values` of a figure under whichever label each record gives it."""
    renamed = []
    for record in records:
        key = find_figure(record, split, figure)
        if key is not None and "step" in record:
            renamed.append({"step": record["step"], figure: record[key]})
    return _values(renamed, figure)


def _as_runs(runs) -> list[dict[str, Any]]:
    """One run dir, one run's records, or a sequence of either, as run-curve dicts."""
    if isinstance(runs, str | os.PathLike):
        return [read_run_curves(runs)]
    runs = list(runs)
    if runs and all(isinstance(r, dict) for r in runs):
        return [{"label": None, "evals": runs, "losses": [], "best_step": None}]
    out = []
    for run in runs:
        if isinstance(run, str | os.PathLike):
            out.append(read_run_curves(run))
        else:
            out.append({"label": None, "evals": list(run), "losses": [], "best_step": None})
    return out


def _unique_labels(runs: list[dict[str, Any]], labels: Sequence[str] | None) -> list[str]:
    if labels is not None:
        return list(labels)
    names = [r["label"] or f"run {i + 1}" for i, r in enumerate(runs)]
    return [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]


def _scale(ax, arrays: list[np.ndarray]) -> None:
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays] or [np.zeros(0)])
    if finite.size and np.max(np.abs(finite)) > 1e4 * (np.median(np.abs(finite)) + 1.0):
        ax.set_yscale("symlog")


def _skipped(evals: Records) -> str:
    """`` (k of n steps skipped)`` from the last record's ``nonfinite_steps``, else ``""``."""
    last = next((r for r in reversed(evals) if "nonfinite_steps" in r and "step" in r), None)
    if not last or not last["nonfinite_steps"]:
        return ""
    return f" ({last['nonfinite_steps']} of {last['step']} steps skipped as non-finite)"


def _mark_nonfinite(ax, steps: np.ndarray, values: np.ndarray, color: str) -> None:
    """Crosses at the top of ``ax`` where a figure was not finite (a gap in the curve)."""
    bad = steps[np.isnan(values)]
    if bad.size:
        ax.plot(bad, np.full(bad.shape, 0.97), "x", color=color, ms=8, mew=2,
                transform=ax.get_xaxis_transform(), label="not finite")


def save_training_curves(
    runs,
    out_path: str | os.PathLike,
    *,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> str:
    """Draws training loss and held-out figures against steps for one or several runs.

    Args:
        runs: a run directory, a list of evaluation records (as in ``evals.jsonl``), or a
            sequence of either (several runs are overlaid, one colour each).
        out_path: the picture to write (any extension matplotlib knows, e.g. ``.png``).
        labels: legend names of the runs (default: their directory names).
        title: the figure's title (default for one run directory: its name, model and data).

    Returns:
        ``out_path`` as a string.

    Raises:
        CheckpointError: a run directory that does not exist or has no ``evals.jsonl``.

    Example:
        >>> save_training_curves(["runs/moons"], "lr.png", labels=["lr 2e-3"])
        'lr.png'
    """
    runs = _as_runs(runs)
    names = _unique_labels(runs, labels)
    fig = new_figure((11, 4.2))
    loss_ax, test_ax = fig.subplots(1, 2)
    image = any(find_figure(r, "test", "bits_per_dim") for run in runs for r in run["evals"])
    figure = "bits_per_dim" if image else "nll"
    bound = any("bound" in (find_figure(r, "test", figure) or "") for run in runs
                for r in run["evals"])
    unit = ("bits/dim" if image else "NLL (nats)") + (" (bound)" if bound else "")
    loss_in_bits = image and all(run.get("dims") for run in runs)  # both panels in bits/dim
    drawn: dict[Any, list[np.ndarray]] = {loss_ax: [], test_ax: []}
    for i, (run, name) in enumerate(zip(runs, names)):
        color = f"C{i % 10}"
        tag = f"{name}: " if len(runs) > 1 else ""
        steps, loss = _values(run["losses"] or run["evals"], "train_loss")
        if loss_in_bits:
            loss = loss / (run["dims"] * math.log(2.0))
        drawn[loss_ax].append(loss)
        skipped = _skipped(run["evals"])
        loss_ax.plot(steps, loss, color=color, marker="." if len(steps) < 30 else None,
                     label=f"{tag}train loss{skipped}")
        _mark_nonfinite(loss_ax, steps, loss, color)
        steps, test = _figure_values(run["evals"], "test", figure)
        drawn[test_ax].append(test)
        bad = int(np.isnan(test).sum())
        note = f" ({bad} not finite)" if bad else ""
        test_ax.plot(steps, test, color=color, marker=".", label=f"{tag}test{note}")
        _mark_nonfinite(test_ax, steps, test, color)
        v_steps, val = _figure_values(run["evals"], "val", figure)
        if len(v_steps):
            drawn[test_ax].append(val)
            test_ax.plot(v_steps, val, color=color, ls="--", marker=".", label=f"{tag}validation")
        best = run["best_step"]
        if best is None:
            best = next((r["best_step"] for r in reversed(run["evals"]) if "best_step" in r),
                        None)
        if best is not None:
            test_ax.axvline(best, color=color, ls=":", lw=1, label=f"{tag}best step {best}")
    loss_unit = "bits/dim" if loss_in_bits else "nats"
    for ax, ylabel in ((loss_ax, f"train loss ({loss_unit})"), (test_ax, f"held-out {unit}")):
        _scale(ax, drawn[ax])
        ax.set_xlim(left=0)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    loss_ax.set_title("training loss", fontsize=9)
    test_ax.set_title(f"test {unit}" + (" and validation" if len(drawn[test_ax]) > len(runs)
                                        else ""), fontsize=9)
    if title is None and len(runs) == 1:
        title = runs[0].get("title")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_path)
    return os.fspath(out_path)

