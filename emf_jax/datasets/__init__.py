"""Generators of the data used in the paper's density-estimation experiments.

Every generator is a pure function ``fn(key, num_samples, *, ...) -> jax.Array`` of a JAX PRNG
key; it compiles under ``jax.jit`` with ``num_samples`` and the options static.

- 2-D toys, ``[N, 2]``: :func:`eight_gaussians`, :func:`checkerboard`, :func:`two_spirals`,
  :func:`diamond`.
- Time series, ``[N, T, state_dim]``: :func:`brownian_motion`, :func:`ornstein_uhlenbeck`,
  :func:`lorenz`, :func:`van_der_pol`; :func:`flatten_time_series` gives ``[N, T * D]`` in the
  variable order of the time-series templates.
- Hierarchical groups, ``[N, 1 + items, F]``: :func:`iris_like`, :func:`digits_like`.

:data:`DATASETS` maps a name to its generator and :func:`load` calls one by name.
"""
from __future__ import annotations

import types
from typing import Any, Callable, Mapping

import jax

from emf_jax.datasets.hierarchical import digits_like, iris_like
from emf_jax.datasets.time_series import (
    brownian_motion,
    flatten_time_series,
    lorenz,
    lorenz_drift,
    ornstein_uhlenbeck,
    unflatten_time_series,
    van_der_pol,
    van_der_pol_drift,
)
from emf_jax.datasets.toy2d import checkerboard, diamond, eight_gaussians, two_spirals

__all__ = [  # by room: the registry, then toy2d, time_series and hierarchical
    "DATASETS", "load",
    "eight_gaussians", "checkerboard", "two_spirals", "diamond",
    "brownian_motion", "ornstein_uhlenbeck", "lorenz", "van_der_pol", "lorenz_drift",
    "van_der_pol_drift", "flatten_time_series", "unflatten_time_series",
    "iris_like", "digits_like",
]

Generator = Callable[..., jax.Array]

DATASETS: Mapping[str, Generator] = types.MappingProxyType({
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "two_spirals": two_spirals,
    "diamond": diamond,
    "brownian_motion": brownian_motion,
    "ornstein_uhlenbeck": ornstein_uhlenbeck,
    "lorenz": lorenz,
    "van_der_pol": van_der_pol,
    "iris": iris_like,
    "digits": digits_like,
})
"""Read-only map from a data set's name to its generator ``fn(key, num_samples, **options)``."""


def load(name: str, key: jax.Array, num_samples: int, **options: Any) -> jax.Array:
    """Draws ``num_samples`` from the data set called ``name``.

    Args:
      name: a key of :data:`DATASETS`.
      key: a JAX PRNG key.
      num_samples: number of samples (static).
      **options: keyword options of that generator (e.g. ``num_steps=10``).

    Returns:
      The generator's output, ``num_samples`` along the first axis.

    Raises:
      ValueError: if ``name`` is not a known data set.

    Example:
      >>> import jax
      >>> load('brownian_motion', jax.random.key(0), 5, num_steps=4).shape
      (5, 4, 1)
    """
    try:
        generator = DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown data set {name!r}; known names: {sorted(DATASETS)}."
        ) from None
    return generator(key, num_samples, **options)
