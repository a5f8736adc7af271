"""emf_jax: embedded-model flows for TensorFlow Probability models, in JAX."""
from emf_jax import (
    architectures,
    baselines,
    datasets,
    diagnostics,
    flows,
    gates,
    models,
    templates,
    transforms,
)
from emf_jax.checkpoint import load, save
from emf_jax.density import build_emf_density_stateless
from emf_jax.distribution import EmbeddedFlowDistribution
from emf_jax.embedded_bijector import EmbeddedFlowBijector
from emf_jax.structured import (
    StructuredLayer,
    build_structured_layer_stateless,
    standard_normal_like,
)
from emf_jax.surrogates import build_emf_surrogate_posterior_stateless, build_surrogate_stateless
from emf_jax.tracing import ModelTrace, VariableRecord, joint_log_prob_fn, trace_model
from emf_jax.training import DensityFitResult, FitResult, fit_density, fit_vi, minimize
from emf_jax.transforms import UnsupportedDistributionError, register_transform

__version__ = "0.1.0.dev0"

__all__ = [
    "DensityFitResult",
    "EmbeddedFlowBijector",
    "EmbeddedFlowDistribution",
    "FitResult",
    "ModelTrace",
    "StructuredLayer",
    "UnsupportedDistributionError",
    "VariableRecord",
    "architectures",
    "baselines",
    "build_emf_density_stateless",
    "build_emf_surrogate_posterior_stateless",
    "build_structured_layer_stateless",
    "build_surrogate_stateless",
    "datasets",
    "diagnostics",
    "fit_density",
    "fit_vi",
    "flows",
    "gates",
    "joint_log_prob_fn",
    "load",
    "minimize",
    "models",
    "register_transform",
    "save",
    "standard_normal_like",
    "templates",
    "trace_model",
    "transforms",
]
