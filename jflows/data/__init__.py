"""Data: toy 2-D densities, scikit-learn digits, user ``.npy`` arrays, dequantization helpers.

``load_dataset(spec)`` is the entry point (what the CLI's ``--data`` takes); the other names are
its building blocks.
"""

from jflows.data.arrays import check_levels, load_array, validate_array
from jflows.data.columns import (
    Discrete,
    Lattice,
    constant_columns,
    dequantized_stats,
    discrete_columns,
    lattice_columns,
    off_lattice_rows,
)
from jflows.data.conditional_toy import (
    CONDITIONAL_TOYS,
    conditional_ring_log_prob,
    conditional_ring_mean,
    sample_conditional_toy,
)
from jflows.data.context import load_context
from jflows.data.dataset import BUILTIN_DATA, Dataset, load_dataset
from jflows.data.dequantize import bits_per_dim, dequantize, reduce_bits
from jflows.data.digits import DIGITS_LEVELS, digits_split_indices, load_digits_split
from jflows.data.preprocess import vector_stats
from jflows.data.toy import (
    EIGHT_GAUSSIANS_CENTERS,
    EIGHT_GAUSSIANS_STD,
    TOY_DENSITIES,
    eight_gaussians_log_prob,
    sample_toy,
)

__all__ = [
    "BUILTIN_DATA",
    "CONDITIONAL_TOYS",
    "DIGITS_LEVELS",
    "EIGHT_GAUSSIANS_CENTERS",
    "EIGHT_GAUSSIANS_STD",
    "TOY_DENSITIES",
    "Dataset",
    "Discrete",
    "Lattice",
    "bits_per_dim",
    "check_levels",
    "conditional_ring_log_prob",
    "conditional_ring_mean",
    "constant_columns",
    "dequantize",
    "dequantized_stats",
    "discrete_columns",
    "digits_split_indices",
    "eight_gaussians_log_prob",
    "lattice_columns",
    "load_array",
    "load_context",
    "load_dataset",
    "load_digits_split",
    "off_lattice_rows",
    "reduce_bits",
    "sample_conditional_toy",
    "sample_toy",
    "validate_array",
    "vector_stats",
]
