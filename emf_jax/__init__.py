"""emf_jax: embedded-model flows for TensorFlow Probability models, in JAX."""
from emf_jax import architectures
from emf_jax import baselines
from emf_jax import datasets
from emf_jax import diagnostics
from emf_jax import flows
from emf_jax import gates
from emf_jax import models
from emf_jax import templates
from emf_jax import transforms
from emf_jax.checkpoint import load
from emf_jax.checkpoint import save
from emf_jax.density import build_emf_density_stateless
from emf_jax.distribution import EmbeddedFlowDistribution
from emf_jax.embedded_bijector import EmbeddedFlowBijector
from emf_jax.structured import StructuredLayer
from emf_jax.structured import build_structured_layer_stateless
from emf_jax.structured import standard_normal_like
from emf_jax.surrogates import build_emf_surrogate_posterior_stateless
from emf_jax.surrogates import build_surrogate_stateless
from emf_jax.tracing import ModelTrace
from emf_jax.tracing import VariableRecord
from emf_jax.tracing import joint_log_prob_fn
from emf_jax.tracing import trace_model
from emf_jax.transforms import UnsupportedDistributionError
from emf_jax.transforms import register_transform
from emf_jax.training import DensityFitResult
from emf_jax.training import FitResult
from emf_jax.training import fit_density
from emf_jax.training import fit_vi
from emf_jax.training import minimize

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
