"""Argument checks and canonicalisation shared by the public functions, with one error style.

Every check raises with the argument's name and the value it got, e.g.
"`num_steps` must be >= 0, got -1.". The value-first checks at the end (`check_index`,
`check_number`, `resolve_float_dtype`) serve the model, dataset and template builders, whose
messages name the argument without backticks.
"""
from __future__ import annotations

import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "as_key",
    "check_callable",
    "check_index",
    "check_int",
    "check_number",
    "check_optimizer",
    "check_positive_float",
    "resolve_float_dtype",
]


def check_int(name: str, value: Any, minimum: int) -> int:
    """`value` as an int, after checking that it is an integer (not a bool) >= `minimum`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)


def check_positive_float(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """`value` as a float, after checking that it is a finite real number > 0 (or None)."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        none = " or None" if allow_none else ""
        raise TypeError(f"`{name}` must be a positive float{none}, got {value!r}.")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be finite and > 0, got {value}.")
    return float(value)


def check_callable(name: str, value: Any) -> None:
    """Raises a TypeError naming `name` unless `value` is callable."""
    if not callable(value):
        raise TypeError(f"`{name}` must be callable, got {type(value).__name__}.")


def check_optimizer(optimizer: Any) -> None:
    """Raises a TypeError unless `optimizer` looks like an optax.GradientTransformation."""
    if not (callable(getattr(optimizer, "init", None))
            and callable(getattr(optimizer, "update", None))):
        raise TypeError("`optimizer` must be an optax.GradientTransformation (with `init` and "
                        f"`update`), got {type(optimizer).__name__}.")


def as_key(seed: Any, name: str = "seed") -> jax.Array:
    """A PRNG key from an int (``jax.random.PRNGKey(seed)``), a raw key or a typed key."""
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be an int or a PRNG key, got {seed!r}.")
    if isinstance(seed, (int, np.integer)):
        return jax.random.PRNGKey(int(seed))
    key = jnp.asarray(seed)
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"`{name}` must be a single PRNG key, got key shape {key.shape}.")
        return key
    if key.dtype != jnp.uint32 or key.shape != (2,):
        raise TypeError(
            f"`{name}` must be an int, a raw `jax.random.PRNGKey` (uint32[2]) or a typed key; "
            f"got an array of dtype {key.dtype} and shape {key.shape}.")
    return key


def check_index(value: Any, name: str, minimum: int, *, static: bool = False) -> int:
    """`value` as a Python int (anything with ``__index__`` but a bool), >= `minimum`.

    ``static=True`` says, on a non-integer, that a traced value must be marked static
    (the dataset generators, which users call under ``jax.jit``).
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}.")
    try:
        result = operator.index(value)
    except TypeError as err:
        if static:
            raise TypeError(
                f"{name} must be a static Python integer, got {type(value).__name__} "
                "(under jax.jit mark it static)."
            ) from err
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}.") from err
    if result < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {result}.")
    return result


def check_number(value: Any, name: str, *, positive: bool = False, nonnegative: bool = False,
                 static: bool = False) -> float:
    """`value` as a finite float (> 0 with `positive`, >= 0 with `nonnegative`).

    ``static=True`` words the type error for the dataset generators ("a static Python
    number"), whose arguments may arrive traced.
    """
    try:
        result = float(value)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError) as err:
        what = "a static Python number" if static else "a real number"
        raise TypeError(f"{name} must be {what}, got {value!r}.") from err
    if positive and not (np.isfinite(result) and result > 0.0):
        raise ValueError(f"{name} must be finite and positive, got {result}.")
    if not np.isfinite(result):
        raise ValueError(f"{name} must be finite, got {result}.")
    if nonnegative and result < 0.0:
        raise ValueError(f"{name} must be non-negative, got {result}.")
    return result


def resolve_float_dtype(dtype: Any, *, strict: bool = False) -> np.dtype:
    """The floating dtype to use; ``None`` means JAX's default float dtype.

    A dtype JAX cannot hold (float64 while ``jax_enable_x64`` is off) is canonicalised
    (float32), or with ``strict=True`` is a ValueError: the target models promise their
    parameters' dtype, the density generators only a floating one.
    """
    if dtype is None:
        return np.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))
    try:
        resolved = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"dtype must be a floating dtype, got {dtype!r}.") from err
    if not jnp.issubdtype(resolved, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype, got {resolved}.")
    canonical = np.dtype(jax.dtypes.canonicalize_dtype(resolved))
    if strict and canonical != resolved:
        raise ValueError(
            f"dtype {resolved} is not available: enable it with "
            "jax.config.update('jax_enable_x64', True), or pass dtype=None.")
    return canonical
