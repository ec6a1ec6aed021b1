"""Content fingerprints of models, optimizers and settings, for the on-disk trace cache.

A fingerprint is a SHA-256 digest of everything that decides what a function traces to: for a
Flax module its class and every dataclass field (sub-modules, numbers, tuples, activation
functions), for an optax transformation its ``init``/``update`` closures and the values they
captured (learning rates, betas, schedules), for a function its module, qualified name,
defaults and closure cells. The code itself enters by file: a class or function defined
outside the libraries whose versions the cache key already names (JAX, Flax, optax, numpy,
distrax) contributes the SHA-256 of its module's source file and of every non-library module
that module uses (:func:`_module_closure_digest`), so editing a user-defined bijector, or a
helper it calls from another file, changes the fingerprint (files are read again when their
size or modification time changes). Two objects built the same way in two processes have the
same fingerprint; memory addresses never enter it.

Anything whose content cannot be read this way (an object of an unknown class, a function
without a source file, e.g. one typed into a notebook cell) raises
:class:`~jflows.errors.UnfingerprintableError`: the caller then does not cache, it never guesses.

Example:
    >>> import optax
    >>> fingerprint(optax.adam(1e-3)) == fingerprint(optax.adam(1e-3))
    True
    >>> fingerprint(optax.adam(1e-3)) == fingerprint(optax.adam(2e-3))
    False
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import inspect
import os
import sys
import types
from typing import Any

import numpy as np

from jflows.errors import UnfingerprintableError

LIBRARIES = ("jax", "jaxlib", "flax", "optax", "numpy", "distrax", "chex", "builtins",
             "math", "operator", "functools", "tensorflow_probability", "ml_dtypes", "scipy")
"""Top-level packages whose code the cache key covers by version, not by source file."""


def _file_digest(path: str) -> str:
    """The SHA-256 of a file's bytes (read again when its size or modification time changes)."""
    st = os.stat(path)
    return _file_digest_at(path, st.st_size, st.st_mtime_ns)


