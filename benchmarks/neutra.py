"""NeuTra-style HMC: the trained GEMF-T surrogate as a preconditioner (``surrogate.bijector``).

Usage::

    python -m benchmarks.neutra            # d = 10 funnel, 4 chains x 1000 draws
    python -m benchmarks.neutra --quick    # fewer steps and draws (a smoke run)

Target: Neal's funnel in its centred form, ``v ~ N(0, 3)``, ``x_i ~ N(0, exp(v / 2))``
(``i = 1..d-1``), with noisy observations ``y_i ~ N(x_i, 1)`` of the ``x``'s (without data the
structured layer is already the exact target). The observations are drawn from the model
with a fixed seed.

Samplers, at the same budget of gradient evaluations:

- **HMC in the unconstrained space** (here the model's own coordinates): `tfp.mcmc` HMC with
  dual-averaging step-size adaptation;
- **NeuTra HMC**: the same HMC on the surrogate's flat noise ``z``, through
  ``tfp.mcmc.TransformedTransitionKernel(kernel, bijector=surrogate.bijector)``, after a
  GEMF-T fit with `emf_jax.fit_vi`.

Reported: the minimum over coordinates of the bulk ESS (`tfp.mcmc.effective_sample_size`,
chains pooled), the ESS per 1000 gradient evaluations, and the posterior mean and sd of ``v``.
Writes ``benchmarks/results/neutra.md``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from tensorflow_probability.substrates import jax as tfp

import emf_jax
from benchmarks._device import device_name

tfd = tfp.distributions
RESULTS = Path(__file__).resolve().parent / "results"


def funnel(dim: int):
    """The centred funnel with noisy observations of its x's, pinned to draws from itself."""
    def program():
        v = yield tfd.Normal(0.0, 3.0, name="v")
        x = yield tfd.Sample(tfd.Normal(0.0, jnp.exp(v / 2.0)), dim - 1, name="x")
        yield tfd.Independent(tfd.Normal(x, 1.0), 1, name="y")

    model = tfd.JointDistributionCoroutineAutoBatched(program)
    observed = model.sample(seed=jax.random.key(20221204)).y
    return model.experimental_pin(y=observed)


def run_hmc(target_log_prob, initial_state, *, bijector, initial_noise, num_warmup: int,
            num_draws: int, leapfrog_steps: int, seed):
    """HMC with dual-averaging step-size adaptation, on the noise of `bijector` if given."""
    kernel = tfp.mcmc.DualAveragingStepSizeAdaptation(
        tfp.mcmc.HamiltonianMonteCarlo(target_log_prob, step_size=0.1,
                                       num_leapfrog_steps=leapfrog_steps),
        num_adaptation_steps=int(0.8 * num_warmup))
    results = None
    if bijector is not None:
        # The adaptation runs inside, on the noise. The chain starts from noise
        # (`transformed_init_state`): TFP's documented way to start a transformed kernel whose
        # state changes structure (flat noise -> the model's values).
        kernel = tfp.mcmc.TransformedTransitionKernel(kernel, bijector=bijector)
        results = kernel.bootstrap_results(transformed_init_state=initial_noise)
    return tfp.mcmc.sample_chain(
        num_results=num_draws, num_burnin_steps=num_warmup, current_state=initial_state,
        kernel=kernel, previous_kernel_results=results, trace_fn=None, seed=seed)


def min_ess(draws: jax.Array) -> float:
    """The smallest per-coordinate ESS, chains pooled (draws ``[n, chains, d]``)."""
    ess = tfp.mcmc.effective_sample_size(draws, cross_chain_dims=1)
    return float(jnp.min(ess))


def main(argv: Any = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps and draws: checks that the script runs (tests)")
    parser.add_argument("--dim", type=int, default=10)
    args = parser.parse_args(argv)
    fit_steps, num_draws, num_warmup = (300, 200, 200) if args.quick else (3000, 1000, 500)
    num_chains, leapfrog = 4, 8
    if args.smoke:
        fit_steps, num_draws, num_warmup, num_chains, leapfrog = 2, 10, 10, 2, 2
    pinned = funnel(args.dim)
    target = pinned.unnormalized_log_prob

    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(pinned)
    start = time.perf_counter()
    fit = emf_jax.fit_vi(target, build_fn, init_fn(jax.random.key(0)),
                         optimizer=optax.adam(1e-3), num_steps=fit_steps, sample_size=16,
                         seed=1, progress_bar=False)
    fit_seconds = time.perf_counter() - start
    surrogate = build_fn(fit.params)

    def flat_target(flat):
        return target(flat[..., 0], flat[..., 1:])

    rows = []
    noise = [jnp.zeros((num_chains, args.dim))]
    samplers = {
        "HMC (model coordinates)": (flat_target, None, jnp.zeros((num_chains, args.dim))),
        # TransformedTransitionKernel's states are in the model's space: the pushforward of
        # the noise it moves.
        "NeuTra HMC on GEMF-T noise": (target, surrogate.bijector,
                                       surrogate.bijector.forward(noise)),
    }
    for name, (log_prob, bijector, state) in samplers.items():
        start = time.perf_counter()
        draws = jax.jit(lambda s, seed, log_prob=log_prob, bijector=bijector: run_hmc(
            log_prob, s, bijector=bijector, initial_noise=noise, num_warmup=num_warmup,
            num_draws=num_draws, leapfrog_steps=leapfrog, seed=seed))(state, jax.random.key(2))
        seconds = time.perf_counter() - start
        if bijector is None:
            flat = draws
        else:
            flat = jnp.concatenate([draws.v[..., None], draws.x], axis=-1)
        gradients = (num_warmup + num_draws) * leapfrog * num_chains
        ess = min_ess(flat)
        rows.append((name, ess, 1000.0 * ess / gradients, float(jnp.mean(flat[..., 0])),
                     float(jnp.std(flat[..., 0])), seconds))

    lines = [
        f"# NeuTra HMC on Neal's funnel (d = {args.dim}, noisy observations of x)", "",
        f"Device: {device_name()}. GEMF-T fit: {fit_steps} Adam steps (lr 1e-3, 16 draws), "
        f"{fit_seconds:.1f} s. HMC: {num_chains} chains, {num_warmup} warm-up + {num_draws} "
        f"draws, {leapfrog} leapfrog steps, dual-averaging step size. Command: "
        f"`python -m benchmarks.neutra{' --quick' if args.quick else ''}"
        f"{' --smoke' if args.smoke else ''}`.", "",
        "| sampler | min ESS | ESS / 1000 gradients | E[v] | sd[v] | wall s |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r[0]} | {r[1]:.0f} | {r[2]:.2f} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.1f} |"
              for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if not (args.quick or args.smoke):
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "neutra.md").write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    main()
