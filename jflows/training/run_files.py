"""A training run's directory as :func:`jflows.training.fit` reads and writes it.

``fit(out_dir=...)`` keeps, in ``out_dir``:

* ``.lock``: held while training (:mod:`jflows.training.lock`; process 0 only);
* ``config.json``: the run's configuration plus its split (written under the lock);
* ``checkpoints/``: orbax checkpoints (:class:`~jflows.training.checkpoints.Checkpointer`),
  each with the best state and the ``wall_time_s`` and ``train_loss`` so far;
* ``evals.jsonl``: one evaluation record per line (process 0 only);
* ``metrics.json``: the final figures (process 0 only).

:class:`RunFiles` is that directory for the loop: it refuses to overwrite checkpoints unless
asked to resume, restores the newest checkpoint, drops evaluations made after it, and appends
and saves as training goes. ``RunFiles(None)`` keeps nothing on disk, so the loop has one path
whether or not there is a directory.

Example:
    >>> with RunFiles("runs/a") as files:
    ...     files.append({"step": 10, "test_nll": 1.5})
    ...     files.append({"step": 20, "test_nll": 1.4})
    >>> with RunFiles("runs/a") as files:  # as if resumed from a checkpoint at step 10
    ...     files.history(10)
    [{'step': 10, 'test_nll': 1.5}]
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax

from jflows.errors import CheckpointError
from jflows.training.checkpoints import CHECKPOINT_DIR, Checkpointer
from jflows.training.lock import run_lock
from jflows.training.metrics import append_jsonl, read_jsonl, write_json, write_jsonl
from jflows.training.parallel import replicated_sharding
from jflows.training.runs import CONFIG_FILE
from jflows.training.state import TrainState

EVALS_FILE = "evals.jsonl"
METRICS_FILE = "metrics.json"

logger = logging.getLogger("jflows.training.fit")


def is_primary() -> bool:
    """True in the process that writes the run's JSON files (process 0)."""
    return jax.process_index() == 0


@contextlib.contextmanager
def locked_run(
    out_dir: str | os.PathLike | None, config: dict[str, Any] | None
) -> Iterator[None]:
    """Holds ``out_dir``'s lock (process 0) and writes ``config`` to ``config.json`` under it.

    Nothing happens when ``out_dir`` is None; ``config=None`` writes no ``config.json``.
    """
    with contextlib.ExitStack() as stack:
        if out_dir is not None and is_primary():
            stack.enter_context(run_lock(out_dir))
            if config is not None:
                write_json(os.path.join(out_dir, CONFIG_FILE), config)
        yield


class Restored(NamedTuple):
    """What a checkpoint gives back: the state, the best state and the run's counters."""

    state: TrainState
    best_state: TrainState | None
    wall_time_s: float
    train_loss: float | None


class RunFiles:
    """The checkpoints and JSON files of a run directory (or nothing, for ``out_dir=None``).

    Args:
        out_dir: the run directory (created if missing), or None to keep nothing.
        resume: continue from the newest checkpoint; if False, ``out_dir`` must hold none.

    Raises:
        CheckpointError: ``resume`` is False and ``out_dir`` already holds checkpoints.
    """

    def __init__(self, out_dir: str | os.PathLike | None, *, resume: bool = True):
        self.out_dir = out_dir
        self._checkpointer: Checkpointer | None = None
        self._evals: str | None = None
        self._metrics: str | None = None
        self._latest: int | None = None
        if out_dir is None:
            return
        os.makedirs(out_dir, exist_ok=True)
        if is_primary():
            self._evals = os.path.join(out_dir, EVALS_FILE)
            self._metrics = os.path.join(out_dir, METRICS_FILE)
        self._checkpointer = Checkpointer(os.path.join(out_dir, CHECKPOINT_DIR))
        self._latest = self._checkpointer.latest_step()
        if self._latest is not None and not resume:
            self.close()
            raise CheckpointError(
                f"{os.fspath(out_dir)!r} already holds checkpoints (latest step "
                f"{self._latest}); pass resume=True to continue that run or choose a fresh "
                f"directory"
            )

    def __enter__(self) -> RunFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def checkpointed_step(self) -> int | None:
        """The step of the newest checkpoint, or None."""
        return self._latest

    def restore(self, init: Callable[[], TrainState], mesh) -> Restored | None:
        """The newest checkpoint, replicated on ``mesh``; None when there is none.

        ``init`` (the state's initialisation) is only traced (``jax.eval_shape``) for the
        structure, shapes and dtypes of the state.
        """
        if self._latest is None:
            return None
        rep = replicated_sharding(mesh)
        target = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), jax.eval_shape(init)
        )
        try:
            state, meta, best_state = self._checkpointer.restore(target, with_best=True)
        except CheckpointError:
            self.close()
            raise
        logger.info(
            "resuming from step %d (checkpoint in %s)",
            int(state.step), self._checkpointer.directory,
        )
        return Restored(
            state, best_state, float(meta.get("wall_time_s", 0.0)), meta.get("train_loss")
        )

    def history(self, step: int) -> list[dict[str, Any]]:
        """The evaluations up to ``step``; later ones (made after the checkpoint) are dropped."""
        if self._evals is None:
            return []
        history = read_jsonl(self._evals, max_step=step)
        write_jsonl(self._evals, history)
        return history

    def append(self, record: dict[str, Any]) -> None:
        """Appends an evaluation record to ``evals.jsonl``."""
        if self._evals is not None:
            append_jsonl(self._evals, record)

    def save(
        self, step: int, state: TrainState, meta: dict[str, Any], best: TrainState | None
    ) -> None:
        """Checkpoints ``state`` (and the best state) at ``step``."""
        if self._checkpointer is not None:
            self._checkpointer.save(step, state, meta, best=best)

    def write_metrics(self, summary: dict[str, Any]) -> None:
        """Writes ``metrics.json``."""
        if self._metrics is not None:
            write_json(self._metrics, summary)

    def close(self) -> None:
        """Waits for pending checkpoints and releases them (idempotent)."""
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
