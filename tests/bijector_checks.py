"""The shared property suite that every bijector in emf_jax passes.

Each check works on a single event (no batch dimensions) whose value may be an array or
any pytree of arrays (structured bijectors). The log-det check flattens the event into one
vector and compares against `slogdet(jax.jacfwd(forward))`.

Tolerances are per dtype: float32 round trips to 1e-4, float64 to 1e-9 (the issue's bounds).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

ROUND_TRIP_TOL = {jnp.dtype("float32"): 1e-4, jnp.dtype("float64"): 1e-9}
LOG_DET_TOL = {jnp.dtype("float32"): 2e-3, jnp.dtype("float64"): 1e-8}


def _dtype_of(tree: Any) -> jnp.dtype:
    return jnp.result_type(*jax.tree.leaves(tree))


def _max_abs_diff(a: Any, b: Any) -> float:
    diffs = jax.tree.map(lambda u, v: jnp.max(jnp.abs(jnp.asarray(u) - jnp.asarray(v))), a, b)
    return float(max(jax.tree.leaves(diffs)))


def check_bijection(
    forward: Callable[[Any], Any],
    inverse: Callable[[Any], Any],
    forward_log_det: Callable[[Any], Any],
    x: Any,
    *,
    inverse_log_det: Callable[[Any], Any] | None = None,
    round_trip_tol: float | None = None,
    log_det_tol: float | None = None,
    use_jit: bool = True,
    extra_inputs: Sequence[Any] = (),
) -> None:
    """Asserts round trip, log-det against the Jacobian and (optionally) inverse log-det.

    Args:
      forward: maps one event `x` to `y`.
      inverse: maps one event `y` to `x`.
      forward_log_det: log |det dy/dx| at `x`, a scalar.
      x: one event (array or pytree).
      inverse_log_det: log |det dx/dy| at `y`; checked to equal `-forward_log_det(x)`.
      round_trip_tol: absolute tolerance of `inverse(forward(x)) - x` (relative to max(1, |x|)).
      log_det_tol: absolute tolerance of the log-det against the Jacobian's slogdet.
      use_jit: compute everything in one `jax.jit`-compiled program.
      extra_inputs: more events checked with the same (already compiled) program.
    """
    dtype = _dtype_of(x)
    round_trip_tol = ROUND_TRIP_TOL[dtype] if round_trip_tol is None else round_trip_tol
    log_det_tol = LOG_DET_TOL[dtype] if log_det_tol is None else log_det_tol
    _, unravel = ravel_pytree(x)

    def everything(event):
        # One program per check keeps compile time down for expensive bijectors.
        y = forward(event)
        flat_forward = lambda v: ravel_pytree(forward(unravel(v)))[0]  # noqa: E731
        jac = jax.jacfwd(flat_forward)(ravel_pytree(event)[0])
        ildj = inverse_log_det(y) if inverse_log_det is not None else jnp.zeros((), dtype)
        return y, inverse(y), forward_log_det(event), ildj, jac

    compute = jax.jit(everything) if use_jit else everything
    for event in (x, *extra_inputs):
        y, x_back, fldj, ildj, jac = compute(event)
        for leaf in jax.tree.leaves(y):
            assert jnp.all(jnp.isfinite(leaf)), "forward produced non-finite values"
            assert leaf.dtype == dtype, f"forward changed dtype {dtype} -> {leaf.dtype}"
        scale = max(1.0, float(max(jax.tree.leaves(
            jax.tree.map(lambda v: jnp.max(jnp.abs(v)), event)))))
        err = _max_abs_diff(x_back, event)
        assert err <= round_trip_tol * scale, (
            f"round trip error {err:.3g} > {round_trip_tol * scale:.3g}")
        assert jac.shape[0] == jac.shape[1], (
            f"forward is not dimension preserving: {jac.shape[1]} -> {jac.shape[0]}")
        sign, expected = np.linalg.slogdet(np.asarray(jac, dtype=np.float64))
        assert sign != 0, "Jacobian is singular"
        tol = log_det_tol * max(1.0, abs(expected))
        got = float(fldj)
        assert abs(got - expected) <= tol, f"log-det {got:.6g} != slogdet(jacfwd) {expected:.6g}"
        if inverse_log_det is not None:
            assert abs(float(ildj) + expected) <= tol, (
                f"inverse log-det {float(ildj):.6g} != -{expected:.6g}")


def check_tfp_bijector(bijector: Any, x: Any, **kwargs: Any) -> None:
    """`check_bijection` for a `tfb.Bijector` acting on one event `x` (array or pytree)."""
    fwd_ndims = bijector.forward_min_event_ndims
    inv_ndims = bijector.inverse_min_event_ndims
    check_bijection(
        bijector.forward,
        bijector.inverse,
        lambda v: bijector.forward_log_det_jacobian(v, event_ndims=fwd_ndims),
        x,
        inverse_log_det=lambda v: bijector.inverse_log_det_jacobian(v, event_ndims=inv_ndims),
        **kwargs,
    )


def check_batch_consistency(bijector: Any, x_batch: Any, *, atol: float | None = None) -> None:
    """A batch of events gives the same answers as mapping one event at a time."""
    dtype = _dtype_of(x_batch)
    atol = ROUND_TRIP_TOL[dtype] if atol is None else atol
    fwd_ndims = bijector.forward_min_event_ndims
    y_batch = bijector.forward(x_batch)
    ldj_batch = bijector.forward_log_det_jacobian(x_batch, event_ndims=fwd_ndims)
    y_one = jax.vmap(bijector.forward)(x_batch)
    ldj_one = jax.vmap(lambda v: bijector.forward_log_det_jacobian(v, event_ndims=fwd_ndims))(
        x_batch)
    assert _max_abs_diff(y_batch, y_one) <= atol * 10
    np.testing.assert_allclose(np.asarray(ldj_batch), np.asarray(ldj_one), rtol=1e-3, atol=1e-3)


def check_support_bijection(
    bijector: Any,
    u: Any,
    free_coordinates: Callable[[Any], Any],
    *,
    round_trip_tol: float | None = None,
    log_det_tol: float | None = None,
) -> None:
    """A support bijector onto a lower-dimensional set (simplex, matrices), checked under jit.

    Round trip ``B⁻¹(B(u)) = u``; ``B.forward_log_det_jacobian(u)`` against the slogdet of
    `jax.jacfwd` of ``u ↦ free_coordinates(B(u))`` (the coordinates in which the family's
    density is taken; the Jacobian is square); and the inverse log-det at ``B(u)`` against
    its negative.

    Args:
      bijector: a `tfb.Bijector` acting on one event ``u`` (a vector).
      u: one unconstrained event.
      free_coordinates: ``x -> flat vector`` of the free coordinates of a value.
      round_trip_tol: absolute tolerance of the round trip (relative to max(1, |u|)).
      log_det_tol: tolerance of the log-det against the Jacobian's slogdet (relative to
        max(1, |slogdet|)).
    """
    dtype = _dtype_of(u)
    round_trip_tol = ROUND_TRIP_TOL[dtype] if round_trip_tol is None else round_trip_tol
    log_det_tol = LOG_DET_TOL[dtype] if log_det_tol is None else log_det_tol
    fwd_ndims = bijector.forward_min_event_ndims
    inv_ndims = bijector.inverse_min_event_ndims

    @jax.jit
    def everything(event):
        x = bijector.forward(event)
        jac = jax.jacfwd(lambda v: jnp.ravel(free_coordinates(bijector.forward(v))))(event)
        return (x, bijector.inverse(x),
                bijector.forward_log_det_jacobian(event, event_ndims=fwd_ndims),
                bijector.inverse_log_det_jacobian(x, event_ndims=inv_ndims), jac)

    x, u_back, fldj, ildj, jac = everything(u)
    assert jnp.all(jnp.isfinite(x)), "forward produced non-finite values"
    assert x.dtype == dtype, f"forward changed dtype {dtype} -> {x.dtype}"
    scale = max(1.0, float(jnp.max(jnp.abs(u))))
    err = float(jnp.max(jnp.abs(u_back - u)))
    assert err <= round_trip_tol * scale, f"round trip error {err:.3g}"
    jac = np.asarray(jac, np.float64).reshape(-1, u.size)
    assert jac.shape[0] == jac.shape[1], f"{jac.shape[1]} coordinates -> {jac.shape[0]} free"
    sign, expected = np.linalg.slogdet(jac)
    assert sign != 0, "Jacobian onto the free coordinates is singular"
    tol = log_det_tol * max(1.0, abs(expected))
    assert abs(float(fldj) - expected) <= tol, f"log-det {float(fldj):.6g} != {expected:.6g}"
    assert abs(float(ildj) + expected) <= tol, f"inverse log-det {float(ildj):.6g}"
