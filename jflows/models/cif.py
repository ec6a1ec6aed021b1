"""Continuously indexed flows (Cornish et al., 2020) around RealNVP or Residual Flow blocks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from jflows.bijectors import Bijector, IndexedBijection
from jflows.errors import ConfigError
from jflows.models.common import assemble_flow, event_kind, model_dtype
from jflows.models.flow import Flow
from jflows.models.realnvp import realnvp
from jflows.models.residual import resflow

BASE_MODELS = ("realnvp", "resflow")


def cif(
    event_shape: Sequence[int],
    *,
    base_model: Literal["realnvp", "resflow"] = "realnvp",
    layers: int = 4,
    index_dims: int = 1,
    hidden: tuple[int, ...] = (64, 64),
    index_hidden: tuple[int, ...] = (32,),
    scale_map: Literal["tanh", "sigmoid", "exp", "none"] = "tanh",
    actnorm: bool = False,
    index_init: Literal["zero", "random"] = "zero",
    coeff: float | None = None,
    logdet: Literal["roulette", "series", "exact"] = "roulette",
    preprocessing: Sequence[Bijector] = (),
    base: Literal["standard", "diagonal"] = "standard",
    training: bool = True,
    dtype: Literal["float32", "float64"] = "float32",
) -> Flow:
    r"""A continuously indexed flow for vectors: ``layers`` indexed blocks (CIF's multi-layer form).

    Layer ``l`` is an :class:`~jflows.bijectors.IndexedBijection` with its own index ``u_l``
    (``index_dims`` dimensions) around one block ``f_l`` of ``base_model``:

    * ``"realnvp"``: a pair of affine couplings on alternating halves (MLP widths ``hidden``);
    * ``"resflow"``: one Residual Flow block ``x + g(x)`` (LipSwish MLP ``hidden``, Lipschitz
      ``coeff``, log-det ``logdet`` in training; exact in evaluation for small events), with
      ActNorm around it when ``actnorm``.

    ``z_l = f_l(exp(-s_l(u_l)) x_{l-1} - t_l(u_l))`` with ``u_l ~ q_l(u_l | x_{l-1})``; the
    prior ``p_l(u_l | z_l)``, the posterior ``q_l`` and ``s_l, t_l`` are small networks of widths
    ``index_hidden``. ``log_prob`` is a one-draw estimate of the ELBO

    .. math:: \log p(x) \ge \mathbb{E}_q\Big[\log p_Z(z_L) + \sum_l \log|\det \partial F_l|
        + \log p_l(u_l \mid z_l) - \log q_l(u_l \mid x_{l-1})\Big]

    (``Flow.iwbo`` tightens it; figures are labelled ``..._bound``). ``sample`` draws
    ``u_l ~ p_l(u_l | z_l)`` from the last layer back. In the CLI: ``--model cif --opt
    base_model=resflow``. With all networks zero-initialised, the model starts as the plain
    ``base_model`` stack (exactly its log-likelihood).

    Args:
        event_shape: ``(d,)`` (``d >= 2`` for ``"realnvp"``).
        base_model: ``"realnvp"`` or ``"resflow"``.
        layers: indexed blocks (``>= 1``).
        index_dims: dimensions of each layer's index ``u``.
        hidden: MLP widths of the couplings or residual branches.
        index_hidden: MLP widths of ``q(u | x)``, ``p(u | z)`` and ``s(u), t(u)``.
        scale_map: scale parameterisation of the couplings (``"realnvp"``).
        actnorm: ActNorm before every coupling / around every residual block.
        index_init: ``"zero"``: ``s, t`` start at zero (the model starts as the plain
            ``base_model`` stack); ``"random"``: their last layer starts at PyTorch's default
            (see :class:`~jflows.bijectors.IndexedBijection`'s ``zero_init``).
        coeff: Lipschitz coefficient of the residual branches (default 0.97).
        logdet: training log-det of the residual blocks: roulette, series or exact.
        preprocessing: bijectors applied to ``x`` first.
        base: ``"standard"`` normal or learned ``"diagonal"`` Gaussian.
        training: training or evaluation estimator settings (residual blocks).
        dtype: ``"float32"`` or ``"float64"``.

    Returns:
        A :class:`~jflows.models.Flow` (stochastic: ``log_prob`` is a bound).

    Example:
        >>> flow = cif((2,), layers=2, hidden=(8,), index_hidden=(4,))
        >>> variables = flow.init({"params": key, "noise": key}, jnp.ones((3, 2)))
        >>> flow.estimate.name, sorted(flow.rng_streams)
        ('BOUND', ['noise', 'sample'])
    """
    dtype = model_dtype(dtype, "cif")
    if event_kind(event_shape) != "vector":
        raise ConfigError(f"cif models vectors (d,), got event_shape {tuple(event_shape)}")
    if base_model not in BASE_MODELS:
        raise ConfigError(f"cif: base_model must be one of {BASE_MODELS}, got {base_model!r}")
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ConfigError(f"cif: layers must be an int >= 1 (indexed blocks), got {layers!r}")
    if index_init not in ("zero", "random"):
        raise ConfigError(f"cif: index_init must be 'zero' or 'random', got {index_init!r}")
    shape = tuple(int(s) for s in event_shape)

    def block() -> Bijector:
        if base_model == "realnvp":
            flow = realnvp(shape, n_couplings=2, hidden=tuple(hidden), scale_map=scale_map,
                           actnorm=actnorm, dtype=dtype)
        else:
            flow = resflow(shape, n_blocks=1, hidden=tuple(hidden), coeff=coeff, logdet=logdet,
                           actnorm=actnorm, training=training, dtype=dtype)
        return flow.bijector

    indexed = [
        IndexedBijection(block(), index_dims=index_dims, hidden=tuple(index_hidden),
                         zero_init=index_init == "zero", param_dtype=dtype)
        for _ in range(layers)
    ]
    return assemble_flow(shape, indexed, preprocessing, base, dtype)
