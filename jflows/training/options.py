"""Model options of a run: the glossary, and ``--opt`` values checked against the factories.

Every keyword of a model factory in :data:`jflows.models.MODELS` is a model option; its type
is the factory's type hint (``typing.Literal`` for a fixed set of choices). :func:`coerce_options`
turns user values (from ``--opt key=value``, a Python dict or a run's ``config.json``) into the
exact types the factory expects, or raises one :class:`~jflows.errors.ConfigError` that names the
option, the expected type or choices, and the default. :data:`GLOSSARY` explains each option
name once, for every factory that takes it (README, "Model options", and ``jflows models NAME``).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

from jflows.errors import ConfigError
from jflows.models import MODELS

RESERVED_OPTIONS = ("event_shape", "preprocessing", "training", "context_shape")
"""Factory arguments that a run sets itself and that ``--opt`` may not override."""

GLOSSARY: dict[str, str] = {
    "activation": "activation of the residual branches (1-Lipschitz) or Mint layers",
    "actnorm": "ActNorm layers (before every coupling or Mint pair; around residual blocks)",
    "augment": "dimensions appended to each vector and drawn from q(a | x) (augmented flows)",
    "base": "base distribution: standard normal or a learned diagonal Gaussian",
    "base_model": "blocks each CIF layer wraps: RealNVP coupling pairs or residual blocks",
    "bound": "half-width B of the splines' interval [-B, B] (identity outside)",
    "coeff": "Lipschitz coefficient of each layer of a residual branch, in (0, 1)",
    "conv_hidden": "channels of the convolutional conditioners (images)",
    "coupling": "coupling kind: affine or additive",
    "dtype": "dtype of parameters and computation (float64 needs JAX_ENABLE_X64=1)",
    "exact_max_dims": "evaluation uses the exact log-det up to this many scalars per event",
    "factor_out": "factor out half the channels after each squeeze (images)",
    "fc_blocks": "fully connected residual blocks at the end (images)",
    "fc_hidden": "widths of the fully connected residual blocks",
    "gradient": "gradient of the log-det series: Neumann estimator or backprop",
    "hidden": "hidden widths: MLP widths (vectors) or conv channels (images: glow, mintnet, nsf)",
    "index_dims": "dimensions of each CIF layer's continuous index u",
    "index_hidden": "MLP widths of CIF's posterior and prior of u and of s(u), t(u)",
    "index_init": "start of CIF's s(u), t(u): zero (the base model) or random",
    "inverse_atol": "absolute tolerance of the fixed-point inverse (evaluation-time)",
    "inverse_damping": (
        "step size in (0, 2) of MintNet's damped fixed-point inverse (evaluation-time)"
    ),
    "inverse_max_iter": "iteration cap of the fixed-point inverse (evaluation-time)",
    "inverse_rtol": "relative tolerance of the fixed-point inverse (evaluation-time)",
    "kernel_size": "odd kernel size of the masked convolutions",
    "last_init_scale": "factor on the initial weights of each branch's last layer",
    "layers": "indexed layers of a CIF (each around one block of base_model)",
    "layers_per_stage": "lower/upper Mint layer pairs per stage",
    "learned_prior": "learned conditional and top priors (else N(0, I))",
    "learned_signs": "learn the sign probability given |x| (else fair coins)",
    "levels": "number of scales L (glow)",
    "logdet": "training log-det estimator: roulette (unbiased), series or exact",
    "lu": "LU-parameterised 1x1 convolutions",
    "n_blocks": "residual blocks (per scale for images)",
    "n_channel": "channel-wise couplings per scale (images)",
    "n_checkerboard": "checkerboard couplings per scale (images)",
    "n_couplings": "number of couplings for vectors (even)",
    "n_exact_terms": "exact terms of the log-det series before the random tail",
    "n_layers": "masked autoregressive layers (maf, iaf)",
    "n_levels": "number of scales (realnvp images)",
    "n_scales": "number of scales (residual flows on images)",
    "n_terms": "terms of the truncated log-det series (training)",
    "num_bins": "bins K of every rational-quadratic spline",
    "on_nonconvergence": "what a non-converged inverse does: raise, nan or ignore",
    "permutation": (
        "feature permutation after every autoregressive layer (reverse or random) or "
        "coupling pair (nsf: random or none)"
    ),
    "pool_hidden": "channels of each max-pool's conditional network",
    "power_iterations": "power iterations per training step (spectral normalisation)",
    "q_hidden": "MLP widths of the augmentation's q(a | x)",
    "remat_surrogate": "recompute the Neumann surrogate in the backward pass (memory)",
    "scale_bound": "bound b of the affine log-scales, s = b tanh(raw / b) (maf, iaf)",
    "scale_map": "parameterisation of the coupling scales",
    "sign_hidden": "MLP widths of the learned sign probability",
    "stages": "number of scales, with a squeeze between consecutive ones (mintnet)",
    "steps": "Glow steps per scale K",
    "tail": "distribution of the number of random log-det terms",
    "transform": "elementwise transform of the autoregressive layers: affine or spline",
    "unroll": "blocks per iteration of the nn.scan loops (True: all)",
}
"""One line per option name, shared by all factories (names are not renamed: runs use them)."""


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One option of a factory: name, type hint, default and help line."""

    name: str
    hint: Any
    default: Any
    help: str

    @property
    def type_text(self) -> str:
        return type_text(self.hint)


