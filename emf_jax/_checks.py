"""Argument checks and canonicalisation shared by the public functions, with one error style.

Every check raises with the argument's name in backticks and the value it got, e.g.
"`num_steps` must be >= 0, got -1.".
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["as_key", "check_callable", "check_int", "check_optimizer", "check_positive_float"]


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
