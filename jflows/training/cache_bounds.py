"""The bound on the on-disk caches: JAX's compilation cache and jflows' trace cache.

:mod:`jflows.training.compile_cache` turns on JAX's least-recently-used eviction
(``jax_compilation_cache_max_size``, 2 GiB unless the user chose a bound); the trace cache
(:mod:`jflows.training.trace_cache`) keeps its own directory to the same bound with
:func:`evict_least_recently_used`. :func:`add_missing_access_times` readies the entries a
cache wrote while it was unbounded for JAX's eviction.
"""

from __future__ import annotations

import contextlib
import os

import jax

_CACHE_SUFFIX, _ATIME_SUFFIX = "-cache", "-atime"  # the file names of JAX's LRU cache


def max_size() -> int:
    """The cache's bound in bytes as JAX will apply it (-1: unbounded)."""
    return int(jax.config.jax_compilation_cache_max_size)


def evict_least_recently_used(
    directory: str, limit: int, suffix: str, keep: str | None = None
) -> int:
    """Deletes the least recently used entries until ``directory`` holds ``limit`` bytes.

    Entries are the files whose names end in ``suffix``, ordered by modification time (when
    written or last loaded). ``limit`` -1 means unbounded; ``keep`` (the entry just written)
    is never deleted. Returns the number deleted.

    Example:
        >>> import tempfile
        >>> evict_least_recently_used(tempfile.mkdtemp(), limit=0, suffix=".bin")  # nothing stored
        0
    """
    if limit < 0:
        return 0
    entries = []
    try:
        with os.scandir(directory) as it:
            for item in it:
                if item.name.endswith(suffix) and item.is_file():
                    info = item.stat()
                    entries.append((info.st_mtime_ns, item.path, info.st_size))
    except OSError:
        return 0
    total, removed = sum(size for _, _, size in entries), 0
    for _, path, size in sorted(entries):
        if total <= limit:
            break
        if path == keep:
            continue
        with contextlib.suppress(OSError):  # another process removed it first
            os.remove(path)
        total -= size
        removed += 1
    return removed


def add_missing_access_times(directory: str | os.PathLike) -> int:
    """Writes the access-time file JAX's eviction reads for every entry that lacks one.

    Entries written while the cache was unbounded have none, and JAX's eviction fails on
    them (every later write would be refused with a warning). Each gets its file's
    modification time, so the oldest go first. Returns the number of files written.

    Example:
        >>> import tempfile
        >>> add_missing_access_times(tempfile.mkdtemp())  # an empty cache: nothing to add
        0
    """
    written = 0
    try:
        names = set(os.listdir(directory))
    except OSError:
        return 0
    for name in names:
        if not name.endswith(_CACHE_SUFFIX):
            continue
        atime = name[: -len(_CACHE_SUFFIX)] + _ATIME_SUFFIX
        if atime in names:
            continue
        try:
            stamp = os.stat(os.path.join(directory, name)).st_mtime_ns
            with open(os.path.join(directory, atime), "wb") as f:
                f.write(int(stamp).to_bytes(8, "little"))
            written += 1
        except OSError:  # removed meanwhile by another process, or read-only: JAX's concern
            continue
    return written
