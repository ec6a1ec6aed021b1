r"""The layer contract: every jflows layer is a Flax linen module with four methods.

Direction (docs/design.md): ``forward`` maps data ``x`` to latent ``z`` (the normalizing
direction) and ``forward_and_log_det`` also returns the layer's **log-likelihood contribution**
``c(x)``, so that ``log p(x) = log p_base(z) + sum_layers c``; ``inverse`` maps ``z`` back to
data. Every method accepts any number of leading batch axes (or none), returns contributions
with the batch shape, and takes an optional ``context``: a conditioning array whose leading
axes are the batch axes (layers that are not conditional ignore it).

**Kinds.** What ``c`` is depends on the layer's :class:`Kind`:

* ``BIJECTION``: ``z = f(x)`` is invertible and ``c = log|det df/dx|`` (exact).
* ``INFERENCE_SURJECTION``: ``z = f(x)`` is deterministic but many ``x`` share one ``z``;
  ``c = log p(x | z)`` is exact; ``inverse`` draws one of the preimages.
* ``STOCHASTIC`` (a generative surjection, e.g. dequantization): ``z ~ q(z | x)`` is drawn;
  ``c = log p(x | z) - log q(z | x)``, whose expectation over ``q`` is a lower bound on the
  contribution of an exact layer (so ``log_prob`` becomes an ELBO).

The weakest kind wins in a container (``BIJECTION < INFERENCE_SURJECTION < STOCHASTIC``), and
what a model's ``log_prob`` value *is* (:class:`Estimate`) is the weakest of its layers'
estimates: exact, an unbiased estimate (Russian-roulette log-determinants), a biased estimate
(the truncated series) or a lower bound (stochastic layers).

**Declarations.** A layer declares its kind, its estimate, the RNG streams it draws from
(:attr:`Layer.rng_streams`), whether it reads ``context`` and any variable collection it
creates besides ``params``. Containers (``Chain``, ``Stack``, ``FactorOut``, ...) list their
children in :meth:`Layer.sublayers` and derive every declaration from them; ``Stack`` splits
every declared stream per block. Nothing else in jflows spells a layer's streams.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import module as flax_module

from jflows.errors import MissingRngError, NotBijectiveError


class Kind(enum.IntEnum):
    """What a layer's map is; a larger value is weaker (see the module docstring)."""

    BIJECTION = 0
    INFERENCE_SURJECTION = 1
    STOCHASTIC = 2


class Estimate(enum.IntEnum):
    """What a ``log_prob`` value is; a larger value is weaker.

    ``EXACT`` and ``UNBIASED`` values are reported as ``nll``, ``BOUND`` as ``nll_bound`` and
    ``BIASED`` as ``nll_biased`` (:attr:`label`).
    """

    EXACT = 0
    UNBIASED = 1
    BOUND = 2
    BIASED = 3

    @property
    def label(self) -> str:
        """Suffix of the figure's name: ``""``, ``"_bound"`` or ``"_biased"``."""
        return {Estimate.BOUND: "_bound", Estimate.BIASED: "_biased"}.get(self, "")


@contextlib.contextmanager
def detached() -> Iterator[None]:
    """Modules built inside this block have no parent, wherever it runs.

    Containers build throw-away copies of their blocks to read their declarations; inside a
    bound module's method Flax would otherwise try to register them as children.
    """
    stack = flax_module._context.module_stack  # noqa: SLF001 (no public API for this)
    stack.append(None)
    try:
        yield
    finally:
        stack.pop()


