"""Orbax checkpoints of a :class:`TrainState` plus a small JSON record of the run's progress.

Saving is synchronous: orbax writes every checkpoint to a temporary directory and renames it
when complete, so a process killed during a save (even by SIGKILL) leaves the previous
checkpoint as the latest one, and the half-written directory is ignored on restore.

A checkpoint may also hold ``best``, the state with the best validation NLL so far (see
:func:`jflows.training.fit`); :meth:`Checkpointer.restore_best` reads it.

A checkpoint whose files were damaged after it was written (a full disk, a copy cut short, a
bad sector) does not stop a run: restoring without an explicit step falls back to the newest
checkpoint that loads, with a warning naming the damaged one, and a writable checkpointer moves
the damaged step directories aside to ``damaged_checkpoints/`` next to ``checkpoints/`` so that
training can write that step again. Orbax's and TensorStore's own (very long) messages are
never shown; a :class:`~jflows.errors.CheckpointError` says which step failed and why in one
line.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import sys
import warnings
from typing import Any

import jax

from jflows.errors import CheckpointError
from jflows.training.state import TrainState

CHECKPOINT_DIR = "checkpoints"
"""Subdirectory of a run directory holding the orbax checkpoints."""
DAMAGED_DIR = "damaged_checkpoints"
"""Where a writable :class:`Checkpointer` moves step directories that no longer load."""
BEST = "best"

logger = logging.getLogger(__name__)


def _quiet_closed_loops(hook):
    """An unraisable-exception hook that drops "Event loop is closed" from a failed restore.

    When TensorStore fails to read a damaged file, orbax's pending callbacks later hit the
    closed event loop of the aborted restore and each prints a traceback; they mean nothing
    once the failure itself is reported.
    """
    if getattr(hook, "_jflows_quiet", False):
        return hook

    def quiet(unraisable):
        err = unraisable.exc_value
        if isinstance(err, RuntimeError) and "Event loop is closed" in str(err):
            return
        hook(unraisable)

    quiet._jflows_quiet = True
    return quiet


def _short(err: BaseException, limit: int = 160) -> str:
    """One line of an exception: its type and the start of its first line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _orbax():
    """``orbax.checkpoint``, imported when a checkpointer first needs it.

    Importing it (with TensorStore) costs resident memory (25 MB here:
    ``benchmarks/README.md``, "Why the misses"), which code that imports ``jflows.training``
    but never checkpoints (a benchmark, a notebook) does not pay.
    """
    import orbax.checkpoint as ocp

    return ocp


