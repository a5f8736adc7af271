"""Numerical building blocks shared by the per-family maps and the gates.

- Two-sided normal quantiles that keep precision in both tails.
- An elementwise root finder for increasing functions (Newton's method safeguarded by a
  bracket that is grown, then bisected) whose derivatives come from the implicit function
  theorem through `jax.lax.custom_root`, so that gradients never flow through the iterations.
- `guard_draws`: the identity on a batch of Monte Carlo draws whose backward pass zeroes
  the cotangent of every draw that has a non-finite entry, so that one draw where a target
  overflows cannot turn every parameter's gradient into NaN.
- `vectorized_under_vmap`: an elementwise function (TFP's special-function inverses) that
  `jax.vmap` evaluates once on the broadcast arrays instead of batching its while loops.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import special as jsp

__all__ = [
    "guard_draws",
    "safe_where",
    "normal_quantile_from_log_cdf",
    "normal_log_pdf",
    "solve_increasing",
    "vectorized_under_vmap",
]

Array = jax.Array

_LOG_HALF = -0.6931471805599453


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def guard_draws(draws: Any, batch_ndims: int) -> Any:
    """The identity on a pytree of draws; its backward pass drops non-finite draws' cotangents.

    Every floating leaf has shape ``batch_shape + event_shape`` with ``len(batch_shape) ==
    batch_ndims``. On the way back, draw ``i`` keeps its cotangent (in every leaf) only if all
    of its entries in all leaves are finite, both the draw itself and its cotangent; otherwise
    its cotangent is set to 0 in every leaf. A draw whose target log-density overflowed
    (``exp(h / 2) = inf``) thus contributes nothing to the gradient instead of turning it into
    NaN: ``0 * inf`` never reaches the parameters. Guard the draws and their log-densities
    together (one pytree), so that such a draw's log-density term is dropped with it.

    Args:
      draws: a pytree of arrays with ``batch_ndims`` leading draw axes.
      batch_ndims: the number of leading draw axes (static).

    Returns:
      ``draws`` unchanged.
    """
    del batch_ndims
    return draws


def _rows(leaves: list, batch_ndims: int) -> dict[Any, tuple[list[int], Array]]:
    """The floating leaves as one ``[*batch_shape, n]`` array per dtype (and their indices).

    One concatenate per dtype rather than a mask per leaf: with a mask per leaf, the
    per-draw ``and`` of ``T`` leaves' finiteness is a chain of cheap elementwise ops that
    XLA's fusion copies, with every leaf's producers, into each of the ``T`` consumers
    (the guarded cotangents), so a Python-loop model of ``T`` variables compiled a program
    of size O(T²) (see docs/performance.md). One concatenate, one reduction and one select
    keep it O(T).
    """
    groups: dict[Any, list[int]] = {}
    for i, leaf in enumerate(leaves):
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            groups.setdefault(jnp.dtype(leaf.dtype), []).append(i)
    rows = {}
    for dtype, indices in groups.items():
        parts = [leaves[i].reshape(leaves[i].shape[:batch_ndims] + (-1,)) for i in indices]
        rows[dtype] = (indices, parts[0] if len(parts) == 1 else
                       jnp.concatenate(parts, axis=batch_ndims))
    return rows


def _finite_rows(rows: dict[Any, tuple[list[int], Array]]) -> Any:
    """Per draw (``[*batch_shape]``), whether every entry of every row is finite."""
    masks = [jnp.all(jnp.isfinite(row), axis=-1) for _, row in rows.values()]
    return functools.reduce(jnp.logical_and, masks) if masks else None


def _finite_draws(tree: Any, batch_ndims: int) -> Any:
    """Per draw (``[*batch_shape]``), whether every floating entry of `tree` is finite."""
    return _finite_rows(_rows(jax.tree.leaves(tree), batch_ndims))


def _guard_draws_fwd(draws: Any, batch_ndims: int) -> tuple[Any, Any]:
    return draws, _finite_draws(draws, batch_ndims)


def _guard_draws_bwd(batch_ndims: int, finite_draws: Any, cotangent: Any) -> tuple[Any]:
    leaves, treedef = jax.tree.flatten(cotangent)
    rows = _rows(leaves, batch_ndims)
    keep = _finite_rows(rows)
    if keep is None:
        return (cotangent,)
    if finite_draws is not None:
        keep = keep & finite_draws
    guarded = list(leaves)
    for indices, row in rows.values():
        # One select on the concatenated row, then split back into the leaves.
        row = jnp.where(keep[..., None], row, jnp.zeros((), row.dtype))
        sizes = [int(np.prod(leaves[i].shape[batch_ndims:], dtype=np.int64)) for i in indices]
        parts = jnp.split(row, np.cumsum(sizes)[:-1].tolist(), axis=-1)
        for i, part in zip(indices, parts):
            guarded[i] = part.reshape(leaves[i].shape)
    return (jax.tree.unflatten(treedef, guarded),)


guard_draws.defvjp(_guard_draws_fwd, _guard_draws_bwd)


def vectorized_under_vmap(fn: Callable[..., Array], num_args: int) -> Callable[..., Array]:
    """`fn` (elementwise, differentiable by JAX), evaluated as one vectorised call under vmap.

    Why: the structured layer maps each draw under `jax.vmap`, and TFP's special-function
    inverses (`betaincinv`, `igammainv`, `igammacinv`) and the partial derivatives of
    `betainc` are while loops. vmap turns such a loop into one whose predicate is batched
    (a select on every carried value at every iteration), which on CPU cost about twice
    TFP's own loop over the same vector (Beta's quantile of 256 draws: 0.31 ms as a vector,
    1.44 ms under vmap). Here a `jax.custom_batching.custom_vmap` rule broadcasts the
    arguments to the batched shape and calls the wrapped function once on those arrays,
    nested vmaps included (the rule calls the wrapped function again, so an outer vmap
    meets the same rule).

    Derivatives: `custom_vmap` functions cannot be linearised (reverse mode), so the result
    is a `jax.custom_jvp` whose tangent is ``Σᵢ ∂fn/∂argᵢ · tᵢ``, linear in the tangents, with
    the partials computed by `fn`'s own JVP (TFP's implicit-function-theorem partials, e.g.
    ``∂x/∂p = 1/pdf(x)`` for a quantile) in a second flattened call that also returns the
    value. First derivatives work in forward and reverse mode (``jax.grad``,
    ``jax.jacfwd``, under vmap and jit); second derivatives through the partials do not.

    Args:
      fn: an elementwise function of `num_args` arrays that broadcast together.
      num_args: the number of positional arguments of `fn` (all differentiable).

    Returns:
      A function with `fn`'s values (identical to an unbatched call of `fn` on the
      broadcast arguments) and first derivatives.

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> inv = vectorized_under_vmap(tfp.math.igammainv, 2)
      >>> p = jnp.array([0.1, 0.5, 0.9])
      >>> bool(jnp.allclose(jax.vmap(inv, (None, 0))(2., p), tfp.math.igammainv(2., p)))
      True
    """

    def broadcast_rule(call: Callable[..., Any]) -> Callable[..., Any]:
        def rule(axis_size: int, in_batched: list[bool], *args: Array) -> tuple[Any, Any]:
            full = [a if batched else jnp.broadcast_to(a, (axis_size,) + jnp.shape(a))
                    for a, batched in zip(args, in_batched)]
            out = call(*jnp.broadcast_arrays(*full))
            return out, jax.tree_util.tree_map(lambda _: True, out)
        return rule

    @jax.custom_batching.custom_vmap
    def value(*args: Array) -> Array:
        return fn(*args)

    @jax.custom_batching.custom_vmap
    def value_and_partials(*args: Array) -> tuple[Array, tuple[Array, ...]]:
        # The partials of an elementwise function: its JVP along each argument's unit
        # tangent, batched over the unit tangents only (the primal part is computed once).
        basis = [jnp.stack([jnp.full_like(a, float(i == j)) for i in range(num_args)])
                 for j, a in enumerate(args)]
        out, partials = jax.vmap(lambda *t: jax.jvp(fn, args, t), out_axes=(None, 0))(*basis)
        return out, tuple(partials[i] for i in range(num_args))

    value.def_vmap(broadcast_rule(value))
    value_and_partials.def_vmap(broadcast_rule(value_and_partials))

    @jax.custom_jvp
    def wrapped(*args: Array) -> Array:
        return value(*jnp.broadcast_arrays(*args))

    @wrapped.defjvp
    def _jvp(primals: tuple[Array, ...], tangents: tuple[Array, ...]) -> tuple[Array, Array]:
        full = jnp.broadcast_arrays(*primals)
        out, partials = value_and_partials(*full)
        tangent = sum(d * jnp.broadcast_to(t, out.shape) for d, t in zip(partials, tangents))
        return out, tangent

    def call(*args: Array) -> Array:
        if len(args) != num_args:
            raise TypeError(f"{getattr(fn, '__name__', 'fn')}: expected {num_args} arguments, "
                            f"got {len(args)}")
        dtype = jnp.result_type(*args)
        return wrapped(*[jnp.asarray(a, dtype) for a in args])

    return call


def safe_where(condition: Array, if_true: Callable[[Array], Array],
               if_false: Callable[[Array], Array], x: Array, *, safe_value: float) -> Array:
    """``where(condition, if_true(x), if_false(x))`` without NaN gradients from the unused side.

    Each branch is evaluated on ``x`` where it is selected and on ``safe_value`` elsewhere.
    """
    safe = jnp.asarray(safe_value, dtype=x.dtype)
    return jnp.where(condition, if_true(jnp.where(condition, x, safe)),
                     if_false(jnp.where(condition, safe, x)))


def _lower_normal_quantile_from_log(log_p: Array) -> Array:
    """``Φ⁻¹(exp(log_p))`` for ``log_p ≤ log ½``, also where ``exp(log_p)`` underflows.

    Where ``p`` is representable, ``ndtri(p)``. Deeper in the tail (beyond about 13σ in
    float32, 37σ in float64) ``p`` cannot be formed, so the quantile solves the tail series
    ``log Φ(z) = −z²/2 − ½ log 2π − log(−z) + log(1 − z⁻² + 3z⁻⁴ − 15z⁻⁶)`` by Newton's
    method from its leading-order solution. The series is cheap (no special functions, so
    it adds little to compile time inside the numeric inversions) and, for ``|z| > 13``,
    accurate to a few parts in 10⁹.
    """
    dtype = log_p.dtype
    # Well above the smallest normal number, so ndtri keeps full relative precision.
    deep = log_p < jnp.log(jnp.finfo(dtype).tiny) + 20
    shallow = jsp.ndtri(jnp.exp(jnp.where(deep, _LOG_HALF, log_p)))
    target = jnp.where(deep, log_p, -100.0) + 0.5 * jnp.log(2 * jnp.pi).astype(dtype)
    t = -2 * target
    z = -jnp.sqrt(t - jnp.log(t))
    for _ in range(3):
        w = 1 / jnp.square(z)
        series = jnp.log1p(w * (-1 + w * (3 - 15 * w)))
        value = -0.5 * jnp.square(z) - jnp.log(-z) + series - target
        # d/dz of the leading terms (the series' own slope is O(z⁻³)).
        z = z - value / (-z - 1 / z)
    return jnp.where(deep, z, shallow)


def normal_quantile_from_log_cdf(log_cdf: Array, log_survival: Array) -> Array:
    """``Φ⁻¹(F(x))`` from ``log F(x)`` and ``log (1 − F(x))``, precise in both tails.

    The lower tail uses ``Φ⁻¹(F)``, the upper tail ``−Φ⁻¹(1 − F)``, so neither side ever
    forms a probability that rounds to one; far in either tail, where the probability itself
    underflows, the quantile is solved from its logarithm, so it stays finite.
    """
    lower = log_cdf < _LOG_HALF
    # One quantile of the nearer tail, mirrored for the upper one: a single ndtri keeps the
    # numeric inversions that call this inside their Newton loops small to compile.
    tail = _lower_normal_quantile_from_log(jnp.where(lower, log_cdf, log_survival))
    return jnp.where(lower, tail, -tail)


def normal_log_pdf(e: Array) -> Array:
    """log φ(e), the standard normal log density."""
    return -0.5 * jnp.square(e) - 0.5 * jnp.log(2 * jnp.pi).astype(e.dtype)


def _newton_with_bracket(objective: Callable[[Array], Array], x0: Array, step0: Array,
                         max_iterations: int) -> Array:
    """Safeguarded Newton iteration for an increasing elementwise function.

    One loop does everything, so the objective is traced once (with its derivative): each
    evaluation tightens a bracket ``[lo, hi]`` (initially unbounded); a Newton step is taken
    when it lands inside the bracket, else the bracket is bisected, or, while one side is
    still unbounded, the point moves outwards by a step that doubles each time.
    """
    dtype = x0.dtype
    tol = 4 * jnp.finfo(dtype).eps
    inf = jnp.asarray(jnp.inf, dtype)

    def value_and_slope(x):
        return jax.jvp(objective, (x,), (jnp.ones_like(x),))

    def cond(state):
        k, _, _, _, _, _, _, done = state
        return (k < max_iterations) & ~jnp.all(done)

    def body(state):
        k, x, f, d, lo, hi, step, done = state
        lo = jnp.where(f < 0, x, lo)
        hi = jnp.where(f > 0, x, hi)
        newton = x - f / d
        inside = jnp.isfinite(newton) & (newton > lo) & (newton < hi)
        bounded = jnp.isfinite(lo) & jnp.isfinite(hi)
        fallback = jnp.where(bounded, 0.5 * (lo + hi), jnp.where(f < 0, x + step, x - step))
        x_new = jnp.where(inside, newton, fallback)
        step = jnp.where(inside | bounded, step, 2 * step)
        converged = (f == 0) | (jnp.abs(x_new - x) <= tol * (1 + jnp.abs(x)))
        f_new, d_new = value_and_slope(x_new)
        keep = done | (f == 0)
        x_new = jnp.where(keep, x, x_new)
        f_new = jnp.where(keep, f, f_new)
        d_new = jnp.where(keep, d, d_new)
        return k + 1, x_new, f_new, d_new, lo, hi, step, done | converged

    f0, d0 = value_and_slope(x0)
    state = (jnp.int32(0), x0, f0, d0, jnp.full_like(x0, -inf), jnp.full_like(x0, inf),
             step0, jnp.zeros(x0.shape, bool))
    return jax.lax.while_loop(cond, body, state)[1]


def solve_increasing(objective: Callable[[Array], Array], center: Array, width: Array) -> Array:
    """Elementwise root of an increasing function, differentiable by implicit differentiation.

    Args:
      objective: elementwise, strictly increasing in its argument; may close over traced
        parameters, which receive correct gradients.
      center: a first guess of the root (no gradient flows through it).
      width: the first outward step when the root is not yet bracketed (positive).

    Returns:
      x with ``objective(x) ≈ 0``, of the shape of `center`.
    """
    center = jax.lax.stop_gradient(center)
    width = jax.lax.stop_gradient(jnp.maximum(width, jnp.finfo(center.dtype).eps))

    max_iterations = 100 if center.dtype == jnp.float32 else 200

    def solve(fn, guess):
        return _newton_with_bracket(fn, guess, width, max_iterations)

    def tangent_solve(linear_fn, rhs):
        # The objective is elementwise, so its Jacobian is diagonal.
        return rhs / linear_fn(jnp.ones_like(rhs))

    return jax.lax.custom_root(objective, center, solve, tangent_solve)