class Layer(nn.Module):
    """Base class of every jflows layer (bijections, surjections, stochastic layers).

    Subclasses implement :meth:`forward_and_log_det` and :meth:`inverse_and_log_det`;
    :meth:`forward` and :meth:`inverse` are derived (XLA drops the unused contribution). Layers
    whose contribution is expensive or stochastic (residual blocks) override :meth:`forward`
    and :meth:`inverse` to skip it, and containers pass those calls on, so sampling never
    computes (or needs the RNG stream of) a contribution it throws away.

    Class-level declarations (override them, as class attributes or properties):

    * ``layer_kind``: a :class:`Kind` (``BIJECTION`` here);
    * ``own_estimate``: the :class:`Estimate` of this layer's own contribution;
    * ``own_rng_streams``: names of the RNG streams the layer itself draws from;
    * ``reads_context``: True if the layer uses ``context``;
    * ``own_collections``: variable collections it creates besides ``params``.

    Containers override :meth:`sublayers`; the derived properties (:attr:`kind`,
    :attr:`estimate`, :attr:`rng_streams`, :attr:`conditional`, :attr:`collections`) combine
    a layer's own declaration with its children's.

    The contract suite (``tests/test_contract.py``) checks every bijection: ``inverse(forward(x))
    == x``; the forward log-det equals ``slogdet(jax.jacfwd(forward)(x))`` on one event; the
    inverse log-det is the negative forward log-det at the matching point; batched calls equal
    ``jax.vmap`` over events. Surjections and stochastic layers have their own checks.

    Example:
        >>> from jflows.bijectors import ActNorm, Chain, Reverse
        >>> bij = Chain([ActNorm(), Reverse()])
        >>> x = jnp.arange(6.0).reshape(3, 2)
        >>> variables = bij.init(jax.random.key(0), x, method="forward_and_log_det")
        >>> z, logdet = bij.apply(variables, x, method="forward_and_log_det")
        >>> z.shape, logdet.shape, bij.kind.name, bij.rng_streams
        ((3, 2), (3,), 'BIJECTION', frozenset())
    """

    # declarations (ClassVar: not dataclass fields, so not constructor arguments)
    layer_kind: ClassVar[Kind] = Kind.BIJECTION
    own_estimate: ClassVar[Estimate] = Estimate.EXACT
    own_rng_streams: ClassVar[frozenset[str]] = frozenset()
    reads_context: ClassVar[bool] = False
    own_collections: ClassVar[frozenset[str]] = frozenset()

    def sublayers(self) -> Sequence[Layer]:
        """The child layers whose declarations this layer inherits (none for a leaf)."""
        return ()

    @property
    def kind(self) -> Kind:
        """The weakest kind of this layer and its sublayers."""
        return max([Kind(self.layer_kind), *(c.kind for c in self.sublayers())])

    @property
    def estimate(self) -> Estimate:
        """The weakest estimate of this layer and its sublayers."""
        own = Estimate.BOUND if self.layer_kind == Kind.STOCHASTIC else Estimate.EXACT
        return max([own, Estimate(self.own_estimate), *(c.estimate for c in self.sublayers())])

    @property
    def rng_streams(self) -> frozenset[str]:
        """Every RNG stream this layer or a sublayer draws from (``params`` excluded)."""
        return frozenset(self.own_rng_streams).union(
            *(c.rng_streams for c in self.sublayers())
        )

    @property
    def conditional(self) -> bool:
        """Whether this layer or a sublayer reads ``context``."""
        return bool(self.reads_context) or any(c.conditional for c in self.sublayers())

    @property
    def collections(self) -> frozenset[str]:
        """Variable collections besides ``params`` created by this layer or a sublayer."""
        return frozenset(self.own_collections).union(*(c.collections for c in self.sublayers()))

    def forward_and_log_det(
        self, x: jax.Array, context: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Maps data to latent; returns ``(z, contribution)`` (abstract)."""
        raise NotImplementedError(f"{type(self).__name__} must define forward_and_log_det")

    def inverse_and_log_det(
        self, z: jax.Array, context: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Maps latent to data; returns ``(x, log|det dx/dz|)`` (abstract)."""
        raise NotImplementedError(f"{type(self).__name__} must define inverse_and_log_det")

    def forward(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """Maps data to latent."""
        return self.forward_and_log_det(x, context)[0]

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """Maps latent to data."""
        return self.inverse_and_log_det(z, context)[0]

    def __call__(self, x: jax.Array, context: jax.Array | None = None):
        """Same as :meth:`forward_and_log_det`."""
        return self.forward_and_log_det(x, context)


class Bijector(Layer):
    """A layer that is a bijection (the common case); see :class:`Layer` for the contract."""


def not_bijective(layer: Layer, what: str) -> NotBijectiveError:
    """The error for ``what`` (e.g. ``"inverse_and_log_det"``) on a non-bijective layer."""
    return NotBijectiveError(
        f"{type(layer).__name__} is a {layer.kind.name.lower().replace('_', ' ')}, not a "
        f"bijection, so {what} has no exact log-determinant; draw with sample() and score "
        f"the draws with log_prob() instead"
    )


def require_rng(module: nn.Module, stream: str) -> jax.Array:
    """Returns a key from ``stream`` or raises MissingRngError; never falls back to ``params``."""
    if not module.has_rng(stream):
        raise MissingRngError(stream, f"{type(module).__name__} ({module.name or 'unnamed'})")
    return module.make_rng(stream)


def param_dtype_for(param_dtype: Any, x: jax.Array) -> jnp.dtype:
    """The dtype of a layer's parameters: ``param_dtype`` if given, else ``x``'s float dtype.

    Layers take ``param_dtype=None`` by default, so a bare bijector creates its parameters in
    the dtype of the data it is initialised on (float32 data: float32 parameters). The model
    factories pass their ``dtype`` explicitly.
    """
    if param_dtype is not None:
        return jnp.dtype(param_dtype)
    dtype = jnp.result_type(x)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.dtype(jnp.float32)