class Checkpointer:
    """Saves and restores ``(state, meta)`` pairs under ``directory``, keeping the last few.

    ``meta`` is a JSON-serialisable dict (e.g. accumulated wall time).

    Args:
        directory: where the step directories live (created on the first save).
        max_to_keep: number of most recent checkpoints kept.
        read_only: only restore (never create, clean up or delete anything), e.g. to evaluate
            a run that another process may still be training.

    Example:
        >>> state = {"w": jnp.arange(3.0)}  # any pytree; fit saves its TrainState
        >>> with Checkpointer("runs/a/checkpoints") as ckpt:
        ...     ckpt.save(100, state, {"wall_time_s": 12.5})
        ...     restored, meta = ckpt.restore(state)
        >>> restored["w"], meta
        (Array([0., 1., 2.], dtype=float32), {'wall_time_s': 12.5})
    """

    def __init__(
        self, directory: str | os.PathLike, max_to_keep: int = 2, *, read_only: bool = False
    ):
        self.directory = os.path.abspath(os.fspath(directory))
        self.read_only = read_only
        ocp = _orbax()
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

    def all_steps(self) -> list[int]:
        """Steps of the complete checkpoints, newest first."""
        return sorted(self._manager.all_steps(), reverse=True)

    def save(
        self,
        step: int,
        state: TrainState,
        meta: dict[str, Any],
        best: TrainState | None = None,
    ) -> None:
        """Writes the checkpoint of ``step`` (and waits until it is complete).

        ``best`` (optional) is stored beside ``state`` in the same atomic checkpoint.
        """
        if self.read_only:
            raise CheckpointError(f"{self.directory!r} was opened read-only; it cannot be saved to")
        if self._manager.latest_step() == step:
            return
        ocp = _orbax()
        items = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta)))
        if best is not None:
            items[BEST] = ocp.args.StandardSave(best)
        args = ocp.args.Composite(**items)
        self._manager.save(step, args=args, force=True)
        self._manager.wait_until_finished()

    def has_best(self, step: int) -> bool:
        """Whether the checkpoint of ``step`` holds a ``best`` state."""
        return os.path.isdir(os.path.join(self.directory, str(step), BEST))

    def restore(
        self, target: TrainState, step: int | None = None, *, with_best: bool = False
    ) -> tuple[TrainState, dict[str, Any]] | tuple[TrainState, dict[str, Any], TrainState | None]:
        """Restores the checkpoint of ``step`` (default: the newest that loads) into ``target``.

        ``target`` may be a real state or its ``jax.eval_shape``; only shapes, dtypes, the
        tree structure and any shardings are used. Leaves without a sharding are restored onto
        this process's first device, whatever the devices the checkpoint was written from
        (e.g. a run trained on several hosts can be evaluated on one).

        Without ``step``, a checkpoint that fails to load is skipped with a warning (and, when
        writable, moved to ``damaged_checkpoints/``) and the next older one is tried.

        Args:
            target: the state's structure.
            step: a given step (no fallback), or None.
            with_best: also return the stored ``best`` state (None when the checkpoint has
                none).

        Returns:
            ``(state, meta)``, or ``(state, meta, best)`` with ``with_best``.

        Raises:
            CheckpointError: when there is no checkpoint or none loads into ``target``.
        """
        names = ("state", BEST) if with_best else ("state",)
        if step is not None:
            out = self._restore_items(target, step, names)
        else:
            out = self._restore_newest(target, names)
        state, meta = out["state"], out["meta"]
        return (state, meta, out.get(BEST)) if with_best else (state, meta)

    def restore_best(self, target: TrainState) -> tuple[TrainState, dict[str, Any]]:
        """The best state of the newest checkpoint that loads (its ``state`` if it has none).

        This is the model that ``jflows eval`` and ``jflows sample`` use.
        """
        out = self._restore_newest(target, ("state", BEST), prefer_best=True)
        return (out[BEST] if BEST in out else out["state"]), out["meta"]

    def _restore_newest(self, target, names, prefer_best: bool = False) -> dict[str, Any]:
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(
                f"no checkpoint in {self.directory!r}; train the run first (jflows train ...)"
            )
        failures = []
        for step in steps:
            wanted = names
            if prefer_best and self.has_best(step):
                wanted = (BEST,)
            try:
                out = self._restore_items(target, step, wanted)
            except CheckpointError as err:
                failures.append((step, err))
                continue
            for bad, err in failures:
                self._set_aside(bad, err, step)
            return out
        detail = "; ".join(f"step {s}: {err.reason}" for s, err in failures)
        raise CheckpointError(
            f"no checkpoint in {self.directory!r} loads into this model ({detail}); if the files "
            f"were damaged, delete the run directory and train again, and if the run was written "
            f"by a different model or jflows version, train a new run in a fresh directory"
        )

    def _set_aside(self, step: int, err: CheckpointError, used: int) -> None:
        where = os.path.join(self.directory, str(step))
        if self.read_only:
            logger.warning(
                "checkpoint %s is damaged (%s); using the checkpoint of step %d instead",
                where, err.reason, used,
            )
            return
        aside = os.path.join(os.path.dirname(self.directory), DAMAGED_DIR, str(step))
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        if os.path.exists(aside):
            shutil.rmtree(aside)
        os.replace(where, aside)
        self._manager.reload()
        logger.warning(
            "checkpoint %s is damaged (%s); moved it to %s and resumed from step %d",
            where, err.reason, aside, used,
        )

    def _restore_items(self, target, step: int, names) -> dict[str, Any]:
        ocp = _orbax()
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

        def with_sharding(leaf):  # restore onto this process's device unless told otherwise
            spec = ocp.utils.to_shape_dtype_struct(leaf)
            if getattr(spec, "sharding", None) is None:
                spec = jax.ShapeDtypeStruct(spec.shape, spec.dtype, sharding=local)
            return spec

        abstract = jax.tree_util.tree_map(with_sharding, target)
        items = {
            name: ocp.args.StandardRestore(abstract)
            for name in names
            if name != BEST or self.has_best(step)
        }
        args = ocp.args.Composite(**items, meta=ocp.args.JsonRestore())
        absl = logging.getLogger("absl")  # orbax logs raw errors of damaged files there
        level, hook = absl.level, sys.unraisablehook
        absl.setLevel(logging.CRITICAL)
        sys.unraisablehook = _quiet_closed_loops(hook)
        failed = False
        try:
            restored = self._manager.restore(step, args=args)
        except Exception as err:  # noqa: BLE001 - orbax/TensorStore raise many types
            reason = _short(err)
            error = CheckpointError(
                f"cannot restore the checkpoint of step {step} in {self.directory!r} into this "
                f"model ({reason}); it is damaged, or was written by a different model or "
                f"jflows version, so train a new run in a fresh directory"
            )
            error.reason = reason
            failed = True
            # the aborted read leaves futures whose errors asyncio logs when they are
            # collected, at any later time: they repeat the error just reported
            logging.getLogger("asyncio").setLevel(logging.CRITICAL)
            warnings.filterwarnings(
                "ignore", message="coroutine .* was never awaited", category=RuntimeWarning
            )
            raise error from None
        finally:
            gc.collect()  # orbax's leftover callbacks of a failed read run here, quietly
            absl.setLevel(level)
            if not failed:  # after a failed read, late callbacks may still come: stay quiet
                sys.unraisablehook = hook
        out = {name: restored[name] for name in items}
        out["meta"] = dict(restored["meta"] or {})
        return out

    def close(self) -> None:
        """Releases orbax's resources."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
