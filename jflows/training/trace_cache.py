"""Warm starts without tracing: jitted functions stored on disk as exported StableHLO.

JAX's persistent compilation cache (:mod:`jflows.training.compile_cache`) skips XLA's
compilation on a restart, but not the Python side: tracing a residual flow's training step
(a ``nn.scan`` over blocks, a Russian-roulette series under ``value_and_grad``) and lowering
it took 0.6 s of the 0.8 s a warm restart of W1 spent on its first step. This cache stores
what tracing and lowering produce, the function exported with :mod:`jax.export`, beside the
compiled executables, so a restart of the same model deserialises it (milliseconds) and the
compilation cache supplies the executable.

The entry's key is the SHA-256 of: the function's name and *parts* (the model, optimizer and
settings that define it, see :mod:`jflows.training.fingerprint`), the ``jflows`` source tree,
the versions of Python, JAX, jaxlib, Flax, optax, numpy and distrax, JAX's configuration
(``jax_enable_x64``, the default matmul precision, the PRNG implementation, ...), the device
kind, and the argument signature (tree structure, shapes, dtypes). A part that cannot be
fingerprinted, several devices, a function that cannot be exported (host callbacks) or an
entry that cannot be read (a corrupt file: reported once as a warning, then overwritten)
mean an ordinary ``jax.jit``; never a wrong function. The cache is on exactly when JAX's
compilation cache is (``jax.config.jax_compilation_cache_dir`` set; ``jflows`` and ``fit``
set it by default) and lives in its ``jflows-traces`` subdirectory;
``JFLOWS_TRACE_CACHE=off`` turns it off alone. It keeps to the compilation cache's bound
(:func:`jflows.training.cache_bounds.max_size`): a new entry that takes it past that deletes
the least recently used ones (a hit marks its entry used).

Example:
    >>> import jax.numpy as jnp
    >>> double = cached_jit(lambda x: 2 * x, name="double", parts=())
    >>> double(jnp.ones(3))  # traced once per machine when the cache is on, not once per run
    Array([2., 2., 2.], dtype=float32)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import platform
import sys
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import jax

from jflows.errors import UnfingerprintableError
from jflows.training.cache_bounds import evict_least_recently_used, max_size
from jflows.training.fingerprint import fingerprint, source_tree_digest
from jflows.training.xla_options import (
    compiler_options,
    has_convolution,
    jit_choosing_emitters,
    jit_with_options,
    under_trace,
)

ENV = "JFLOWS_TRACE_CACHE"
"""Environment variable: 0/off/false/none turns the trace cache off (it is on with JAX's
compilation cache otherwise)."""
SUBDIR = "jflows-traces"
SUFFIX = ".jflows-trace"
FORMAT = 2
_CONFIG_IGNORED = ("cache", "log", "dump", "traceback", "transfer", "visible_devices",
                   "timeout", "pprint", "source_url", "explain", "pgle", "leaked",
                   "cross_host", "captured_constants", "distributed", "profile")
logger = logging.getLogger(__name__)
stats = {"hits": 0, "stores": 0, "uncached": 0}
"""Counts of this process: entries loaded, entries written, functions jitted without cache."""


def trace_cache_dir() -> str | None:
    """``<JAX's compilation cache dir>/jflows-traces``, or None when the cache is off."""
    if os.environ.get(ENV, "").strip().lower() in ("0", "off", "false", "none", "no"):
        return None
    base = jax.config.jax_compilation_cache_dir
    return os.path.join(base, SUBDIR) if base else None


def _environment_digest() -> str:
    import jflows

    versions = [platform.python_version()]
    for name in ("jax", "jaxlib", "flax", "optax", "numpy", "distrax"):
        module = sys.modules.get(name)
        versions.append(f"{name}={getattr(module, '__version__', None)}")
    config = []
    for name in sorted(jax.config.values):
        if any(word in name for word in _CONFIG_IGNORED):
            continue
        try:
            config.append(f"{name}={getattr(jax.config, name)!r}")
        except AttributeError:
            config.append(f"{name}={jax.config.values[name]!r}")
    device = jax.devices()[0]
    return fingerprint(versions, config, source_tree_digest(jflows),
                       [device.platform, device.device_kind, jax.device_count()])


