"""Gates: ``u = λ·f(e) + (1 − λ)·e``, a learned blend of a variable's map and the identity.

Parameterisation: ``λ = sigmoid(w)`` with one unconstrained scalar ``w`` per latent variable
(vector-valued variables share one λ). ``initial_gate = 0.999`` (``w ≈ 6.9``) starts almost
exactly at the model, as in the paper. ``log λ`` and ``log(1 − λ)`` are computed as
``log_sigmoid(±w)``, so gates close to 0 or 1 stay accurate.

Formulas, per kind of map (all in the variable's unconstrained space):

- Elementwise affine ``f(e) = m + s·e``:
  forward ``u = λm + (λs + 1 − λ)·e``; inverse ``e = (u − λm) / (λs + 1 − λ)``;
  log-det ``Σ log|λs + 1 − λ|``.
- Matrix affine ``f(e) = m + S e``: ``M = λS + (1 − λ)I``; forward ``u = λm + M e``;
  inverse solves ``M e = u − λm`` (by substitution when S is lower triangular);
  log-det ``log|det M|`` per vector.
- Monotone elementwise ``f``: forward as written, log-det
  ``Σ log(λ f'(e) + 1 − λ)``. The inverse writes ``v = f(e)`` and solves the increasing
  equation ``λ v + (1 − λ) f⁻¹(v) = u``, whose root lies between ``f(u)`` and ``u``; then
  ``e = f⁻¹(v)`` (a safeguarded Newton iteration started at ``u``). Gradients come from the
  implicit function theorem.

  For maps with a `noise_limit` ``L`` (the gamma-quantile families, ``L = 8``), beyond
  ``|e| > L`` the gated monotone map holds
  ``f`` at ``f(±L)`` and continues as its identity part: ``u = λ f(±L) + (1 − λ) e``, log-det
  ``log(1 − λ)``, inverse ``e = (u − λ f(±L)) / (1 − λ)``. A family's quantile map in
  float32 is only representable on about that range (``Φ(−9) ≈ 10⁻¹⁹``: a Gamma(½) quantile
  there underflows to 0, and its unconstrained value to −∞), while a gate near 0 lets the
  flow below put the noise anywhere in the unconstrained space. The change is confined to
  noise of prior probability ``2Φ(−8) ≈ 10⁻¹⁵``; the ungated map (``λ = 1``) is unchanged.

With ``gate=None`` the map is applied ungated (exactly the model).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from emf_jax._numerics import solve_increasing
from emf_jax.transforms.base import AffineTransform, MonotoneTransform, Transform

__all__ = ["DEFAULT_INITIAL_GATE", "gate_logit", "gate_value", "gated_forward", "gated_inverse"]

Array = jax.Array

DEFAULT_INITIAL_GATE = 0.999


def gate_logit(initial_gate: float) -> float:
    """The unconstrained gate parameter ``w`` with ``sigmoid(w) = initial_gate``.

    Args:
      initial_gate: λ, strictly between 0 and 1.

    Returns:
      ``w = log(λ / (1 − λ))`` as a Python float.

    Raises:
      ValueError: if `initial_gate` is not in (0, 1).

    Example:
      >>> round(gate_logit(0.999), 4)
      6.9068
    """
    if not 0.0 < initial_gate < 1.0:
        raise ValueError(f"initial_gate must lie strictly between 0 and 1, got {initial_gate}")
    return float(jnp.log(initial_gate) - jnp.log1p(-initial_gate))


def gate_value(w: Array) -> Array:
    """λ = sigmoid(w).

    Args:
      w: the unconstrained gate parameter(s).

    Returns:
      λ in (0, 1), of the shape of `w`.

    Example:
      >>> round(float(gate_value(gate_logit(0.25))), 6)
      0.25
    """
    return jax.nn.sigmoid(w)


def _matvec(matrix: Array, vector: Array) -> Array:
    return jnp.einsum("...ij,...j->...i", matrix, vector)


def _blended_matrix(t: AffineTransform, lam: Optional[Array]) -> Array:
    matrix = t.scale_matrix
    if matrix is None:  # only matrix transforms reach here
        raise TypeError("an elementwise affine transform has no scale matrix")
    if lam is None:
        return matrix
    eye = jnp.eye(matrix.shape[-1], dtype=matrix.dtype)
    return lam * matrix + (1 - lam) * eye


def _matrix_log_det(matrix: Array, lower_triangular: bool, value_shape: tuple) -> Array:
    if lower_triangular:
        per_vector = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(matrix, axis1=-2, axis2=-1))), -1)
    else:
        per_vector = jnp.linalg.slogdet(matrix)[1]
    return jnp.sum(jnp.broadcast_to(per_vector, value_shape[:-1]))


def _affine_forward(t: AffineTransform, e: Array, w: Optional[Array]) -> tuple[Array, Array]:
    lam = None if w is None else gate_value(w)
    shift = t.shift if lam is None else lam * t.shift
    if t.scale is not None:
        a = t.scale if lam is None else lam * t.scale + (1 - lam)
        u = shift + a * e
        return u, jnp.sum(jnp.broadcast_to(jnp.log(jnp.abs(a)), e.shape))
    matrix = _blended_matrix(t, lam)
    u = shift + _matvec(matrix, e)
    return u, _matrix_log_det(matrix, t.lower_triangular, e.shape)


def _affine_inverse(t: AffineTransform, u: Array, w: Optional[Array]) -> tuple[Array, Array]:
    lam = None if w is None else gate_value(w)
    shift = t.shift if lam is None else lam * t.shift
    if t.scale is not None:
        a = t.scale if lam is None else lam * t.scale + (1 - lam)
        e = (u - shift) / a
        return e, -jnp.sum(jnp.broadcast_to(jnp.log(jnp.abs(a)), u.shape))
    matrix = _blended_matrix(t, lam)
    rhs = u - shift
    batch = jnp.broadcast_shapes(matrix.shape[:-2], rhs.shape[:-1])
    matrix_b = jnp.broadcast_to(matrix, batch + matrix.shape[-2:])
    rhs_b = jnp.broadcast_to(rhs, batch + rhs.shape[-1:])[..., None]
    if t.lower_triangular:
        e = jax.scipy.linalg.solve_triangular(matrix_b, rhs_b, lower=True)[..., 0]
    else:
        e = jnp.linalg.solve(matrix_b, rhs_b)[..., 0]
    return e, -_matrix_log_det(matrix, t.lower_triangular, u.shape)


def _gated_log_derivative(log_derivative: Array, w: Array) -> Array:
    return jnp.logaddexp(jax.nn.log_sigmoid(w) + log_derivative, jax.nn.log_sigmoid(-w))


def _monotone_forward(t: MonotoneTransform, e: Array, w: Optional[Array]) -> tuple[Array, Array]:
    if w is None or t.noise_limit is None:
        fe = t.forward(e)
        log_derivative = t.forward_log_derivative(e, fe)
        if w is None:
            return fe, jnp.sum(log_derivative)
        lam = gate_value(w)
        return lam * fe + (1 - lam) * e, jnp.sum(_gated_log_derivative(log_derivative, w))
    inside = jnp.abs(e) <= t.noise_limit
    held = jnp.clip(e, -t.noise_limit, t.noise_limit)
    fe = t.forward(held)
    log_derivative = jnp.where(inside, t.forward_log_derivative(held, fe), -jnp.inf)
    lam = gate_value(w)
    u = lam * fe + (1 - lam) * e
    return u, jnp.sum(_gated_log_derivative(log_derivative, w))


def _monotone_inverse(t: MonotoneTransform, u: Array, w: Optional[Array]) -> tuple[Array, Array]:
    if w is None:
        e = t.inverse(u)
        return e, -jnp.sum(t.forward_log_derivative(e, u))
    lam = gate_value(w)
    if t.noise_limit is None:
        # The root lies between f(u) and u; starting at u avoids evaluating f, which may
        # itself be a numerical inversion.
        v = solve_increasing(lambda v_: lam * v_ + (1 - lam) * t.inverse(v_) - u,
                             u, jnp.ones_like(u))
        e = t.inverse(v)
        return e, -jnp.sum(_gated_log_derivative(t.forward_log_derivative(e, v), w))
    limit = jnp.full_like(u, t.noise_limit)
    # A map that is not finite at ±L (a bounded family whose float32 Φ(8) rounds to 1) has
    # no tail on that side: its inside solve covers every u there, as before.
    f_low, f_high = t.forward(-limit), t.forward(limit)
    low_ok, high_ok = jnp.isfinite(f_low), jnp.isfinite(f_high)
    f_low = jnp.where(low_ok, f_low, jnp.zeros_like(f_low))
    f_high = jnp.where(high_ok, f_high, jnp.zeros_like(f_high))
    u_low = jnp.where(low_ok, lam * f_low - (1 - lam) * limit, -jnp.inf)
    u_high = jnp.where(high_ok, lam * f_high + (1 - lam) * limit, jnp.inf)
    below, above = u < u_low, u > u_high
    # Inside: the root lies between f(u) and u; starting at u avoids evaluating f, which may
    # itself be a numerical inversion. The solve sees u clipped to the inside, so that the
    # branch not taken stays finite (and so do its cotangents).
    u_inside = jnp.clip(u, u_low, u_high)
    v = solve_increasing(lambda v_: lam * v_ + (1 - lam) * t.inverse(v_) - u_inside,
                         u_inside, jnp.ones_like(u))
    e_inside = t.inverse(v)
    e_tail = (u - lam * jnp.where(below, f_low, f_high)) / (1 - lam)
    tail = below | above
    e = jnp.where(tail, e_tail, e_inside)
    log_derivative = jnp.where(tail, -jnp.inf, t.forward_log_derivative(e_inside, v))
    return e, -jnp.sum(_gated_log_derivative(log_derivative, w))


def gated_forward(t: Transform, e: Array, w: Optional[Array] = None) -> tuple[Array, Array]:
    """``u = λ·f(e) + (1 − λ)·e`` (or ``f(e)`` when `w` is None) and log|det du/de|.

    Args:
      t: the variable's map.
      e: noise of the variable's unconstrained shape.
      w: the gate parameter (``λ = sigmoid(w)``), or None for the ungated map.

    Returns:
      ``(u, log_det)`` with `log_det` summed over the whole value.

    Example:
      >>> import jax.numpy as jnp
      >>> from emf_jax.transforms import affine
      >>> t = affine(1.0, 3.0, None)                   # f(e) = 1 + 3e
      >>> u, log_det = gated_forward(t, jnp.array([2.0]), jnp.asarray(gate_logit(0.5)))
      >>> u.tolist(), round(float(log_det), 4)          # 0.5 * 7 + 0.5 * 2; log 2
      ([4.5], 0.6931)
    """
    if isinstance(t, AffineTransform):
        return _affine_forward(t, e, w)
    return _monotone_forward(t, e, w)


def gated_inverse(t: Transform, u: Array, w: Optional[Array] = None) -> tuple[Array, Array]:
    """The inverse of `gated_forward`: ``(e, log|det de/du|)``.

    Closed form for affine maps; for monotone maps a safeguarded Newton solve of
    ``λ v + (1 − λ) f⁻¹(v) = u`` for ``v = f(e)`` (see the module docstring).

    Args:
      t: the variable's map.
      u: a value in the variable's unconstrained space.
      w: the gate parameter, or None for the ungated map.

    Returns:
      ``(e, log_det)`` with `log_det` = ``log|det ∂e/∂u|`` summed over the whole value.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> from emf_jax.transforms import transform_for
      >>> t = transform_for(tfp.distributions.Logistic(0.0, 1.0))   # a monotone map
      >>> w = jnp.asarray(gate_logit(0.9))
      >>> round_trip = jax.jit(lambda e: gated_inverse(t, gated_forward(t, e, w)[0], w)[0])
      >>> round(float(round_trip(jnp.array([0.3]))[0]), 4)
      0.3
    """
    if isinstance(t, AffineTransform):
        return _affine_inverse(t, u, w)
    return _monotone_inverse(t, u, w)
