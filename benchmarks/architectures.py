"""Every surrogate on the demo's Brownian bridge at one fixed budget.

Usage::

    python -m benchmarks.architectures                  # 3 seeds, 2000 steps (about 30 min)
    python -m benchmarks.architectures --quick          # 1 seed, 300 steps (a few minutes)
    python -m benchmarks.architectures --methods gemf-t flow --seeds 5

Target: the demo model (``emf_jax.models.get_target("brownian_bridge_r_gym")``: Brownian motion,
30 steps, innovation 0.1, Gaussian observation noise 0.15, the middle ten steps unobserved),
whose exact log evidence is known, so ``gap = log p(y) - ELBO`` is the KL divergence from the
surrogate to the exact posterior.

Methods: the baselines of ``emf_jax.baselines`` (mean field, full-rank Gaussian, ASVI, IAF)
and every EMF architecture of ``emf_jax.build_emf_surrogate_posterior_stateless`` with its
default IAF backbone (2 layers, hidden units 512-512 as in the paper). Budget, the same for
all: ``--steps`` Adam steps with ``--sample-size`` draws each; learning rate 1e-2 for the
Gaussian families and ASVI and 1e-3 for the flows (as in the demo). The ELBO is estimated
from 4000 fresh draws per fit; mean ± SEM over seeds.

Timing (same process, same inputs): ``compile s`` is the first call of a jitted chunk of 100
steps minus one steady-state call; ``ms/step`` the steady-state time of that chunk / 100.
The table ends with GEMF-T's step time against its backbone alone (the "flow" method).
Writes ``benchmarks/results/architectures.md``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from emf_jax import diagnostics, models
from emf_jax.surrogates import build_surrogate_stateless
from emf_jax.training import fit_vi

TARGET = "brownian_bridge_r_gym"
ELBO_SAMPLES = 4000
TIMING_STEPS = 100
RESULTS = Path(__file__).resolve().parent / "results"

BASELINES = ("mean-field", "full-rank", "asvi", "iaf")
ARCHITECTURES = ("gemf-t", "emf-t", "gemf-m", "emf-m", "gemf-b", "emf-b", "structured", "flow")
METHODS = BASELINES + ARCHITECTURES


def builders(pinned: Any, hidden_units: Sequence[int]) -> dict[str, tuple[Callable, Callable,
                                                                            float]]:
    """method -> (init_fn, build_fn, learning rate)."""
    table: dict[str, tuple[Callable, Callable, float]] = {}
    for name in METHODS:
        gaussian = name in ("mean-field", "full-rank", "asvi")
        options = {} if gaussian else {"hidden_units": hidden_units}
        lr = 1e-2 if gaussian or name == "structured" else 1e-3
        table[name] = (*build_surrogate_stateless(name, pinned, **options), lr)
    return table


def step_timing(target_log_prob: Callable, build_fn: Callable, params: Any, lr: float,
                sample_size: int) -> tuple[float, float]:
    """(compile seconds, steady-state milliseconds per step) of a jitted chunk of steps."""
    optimizer = optax.adam(lr)

    def loss(p, key):
        x, log_q = build_fn(p).experimental_sample_and_log_prob(sample_size, seed=key)
        return -jnp.mean(target_log_prob(x) - log_q)

    @jax.jit
    def chunk(p, state, key):
        def body(carry, k):
            p, state = carry
            value, grads = jax.value_and_grad(loss)(p, k)
            updates, state = optimizer.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), value
        return jax.lax.scan(body, (p, state), jax.random.split(key, TIMING_STEPS))

    state = optimizer.init(params)
    start = time.perf_counter()
    jax.block_until_ready(chunk(params, state, jax.random.key(0)))
    first = time.perf_counter() - start
    runs = []
    for i in range(3):
        start = time.perf_counter()
        jax.block_until_ready(chunk(params, state, jax.random.key(i + 1)))
        runs.append(time.perf_counter() - start)
    steady = min(runs)
    return first - steady, 1e3 * steady / TIMING_STEPS


def run(methods: Sequence[str], seeds: int, steps: int, sample_size: int,
        hidden_units: Sequence[int], progress: bool) -> list[dict]:
    target = models.get_target(TARGET)
    pinned = target.pinned_model
    log_evidence = models.exact_log_marginal_likelihood(target)
    table = builders(pinned, hidden_units)
    rows = []
    for method in methods:
        init_fn, build_fn, lr = table[method]
        # One optimizer object per method: fit_vi's compiled chunk is cached on it, so every
        # seed after the first reuses the program.
        optimizer = optax.adam(lr)

        elbos, fit_seconds = [], []
        for seed in range(seeds):
            start = time.perf_counter()
            fit = fit_vi(pinned.unnormalized_log_prob, build_fn, init_fn(jax.random.key(seed)),
                         optimizer=optimizer, num_steps=steps, sample_size=sample_size,
                         seed=1000 + seed, chunk_size=max(1, steps // 10),
                         progress_bar=progress)
            jax.block_until_ready(fit.params)
            fit_seconds.append(time.perf_counter() - start)
            estimate = diagnostics.elbo(pinned.unnormalized_log_prob, build_fn(fit.params),
                                        num_draws=ELBO_SAMPLES, seed=10_000 + seed)
            if estimate.num_nonfinite:
                print(f"  {method} seed {seed}: {estimate.num_nonfinite} of {ELBO_SAMPLES} "
                      "ELBO draws were not finite")
            elbos.append(estimate.mean)
        compile_s, ms_per_step = step_timing(pinned.unnormalized_log_prob, build_fn,
                                             init_fn(jax.random.key(0)), lr, sample_size)
        elbos_arr = np.array(elbos)
        sem = float(elbos_arr.std(ddof=1) / np.sqrt(seeds)) if seeds > 1 else float("nan")
        row = dict(method=method, elbo=float(elbos_arr.mean()), sem=sem,
                   gap=log_evidence - float(elbos_arr.mean()),
                   first_fit_s=fit_seconds[0],
                   fit_s=float(np.median(fit_seconds[1:] if seeds > 1 else fit_seconds)),
                   compile_s=compile_s,
                   ms_per_step=ms_per_step)
        rows.append(row)
        print(f"{method:<11} ELBO {row['elbo']:9.3f} ± {row['sem']:.3f}  gap {row['gap']:7.3f}  "
              f"fit {row['fit_s']:6.1f} s  compile {compile_s:5.1f} s  "
              f"{ms_per_step:6.2f} ms/step", flush=True)
    return rows


def to_markdown(rows: list[dict], *, seeds: int, steps: int, sample_size: int,
                hidden_units: Sequence[int], log_evidence: float) -> str:
    lines = [
        f"# Every surrogate on the demo's Brownian bridge ({TARGET})",
        "",
        f"Budget: {steps} Adam steps, {sample_size} draws per step, hidden units "
        f"{tuple(hidden_units)}, {seeds} seed(s); ELBO from {ELBO_SAMPLES} draws per fit, "
        f"mean ± SEM over seeds. Exact log p(y) = {log_evidence:.4f}; gap = log p(y) − ELBO "
        "(the KL divergence to the exact posterior). First fit: the first seed, compilation "
        "included; fit s: median over the later seeds (the compiled program reused). "
        f"Compile and step time: a jitted chunk of {TIMING_STEPS} steps (first call minus a "
        "steady call; steady call / steps). CPU: "
        f"{jax.devices()[0].device_kind}, {jax.device_count()} device(s).",
        "",
        "| method | ELBO | gap | first fit s | fit s | compile s | ms/step |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: -r["elbo"]):
        lines.append(f"| {r['method']} | {r['elbo']:.3f} ± {r['sem']:.3f} | {r['gap']:.3f} | "
                     f"{r['first_fit_s']:.1f} | {r['fit_s']:.1f} | {r['compile_s']:.1f} | "
                     f"{r['ms_per_step']:.2f} |")
    by_name = {r["method"]: r for r in rows}
    if "gemf-t" in by_name and "flow" in by_name:
        ratio = by_name["gemf-t"]["ms_per_step"] / by_name["flow"]["ms_per_step"]
        lines += ["", f"GEMF-T step time / its IAF backbone alone (\"flow\"): {ratio:.2f}×."]
    return "\n".join(lines) + "\n"


def main(argv: Any = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--sample-size", type=int, default=16)
    parser.add_argument("--hidden-units", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--quick", action="store_true", help="1 seed, 300 steps")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument("--out", default=str(RESULTS / "architectures.md"))
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.steps = 1, 300
    rows = run(args.methods, args.seeds, args.steps, args.sample_size, args.hidden_units,
               args.progress)
    text = to_markdown(rows, seeds=args.seeds, steps=args.steps, sample_size=args.sample_size,
                       hidden_units=args.hidden_units,
                       log_evidence=models.exact_log_marginal_likelihood(
                           models.get_target(TARGET)))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print("\n" + text + f"\nwritten to {args.out}")
    return rows


if __name__ == "__main__":
    main()
