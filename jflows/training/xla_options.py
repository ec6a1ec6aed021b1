"""Which XLA:CPU options compile jflows' training programs: fusion emitters, LLVM effort.

XLA:CPU (jaxlib 0.10) emits the fused elementwise kernels of a program with its MLIR fusion
emitters by default. Compiling a large program with them takes far more memory than with its
classic emitters (``xla_cpu_use_fusion_emitters=False``), and on convolutional flows, whose
steps the convolutions dominate, the classic kernels run about as fast: W4's image Residual
Flow trains at 1040-1063 MB of peak RSS with the default emitters and 670-724 MB with the
classic ones, at 24.7-26.6 vs 27.0-29.0 ms per step, its first (compiling) step taking 14-16 s
vs 20-22 s; W3's Glow at 782 vs 584 MB and 8.9 ms per step either way
(``benchmarks/README.md``, "XLA:CPU fusion emitters"). On dense flows the classic kernels are
clearly slower (W1's 2-D Residual Flow: 29.1 vs 33.0 ms per step), so jflows compiles a
program (model init, training and evaluation steps, the Lipschitz refresh) with the classic
emitters when it runs on CPU and contains a convolution, and with XLA's default otherwise.

The same programs are also compiled at LLVM optimisation level 2
(``xla_backend_optimization_level``) instead of XLA's 3: the convolutions run in library
kernels whatever the level, and level 3 spends twice the compile time on the code around
them for no faster step (W4: first step 18.5 -> 10.2 s, 22.5 ms per step both, 23 MB less
peak RSS; W3: setup and first step 12.8 -> 7.4 s, 7.6-9.4 vs 7.9-8.8 ms per step;
``benchmarks/README.md``, "LLVM optimisation level"). Dense flows keep level 3: there it
saves no compile time.

``JFLOWS_CPU_FUSION_EMITTERS`` overrides the choice for every such program: ``auto`` (the
default), ``default`` (XLA's defaults: neither option) or ``classic`` (classic emitters for
every program, level 2 for those with convolutions). Other backends get no option.

Example:
    >>> compiler_options("cpu", convolution=True)  # with the variable unset
    {'xla_cpu_use_fusion_emitters': False, 'xla_backend_optimization_level': 2}
    >>> compiler_options("gpu", convolution=True)
    {}
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.extend

from jflows.errors import ConfigError

ENV = "JFLOWS_CPU_FUSION_EMITTERS"
CHOICES = ("auto", "default", "classic")
OPTION = "xla_cpu_use_fusion_emitters"
OPT_LEVEL = "xla_backend_optimization_level"
CONVOLUTION_OPT_LEVEL = 2
CONVOLUTION = "conv_general_dilated"


def emitter_choice() -> str:
    """``JFLOWS_CPU_FUSION_EMITTERS`` (``auto`` when unset), checked."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ConfigError(
            f"{ENV}={os.environ[ENV]!r} is not one of {CHOICES}; unset it for 'auto' (classic "
            "XLA:CPU fusion emitters for programs with convolutions)"
        )
    return value


def compiler_options(platform: str, convolution: bool) -> dict[str, Any]:
    """The ``compiler_options`` of ``jax.jit`` for a program on ``platform``.

    Args:
        platform: the backend the program runs on (``jax.default_backend()``).
        convolution: whether the program contains a convolution.

    Returns:
        ``{"xla_cpu_use_fusion_emitters": False}`` for the classic emitters, with
        ``"xla_backend_optimization_level": 2`` for a program with convolutions; ``{}`` for
        XLA's defaults.
    """
    if platform != "cpu":
        return {}
    choice = emitter_choice()
    if choice == "default":
        return {}
    classic = choice == "classic" or convolution
    options: dict[str, Any] = {OPTION: False} if classic else {}
    if convolution:
        options[OPT_LEVEL] = CONVOLUTION_OPT_LEVEL
    return options


def has_convolution(jaxpr) -> bool:
    """Whether a (closed) jaxpr or any jaxpr nested in its equations has a convolution."""
    return any(
        eqn.primitive.name == CONVOLUTION
        or any(has_convolution(sub) for sub in jax.extend.core.jaxprs_in_params(eqn.params))
        for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns
    )


def jit_with_options(fn: Callable, options: dict[str, Any], **jit_kwargs: Any) -> Callable:
    """``jax.jit(fn, **jit_kwargs)`` with ``compiler_options=options`` when there are any."""
    return jax.jit(fn, **jit_kwargs, **({"compiler_options": options} if options else {}))


def under_trace(*args: Any) -> bool:
    """Whether any leaf of ``args`` is a tracer: a call nested in ``jit``, ``eval_shape``, ...

    JAX only takes ``compiler_options`` on a top-level ``jit``; a nested one is compiled
    with the program around it, so a nested call goes to the plain ``jax.jit``.
    """
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(args))


class EmitterChoosingJit:
    """``jax.jit(fn, **jit_kwargs)`` with the fusion emitters chosen on its first trace.

    The first top-level call (or ``lower``/``trace``) traces ``fn`` once, looks for a
    convolution and jits ``fn`` with the matching ``compiler_options``; JAX reuses that
    trace, so nothing is traced twice. Later calls go straight to that jitted function; calls
    nested in another trace (``jax.eval_shape`` of a state, an outer ``jit``) go to the plain
    ``jax.jit(fn)``.
    """

    def __init__(self, fn: Callable, jit_kwargs: dict):
        self._fn, self._jit_kwargs = fn, jit_kwargs
        self._plain = jax.jit(fn, **jit_kwargs)
        self._jitted: Any = None
        self.compiler_options: dict[str, Any] | None = None
        """The options chosen on the first trace (None before it)."""

    def _choose(self, args: tuple, kwargs: dict) -> Any:
        if under_trace(args, kwargs):
            return self._plain
        if self._jitted is None:
            traced = self._plain.trace(*args, **kwargs)
            options = compiler_options(jax.default_backend(), has_convolution(traced.jaxpr))
            self._jitted = jit_with_options(self._fn, options, **self._jit_kwargs)
            self.compiler_options = options
        return self._jitted

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._choose(args, kwargs)(*args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        return self._choose(args, kwargs).lower(*args, **kwargs)

    def trace(self, *args: Any, **kwargs: Any) -> Any:
        return self._choose(args, kwargs).trace(*args, **kwargs)

    def _cache_size(self) -> int:
        """Executables of the chosen jit (0 before the first call), as ``jax.jit``'s."""
        return 0 if self._jitted is None else self._jitted._cache_size()

    def __getattr__(self, name: str) -> Any:
        """Other attributes (``eval_shape``): those of the plain ``jax.jit(fn)``."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._plain, name)


def jit_choosing_emitters(fn: Callable, **jit_kwargs: Any) -> Callable:
    """``jax.jit(fn, **jit_kwargs)``, compiled with the emitters this module chooses.

    A plain ``jax.jit`` where no option can apply (another backend, or
    ``JFLOWS_CPU_FUSION_EMITTERS=default``), else an :class:`EmitterChoosingJit`.
    """
    if jax.default_backend() != "cpu" or emitter_choice() == "default":
        return jax.jit(fn, **jit_kwargs)
    return EmitterChoosingJit(fn, jit_kwargs)
