"""The shared property suite that every bijector in emf_jax passes.

Each check works on a single event (no batch dimensions) whose value may be an array or
any pytree of arrays (structured bijectors). The log-det check flattens the event into one
vector and compares against `slogdet(jax.jacfwd(forward))`.

Tolerances are per dtype. Round trips: float32 to 1e-4, float64 to 1e-9, relative to
max(1, |x|) (the issue's bounds). Log-dets: absolute, ``C·ε·(D + κ)`` (`log_det_tolerance`,
where the bound comes from is explained there). Batch against one event at a time: a few
ulps of the values (`check_batch_consistency`).
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

ROUND_TRIP_TOL = {jnp.dtype("float32"): 1e-4, jnp.dtype("float64"): 1e-9}
# Ulps of relative error per computed Jacobian entry and per log-det term (`log_det_tolerance`).
LOG_DET_ULPS = 2.0 ** 8
# Ulps of disagreement between a batched and a one-event computation (`check_batch_consistency`).
BATCH_ULPS = 2.0 ** 6
# Set EMF_TEST_TOLERANCE_LOG=<file> to append each check's error and bound as a JSON line
# (how the constants above were measured).
_LOG = os.environ.get("EMF_TEST_TOLERANCE_LOG")


def _record(kind: str, **values: Any) -> None:
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, "test": os.environ.get("PYTEST_CURRENT_TEST"),
                                **{k: float(v) for k, v in values.items()}}) + "\n")


def log_det_tolerance(jac: np.ndarray, dtype: Any, ulps: float = LOG_DET_ULPS) -> float:
    """The absolute tolerance of a log-det against ``slogdet(jac)``: ``C·ε·(D + κ)``.

    Two errors meet in the comparison, and both are absolute errors of a sum of D terms:

    - the bijector's log-det is a sum of D per-coordinate terms ``log|∂u_i/∂e_i|`` (or one
      ``log|det|`` of a D×D block); each is the log of a quantity computed to a relative error
      of C ulps, i.e. an absolute error ``C·ε``: in all ``C·ε·D``;
    - the reference is the exact log-det of the Jacobian computed by `jax.jacfwd` in the same
      precision, each entry carrying a relative error of C ulps. Perturbing the entries by
      ``|δJ_ij| ≤ C·ε·|J_ij|`` moves ``log|det J|`` by ``tr(J⁻¹ δJ)``, at most
      ``C·ε·κ`` with ``κ = Σ_ij |(J⁻¹)_ji|·|J_ij|`` (the condition number of ``log|det|``
      under entrywise relative perturbations; κ = D for a triangular J, ≤ D·cond(J) else).

    C = `LOG_DET_ULPS` = 2⁸ covers the maps' per-entry error: a chain of O(10) elementary
    functions (quantile, density, gate blend, support bijector) each rounded to O(1) ulp and
    amplified by the conditioning of special-function quantiles (≲ 10). In float32 that is
    about 3e-5 per coordinate (the old bound was 2e-3 relative to |log det|: 0.13 nats on a
    30-step chain).

    Args:
      jac: the Jacobian (float64 copy of the one computed in `dtype`), square.
      dtype: the dtype the bijector ran in (its machine epsilon ε).
      ulps: C.

    Returns:
      The tolerance, a Python float.
    """
    eps = float(jnp.finfo(dtype).eps)
    d = jac.shape[0]
    kappa = float(np.sum(np.abs(np.linalg.inv(jac)).T * np.abs(jac))) if d else 0.0
    return ulps * eps * (d + kappa)


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
      log_det_tol: absolute tolerance of the log-det against the Jacobian's slogdet
        (default: `log_det_tolerance`).
      use_jit: compute everything in one `jax.jit`-compiled program.
      extra_inputs: more events checked with the same (already compiled) program.
    """
    dtype = _dtype_of(x)
    round_trip_tol = ROUND_TRIP_TOL[dtype] if round_trip_tol is None else round_trip_tol
    _, unravel = ravel_pytree(x)

    def flat_forward(v):
        y = forward(unravel(v))
        return ravel_pytree(y)[0], y

    def everything(event):
        # One program per check keeps compile time down for expensive bijectors; the forward
        # is traced once, its value coming out of jacfwd beside the Jacobian.
        jac, y = jax.jacfwd(flat_forward, has_aux=True)(ravel_pytree(event)[0])
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
        jac64 = np.asarray(jac, dtype=np.float64)
        sign, expected = np.linalg.slogdet(jac64)
        assert sign != 0, "Jacobian is singular"
        tol = log_det_tolerance(jac64, dtype) if log_det_tol is None else log_det_tol
        got = float(fldj)
        _record("log_det", dtype_eps=float(jnp.finfo(dtype).eps), d=jac64.shape[0],
                bound=tol, err=abs(got - expected),
                ierr=abs(float(ildj) + expected) if inverse_log_det is not None else 0.0,
                old_bound=(2e-3 if dtype == jnp.float32 else 1e-8) * max(1.0, abs(expected)))
        assert abs(got - expected) <= tol, (
            f"log-det {got:.6g} != slogdet(jacfwd) {expected:.6g} (tolerance {tol:.3g})")
        if inverse_log_det is not None:
            assert abs(float(ildj) + expected) <= tol, (
                f"inverse log-det {float(ildj):.6g} != -{expected:.6g} (tolerance {tol:.3g})")


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
    """A batch of events gives the same answers as mapping one event at a time.

    The two computations run the same arithmetic, vectorised differently, so they differ
    only where XLA orders a reduction differently: a sum of D terms reassociated moves by at
    most ``D·ε·Σ|terms|``. The bounds are `BATCH_ULPS`·ε·D times the values' magnitude: for
    the values ``max(1, |y|)``, for the log-det ``max(1, |log det|)`` (the terms' magnitude
    summed, taken as the log-det's own: these flows' log-dets have no large cancelling terms).
    """
    dtype = _dtype_of(x_batch)
    eps = float(jnp.finfo(dtype).eps)
    fwd_ndims = bijector.forward_min_event_ndims
    y_batch = bijector.forward(x_batch)
    ldj_batch = bijector.forward_log_det_jacobian(x_batch, event_ndims=fwd_ndims)
    y_one = jax.vmap(bijector.forward)(x_batch)
    ldj_one = jax.vmap(lambda v: bijector.forward_log_det_jacobian(v, event_ndims=fwd_ndims))(
        x_batch)
    d = int(np.prod(np.shape(jax.tree.leaves(x_batch)[0])[-max(fwd_ndims, 1):]))
    y_scale = max(1.0, float(max(jnp.max(jnp.abs(v)) for v in jax.tree.leaves(y_one))))
    y_tol = BATCH_ULPS * eps * d * y_scale if atol is None else atol
    y_err = _max_abs_diff(y_batch, y_one)
    ldj_tol = BATCH_ULPS * eps * d * np.maximum(1.0, np.abs(np.asarray(ldj_one)))
    ldj_err = np.abs(np.asarray(ldj_batch) - np.asarray(ldj_one))
    _record("batch", dtype_eps=eps, d=d, y_err=y_err, y_bound=y_tol,
            ldj_err=float(np.max(ldj_err)), ldj_bound=float(np.min(ldj_tol)))
    assert y_err <= y_tol, f"batched forward differs from one event at a time by {y_err:.3g}"
    assert np.all(ldj_err <= ldj_tol), (
        f"batched log-det differs from one event at a time by {np.max(ldj_err):.3g} "
        f"(tolerance {np.min(ldj_tol):.3g})")


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
      log_det_tol: absolute tolerance of the log-det against the Jacobian's slogdet
        (default: `log_det_tolerance`).
    """
    dtype = _dtype_of(u)
    round_trip_tol = ROUND_TRIP_TOL[dtype] if round_trip_tol is None else round_trip_tol
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
    tol = log_det_tolerance(jac, dtype) if log_det_tol is None else log_det_tol
    _record("support", dtype_eps=float(jnp.finfo(dtype).eps), d=jac.shape[0], bound=tol,
            err=abs(float(fldj) - expected), ierr=abs(float(ildj) + expected),
            old_bound=(2e-3 if dtype == jnp.float32 else 1e-8) * max(1.0, abs(expected)))
    assert abs(float(fldj) - expected) <= tol, (
        f"log-det {float(fldj):.6g} != {expected:.6g} (tolerance {tol:.3g})")
    assert abs(float(ildj) + expected) <= tol, (
        f"inverse log-det {float(ildj):.6g} != -{expected:.6g} (tolerance {tol:.3g})")
