"""The typed, versioned record of a run: what ``config.json`` holds.

A :class:`RunConfig` has three parts (and an optional fourth), each a typed field group:

* **model**: ``model`` (a name of ``jflows.models.MODELS``) and its factory ``options``
  (converted to the factory's types by :func:`jflows.training.options.coerce_options`);
* **data and pre-processing**: the data spec and what was read from it (``data``,
  ``data_name``, ``kind``, ``event_shape``, ``levels``, ``data_levels``, ``n_bits``), the
  pre-processing numbers (``mean``/``std`` of vectors, ``logit_alpha`` and
  ``dequantization`` of images, None meaning uniform as runs before it used; for vectors
  ``dequantization`` is None or ``"uniform"``, and then the dequantized lattice columns,
  ``lattice_columns``/``lattice_offsets``/``lattice_spacings``/``lattice_levels``) and the
  splits (``test_fraction``, ``n_train``, ``n_test``, ``n_val``, ``val_fraction``,
  ``split_seed``);
* **training**: ``seed``, ``steps``, ``batch_size``, the optimizer (``lr``, ``schedule``,
  ``warmup_steps``, ``grad_clip``, ``weight_decay``), evaluation and checkpoints
  (``eval_every``, ``checkpoint_every``, ``eval_batch_size``, ``patience``) and the sampling
  ``temperature`` of the pictures;
* **context** (optional; conditional runs ``p(x | c)`` of ``jflows train --context C.npy`` or
  of a conditional built-in such as ``conditional-ring``): ``context`` (the absolute path of
  the context file, None for a built-in's own), ``context_shape`` (``[k]``) and the
  standardisation of the contexts, ``context_mean``/``context_std`` (of the training rows);
* **hybrid** (optional; runs of ``jflows train --hybrid-lambda``): ``hybrid_lambda``, the
  number of classes ``n_classes`` of the classifier head on the flow's latent, and ``labels``
  (the absolute path of a ``--labels`` file, None for the default beside the data);

plus ``version`` (:data:`CONFIG_VERSION`) and ``jflows_version``. Every field is checked
against its type when a record is made, so a wrong value is reported by name, not found later.
Fields read as attributes (``config.steps``) or, like the JSON they come from, as keys
(``config["steps"]``).

Versions: 1 (no ``"version"`` key; settings added later take the values those runs used),
2 (the key, typed options), 3 (this record: every field present and typed). Older files load;
a newer one is refused with a message naming its version.

Example:
    >>> config = RunConfig.from_dict({"model": "realnvp", "options": {}, "data": "moons",
    ...                                "data_name": "moons", "kind": "vector",
    ...                                "event_shape": [2], "steps": 100})
    >>> config.steps, config["event_shape"], config.version
    (100, (2,), 3)
    >>> RunConfig.from_dict({**config.to_dict(), "steps": "ten"})
    Traceback (most recent call last):
    ...
    jflows.errors.ConfigError: run config: steps must be int, got 'ten' (str)
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from jflows.errors import ConfigError

CONFIG_VERSION = 3
"""Format version of ``config.json`` written by this jflows."""


@dataclasses.dataclass(frozen=True)
class RunConfig(Mapping):
    """A run's configuration (see the module docstring for the three parts)."""

    # model
    model: str
    options: dict[str, Any]
    # data and pre-processing
    data: str
    data_name: str
    kind: Literal["vector", "image"]
    event_shape: tuple[int, ...]
    levels: int | None = None
    data_levels: int | None = None
    n_bits: int | None = None
    logit_alpha: float | None = None
    dequantization: Literal["uniform", "variational"] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    lattice_columns: tuple[int, ...] | None = None
    lattice_offsets: tuple[float, ...] | None = None
    lattice_spacings: tuple[float, ...] | None = None
    lattice_levels: tuple[int, ...] | None = None
    test_fraction: float = 0.1
    n_train: int | None = None
    n_test: int | None = None
    n_val: int | None = None
    val_fraction: float = 0.0
    split_seed: int | None = None
    # conditional runs (jflows train --context, or a conditional built-in): None otherwise
    context: str | None = None
    context_shape: tuple[int, ...] | None = None
    context_mean: tuple[float, ...] | None = None
    context_std: tuple[float, ...] | None = None
    # training
    seed: int = 0
    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup_steps: int = 0
    grad_clip: float | None = None
    weight_decay: float = 0.0
    eval_every: int = 1000
    checkpoint_every: int = 1000
    eval_batch_size: int = 1000
    patience: int = 0
    temperature: float = 1.0
    # hybrid runs (jflows train --hybrid-lambda): None for a plain density model
    hybrid_lambda: float | None = None
    n_classes: int | None = None
    labels: str | None = None
    # provenance
    version: int = CONFIG_VERSION
    jflows_version: str = ""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = _check(field.name, getattr(self, field.name), hints[field.name])
            object.__setattr__(self, field.name, value)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:
        """A record from ``config.json``'s content (any version up to :data:`CONFIG_VERSION`).

        Raises:
            ConfigError: an unknown key, a missing required key or a value of the wrong type,
                named in the message.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"run config: unknown keys {unknown}; known keys: {sorted(names)}")
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.name not in values]
        if missing:
            raise ConfigError(f"run config: missing keys {missing}")
        return cls(**{**dict(values), "version": CONFIG_VERSION})

    def to_dict(self) -> dict[str, Any]:
        """The JSON content (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.items()}

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _check(name: str, value: Any, hint: Any) -> Any:
    """``value`` converted to ``hint`` (lists to tuples, ints to floats) or a ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check(name, value, inner[0] if len(inner) == 1 else hint)
    ok, converted = False, value
    if origin is Literal:
        ok = value in args
    elif origin is tuple:
        if isinstance(value, list | tuple):
            converted = tuple(_check(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value))
            ok = True
    elif origin is dict or hint is dict:
        ok = isinstance(value, dict)
    elif hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        converted = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(
            f"run config: {name} must be {_type_name(hint)}, got {value!r} "
            f"({type(value).__name__})"
        )
    return converted