@functools.cache
def _file_digest_at(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _is_library(module_name: str | None) -> bool:
    return bool(module_name) and module_name.split(".")[0] in LIBRARIES


def _source_digest(module_name: str | None, what: Any) -> str:
    """The code digest of the module defining ``what`` (libraries: '')."""
    if _is_library(module_name):
        return ""
    try:
        return _module_closure_digest(module_name or "")
    except UnfingerprintableError as err:
        raise UnfingerprintableError(f"{what!r}: {err}") from None


def _module_closure_digest(module_name: str) -> str:
    """The SHA-256 of the source files of a module and of every non-library module it uses.

    "Uses": reachable through module globals (imported modules, and the modules defining
    imported functions and classes), so a helper a user's bijector calls from another file of
    theirs is covered too.
    """
    h = hashlib.sha256()
    seen, queue = {module_name}, [module_name]
    while queue:
        name = queue.pop()
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if _is_installed(name, path):  # covered by the package's version
            top = sys.modules.get(name.split(".")[0])
            h.update(f"{name}\x00{getattr(top, '__version__', '')}\x00".encode())
            continue
        if not path or not path.endswith(".py"):
            raise UnfingerprintableError(
                f"module {name!r} has no Python source file (e.g. a notebook cell); its code "
                "cannot enter the fingerprint"
            )
        h.update(f"{name}\x00{_file_digest(path)}\x00".encode())
        for value in list(vars(module).values()):
            used = value.__name__ if isinstance(value, types.ModuleType) else getattr(
                value, "__module__", None) if isinstance(value, type | types.FunctionType) else None
            if isinstance(used, str) and used not in seen and not _is_library(used):
                seen.add(used)
                queue.append(used)
    return h.hexdigest()


def _is_installed(name: str, path: str | None) -> bool:
    """A module of the standard library or of an installed (not editable) package."""
    if name.split(".")[0] in sys.stdlib_module_names or name in sys.builtin_module_names:
        return True
    return path is not None and ("site-packages" in path or "dist-packages" in path)


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', None)}"


class _Hasher:
    def __init__(self):
        self._h = hashlib.sha256()
        self._active: set[int] = set()
        self._sources: dict[str | None, str] = {}

    def put(self, *tokens: str) -> None:
        for token in tokens:
            self._h.update(token.encode())
            self._h.update(b"\x00")

    def digest(self) -> str:
        return self._h.hexdigest()

    def source(self, module_name: str | None, what: Any) -> str:
        """:func:`_source_digest`, once per module for this fingerprint."""
        if module_name not in self._sources:
            self._sources[module_name] = _source_digest(module_name, what)
        return self._sources[module_name]

    def cls(self, cls: type) -> None:
        self.put("class", _qualified(cls), self.source(cls.__module__, cls))

    def walk(self, obj: Any) -> None:  # noqa: C901 - one branch per kind of value
        if obj is None or isinstance(obj, bool | int | float | complex | str | bytes):
            self.put(type(obj).__name__, repr(obj))
        elif isinstance(obj, enum.Enum):
            self.cls(type(obj))
            self.put("enum", obj.name)
        elif isinstance(obj, type):
            self.cls(obj)
        elif isinstance(obj, np.dtype):
            self.put("dtype", str(obj))
        elif isinstance(obj, np.ndarray | np.generic) or _is_jax_array(obj):
            a = np.asarray(obj)
            self.put("array", str(a.dtype), repr(a.shape), hashlib.sha256(a.tobytes()).hexdigest())
        elif id(obj) in self._active:
            self.put("cycle")
        else:
            self._active.add(id(obj))
            try:
                self._composite(obj)
            finally:
                self._active.discard(id(obj))

    def _composite(self, obj: Any) -> None:  # noqa: C901
        if isinstance(obj, tuple | list):
            self.put(type(obj).__name__, str(len(obj)))
            if type(obj) not in (tuple, list):  # namedtuples: the class too
                self.cls(type(obj))
            for item in obj:
                self.walk(item)
        elif isinstance(obj, dict | types.MappingProxyType) or _is_frozen_dict(obj):
            self.put("dict", str(len(obj)))
            for k in sorted(obj, key=repr):
                self.walk(k)
                self.walk(obj[k])
        elif isinstance(obj, set | frozenset):
            self.put("set", str(len(obj)))
            for item in sorted(obj, key=repr):
                self.walk(item)
        elif isinstance(obj, functools.partial):
            self.put("partial")
            self.walk(obj.func)
            self.walk(obj.args)
            self.walk(obj.keywords)
        elif isinstance(obj, types.MethodType):
            self.put("method")
            self.walk(obj.__func__)
            self.walk(obj.__self__)
        elif isinstance(obj, types.FunctionType):
            self._function(obj)
        elif isinstance(obj, types.BuiltinFunctionType | np.ufunc):
            self.put("builtin", _qualified(obj), getattr(obj, "__name__", ""))
        elif dataclasses.is_dataclass(obj):
            self.cls(type(obj))
            for field in dataclasses.fields(obj):
                if field.name == "parent":  # a Flax module's parent: not its content
                    continue
                self.put("field", field.name)
                self.walk(getattr(obj, field.name, None))
        elif hasattr(obj, "__wrapped__") and callable(obj):  # jax.jit, functools.wraps
            self.put("wrapped", type(obj).__name__)
            self.walk(obj.__wrapped__)
        elif _is_library(type(obj).__module__) and hasattr(obj, "fun") and callable(obj):
            self.put("library callable", _qualified(type(obj)))  # jax.custom_jvp/custom_vjp
            self.walk(obj.fun)
        else:
            raise UnfingerprintableError(
                f"cannot fingerprint a {type(obj).__module__}.{type(obj).__qualname__} "
                f"({obj!r:.80})"
            )

    def _function(self, fn: types.FunctionType) -> None:
        self.put("function", _qualified(fn), self.source(fn.__module__, fn))
        self.walk(fn.__defaults__)
        self.walk(fn.__kwdefaults__)
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True):
            self.put("cell", name)
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell (a name bound later)
                self.put("empty")
                continue
            self.walk(value)


def _is_jax_array(obj: Any) -> bool:
    import jax

    return isinstance(obj, jax.Array) and not isinstance(obj, jax.core.Tracer)


def _is_frozen_dict(obj: Any) -> bool:
    from flax.core import FrozenDict

    return isinstance(obj, FrozenDict)


def fingerprint(*objs: Any) -> str:
    """The SHA-256 hex digest of ``objs``' content (module docstring).

    Raises:
        UnfingerprintableError: an object (or something it holds) whose content cannot be read.
    """
    h = _Hasher()
    for obj in objs:
        h.walk(obj)
    return h.digest()


def source_tree_digest(package: types.ModuleType) -> str:
    """The SHA-256 of every ``.py`` file of ``package`` (names and contents, sorted)."""
    import pathlib

    root = pathlib.Path(inspect.getfile(package)).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\x00")
        h.update(_file_digest(str(path)).encode())
    return h.hexdigest()
