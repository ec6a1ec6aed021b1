"""A stack of identical blocks compiled once with ``nn.scan``."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflows.bijectors.base import Bijector
from jflows.errors import ConfigError
from jflows.names import CONSTANTS, DIAGNOSTICS, LIPSCHITZ, LOGDET, PARAMS

_METHODS = ("forward_and_log_det", "inverse_and_log_det", "forward", "inverse")


class _ScanBody(nn.Module):
    """One step of the scan: builds a block and threads ``x`` through it.

    The per-block log-determinants come out as the scan's stacked outputs, so the stack does
    not need to know the batch shape in advance. The carry keeps its dtype: a block whose
    parameters are wider than its input (float64 weights, float32 data) computes in the wider
    dtype and its output is cast back, instead of failing inside ``lax.scan``.
    """

    make_block: Callable[[], Bijector]

    def setup(self):
        self.block = self.make_block()

    def forward_and_log_det(self, x, _):
        z, logdet = self.block.forward_and_log_det(x)
        return z.astype(x.dtype), logdet

    def inverse_and_log_det(self, z, _):
        x, logdet = self.block.inverse_and_log_det(z)
        return x.astype(z.dtype), logdet

    def forward(self, x, _):
        return self.block.forward(x).astype(x.dtype), None

    def inverse(self, z, _):
        return self.block.inverse(z).astype(z.dtype), None


class Stack(Bijector):
    """``length`` copies of the block built by ``make_block``, applied in sequence.

    Parameters (and ``lipschitz`` vectors) are stacked along a new leading axis and the blocks
    run inside one ``lax.scan``, so compile time does not grow with depth; the ``params`` and
    ``logdet`` RNG streams are split per block (independent initialisation and independent
    estimator noise). ``inverse`` runs the blocks last to first. With ``remat=True`` each block's
    activations are recomputed in the backward pass instead of stored.

    Attributes:
        make_block: a zero-argument callable returning a fresh bijector, e.g.
            ``functools.partial(ResidualBlock, ...)``.
        length: number of blocks.
        remat: recompute block activations in the backward pass (saves memory).
        unroll: blocks per iteration of the compiled loop (``True``: all of them). Larger
            values compile more code but can run faster, notably for convolutions on CPU.

    Example:
        >>> stack = Stack(functools.partial(GlowStep, event_ndims=3), length=8)
    """

    make_block: Callable[[], Bijector]
    length: int
    remat: bool = False
    unroll: int | bool = 1

    def __post_init__(self):
        if self.length < 1:
            raise ConfigError(f"Stack needs length >= 1, got {self.length}")
        super().__post_init__()

    def setup(self):
        body = _ScanBody
        if self.remat:
            body = nn.remat(body, prevent_cse=False, methods=list(_METHODS))
        common = dict(
            variable_axes={PARAMS: 0, LIPSCHITZ: 0, CONSTANTS: 0, DIAGNOSTICS: 0},
            split_rngs={PARAMS: True, LOGDET: True},
            length=self.length,
            unroll=self.unroll,
        )
        backward = {**common, "reverse": True}
        scanned = nn.scan(
            body,
            methods={
                "forward_and_log_det": common,
                "inverse_and_log_det": backward,
                "forward": common,
                "inverse": backward,
            },
        )
        self.layers = scanned(self.make_block)

    def forward_and_log_det(self, x: jax.Array):
        z, logdets = self.layers.forward_and_log_det(x, None)
        return z, jnp.sum(logdets, axis=0)

    def inverse_and_log_det(self, z: jax.Array):
        x, logdets = self.layers.inverse_and_log_det(z, None)
        return x, jnp.sum(logdets, axis=0)

    def forward(self, x: jax.Array) -> jax.Array:
        return self.layers.forward(x, None)[0]

    def inverse(self, z: jax.Array) -> jax.Array:
        return self.layers.inverse(z, None)[0]
