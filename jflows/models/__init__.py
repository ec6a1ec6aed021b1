"""Flows and model factories."""

from jflows.models.absolute import absolute
from jflows.models.augmented import augmented
from jflows.models.bases import DiagonalGaussian, StandardNormal
from jflows.models.checked import checked_apply
from jflows.models.cif import cif
from jflows.models.diagnostics import ResidualReport, residual_diagnostics
from jflows.models.distrax_adapter import FlowBijector, to_distrax
from jflows.models.evaluate import evaluate_log_prob
from jflows.models.flow import Flow
from jflows.models.glow import glow
from jflows.models.hybrid import Hybrid, hybrid
from jflows.models.likelihood import LogLikelihood
from jflows.models.lipschitz_report import LipschitzReport, MapLipschitz, bi_lipschitz
from jflows.models.maf import iaf, maf
from jflows.models.maxpool import maxpool
from jflows.models.mintnet import mintnet
from jflows.models.nice import nice
from jflows.models.nsf import nsf
from jflows.models.preprocessing import image_preprocessing, vector_preprocessing
from jflows.models.realnvp import realnvp
from jflows.models.residual import iresnet, resflow

MODELS = {
    "nice": nice,
    "realnvp": realnvp,
    "glow": glow,
    "iresnet": iresnet,
    "resflow": resflow,
    "absolute": absolute,
    "augmented": augmented,
    "cif": cif,
    "maxpool": maxpool,
    "mintnet": mintnet,
    "nsf": nsf,
    "maf": maf,
    "iaf": iaf,
}

__all__ = [
    "MODELS",
    "ResidualReport",
    "DiagonalGaussian",
    "Flow",
    "Hybrid",
    "FlowBijector",
    "LipschitzReport",
    "LogLikelihood",
    "MapLipschitz",
    "StandardNormal",
    "absolute",
    "augmented",
    "bi_lipschitz",
    "checked_apply",
    "cif",
    "evaluate_log_prob",
    "glow",
    "hybrid",
    "iaf",
    "image_preprocessing",
    "iresnet",
    "maf",
    "maxpool",
    "mintnet",
    "nice",
    "nsf",
    "realnvp",
    "residual_diagnostics",
    "resflow",
    "to_distrax",
    "vector_preprocessing",
]
