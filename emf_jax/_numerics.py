"""Numerical building blocks shared by the per-family maps and the gates.

- Two-sided normal quantiles that keep precision in both tails.
- An elementwise root finder for increasing functions (bracket expansion, Chandrupatla's
  method, a safeguarded Newton polish) whose derivatives come from the implicit function
  theorem through `jax.lax.custom_root`, so that gradients never flow through the iterations.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.scipy import special as jsp
from tensorflow_probability.substrates import jax as tfp

Array = jax.Array

_LOG_HALF = -0.6931471805599453


def safe_where(condition: Array, if_true: Callable[[Array], Array],
               if_false: Callable[[Array], Array], x: Array, *, safe_value: float) -> Array:
    """``where(condition, if_true(x), if_false(x))`` without NaN gradients from the unused side.

    Each branch is evaluated on ``x`` where it is selected and on ``safe_value`` elsewhere.
    """
    safe = jnp.asarray(safe_value, dtype=x.dtype)
    return jnp.where(condition, if_true(jnp.where(condition, x, safe)),
                     if_false(jnp.where(condition, safe, x)))


def normal_quantile_from_log_cdf(log_cdf: Array, log_survival: Array) -> Array:
    """``Φ⁻¹(F(x))`` from ``log F(x)`` and ``log (1 − F(x))``, precise in both tails.

    The lower tail uses ``Φ⁻¹(F)``, the upper tail ``−Φ⁻¹(1 − F)``, so neither side ever
    forms a probability that rounds to one.
    """
    lower = log_cdf < _LOG_HALF
    safe = jnp.asarray(_LOG_HALF, dtype=log_cdf.dtype)
    low_arg = jnp.where(lower, log_cdf, safe)
    high_arg = jnp.where(lower, safe, log_survival)
    return jnp.where(lower, jsp.ndtri(jnp.exp(low_arg)), -jsp.ndtri(jnp.exp(high_arg)))


def normal_log_pdf(e: Array) -> Array:
    """log φ(e), the standard normal log density."""
    return -0.5 * jnp.square(e) - 0.5 * jnp.log(2 * jnp.pi).astype(e.dtype)


def _expand_bracket(objective: Callable[[Array], Array], center: Array, width: Array,
                    max_doublings: int) -> tuple[Array, Array]:
    """Grows ``[center − w, center + w]`` by doubling until it brackets the increasing root."""
    def brackets(lo, hi):
        return (objective(lo) <= 0) & (objective(hi) >= 0)

    def cond(state):
        lo, hi, k = state
        return (k < max_doublings) & ~jnp.all(brackets(lo, hi))

    def body(state):
        lo, hi, k = state
        f_lo, f_hi = objective(lo), objective(hi)
        step = width * 2.0 ** (k + 1).astype(width.dtype)
        lo = jnp.where(f_lo <= 0, lo, center - step)
        hi = jnp.where(f_hi >= 0, hi, center + step)
        return lo, hi, k + 1

    lo, hi, _ = jax.lax.while_loop(cond, body, (center - width, center + width, jnp.int32(0)))
    return lo, hi


def _solve_increasing_no_grad(objective: Callable[[Array], Array], center: Array,
                              width: Array) -> Array:
    dtype = center.dtype
    eps = jnp.finfo(dtype).eps
    max_doublings = 60 if dtype == jnp.float32 else 120
    lo, hi = _expand_bracket(objective, center, width, max_doublings)
    result = tfp.math.find_root_chandrupatla(
        objective, low=lo, high=hi,
        position_tolerance=4 * eps * (1 + jnp.abs(center)),
        max_iterations=80 if dtype == jnp.float32 else 160)
    root = result.estimated_root
    # One safeguarded Newton step removes the last bit of bracket slack.
    value, slope = jax.jvp(objective, (root,), (jnp.ones_like(root),))
    newton = root - value / slope
    better = jnp.isfinite(newton) & (jnp.abs(objective(newton)) < jnp.abs(value))
    return jnp.where(better, newton, root)


def solve_increasing(objective: Callable[[Array], Array], center: Array, width: Array) -> Array:
    """Elementwise root of an increasing function, differentiable by implicit differentiation.

    Args:
      objective: elementwise, strictly increasing in its argument; may close over traced
        parameters, which receive correct gradients.
      center: a first guess of the root (no gradient flows through it).
      width: half-width of the first bracket around `center` (positive).

    Returns:
      x with ``objective(x) ≈ 0``, of the shape of `center`.
    """
    center = jax.lax.stop_gradient(center)
    width = jax.lax.stop_gradient(jnp.maximum(width, jnp.finfo(center.dtype).eps))

    def solve(fn, guess):
        return _solve_increasing_no_grad(fn, guess, width)

    def tangent_solve(linear_fn, rhs):
        # The objective is elementwise, so its Jacobian is diagonal.
        return rhs / linear_fn(jnp.ones_like(rhs))

    return jax.lax.custom_root(objective, center, solve, tangent_solve)
