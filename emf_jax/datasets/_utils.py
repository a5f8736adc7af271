"""Argument checks shared by the dataset generators (private).

They are :mod:`emf_jax._checks`'s, with the generators' wording: arguments must be static
Python values (users call the generators under ``jax.jit``), and a float64 request without
``jax_enable_x64`` quietly becomes float32.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from emf_jax import _checks

__all__ = ["DTypeLike", "check_float", "check_int", "resolve_dtype"]

DTypeLike = Any


def resolve_dtype(dtype: DTypeLike | None) -> np.dtype:
    """Returns the floating dtype to use; ``None`` means JAX's default float dtype."""
    return _checks.resolve_float_dtype(dtype)


def check_int(value: Any, name: str, minimum: int) -> int:
    """Checks that ``value`` is a (static) integer >= ``minimum`` and returns it."""
    return _checks.check_index(value, name, minimum, static=True)


def check_float(value: Any, name: str, *, positive: bool = False,
                nonnegative: bool = False) -> float:
    """Checks that ``value`` is a finite (optionally positive) static number."""
    return _checks.check_number(value, name, positive=positive, nonnegative=nonnegative,
                                static=True)
