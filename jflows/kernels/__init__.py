"""Pure JAX kernels (no Flax): the mathematics of every bijector, estimator and solver."""

from jflows.kernels.coupling import log_scale_from_raw, masked_affine_forward, masked_affine_inverse
from jflows.kernels.elementwise import affine_forward, affine_inverse, logit_forward, logit_inverse
from jflows.kernels.fixed_point import (
    AdjointInfo,
    FixedPointInfo,
    InverseNotConvergedError,
    banach_iterations,
    check_solver_config,
    default_max_iter,
    fixed_point_inverse,
    new_adjoint_tap,
)
from jflows.kernels.induced_norms import (
    CLOSED_FORM_PAIRS,
    induced_norm_closed_form,
    induced_power_iteration,
    normalize_codomain,
    normalize_domain,
)
from jflows.kernels.local_lipschitz import (
    LocalLipschitz,
    local_inverse_lipschitz,
    local_lipschitz,
    top_singular_value,
)
from jflows.kernels.logdet_exact import event_jacobians, logdet_exact
from jflows.kernels.logdet_series import SeriesInfo, logdet_estimate, logdet_estimate_with_info
from jflows.kernels.masked_conv import (
    MintWeights,
    center_diagonal,
    conv_mask,
    masked_conv,
    mint_forward,
    mint_inverse,
)
from jflows.kernels.power_series import power_series_terms, truncation_bound
from jflows.kernels.probes import check_probe, sample_probe
from jflows.kernels.rational_quadratic import (
    SplineKnots,
    rq_spline_forward,
    rq_spline_inverse,
    rq_spline_knots,
    rq_spline_num_params,
)
from jflows.kernels.roulette import check_series_config, draw_n_terms, survival_prob, term_weight
from jflows.kernels.shapes import apply_flat_batch, batch_shape, sum_event, zeros_logdet
from jflows.kernels.spectral import (
    check_coeff,
    dense_operator,
    lipschitz_scale,
    power_iteration,
    power_iteration_adaptive,
    sigma_from_vectors,
    spectral_normalize,
)
from jflows.kernels.spectral_conv import conv_apply, conv_operator, conv_output_shape
from jflows.kernels.squeeze import squeeze, unsqueeze

__all__ = [
    "AdjointInfo",
    "CLOSED_FORM_PAIRS",
    "FixedPointInfo",
    "InverseNotConvergedError",
    "LocalLipschitz",
    "MintWeights",
    "SeriesInfo",
    "SplineKnots",
    "affine_forward",
    "affine_inverse",
    "apply_flat_batch",
    "banach_iterations",
    "batch_shape",
    "check_coeff",
    "center_diagonal",
    "check_probe",
    "check_series_config",
    "check_solver_config",
    "conv_apply",
    "conv_mask",
    "conv_operator",
    "conv_output_shape",
    "default_max_iter",
    "dense_operator",
    "draw_n_terms",
    "event_jacobians",
    "fixed_point_inverse",
    "induced_norm_closed_form",
    "induced_power_iteration",
    "lipschitz_scale",
    "local_inverse_lipschitz",
    "local_lipschitz",
    "log_scale_from_raw",
    "logdet_estimate",
    "new_adjoint_tap",
    "logdet_estimate_with_info",
    "logdet_exact",
    "logit_forward",
    "logit_inverse",
    "masked_affine_forward",
    "masked_affine_inverse",
    "masked_conv",
    "mint_forward",
    "mint_inverse",
    "normalize_codomain",
    "normalize_domain",
    "power_iteration",
    "power_iteration_adaptive",
    "power_series_terms",
    "rq_spline_forward",
    "rq_spline_inverse",
    "rq_spline_knots",
    "rq_spline_num_params",
    "sample_probe",
    "sigma_from_vectors",
    "spectral_normalize",
    "squeeze",
    "sum_event",
    "survival_prob",
    "term_weight",
    "top_singular_value",
    "truncation_bound",
    "unsqueeze",
    "zeros_logdet",
]
