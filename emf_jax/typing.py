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
    """``params = init_fn(seed)``, as returned by the ``build_*_stateless`` functions."""

    def __call__(self, seed: Any = None) -> Params: ...


class BuildFn(Protocol):
    """``distribution_or_bijector = build_fn(params)``."""

    def __call__(self, params: Params) -> Any: ...


class LossFn(Protocol):
    """``loss_fn(params, seed, *args) -> scalar``, what `emf_jax.minimize` minimises."""

    def __call__(self, params: Params, seed: PRNGKey, *args: Any) -> Array: ...
