"""The types the public functions are annotated with, in one place.

``Array``, ``PRNGKey``, ``Params`` and ``PyTree`` are aliases; the Protocols describe the
functions that the stateless builders return and that the training loops take.
"""
from __future__ import annotations

from typing import Any, Protocol

import jax

__all__ = ["Array", "BuildFn", "InitFn", "LossFn", "PRNGKey", "Params", "PyTree", "Seed"]

Array = jax.Array
PRNGKey = jax.Array
PyTree = Any
Params = Any  # a pytree of arrays, typically a dict
Seed = Any  # an int, a raw uint32[2] PRNG key or a typed PRNG key


class InitFn(Protocol):
    """``params = init_fn(seed)``, as returned by the ``build_*_stateless`` functions.

    Example:
      >>> import emf_jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> model = tfp.distributions.JointDistributionNamed({"a": tfp.distributions.Normal(0., 1.)})
      >>> init_fn: InitFn = emf_jax.build_structured_layer_stateless(model)[0]
      >>> sorted(init_fn(None))
      ['gates']
    """

    def __call__(self, seed: Any = None) -> Params: ...


class BuildFn(Protocol):
    """``distribution_or_bijector = build_fn(params)``.

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> build_fn: BuildFn = lambda params: tfp.distributions.Normal(params["loc"], 1.)
      >>> float(build_fn({"loc": 2.0}).mean())
      2.0
    """

    def __call__(self, params: Params) -> Any: ...


class LossFn(Protocol):
    """``loss_fn(params, seed, *args) -> scalar``, what `emf_jax.minimize` minimises.

    Example:
      >>> import jax.numpy as jnp
      >>> loss_fn: LossFn = lambda params, seed: jnp.sum(params ** 2)
      >>> float(loss_fn(jnp.ones(3), None))
      3.0
    """

    def __call__(self, params: Params, seed: PRNGKey, *args: Any) -> Array: ...
