"""The shared numerical building blocks: normal quantiles from log-probabilities, and the
special-function inverses evaluated as one vectorised call under vmap."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import special as jsp
from tensorflow_probability.substrates import jax as tfp

from emf_jax._numerics import normal_quantile_from_log_cdf, vectorized_under_vmap


def _check_quantiles(dtype):
    """Φ⁻¹ from (log Φ(z), log Φ(−z)) returns z for |z| up to 37, with its gradient."""
    z = jnp.concatenate([-jnp.geomspace(0.01, 37.0, 60), jnp.geomspace(0.01, 37.0, 60)])
    z = z.astype(dtype)
    out = jax.jit(normal_quantile_from_log_cdf)(jsp.log_ndtr(z), jsp.log_ndtr(-z))
    assert out.dtype == dtype
    # Tolerances: ndtri's own accuracy (a few ulps in float32; about 1e-11 relative in
    # float64 far in the tails, where it and log_ndtr switch to asymptotic series).
    rtol = 50 * float(jnp.finfo(dtype).eps) if dtype == jnp.float32 else 1e-10
    np.testing.assert_allclose(out, z, rtol=rtol, atol=10 * float(jnp.finfo(dtype).eps))
    # dz/dlog Φ(z) = Φ(z)/φ(z), finite everywhere in the lower tail.
    grads = jax.jit(jax.vmap(jax.grad(normal_quantile_from_log_cdf)))(
        jsp.log_ndtr(z), jsp.log_ndtr(-z))
    lower = z < 0
    expected = jnp.exp(jsp.log_ndtr(z) + 0.5 * z**2 + 0.5 * jnp.log(2 * jnp.pi))
    np.testing.assert_allclose(grads[lower], expected[lower], rtol=1e-3)


def test_normal_quantile_from_log_cdf_float32():
    """Φ⁻¹ from (log Φ(z), log Φ(−z)) returns z, also where Φ(z) underflows (|z| > 13)."""
    _check_quantiles(jnp.float32)


def test_normal_quantile_from_log_cdf_float64(x64):
    _check_quantiles(jnp.float64)


_INVERSES = {
    # name: (TFP's function, its arguments: shape parameters then the probability)
    "betaincinv": (tfp.math.betaincinv, (0.4, 3.0)),
    "igammainv": (tfp.math.igammainv, (2.5,)),
    "igammacinv": (tfp.math.igammacinv, (0.7,)),
}


# Each row compiles TFP's while loops four times (20-130 s on a 2-core CPU): all slow. The
# default run covers the wrapped inverses through the property suite's family rows.
@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", sorted(_INVERSES))
def test_vectorized_under_vmap_matches_unbatched_calls(name, dtype, request):
    """Under jit(vmap) the wrapped inverse's value, grad and jacfwd equal unbatched calls.

    The reference is TFP's own function on one element at a time (`lax.map`, no vmap), by
    value and by `jax.grad` in the first shape parameter and the probability. A batched
    call runs the while loop until every element has converged, so an element may take
    more iterations than alone: the tolerance is a few hundred ulps for values and 1e-3
    (float32) for the partials, which divide by the density.
    """
    if dtype == jnp.float64:
        request.getfixturevalue("x64")
    fn, shape_params = _INVERSES[name]
    wrapped = vectorized_under_vmap(fn, len(shape_params) + 1)
    p = jnp.linspace(0.02, 0.98, 7, dtype=dtype)
    params = [jnp.asarray(s, dtype) for s in shape_params]
    # Per-draw parameters too (as the structured layer has when they depend on other draws).
    first = params[0] * (1.0 + 0.1 * jnp.arange(7, dtype=dtype))

    def batched(f, q):
        def one(first_i, p_i):
            return wrapped(first_i, *params[1:], p_i)
        jac = jax.jacfwd(lambda q: jax.vmap(one)(f, q))(q)
        return jax.vmap(one)(f, q), jax.vmap(jax.grad(one, argnums=(0, 1)))(f, q), jac

    def unbatched(f, q):
        def one(args):
            def reference(first_i, p_i):
                return fn(first_i, *params[1:], p_i)
            return reference(*args), jax.grad(reference, argnums=(0, 1))(*args)
        return jax.lax.map(one, (f, q))

    values, grads, jac = jax.jit(batched)(first, p)
    ref_values, ref_grads = jax.jit(unbatched)(first, p)
    assert values.dtype == dtype
    eps = float(jnp.finfo(dtype).eps)
    np.testing.assert_allclose(values, ref_values, rtol=300 * eps)
    grad_rtol = 1e-3 if dtype == jnp.float32 else 1e-9
    np.testing.assert_allclose(grads[0], ref_grads[0], rtol=grad_rtol, atol=grad_rtol)
    np.testing.assert_allclose(grads[1], ref_grads[1], rtol=grad_rtol)
    np.testing.assert_allclose(jac, np.diag(np.asarray(ref_grads[1])), rtol=grad_rtol,
                               atol=1e-30)


def test_vectorized_under_vmap_checks_the_argument_count():
    wrapped = vectorized_under_vmap(tfp.math.igammainv, 2)
    with pytest.raises(TypeError, match="igammainv: expected 2 arguments, got 1"):
        wrapped(jnp.ones(3))
