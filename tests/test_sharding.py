"""Data-parallel fits on 8 virtual CPU devices match the single-device fits.

XLA fixes the number of host devices when JAX starts, so the check runs in a subprocess
started with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``; it runs this module as
a script (`_worker`), which raises on the first mismatch.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

NUM_DEVICES = 8
# Float32 sums of the same terms in another order differ by a few ulps per step; Adam's
# normalised steps keep that from growing over 20 steps, so 1e-4 leaves a wide margin while
# still catching a wrong split (which changes the draws: differences of order 1e-1).
RTOL, ATOL = 1e-4, 1e-5


def _worker() -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from tensorflow_probability.substrates import jax as tfp

    import emf_jax
    from emf_jax import sharding, training

    tfd = tfp.distributions
    devices = jax.devices()
    assert len(devices) == NUM_DEVICES, f"expected {NUM_DEVICES} devices, got {devices}"
    mesh = jax.sharding.Mesh(np.array(devices).reshape(2, 4), ("a", "b"))

    def close(a, b, what):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=ATOL,
                                       err_msg=what)

    # --- VI: a short chain bridge, GEMF-T surrogate, 16 draws split over a 2 x 4 mesh.
    def program():
        x = yield tfd.MarkovChain(tfd.Normal(0.0, 1.0), lambda _, x: tfd.Normal(x, 0.3), 6,
                                  name="x")
        yield tfd.Independent(tfd.Normal(x[..., jnp.array([0, 5])], 0.2), 1, name="obs")

    pinned = tfd.JointDistributionCoroutineAutoBatched(program).experimental_pin(
        obs=jnp.array([0.5, -0.5]))
    # The gated structured layer alone (no backbone) keeps the compile short; the split
    # does not depend on the surrogate.
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
        pinned, architecture="structured")
    vi = dict(optimizer=optax.adam(1e-2), num_steps=20, sample_size=16, seed=0,
              chunk_size=20, progress_bar=False)
    params = init_fn(jax.random.key(0))
    single = emf_jax.fit_vi(pinned.unnormalized_log_prob, build_fn, params, **vi)
    sharded = emf_jax.fit_vi(pinned.unnormalized_log_prob, build_fn, params, mesh=mesh, **vi)
    assert np.all(np.isfinite(np.asarray(single.losses)))
    close(sharded.losses, single.losses, "fit_vi losses")
    close(sharded.params, single.params, "fit_vi params")
    assert len(jax.tree.leaves(sharded.params)[0].sharding.device_set) == NUM_DEVICES

    # The compiled loss really splits the draws: a cross-device reduction appears.
    plan = sharding.data_parallel(mesh)
    loss = training.VariationalLoss(pinned.unnormalized_log_prob, build_fn, 16, 1,
                                     tfp.vi.kl_reverse,
                                     tfp.vi.GradientEstimators.REPARAMETERIZATION, plan)
    hlo = jax.jit(loss).lower(plan.replicate(params),
                              plan.replicate(jax.random.key(1))).compile().as_text()
    assert "all-reduce" in hlo, "the sharded VI loss has no cross-device reduction"

    try:
        emf_jax.fit_vi(pinned.unnormalized_log_prob, build_fn, params, mesh=mesh,
                       **{**vi, "sample_size": 12})
    except ValueError as err:
        assert "multiple of the number of devices (8)" in str(err), err
    else:
        raise AssertionError("sample_size=12 on 8 devices did not raise")

    # --- Density: a Gaussian with a learned Cholesky factor fitted to 2-d data by
    # minibatches of 32 rows, split over a one-axis mesh of the 8 devices (`devices=`).
    rows = jax.random.normal(jax.random.key(2), (400, 2)) @ jnp.array([[1.0, 0.5], [0.0, 0.3]])

    def d_build(p):
        return tfd.MultivariateNormalTriL(p["loc"], tfp.math.fill_triangular(p["raw"]))

    d_params = {"loc": jnp.zeros(2), "raw": jnp.array([1.0, 0.0, 1.0])}
    density = dict(optimizer=optax.adam(1e-2), num_steps=20, batch_size=32, seed=0,
                   chunk_size=10, validation_fraction=0.25, progress_bar=False)
    d_single = emf_jax.fit_density(d_build, d_params, rows, **density)
    d_sharded = emf_jax.fit_density(d_build, d_params, rows, devices=devices, **density)
    close(d_sharded.losses, d_single.losses, "fit_density losses")
    close(d_sharded.params, d_single.params, "fit_density params")
    close(d_sharded.validation_losses, d_single.validation_losses, "validation losses")
    print("sharding worker: OK")


def test_data_parallel_fits_match_single_device_on_8_cpu_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={NUM_DEVICES}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "tests.test_sharding"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "sharding worker: OK" in proc.stdout


def test_mesh_and_devices_options_are_checked():
    import jax

    from emf_jax.sharding import data_parallel

    assert data_parallel() is None
    with pytest.raises(ValueError, match="either `mesh` or `devices`"):
        data_parallel(mesh=object(), devices=jax.devices())
    with pytest.raises(ValueError, match="empty"):
        data_parallel(devices=[])
    with pytest.raises(TypeError, match="jax.sharding.Mesh"):
        data_parallel(mesh="cpu")
    plan = data_parallel(devices=jax.devices()[:1])
    assert plan.num_devices == 1 and plan == data_parallel(mesh=plan.mesh)


if __name__ == "__main__":
    _worker()
