"""An augmented coupling flow for vectors (VFlow, ANF): extra dimensions drawn from q(a | x)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from jflows.bijectors import Augment, Bijector, Permute
from jflows.errors import ConfigError
from jflows.models.common import assemble_flow, event_kind, model_dtype
from jflows.models.flow import Flow
from jflows.models.vector_couplings import vector_couplings


def augmented(
    event_shape: Sequence[int],
    *,
    augment: int = 2,
    n_couplings: int = 8,
    hidden: tuple[int, ...] = (128, 128),
    q_hidden: tuple[int, ...] = (64,),
    scale_map: Literal["tanh", "sigmoid", "exp", "none"] = "tanh",
    actnorm: bool = False,
    unroll: int | bool = True,
    preprocessing: Sequence[Bijector] = (),
    base: Literal["standard", "diagonal"] = "standard",
    training: bool = True,
    dtype: Literal["float32", "float64"] = "float32",
) -> Flow:
    r"""RealNVP on ``(x, a)`` with ``a ~ q(a | x)``: an augmented flow (Chen et al. 2020).

    The first layer (:class:`~jflows.bijectors.Augment`, a generative surjection) appends
    ``augment`` dimensions drawn from a learned Gaussian ``q(a | x)``; a fixed permutation
    interleaves them with the data (:func:`interleaved`), and the couplings model the joint
    ``p(x, a)`` in ``d + augment`` dimensions, where they have room to move mass around.
    ``log_prob`` is a one-draw estimate of the ELBO

    .. math:: \log p(x) \ge \mathbb{E}_{q(a \mid x)}[\log p(x, a) - \log q(a \mid x)],

    (``Flow.iwbo`` gives a tighter bound); figures are labelled ``..._bound``. The latent has
    ``d + augment`` dimensions (``Flow.latent_shape``); ``sample`` drops the extra ones. One-
    dimensional data works too (the couplings split ``1 + augment`` dimensions).

    Args:
        event_shape: ``(d,)``.
        augment: number of appended dimensions (``>= 1``).
        n_couplings: couplings (even), as for :func:`~jflows.models.realnvp`.
        hidden: MLP widths of the couplings.
        scale_map: scale parameterisation of the couplings.
        actnorm: an ActNorm before every coupling.
        unroll: coupling pairs per iteration of the ``nn.scan`` loop (``True``: all).
        base: ``"standard"`` normal or learned ``"diagonal"`` Gaussian.
        q_hidden: widths of the MLP of ``q(a | x)``.
        preprocessing: bijectors applied to ``x`` first.
        training: accepted for a uniform factory signature (unused).
        dtype: ``"float32"`` or ``"float64"``.

    Returns:
        A :class:`~jflows.models.Flow` (stochastic: ``log_prob`` is a bound).

    Example:
        >>> flow = augmented((2,), augment=2, n_couplings=2, hidden=(8,), q_hidden=(4,))
        >>> x = jnp.ones((3, 2))
        >>> variables = flow.init({"params": key, "noise": key}, x)
        >>> flow.latent_shape, flow.estimate.name, sorted(flow.rng_streams)
        ((4,), 'BOUND', ['noise', 'sample'])
    """
    del training
    dtype = model_dtype(dtype, "augmented")
    if event_kind(event_shape) != "vector":
        raise ConfigError(f"augmented models vectors (d,), got event_shape {tuple(event_shape)}")
    if isinstance(augment, bool) or not isinstance(augment, int) or augment < 1:
        raise ConfigError(f"augment must be an int >= 1 (dimensions to append), got {augment!r}")
    (d,) = (int(s) for s in event_shape)
    latent = (d + augment,)
    # n_couplings, hidden, scale_map, actnorm, unroll go to realnvp unchanged
    core = vector_couplings(latent, dtype, locals())
    extra = Augment(features=augment, hidden=tuple(q_hidden), param_dtype=dtype)
    mix = Permute(interleaved(d, augment))
    return assemble_flow(
        event_shape, [extra, mix, core], preprocessing, base, dtype, latent_shape=latent
    )


def interleaved(d: int, augment: int) -> tuple[int, ...]:
    """The order ``x_0, a_0, x_1, a_1, ...`` of ``(x, a)`` (the longer one's rest at the end).

    Couplings split their input in halves; with ``(x, a)`` in this order every half holds data
    and augmented entries. Split as ``(x | a)``, the first couplings would transform ``x`` given
    ``a`` only, and at initialisation (``q(a | x) = N(0, I)``, identity couplings) the ELBO's
    gradient vanishes in expectation: training would not leave its starting point.

    Example:
        >>> interleaved(2, 3)
        (0, 2, 1, 3, 4)
    """
    xs, extra = list(range(d)), list(range(d, d + augment))
    order = [i for pair in zip(xs, extra, strict=False) for i in pair]
    n = min(d, augment)
    return tuple(order + xs[n:] + extra[n:])
