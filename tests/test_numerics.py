"""The shared numerical building blocks: normal quantiles from log-probabilities."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import special as jsp

from emf_jax._numerics import normal_quantile_from_log_cdf


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
