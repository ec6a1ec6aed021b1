"""A coupling flow behind an absolute-value surjection, for data symmetric about zero."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from jflows.bijectors import AbsoluteValue, Bijector
from jflows.errors import ConfigError
from jflows.models.common import assemble_flow, event_kind, model_dtype
from jflows.models.flow import Flow
from jflows.models.vector_couplings import vector_couplings


def absolute(
    event_shape: Sequence[int],
    *,
    n_couplings: int = 8,
    hidden: tuple[int, ...] = (128, 128),
    learned_signs: bool = True,
    sign_hidden: tuple[int, ...] = (64,),
    scale_map: Literal["tanh", "sigmoid", "exp", "none"] = "tanh",
    actnorm: bool = False,
    unroll: int | bool = True,
    preprocessing: Sequence[Bijector] = (),
    base: Literal["standard", "diagonal"] = "standard",
    training: bool = True,
    dtype: Literal["float32", "float64"] = "float32",
) -> Flow:
    r"""``z = RealNVP(|x|)``: the SurVAE absolute-value flow for vectors.

    The first layer maps ``x`` to ``|x|`` (an inference surjection,
    :class:`~jflows.bijectors.AbsoluteValue`) and contributes the log-probability of the
    signs given ``|x|``; the couplings then model ``|x|``, so the flow only has to fit one
    orthant of a density that is symmetric about zero:

    .. math:: \log p(x) = \log p_{\mathrm{RealNVP}}(|x|) + \log p(\mathrm{sign}(x) \mid |x|).

    The log-likelihood is exact (no bound). With ``learned_signs=False`` the signs are fair
    coins (exact for densities with ``p(x) = p(|x|)`` under every coordinate flip) and the
    model has exactly the parameters of ``realnvp`` with the same settings.

    Args:
        event_shape: ``(d,)`` with ``d >= 2``.
        n_couplings: couplings (even), as for :func:`~jflows.models.realnvp`.
        hidden: MLP widths of the couplings.
        scale_map: scale parameterisation of the couplings.
        actnorm: an ActNorm before every coupling.
        unroll: coupling pairs per iteration of the ``nn.scan`` loop (``True``: all).
        base: ``"standard"`` normal or learned ``"diagonal"`` Gaussian.
        learned_signs: learn ``p(sign | |x|)`` with a small MLP (else fair coins).
        sign_hidden: widths of that MLP.
        preprocessing: bijectors applied first (the CLI standardises vectors, which keeps
            data symmetric about zero symmetric when its mean is zero).
        training: accepted for a uniform factory signature (unused).
        dtype: ``"float32"`` or ``"float64"``.

    Returns:
        A :class:`~jflows.models.Flow` whose ``log_prob`` is exact.

    Example:
        >>> flow = absolute((2,), n_couplings=2, hidden=(8,), sign_hidden=(4,))
        >>> x = jnp.array([[1.0, -2.0], [-1.0, 2.0]])
        >>> variables = flow.init(key, x)
        >>> logp = flow.apply(variables, x, method="log_prob")  # equal at initialisation
        >>> bool(jnp.allclose(logp[0], logp[1])), flow.estimate.name
        (True, 'EXACT')
    """
    del training
    dtype = model_dtype(dtype, "absolute")
    if event_kind(event_shape) != "vector":
        raise ConfigError(
            f"absolute models vectors (d,), got event_shape {tuple(event_shape)}; for images "
            "put jflows.bijectors.AbsoluteValue(event_ndims=3) in front of an image flow"
        )
    # n_couplings, hidden, scale_map, actnorm, unroll go to realnvp unchanged
    core = vector_couplings(event_shape, dtype, locals())
    signs = AbsoluteValue(learned_signs=learned_signs, hidden=tuple(sign_hidden), param_dtype=dtype)
    return assemble_flow(event_shape, [signs, core], preprocessing, base, dtype)