def _signature(args: tuple) -> str:
    leaves, tree = jax.tree.flatten(args)
    avals = [(tuple(a.shape), str(a.dtype), bool(getattr(a, "weak_type", False)))
             for a in map(jax.typeof, leaves)]
    return repr(tree) + repr(avals)


class _CachedJit:
    """``jax.jit(fn, **jit_kwargs)`` whose traced and lowered form is stored on disk."""

    def __init__(self, fn: Callable, name: str, digest: str, directory: str, jit_kwargs: dict):
        self._fn, self._name, self._digest, self._dir = fn, name, digest, directory
        self._jit_kwargs = jit_kwargs
        self._jitted = jit_choosing_emitters(fn, **jit_kwargs)
        self._call: Callable | None = None
        self.compiler_options: dict[str, Any] | None = None
        """XLA options of the cached program, chosen when it is built (None before)."""

    def __call__(self, *args: Any) -> Any:
        if under_trace(args):  # nested in another trace: compiled with it, nothing to store
            return self._jitted(*args)
        if self._call is None:
            self._call = self._build(args)
        return self._call(*args)

    def __getattr__(self, name: str) -> Any:
        """``lower``, ``trace``, ``eval_shape``: those of the uncached jit (for inspection)."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._jitted, name)

    def _path(self, args: tuple) -> str:
        key = hashlib.sha256(
            f"{FORMAT}\x00{self._name}\x00{self._digest}\x00{_signature(args)}".encode()
        ).hexdigest()
        return os.path.join(self._dir, f"{self._name}-{key}{SUFFIX}")

    def _build(self, args: tuple) -> Callable:
        from jax import export

        path = self._path(args)
        exported, out_tree, convolution = self._load(path)
        if exported is None:
            try:
                serialized, out_tree, convolution = self._export(args)
            except Exception as err:  # noqa: BLE001 - any export failure: plain jit
                logger.info("jflows trace cache: %s not exported (%s)", self._name, err)
                stats["uncached"] += 1
                return self._jitted
            self._store(path, serialized, out_tree, convolution)
            # the first run too runs the deserialised form: it compiles (and puts into the
            # compilation cache) exactly the program a restart runs
            exported = export.deserialize(bytearray(serialized))
        else:
            stats["hits"] += 1
        in_tree = jax.tree.structure(args)
        fn = self._fn

        def call(*call_args):
            leaves, tree = jax.tree.flatten(call_args)
            if tree != in_tree or any(
                jax.typeof(x).shape != a.shape or jax.typeof(x).dtype != a.dtype
                for x, a in zip(leaves, exported.in_avals, strict=True)
            ):
                return fn(*call_args)  # another signature: traced as usual, not cached
            return jax.tree.unflatten(out_tree, exported.call(*leaves))

        self.compiler_options = compiler_options(jax.default_backend(), convolution)
        return jit_with_options(call, self.compiler_options, **self._jit_kwargs)

    def _export(self, args: tuple):
        from jax import export

        leaves, in_tree = jax.tree.flatten(args)
        out_trees = []

        def flat(*flat_args):
            out = self._fn(*jax.tree.unflatten(in_tree, flat_args))
            out_leaves, out_tree = jax.tree.flatten(out)
            out_trees.append(out_tree)
            return out_leaves

        flat_kwargs = {k: v for k, v in self._jit_kwargs.items() if k != "donate_argnums"}
        if flat_kwargs:  # shardings given per argument: per leaf for the flat function
            flat_kwargs = _flat_shardings(flat_kwargs, args)
        jitted = jax.jit(flat, **flat_kwargs)
        convolution = has_convolution(jitted.trace(*leaves).jaxpr)
        exported = export.export(jitted)(*leaves)  # reuses that trace
        return bytes(exported.serialize()), out_trees[-1], convolution

    def _load(self, path: str):
        """``(export, output tree, has a convolution)`` of the entry; all None: a miss."""
        if not os.path.exists(path):
            return None, None, None
        from jax import export

        try:
            with open(path, "rb") as f:
                entry = pickle.load(f)
            if entry.get("format") != FORMAT:
                return None, None, None
            exported = export.deserialize(bytearray(entry["exported"]))
            _touch(path)
            return exported, entry["out_tree"], bool(entry["convolution"])
        except Exception as err:  # noqa: BLE001 - a corrupt entry is a miss, said once
            warnings.warn(
                f"jflows: trace cache entry {path!r} cannot be read ({type(err).__name__}: "
                f"{err}); tracing again and replacing it. Set {ENV}=off to turn the trace "
                "cache off.",
                RuntimeWarning, stacklevel=4,
            )
            return None, None, None

    def _store(self, path: str, serialized: bytes, out_tree, convolution: bool) -> None:
        try:
            os.makedirs(self._dir, exist_ok=True)
            entry = {"format": FORMAT, "exported": serialized, "out_tree": out_tree,
                     "convolution": convolution}
            fd, tmp = tempfile.mkstemp(dir=self._dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                pickle.dump(entry, f)
            os.replace(tmp, path)  # atomic: a concurrent reader sees all or nothing
            stats["stores"] += 1
            evict_least_recently_used(self._dir, max_size(), SUFFIX, keep=path)
        except (OSError, pickle.PicklingError, TypeError, AttributeError) as err:
            logger.info("jflows trace cache: %s not stored (%s)", self._name, err)


def _touch(path: str) -> None:
    """Marks an entry used now (its modification time orders the eviction)."""
    with contextlib.suppress(OSError):  # read-only or removed meanwhile: the order is a hint
        os.utime(path)


def _flat_shardings(kwargs: dict, args: tuple) -> dict:
    """``in_shardings`` given per argument (a sharding each), repeated per leaf."""
    out = dict(kwargs)
    if "in_shardings" in kwargs:
        per_arg = kwargs["in_shardings"]
        if not isinstance(per_arg, tuple | list):
            per_arg = (per_arg,) * len(args)
        out["in_shardings"] = tuple(
            s for arg, s in zip(args, per_arg, strict=True) for _ in jax.tree.leaves(arg)
        )
    if "out_shardings" in kwargs:
        out.pop("out_shardings")  # the outer jit applies them to the tree
    return out


def cached_jit(fn: Callable, *, name: str, parts: tuple, **jit_kwargs: Any) -> Callable:
    """``jax.jit(fn, **jit_kwargs)``, traced once per machine when the cache is on.

    Args:
        fn: the function; what it traces to must be decided by ``parts`` and the arguments'
            shapes and dtypes (and the ``jflows`` code, which the key covers).
        name: a short name, the start of the entry's file name.
        parts: the objects that define ``fn`` (model, optimizer, settings).
        **jit_kwargs: passed to ``jax.jit`` (``in_shardings``, ``out_shardings``,
            ``donate_argnums``).

    Returns:
        A callable like ``jax.jit(fn)``; an uncached one when the cache is off, a part cannot
        be fingerprinted or the function runs on several devices. Either way it compiles with
        the XLA:CPU fusion emitters :mod:`jflows.training.xla_options` chooses.
    """
    directory = trace_cache_dir()
    if directory is None or jax.device_count() != 1 or jax.process_count() != 1:
        return jit_choosing_emitters(fn, **jit_kwargs)
    try:
        digest = fingerprint(_environment_digest(), parts, repr(sorted(jit_kwargs.items())))
    except UnfingerprintableError as err:
        logger.info("jflows trace cache: %s not cached (%s)", name, err)
        stats["uncached"] += 1
        return jit_choosing_emitters(fn, **jit_kwargs)
    return _CachedJit(fn, name, digest, directory, jit_kwargs)
