"""Data-parallel fits across two processes (`jax.distributed`) match the single-process fits.

Two processes are started on localhost, each a JAX process with one CPU device, joined by
``jax.distributed.initialize`` through a loopback coordinator on a free port: the mesh of
``jax.devices()`` then spans both processes, as it spans hosts on a GPU/TPU cluster. Each
process runs this module as a script (`_worker`): the same `fit_vi` and `fit_density` first
on its own device alone, then split over the two-process mesh, and raises on the first
mismatch. The sizes are small so the whole test takes well under a minute.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys

NUM_PROCESSES = 2
# The same tolerance as the one-process sharding test (tests/test_sharding.py): only the
# order of the final float32 reductions differs between the runs.
RTOL, ATOL = 1e-4, 1e-5


def _worker(process_id: int, port: int) -> None:
    import jax

    # CPU collectives between processes (the all-reduce of the gradient) go through gloo.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                               num_processes=NUM_PROCESSES, process_id=process_id)
    import jax.numpy as jnp
    import numpy as np
    import optax
    from tensorflow_probability.substrates import jax as tfp

    import emf_jax

    tfd = tfp.distributions
    devices = jax.devices()
    assert jax.process_count() == NUM_PROCESSES, jax.process_count()
    assert len(devices) == NUM_PROCESSES and len(jax.local_devices()) == 1, devices

    def close(a, b, what):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=ATOL,
                                       err_msg=what)

    # --- VI: a 6-step chain bridge, the gated structured layer, 8 draws split over the two
    # processes' devices.
    def program():
        x = yield tfd.MarkovChain(tfd.Normal(0.0, 1.0), lambda _, x: tfd.Normal(x, 0.3), 6,
                                  name="x")
        yield tfd.Independent(tfd.Normal(x[..., jnp.array([0, 5])], 0.2), 1, name="obs")

    pinned = tfd.JointDistributionCoroutineAutoBatched(program).experimental_pin(
        obs=jnp.array([0.5, -0.5]))
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
        pinned, architecture="structured")
    vi = dict(optimizer=optax.adam(1e-2), num_steps=10, sample_size=8, seed=0,
              chunk_size=10, progress_bar=False)
    params = init_fn(jax.random.key(0))
    single = emf_jax.fit_vi(pinned.unnormalized_log_prob, build_fn, params,
                            devices=jax.local_devices(), **vi)
    split = emf_jax.fit_vi(pinned.unnormalized_log_prob, build_fn, params, devices=devices,
                           **vi)
    assert np.all(np.isfinite(np.asarray(single.losses)))
    close(split.losses, single.losses, "fit_vi losses")
    close(split.params, single.params, "fit_vi params")
    leaf = jax.tree.leaves(split.params)[0]
    assert len(leaf.sharding.device_set) == NUM_PROCESSES, leaf.sharding

    # --- Density: a Gaussian with a learned Cholesky factor, minibatches of 16 rows split
    # over the two processes.
    rows = jax.random.normal(jax.random.key(2), (200, 2)) @ jnp.array([[1.0, 0.5], [0.0, 0.3]])

    def d_build(p):
        return tfd.MultivariateNormalTriL(p["loc"], tfp.math.fill_triangular(p["raw"]))

    d_params = {"loc": jnp.zeros(2), "raw": jnp.array([1.0, 0.0, 1.0])}
    density = dict(optimizer=optax.adam(1e-2), num_steps=10, batch_size=16, seed=0,
                   chunk_size=10, validation_fraction=0.25, progress_bar=False)
    d_single = emf_jax.fit_density(d_build, d_params, rows, devices=jax.local_devices(),
                                   **density)
    d_split = emf_jax.fit_density(d_build, d_params, rows, devices=devices, **density)
    close(d_split.losses, d_single.losses, "fit_density losses")
    close(d_split.params, d_single.params, "fit_density params")
    close(d_split.validation_losses, d_single.validation_losses, "validation losses")
    print(f"distributed worker {process_id}: OK", flush=True)
    jax.distributed.shutdown()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_data_parallel_fits_match_one_process():
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    # One CPU device per process, whatever the caller's flags.
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "host_platform_device_count" not in f)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "tests.test_distributed", str(i),
                               str(port)], cwd=root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for i in range(NUM_PROCESSES)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for i, (proc, (out, err)) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"process {i}:\n{out[-3000:]}\n{err[-6000:]}"
        assert f"distributed worker {i}: OK" in out


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]))