def check_model(name: str) -> None:
    """Raises ConfigError unless ``name`` is a registered model."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")


def option_specs(model: str) -> list[OptionSpec]:
    """The options of ``model``'s factory, in signature order (reserved arguments left out).

    Example:
        >>> [s.name for s in option_specs("glow")][:3]
        ['levels', 'steps', 'hidden']
    """
    check_model(model)
    factory = MODELS[model]
    hints = typing.get_type_hints(factory)
    specs = []
    for name, param in inspect.signature(factory).parameters.items():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY or name in RESERVED_OPTIONS:
            continue
        specs.append(OptionSpec(name, hints.get(name, Any), param.default, GLOSSARY.get(name, "")))
    return specs


def type_text(hint: Any) -> str:
    """A short text for a type hint: ``int``, ``tuple[int, ...]``, ``'a' | 'b'``, ``... | None``.

    Example:
        >>> type_text(tuple[int, ...] | None)
        'tuple[int, ...] | None'
    """
    origin = typing.get_origin(hint)
    if hint is type(None) or hint is None:
        return "None"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in typing.get_args(hint))
    if origin in (tuple, Sequence):
        args = typing.get_args(hint)
        inner = type_text(args[0]) if args else "Any"
        return f"tuple[{inner}, ...]"
    return getattr(hint, "__name__", str(hint))


_MISMATCH = object()
"""What :func:`coerce_value` returns for a value that does not fit the hint."""


def coerce_value(value: Any, hint: Any) -> Any:
    """``value`` converted to ``hint`` (ints to floats, lists to tuples), else :data:`_MISMATCH`.

    Example:
        >>> coerce_value([8, 8], tuple[int, ...] | int | None)
        (8, 8)
    """
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if hint is type(None) or hint is None:
        if value is None:
            return None
        return _MISMATCH
    if origin is Literal:
        if isinstance(value, str | bool | int | type(None)) and value in typing.get_args(hint):
            return value
        return _MISMATCH
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            result = coerce_value(value, arm)
            if result is not _MISMATCH:
                return result
        return _MISMATCH
    if origin in (tuple, Sequence):
        if not isinstance(value, list | tuple):
            return _MISMATCH
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        items = tuple(coerce_value(v, inner) for v in value)
        return _MISMATCH if any(v is _MISMATCH for v in items) else items
    if hint is bool:
        if isinstance(value, bool):
            return value
        return _MISMATCH
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return _MISMATCH
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return _MISMATCH
    if hint is str:
        if isinstance(value, str):
            return value
        return _MISMATCH
    return value  # a hint this checker does not know: the factory checks it


def coerce_options(model: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against ``model``'s factory and converted to its types.

    Raises:
        ConfigError: an unknown model or option, a reserved option, a value of the wrong type
            or not among the choices; the message names the option, the expected type or
            choices and the default.

    Example:
        >>> coerce_options("realnvp", {"hidden": [64, 64], "scale_map": "exp"})
        {'hidden': (64, 64), 'scale_map': 'exp'}
    """
    specs = {s.name: s for s in option_specs(model)}
    coerced = {}
    for key, value in options.items():
        if key in RESERVED_OPTIONS:
            raise ConfigError(
                f"model option {key!r} is set by jflows itself (from the data and the mode); "
                f"remove --opt {key}=..."
            )
        if key not in specs:
            raise ConfigError(
                f"model {model!r} has no option {key!r}; valid options are "
                f"{', '.join(specs)} (see `jflows models {model}`)"
            )
        spec = specs[key]
        coerced[key] = coerce_value(value, spec.hint)
        if coerced[key] is _MISMATCH:
            if typing.get_origin(spec.hint) is Literal:
                expected = f"one of {', '.join(map(repr, typing.get_args(spec.hint)))}"
            else:
                expected = f"of type {spec.type_text}"
            raise ConfigError(
                f"model {model!r} option {key}={value!r} must be {expected} (default "
                f"{spec.default!r}); got a {type(value).__name__}"
            ) from None
    return coerced


def describe_models() -> list[str]:
    """One line per model: its name and the first line of its factory's docstring."""
    width = max(map(len, MODELS))
    return [f"{name:<{width}}  {_summary(factory)}" for name, factory in MODELS.items()]


def _summary(factory) -> str:
    doc = inspect.getdoc(factory) or ""
    return doc.splitlines()[0] if doc else ""


def describe_options(model: str) -> list[str]:
    """One line per option of ``model``: name, type, default and the glossary's help.

    Example:
        >>> describe_options("glow")[2].split()[:3]
        ['levels:', 'int', '=']
    """
    specs = option_specs(model)
    width = max(len(s.name) for s in specs)
    lines = [
        f"{model}: {_summary(MODELS[model])}",
        "options (--opt KEY=VALUE; the glossary is in the README, \"Model options\"):",
    ]
    for spec in specs:
        lines.append(
            f"  {spec.name + ':':<{width + 1}} {spec.type_text} = {spec.default!r}  {spec.help}"
        )
    return lines


def glossary_markdown() -> str:
    """The README's "Model options" table: each option, its meaning and its factories."""
    takers: dict[str, list[str]] = {}
    for model in MODELS:
        for spec in option_specs(model):
            takers.setdefault(spec.name, []).append(model)
    lines = ["| option | meaning | models |", "|---|---|---|"]
    for name in sorted(takers):
        lines.append(f"| `{name}` | {GLOSSARY.get(name, '')} | {', '.join(takers[name])} |")
    return "\n".join(lines)
