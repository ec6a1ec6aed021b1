"""Flow: a data-to-latent layer (usually a chain) plus a base distribution on the latent."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflows.bijectors.base import Estimate, Kind, Layer, not_bijective, require_rng
from jflows.errors import ConfigError, ShapeError
from jflows.kernels.bounds import importance_weighted
from jflows.kernels.shapes import check_event_shape
from jflows.models.likelihood import LogLikelihood
from jflows.names import SAMPLE


class Flow(nn.Module):
    """A normalizing flow ``log p(x) = log p_base(f(x)) + sum of the layers' contributions``.

    ``bijector`` maps data ``x`` to latent ``z`` (``forward``); sampling draws ``z`` from the
    base and runs ``inverse``. Every method accepts one event or any leading batch axes, and an
    optional ``context`` (an array with the batch axes in front) that conditional layers read.

    **What log_prob is.** :attr:`kind` and :attr:`estimate` come from the layers'
    declarations (:class:`jflows.bijectors.Layer`): ``Estimate.EXACT`` for bijections and
    inference surjections with exact log-dets, ``UNBIASED`` with Russian-roulette log-dets,
    ``BIASED`` with the truncated series, ``BOUND`` with a stochastic layer (dequantization):
    then ``log_prob`` is a one-draw estimate of a lower bound on ``log p(x)``. The training and
    evaluation code labels its figures with :attr:`Estimate.label`
    (``test_nll`` / ``test_nll_bound``). :attr:`rng_streams` lists every stream a call may
    need, and ``jflows.training`` supplies exactly those.

    **Dtype.** A flow has one dtype (the factories' ``dtype`` argument, float32 by default):
    its parameters, its base draws and every intermediate array are in it. Arrays given to
    any method are cast to it at this boundary, as a Flax layer with an explicit ``dtype``
    casts its inputs, so a float32 model scores float64 (or integer) data in float32 and a
    float64 model (which needs ``JAX_ENABLE_X64=1``) trains on float32 batches in float64;
    results always come back in the model's dtype. ``dtype=None`` (a hand-built flow) casts
    nothing: arrays keep their dtype and the base draws in its own.

    Attributes:
        bijector: the data-to-latent layer.
        base: a base-distribution module (``StandardNormal`` or ``DiagonalGaussian``).
        event_shape: shape of one data event; ``z`` has the same shape.
        dtype: the model's dtype (``"float32"`` or ``"float64"``), or None.
        context_shape: shape of one context (None: not checked).
        context_mean: with ``context_std``, the standardisation ``(c - mean) / std`` applied to
            every context before the layers read it (flattened, of ``prod(context_shape)``
            numbers; a run's context statistics, so callers pass raw contexts). None: none.
        context_std: see ``context_mean``.

    Example:
        >>> flow = jflows.models.realnvp(event_shape=(2,), n_couplings=2, hidden=(8,))
        >>> x = jnp.ones((4, 2))
        >>> variables = flow.init(jax.random.key(0), x, method="log_prob")
        >>> flow.apply(variables, x, method="log_prob").shape
        (4,)
        >>> flow.apply(variables, 3, method="sample", rngs={"sample": jax.random.key(1)}).shape
        (3, 2)
        >>> flow.estimate.name, sorted(flow.rng_streams)
        ('EXACT', ['sample'])
    """

    bijector: Layer
    base: nn.Module
    event_shape: tuple[int, ...]
    dtype: Any = None
    context_shape: tuple[int, ...] | None = None
    context_mean: tuple[float, ...] | None = None
    context_std: tuple[float, ...] | None = None

    @property
    def kind(self) -> Kind:
        """The weakest kind among the layers."""
        return self.bijector.kind

    @property
    def estimate(self) -> Estimate:
        """What :meth:`log_prob` returns: exact, unbiased, biased or a lower bound."""
        return self.bijector.estimate

    @property
    def rng_streams(self) -> frozenset[str]:
        """Every RNG stream a method may draw from: the layers' and ``sample`` (not ``params``)."""
        return self.bijector.rng_streams | {SAMPLE}

    @property
    def conditional(self) -> bool:
        """Whether a layer reads ``context``."""
        return self.bijector.conditional

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent ``z``: the base's event shape.

        The data's shape for bijective models; surjections change it (a slice or max-pool
        makes ``z`` smaller, augmentation larger).
        """
        return tuple(getattr(self.base, "event_shape", self.event_shape))

    def _input(self, x):
        """Checks the event shape and casts ``x`` to the model's dtype."""
        check_event_shape(x, self.event_shape, "Flow")
        return x if self.dtype is None else jnp.asarray(x, self.dtype)

    def _latent(self, z):
        """Checks a latent's event shape and casts it to the model's dtype."""
        check_event_shape(z, self.latent_shape, "Flow (latent)")
        return z if self.dtype is None else jnp.asarray(z, self.dtype)

    def _context(self, context, batch_shape=None):
        """Checks ``context`` against the model; casts it to the model's dtype."""
        if context is None:
            return None
        if not self.conditional:
            raise ShapeError(
                "this flow has no conditional layer (none was built with use_context=True), so "
                "a context would be ignored; drop context=... or build a conditional model"
            )
        context = jnp.asarray(context) if self.dtype is None else jnp.asarray(context, self.dtype)
        if self.context_shape is not None:
            n = len(self.context_shape)
            if context.shape[context.ndim - n :] != tuple(self.context_shape):
                raise ShapeError(
                    f"context of shape {context.shape} does not end with the model's "
                    f"context_shape {tuple(self.context_shape)}"
                )
            if batch_shape is not None and context.ndim == n:
                context = jnp.broadcast_to(context, (*batch_shape, *context.shape))
        if self.context_mean is not None:
            shape = context.shape[context.ndim - len(self.context_shape or (1,)) :]
            mean = jnp.asarray(self.context_mean, context.dtype).reshape(shape)
            std = jnp.asarray(self.context_std, context.dtype).reshape(shape)
            context = (context - mean) / std
        return context

    def _batch(self, x):
        return x.shape[: x.ndim - len(self.event_shape)]

    def _latent_batch(self, z):
        return z.shape[: z.ndim - len(self.latent_shape)]

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        """Returns ``(z, sum of the layers' contributions)``."""
        x = self._input(x)
        return self.bijector.forward_and_log_det(x, self._context(context, self._batch(x)))

    def forward(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """Maps data to latent (no contribution is computed)."""
        x = self._input(x)
        return self.bijector.forward(x, self._context(context, self._batch(x)))

    def inverse(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """Maps latent to data (no log-det is computed)."""
        z = self._latent(z)
        return self.bijector.inverse(z, self._context(context, self._latent_batch(z)))

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        """Returns ``(x, log|det dx/dz|)``; bijective models only."""
        if self.kind != Kind.BIJECTION:
            raise not_bijective(self.bijector, "inverse_and_log_det")
        z = self._latent(z)
        return self.bijector.inverse_and_log_det(z, self._context(context, self._latent_batch(z)))

    def base_log_prob(self, z: jax.Array) -> jax.Array:
        """Log-density of the base at ``z``."""
        return self.base.log_prob(self._latent(z))

    def log_prob(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """``log p(x | context)`` in nats (or its estimate or bound, see :attr:`estimate`).

        Exact for bijections and inference surjections (exact log-dets); with a stochastic
        layer, a one-draw estimate of the ELBO (:meth:`log_likelihood` returns the value with
        what it is; :meth:`iwbo` a tighter bound).
        """
        z, logdet = self.forward_and_log_det(x, context)
        return self.base.log_prob(z) + logdet

    def iwbo(self, x: jax.Array, samples: int, context: jax.Array | None = None) -> jax.Array:
        r"""The importance-weighted bound ``log (1/K) sum_k exp(ELBO_k)`` with ``K = samples``.

        The ``K`` copies of the batch run as one batched computation (a leading axis of size
        ``K``; each stochastic layer draws independent noise for each copy). ``K = 1`` is the
        one-draw ELBO :meth:`log_prob`; the bound tightens on average as ``K`` grows. For a
        model without stochastic layers ``log_prob`` is returned (every copy would agree).
        """
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ConfigError(f"iwbo needs samples = K >= 1 (an int), got {samples!r}")
        if self.kind != Kind.STOCHASTIC or samples == 1:
            return self.log_prob(x, context)
        x = self._input(x)
        context = self._context(context, self._batch(x))
        tiled = jnp.broadcast_to(x, (samples, *x.shape))
        if context is not None:
            context = jnp.broadcast_to(context, (samples, *context.shape))
        return importance_weighted(self.log_prob(tiled, context), axis=0)

    def log_likelihood(
        self, x: jax.Array, samples: int = 1, context: jax.Array | None = None
    ) -> LogLikelihood:
        """:meth:`iwbo` with its metadata: exact, ELBO (``samples=1``) or IWBO.

        Example:
            >>> flow = jflows.models.realnvp(event_shape=(2,), n_couplings=2, hidden=(8,))
            >>> variables = flow.init(key, jnp.ones((1, 2)), method="log_prob")
            >>> flow.apply(variables, jnp.ones((3, 2)), method="log_likelihood").name
            'exact log-likelihood'
        """
        value = self.iwbo(x, samples, context)
        k = samples if self.kind == Kind.STOCHASTIC else 1
        return LogLikelihood(value, self.estimate, k)

    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x, context)

    def _sample_context(self, n: int, context):
        context = self._context(context, (n,))
        if context is not None and context.shape[0] != n:
            raise ShapeError(
                f"sample(n={n}) got a context with leading axis {context.shape[0]}; give one "
                f"context row per sample or a single context (of shape context_shape)"
            )
        return context

    def sample(
        self, n: int, temperature: float = 1.0, context: jax.Array | None = None
    ) -> jax.Array:
        """Draws ``n`` samples (stream ``sample``); ``temperature`` scales the base's std.

        Only the inverse map runs: no log-det is computed, so residual flows need no
        ``logdet`` stream here (``sample_and_log_prob`` does). With ``context`` of shape
        ``(n, *context_shape)`` sample ``i`` is drawn given row ``i``; a single context (of
        shape ``context_shape``) is used for every sample.
        """
        context = self._sample_context(n, context)
        key = require_rng(self, SAMPLE)
        z = self.base.sample(key, n, temperature)
        return self.bijector.inverse(z, context)

    def sample_and_log_prob(
        self, n: int, temperature: float = 1.0, context: jax.Array | None = None
    ):
        """Draws ``n`` samples and returns ``(x, log p(x))`` under the (tempered) model.

        Bijective models only (a surjection's generative direction has no exact log-det).
        """
        if self.kind != Kind.BIJECTION:
            raise not_bijective(self.bijector, "sample_and_log_prob")
        context = self._sample_context(n, context)
        key = require_rng(self, SAMPLE)
        dist = self.base.distribution(temperature)
        z, log_pz = dist.sample_and_log_prob(seed=key, sample_shape=(n,))
        x, logdet_inv = self.bijector.inverse_and_log_det(z, context)
        return x, log_pz - logdet_inv
