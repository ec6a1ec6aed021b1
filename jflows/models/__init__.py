"""Flows and model factories."""

from jflows.models.bases import DiagonalGaussian, StandardNormal
from jflows.models.distrax_adapter import FlowBijector, to_distrax
from jflows.models.flow import Flow
from jflows.models.glow import glow
from jflows.models.nice import nice
from jflows.models.preprocessing import image_preprocessing, vector_preprocessing
from jflows.models.realnvp import realnvp

MODELS = {"nice": nice, "realnvp": realnvp, "glow": glow}

__all__ = [
    "MODELS",
    "DiagonalGaussian",
    "Flow",
    "FlowBijector",
    "StandardNormal",
    "glow",
    "image_preprocessing",
    "nice",
    "realnvp",
    "to_distrax",
    "vector_preprocessing",
]
