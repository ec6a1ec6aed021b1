"""The ``jflows`` command: ``train``, ``eval``, ``sample``, ``plot`` and ``models``.

Examples:
    jflows train --model realnvp --data 8gaussians --out runs/8g
    jflows train --model realnvp --data digits --out runs/digits --opt conv_hidden=32
    jflows eval --run runs/8g --data points.npy
    jflows sample --run runs/digits --n 64 --out digits.png
    jflows plot --run runs/8g --run runs/digits --out curves.png
    jflows models resflow

Bad input (an unknown model or data name, an invalid ``.npy`` file, a directory that is not a
run, ...) prints one line naming the problem and the fix on stderr and exits with code 2;
everything is validated before a run directory is touched. A training that diverged (its
figures are not finite, or most steps of its last evaluation window were skipped as non-finite)
prints one line and exits with code 3, after writing the run's files.
"""

from __future__ import annotations

import logging
import sys

import jax
from tqdm import tqdm

from jflows.cli.arguments import DEFAULTS, build_parser, parse_options
from jflows.cli.commands import cmd_eval, cmd_models, cmd_plot, cmd_sample, cmd_train
from jflows.errors import ConfigError, JflowsError, TrainingDivergedError
from jflows.training.compile_cache import enable_compilation_cache

ASYNC_DISPATCH = "jax_cpu_enable_async_dispatch"
DIVERGED_EXIT = 3
"""Exit code of a ``jflows train`` whose run diverged (non-finite figures or mostly skipped
steps); its files are written, with ``"diverged": true`` in ``metrics.json``."""

__all__ = ["DEFAULTS", "main", "parse_options"]


class _StderrHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is at the time of each message.

    Messages go through ``tqdm.write``, which clears an active progress bar, prints the line
    and redraws the bar below it, so log lines never break the bar.
    """

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise (as StreamHandler.emit)
            self.handleError(record)


def _log_to_stderr() -> None:
    """Sends jflows' INFO messages (resumption, evaluations) to stderr, once per process."""
    logger = logging.getLogger("jflows")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("jflows: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _use_sync_cpu_dispatch() -> None:
    """Makes JAX run programs on CPU in the calling thread (``--cpu-dispatch sync``).

    JAX reads ``jax_cpu_enable_async_dispatch`` once, when it makes its CPU client, so this
    must come before the process's first computation; later it would change nothing.

    Raises:
        ConfigError: JAX already made its clients in this process and runs asynchronously.
    """
    try:  # no public JAX function says whether it made its clients
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:  # a later JAX: the console script is a fresh process anyway
        def backends_are_initialized() -> bool:
            return False

    if jax.config.read(ASYNC_DISPATCH) and backends_are_initialized():
        raise ConfigError(
            "--cpu-dispatch sync must be chosen before the process's first JAX computation, "
            "and this process (which called jflows.cli.main) has already run JAX; run the "
            "jflows command in a fresh process, or call jax.config.update("
            f"{ASYNC_DISPATCH!r}, False) before any computation"
        )
    jax.config.update(ASYNC_DISPATCH, False)


COMMANDS = {
    "train": cmd_train, "eval": cmd_eval, "sample": cmd_sample, "plot": cmd_plot,
    "models": cmd_models,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jflows`` console script; returns the exit code."""
    _log_to_stderr()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse already printed the usage and the message
        return int(exit_.code or 0)
    if hasattr(args, "no_compile_cache"):  # train, eval, sample
        enable_compilation_cache(args.compile_cache, enabled=not args.no_compile_cache)
    try:
        if getattr(args, "cpu_dispatch", None) == "sync":
            _use_sync_cpu_dispatch()
        return COMMANDS[args.command](args)
    except TrainingDivergedError as err:
        print(f"jflows {args.command}: error: {err}", file=sys.stderr)
        return DIVERGED_EXIT
    except JflowsError as err:
        print(f"jflows {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jflows: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
