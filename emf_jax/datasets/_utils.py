"""Argument checks shared by the dataset generators (private)."""
from __future__ import annotations

import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

DTypeLike = Any


def resolve_dtype(dtype: DTypeLike | None) -> np.dtype:
    """Returns the floating dtype to use; ``None`` means JAX's default float dtype."""
    if dtype is None:
        return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))
    try:
        resolved = jnp.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"dtype must be a floating dtype, got {dtype!r}.") from err
    if not jnp.issubdtype(resolved, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype, got {resolved}.")
    return jnp.dtype(jax.dtypes.canonicalize_dtype(resolved))


def check_int(value: Any, name: str, minimum: int) -> int:
    """Checks that ``value`` is a (static) integer >= ``minimum`` and returns it."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}.")
    try:
        result = operator.index(value)
    except TypeError as err:
        raise TypeError(
            f"{name} must be a static Python integer, got {type(value).__name__} "
            "(under jax.jit mark it static)."
        ) from err
    if result < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {result}.")
    return result


def check_float(value: Any, name: str, *, positive: bool = False,
                nonnegative: bool = False) -> float:
    """Checks that ``value`` is a finite (optionally positive) static number."""
    try:
        result = float(value)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError) as err:
        raise TypeError(f"{name} must be a static Python number, got {value!r}.") from err
    if not np.isfinite(result):
        raise ValueError(f"{name} must be finite, got {result}.")
    if positive and result <= 0.0:
        raise ValueError(f"{name} must be positive, got {result}.")
    if nonnegative and result < 0.0:
        raise ValueError(f"{name} must be non-negative, got {result}.")
    return result
