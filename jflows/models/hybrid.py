r"""Hybrid models: a classifier head on the latent of a flow (Nalisnick et al., 2019).

A hybrid model shares one flow ``z = f(x)`` between a density and a classifier: ``p(x)`` is the
flow's density and ``p(y | x) = softmax(h(z))_y`` with a small head ``h`` (linear, or an MLP)
on the flattened latent. i-ResNet and Residual Flows train such models on

.. math::

    \mathcal{L}(x, y) = -\Big[\log p(y \mid x) + \lambda \, \frac{\log p(x)}{D}\Big],

with ``D`` the number of scalars of one event. ``lambda = 0`` is a plain classifier whose
feature extractor happens to be invertible; large ``lambda`` is a density model with a probe.
Dividing ``log p(x)`` by ``D`` puts both terms on a per-dimension footing (the i-ResNet paper's
``lambda = 1/D`` convention is ``lam = 1`` here).

For multi-scale image models the latent ``z`` already holds every factored-out part
(jflows' factor-out layers keep them in ``z``), so the head sees the factored-out and final
latents alike. ``z`` and ``log p(x)`` come from one ``forward_and_log_det`` call, so a residual
flow (whose forward pass is the costly part) runs once per loss.

Example:
    >>> flow = jflows.models.realnvp((4,), n_couplings=2, hidden=(8,))
    >>> model = hybrid(flow, n_classes=3)
    >>> x, y = jnp.ones((5, 4)), jnp.zeros((5,), jnp.int32)
    >>> variables = model.init(jax.random.key(0), x, method="log_prob")
    >>> model.apply(variables, x, method="logits").shape
    (5, 3)
    >>> model.apply(variables, x, y, 0.1, method="loss").shape
    ()
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflows.errors import ConfigError, ShapeError


def hybrid_objective(
    log_prob: jax.Array, logits: jax.Array, labels: jax.Array, lam: float, dims: int
) -> jax.Array:
    r"""Per-example hybrid loss ``-(log softmax(logits)_y + lam * log_prob / dims)``.

    Args:
        log_prob: ``log p(x)`` in nats, shape ``(B,)``.
        logits: class scores, shape ``(B, K)``.
        labels: integer classes in ``0..K-1``, shape ``(B,)``.
        lam: the weight ``lambda >= 0`` of the per-dimension log-likelihood.
        dims: ``D``, scalars per event.

    Returns:
        The per-example loss, shape ``(B,)``.

    Example:
        >>> hybrid_objective(jnp.zeros(2), jnp.zeros((2, 4)), jnp.array([0, 3]), 1.0, 8)
        Array([1.3862944, 1.3862944], dtype=float32)
    """
    log_py = jnp.take_along_axis(
        jax.nn.log_softmax(logits, axis=-1), labels[..., None].astype(jnp.int32), axis=-1
    )[..., 0]
    return -(log_py + lam * log_prob / dims)


class Hybrid(nn.Module):
    """A flow plus a classifier head on its flattened latent.

    Attributes:
        flow: a :class:`jflows.models.Flow` (any module with ``forward_and_log_det``,
            ``base_log_prob``, ``log_prob`` and ``event_shape``).
        n_classes: number of classes ``K >= 2``.
        head_hidden: widths of the head's hidden layers (ELU); ``()`` is a linear head.

    The flow's declarations (``kind``, ``estimate``, ``rng_streams``, ``event_shape``) are
    forwarded, so the training code treats a hybrid as the flow it wraps. ``log_prob`` also
    creates the head's parameters during ``init``, so
    :func:`jflows.training.create_train_state` initialises a hybrid as any flow.
    """

    flow: nn.Module
    n_classes: int
    head_hidden: tuple[int, ...] = ()

    @property
    def kind(self):
        """The flow's kind."""
        return self.flow.kind

    @property
    def estimate(self):
        """The flow's estimate (what ``log_prob`` is)."""
        return self.flow.estimate

    @property
    def rng_streams(self) -> frozenset[str]:
        """The flow's RNG streams (the head draws none)."""
        return self.flow.rng_streams

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one data event."""
        return tuple(self.flow.event_shape)

    @property
    def dims(self) -> int:
        """``D``: scalars per data event."""
        return math.prod(self.flow.event_shape)

    @nn.compact
    def _head(self, z: jax.Array) -> jax.Array:
        batch = z.shape[: z.ndim - len(self.flow.latent_shape)]
        h = z.reshape(*batch, -1)
        for i, width in enumerate(self.head_hidden):
            h = nn.elu(nn.Dense(width, name=f"head_{i}")(h))
        return nn.Dense(self.n_classes, name="head_out")(h)

    def log_prob_and_logits(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(log p(x), logits)`` from one pass of the flow (z shared)."""
        z, logdet = self.flow.forward_and_log_det(x)
        return self.flow.base_log_prob(z) + logdet, self._head(z)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """The flow's ``log p(x)`` (nats; an estimate or bound as the flow's)."""
        if self.is_initializing():
            return self.log_prob_and_logits(x)[0]
        return self.flow.log_prob(x)

    def logits(self, x: jax.Array) -> jax.Array:
        """Class scores ``h(f(x))`` of shape ``batch + (n_classes,)``."""
        return self._head(self.flow.forward(x))

    def loss(self, x: jax.Array, y: jax.Array, lam: float) -> jax.Array:
        """Mean hybrid loss ``-(log p(y|x) + lam * log p(x) / D)`` over the batch."""
        log_prob, logits = self.log_prob_and_logits(x)
        return jnp.mean(hybrid_objective(log_prob, logits, y, lam, self.dims))

    def iwbo(self, x: jax.Array, samples: int) -> jax.Array:
        """The flow's importance-weighted bound on ``log p(x)`` (its ``log_prob`` if exact)."""
        return self.flow.iwbo(x, samples)

    def forward(self, x: jax.Array) -> jax.Array:
        """The flow's data-to-latent map ``z = f(x)`` (what the head sees)."""
        return self.flow.forward(x)

    def inverse(self, z: jax.Array) -> jax.Array:
        """The flow's latent-to-data map."""
        return self.flow.inverse(z)

    def sample(self, n: int, temperature: float = 1.0) -> jax.Array:
        """``n`` draws of the flow (stream ``sample``); the head plays no part."""
        return self.flow.sample(n, temperature)


