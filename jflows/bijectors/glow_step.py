"""One step of Glow: ActNorm, invertible 1x1 convolution, affine (or additive) coupling."""

from __future__ import annotations

from typing import Any

import jax

from jflows.bijectors.actnorm import ActNorm
from jflows.bijectors.base import Bijector
from jflows.bijectors.conditioners import ConvNet
from jflows.bijectors.coupling import SplitCoupling
from jflows.bijectors.invconv import InvertibleConv1x1
from jflows.errors import ConfigError


class GlowStep(Bijector):
    """``ActNorm -> InvertibleConv1x1 -> coupling`` on channels-last images.

    The coupling splits the channels in halves and transforms the second half with
    ``z_b = x_b * sigmoid(r + 2) + t`` (Glow's affine coupling; ``coupling="additive"`` uses
    ``z_b = x_b + t``), with ``(t, r)`` from a 3x3-1x1-3x3 ConvNet whose last convolution starts
    at zero, so with ActNorm at its data-dependent initialisation every step starts as a
    per-channel normalisation followed by a rotation.

    Attributes:
        hidden: channels of the coupling network.
        coupling: ``"affine"`` or ``"additive"``.
        lu: LU-parameterised 1x1 convolution.
        param_dtype: dtype of every parameter of the step (None: the data's at ``init``).
        use_context: the coupling conditions on ``context`` (see
            :func:`jflows.bijectors.coupling.with_context`).

    Its three parts are fixed bijections without RNG streams, so the step declares itself
    a bijection that reads ``context`` exactly when ``use_context`` is set.

    Example:
        >>> step = GlowStep(hidden=8)
        >>> x = jax.random.normal(jax.random.key(0), (2, 4, 4, 2))
        >>> z, logdet = step.apply(step.init(jax.random.key(1), x), x)
        >>> z.shape, logdet.shape
        ((2, 4, 4, 2), (2,))
    """

    hidden: int = 64
    coupling: str = "affine"
    lu: bool = True
    param_dtype: Any = None
    use_context: bool = False

    @property
    def reads_context(self) -> bool:
        return self.use_context

    def setup(self):
        if self.coupling not in ("affine", "additive"):
            raise ConfigError(f"coupling must be 'affine' or 'additive', got {self.coupling!r}")
        pdt = self.param_dtype
        self.actnorm = ActNorm(event_ndims=3, param_dtype=pdt)
        self.invconv = InvertibleConv1x1(lu=self.lu, param_dtype=pdt)
        self.couple = SplitCoupling(
            event_ndims=3,
            conditioner=ConvNet(self.hidden, param_dtype=pdt),
            scale_map="sigmoid" if self.coupling == "affine" else "none",
            use_context=self.use_context,
        )

    def forward_and_log_det(self, x: jax.Array, context: jax.Array | None = None):
        x, ld1 = self.actnorm.forward_and_log_det(x)
        x, ld2 = self.invconv.forward_and_log_det(x)
        x, ld3 = self.couple.forward_and_log_det(x, context)
        return x, ld1 + ld2 + ld3

    def inverse_and_log_det(self, z: jax.Array, context: jax.Array | None = None):
        z, ld3 = self.couple.inverse_and_log_det(z, context)
        z, ld2 = self.invconv.inverse_and_log_det(z)
        z, ld1 = self.actnorm.inverse_and_log_det(z)
        return z, ld1 + ld2 + ld3
