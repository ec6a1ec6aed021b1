"""Orbax checkpoints of a :class:`TrainState` plus a small JSON record of the run's progress.

Saving is synchronous: orbax writes every checkpoint to a temporary directory and renames it
when complete, so a process killed during a save (even by SIGKILL) leaves the previous
checkpoint as the latest one, and the half-written directory is ignored on restore.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jflows.errors import CheckpointError
from jflows.training.state import TrainState

CHECKPOINT_DIR = "checkpoints"
"""Subdirectory of a run directory holding the orbax checkpoints."""


class Checkpointer:
    """Saves and restores ``(state, meta)`` pairs under ``directory``, keeping the last few.

    ``meta`` is a JSON-serialisable dict (e.g. accumulated wall time).

    Args:
        directory: where the step directories live (created on the first save).
        max_to_keep: number of most recent checkpoints kept.
        read_only: only restore (never create, clean up or delete anything), e.g. to evaluate
            a run that another process may still be training.

    Example:
        >>> ckpt = Checkpointer("runs/a/checkpoints")
        >>> ckpt.save(100, state, {"wall_time_s": 12.5})
        >>> state, meta = ckpt.restore(state)
    """

    def __init__(
        self, directory: str | os.PathLike, max_to_keep: int = 2, *, read_only: bool = False
    ):
        self.directory = os.path.abspath(os.fspath(directory))
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else max_to_keep,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=not read_only,
            create=not read_only,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def save(self, step: int, state: TrainState, meta: dict[str, Any]) -> None:
        """Writes the checkpoint of ``step`` (and waits until it is complete)."""
        if self.read_only:
            raise CheckpointError(f"{self.directory!r} was opened read-only; it cannot be saved to")
        if self._manager.latest_step() == step:
            return
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta))
        )
        self._manager.save(step, args=args, force=True)
        self._manager.wait_until_finished()

    def restore(
        self, target: TrainState, step: int | None = None
    ) -> tuple[TrainState, dict[str, Any]]:
        """Restores the checkpoint of ``step`` (default: the latest) into ``target``'s structure.

        ``target`` may be a real state or its ``jax.eval_shape``; only shapes, dtypes, the
        tree structure and any shardings are used. Leaves without a sharding are restored onto
        this process's first device, whatever the devices the checkpoint was written from
        (e.g. a run trained on several hosts can be evaluated on one).

        Raises:
            CheckpointError: when there is no checkpoint or it does not match ``target``.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(
                f"no checkpoint in {self.directory!r}; train the run first (jflows train ...)"
            )
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

        def with_sharding(leaf):  # restore onto this process's device unless told otherwise
            spec = ocp.utils.to_shape_dtype_struct(leaf)
            if getattr(spec, "sharding", None) is None:
                spec = jax.ShapeDtypeStruct(spec.shape, spec.dtype, sharding=local)
            return spec

        abstract = jax.tree_util.tree_map(with_sharding, target)
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        )
        try:
            restored = self._manager.restore(step, args=args)
        except (ValueError, KeyError, TypeError, FileNotFoundError) as err:
            raise CheckpointError(
                f"cannot restore the checkpoint of step {step} in {self.directory!r} into this "
                f"model ({type(err).__name__}: {err}); it was written by a different model or "
                f"jflows version, so train a new run in a fresh directory"
            ) from err
        return restored["state"], dict(restored["meta"] or {})

    def close(self) -> None:
        """Releases orbax's resources."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