def flow_part(model: nn.Module, variables: dict) -> tuple[nn.Module, dict]:
    """``(flow, its variables)`` of a :class:`Hybrid`; any other model is returned as it is.

    Every collection of a hybrid's variables (``params``, ``lipschitz``, ...) holds the flow's
    under the key ``"flow"``, so the flow alone can go where a :class:`jflows.models.Flow` is
    needed (e.g. :func:`jflows.models.bi_lipschitz`).

    Example:
        >>> model = hybrid(jflows.models.realnvp((2,), n_couplings=2, hidden=(8,)), 2)
        >>> v = model.init(jax.random.key(0), jnp.ones((3, 2)), method="log_prob")
        >>> flow, flow_v = flow_part(model, v)
        >>> sorted(v["params"]), type(flow).__name__, "head_out" in flow_v["params"]
        (['flow', 'head_out'], 'Flow', False)
    """
    if not isinstance(model, Hybrid):
        return model, variables
    return model.flow, {c: v["flow"] for c, v in variables.items() if "flow" in v}


def hybrid(flow: nn.Module, n_classes: int, *, head_hidden: Sequence[int] = ()) -> Hybrid:
    """Wraps ``flow`` in a :class:`Hybrid` with a ``n_classes``-way head on its latent.

    Args:
        flow: a jflows flow (e.g. ``jflows.models.resflow(...)``); for a training and an
            evaluation model, wrap the training and the evaluation flow alike (the parameter
            trees match).
        n_classes: number of classes (>= 2).
        head_hidden: hidden widths of the head; ``()`` (default) is the linear head of the
            Residual Flows paper's hybrid experiments.

    Returns:
        The hybrid module; its parameters are ``{"flow": ..., "head_0": ..., "head_out": ...}``.

    Example:
        >>> model = hybrid(jflows.models.realnvp((2,), n_couplings=2, hidden=(8,)), 2)
        >>> model.n_classes
        2
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ConfigError(f"n_classes must be an int >= 2, got {n_classes!r}")
    head_hidden = tuple(head_hidden)
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in head_hidden):
        raise ConfigError(f"head_hidden must be positive ints, got {head_hidden!r}")
    if not hasattr(flow, "forward_and_log_det") or not hasattr(flow, "event_shape"):
        raise ShapeError(
            f"hybrid needs a flow with forward_and_log_det and event_shape, got "
            f"{type(flow).__name__}; build one with jflows.models.resflow(...) or similar"
        )
    return Hybrid(flow=flow, n_classes=n_classes, head_hidden=head_hidden)
