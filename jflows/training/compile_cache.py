"""Warm starts: JAX's persistent compilation cache, on by default for ``jflows`` and ``fit``.

Compiling a training step takes seconds for a 2-D flow and far longer for image models; every
restart of a run pays it again. With JAX's persistent compilation cache the compiled
executables are stored on disk, keyed by the program, the JAX/XLA versions and the device, so
a second run of the same model on the same machine loads them instead of compiling.

Where the cache lives, in order:

1. the ``path`` argument of :func:`enable_compilation_cache` (the CLI's ``--compile-cache
   DIR``);
2. the environment variable ``JFLOWS_COMPILATION_CACHE``: a directory, or ``0``/``off``/
   ``false``/``none`` to disable the cache (the CLI's ``--no-compile-cache`` does the same);
3. ``$XDG_CACHE_HOME/jflows/xla`` (``~/.cache/jflows/xla`` when ``XDG_CACHE_HOME`` is unset).

The same directory holds, in ``jflows-traces``, the traced and lowered steps
(:mod:`jflows.training.trace_cache`), so a restart skips tracing as well.

The cache is bounded: when it would grow past :data:`DEFAULT_MAX_SIZE` bytes, the least
recently used entries are deleted (JAX's own LRU eviction, and the same rule for the traced
steps). ``JAX_COMPILATION_CACHE_MAX_SIZE`` (bytes; ``-1``: unbounded) or
``jax.config.update("jax_compilation_cache_max_size", ...)`` chooses another bound.

A cache that cannot be used (the path is a file, or not writable) is reported once as a
warning and training goes on without it; JAX itself treats an unreadable entry as a miss and
recompiles. A cache already configured by the user (``jax.config.jax_compilation_cache_dir``)
is left as it is.
"""

from __future__ import annotations

import os
import warnings

import jax

from jflows.training.cache_bounds import add_missing_access_times, max_size

ENV = "JFLOWS_COMPILATION_CACHE"
"""Environment variable: a cache directory, or 0/off/false/none to disable the cache."""
OFF = ("0", "off", "false", "none", "no", "")
MIN_COMPILE_SECONDS = 0.0
"""Executables that took less than this to compile are not stored (JAX's default is 1 s).

0: every executable is stored, down to the key splits and data placement that run eagerly
before the first step. Each of those compiles in 0.02-0.3 s; on a restart of a 2-D flow they
were a fifth of the time to the first step (``benchmarks/investigations/warm_start.py``).
Their entries are a few kB each.
"""
MAX_SIZE_ENV = "JAX_COMPILATION_CACHE_MAX_SIZE"
"""JAX's environment variable for the cache's bound in bytes (-1: unbounded)."""
DEFAULT_MAX_SIZE = 2 * 2**30
"""Bytes the cache may hold (2 GiB) when the user has not chosen a bound.

Every model, batch shape and setting a user trains adds its executables (W4, the image
residual flow of ``benchmarks/``: 2.2 MB with its traces, 1.3 MB of it the training step;
``benchmarks/README.md``, "Bounded cache", has the command); without a bound, a default-on
cache in the user's home directory grows for as long as the machine is used.
"""


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/jflows/xla``, or ``~/.cache/jflows/xla``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jflows", "xla")


def resolve_cache_dir(path: str | os.PathLike | None = None, enabled: bool = True) -> str | None:
    """The cache directory to use, or None when the cache is disabled (module docstring).

    Example:
        >>> resolve_cache_dir("/tmp/my-cache")
        '/tmp/my-cache'
        >>> resolve_cache_dir(enabled=False) is None
        True
    """
    if not enabled:
        return None
    if path is not None:
        return os.fspath(path)
    env = os.environ.get(ENV)
    if env is not None:
        return None if env.strip().lower() in OFF else env
    return default_cache_dir()


def enable_compilation_cache(
    path: str | os.PathLike | None = None, *, enabled: bool = True
) -> str | None:
    """Turns on JAX's persistent compilation cache; returns the directory (None: disabled).

    Safe to call more than once; a directory the user already configured in ``jax.config`` is
    kept unless ``path`` is given.

    Args:
        path: the cache directory (default: ``JFLOWS_COMPILATION_CACHE`` or the user cache).
        enabled: False leaves the cache off (``--no-compile-cache``).

    Example:
        >>> enable_compilation_cache(enabled=False) is None  # jflows train --no-compile-cache
        True
    """
    current = jax.config.jax_compilation_cache_dir
    if current and path is None:
        return current
    directory = resolve_cache_dir(path, enabled)
    if directory is None:
        return None
    try:
        os.makedirs(directory, exist_ok=True)
        if not os.access(directory, os.W_OK):
            raise PermissionError(f"{directory!r} is not writable")
    except OSError as err:
        warnings.warn(
            f"jflows: the compilation cache {directory!r} cannot be used ({err}); compiling "
            f"without it. Pass --compile-cache DIR or set {ENV}=off to silence this.",
            RuntimeWarning, stacklevel=2,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    _bound(directory)
    return directory


def _bound(directory: str) -> None:
    """Sets :data:`DEFAULT_MAX_SIZE` unless the user chose a bound; readies old entries."""
    if os.environ.get(MAX_SIZE_ENV) is None and max_size() == -1:
        # JAX's eviction locks the directory with ``filelock`` (a dependency of jflows)
        jax.config.update("jax_compilation_cache_max_size", DEFAULT_MAX_SIZE)
    if max_size() != -1:
        add_missing_access_times(directory)
