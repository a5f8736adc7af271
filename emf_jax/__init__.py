"""emf_jax: embedded-model flows for TensorFlow Probability models, in JAX."""
from emf_jax import gates
from emf_jax import transforms
from emf_jax.structured import StructuredLayer
from emf_jax.structured import build_structured_layer_stateless
from emf_jax.structured import standard_normal_like
from emf_jax.tracing import ModelTrace
from emf_jax.tracing import VariableRecord
from emf_jax.tracing import trace_model
from emf_jax.transforms import UnsupportedDistributionError
from emf_jax.transforms import register_transform

__version__ = "0.1.0.dev0"

__all__ = [
    "ModelTrace",
    "StructuredLayer",
    "UnsupportedDistributionError",
    "VariableRecord",
    "build_structured_layer_stateless",
    "gates",
    "register_transform",
    "standard_normal_like",
    "trace_model",
    "transforms",
]
