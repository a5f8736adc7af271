"""VIP, MIF and GEMF-VIP (issue 19) against GEMF-T, IAF and a full-rank Gaussian, at one budget.

Usage (from the repository root)::

    python -m benchmarks.mif             # the table in benchmarks/results/mif.md (CPU: ~20 min)
    python -m benchmarks.mif --quick     # minutes: short fits, 2 seeds -> mif_quick.md
    python -m benchmarks.mif --targets funnel_observed --methods vip mif --seeds 2
    python -m benchmarks.mif --seeds 3 --resume   # go on where an interrupted run stopped

Targets (all pinned TFP models written as a user would):

- ``eight_schools_centered``: posteriordb's centred Eight Schools, ``mu ~ N(0, 5)``,
  ``tau ~ HalfCauchy(0, 5)``, ``theta_j ~ N(mu, tau)`` (`benchmarks.real_models`);
- ``eight_schools_noncentered``: the same priors, ``theta = mu + tau * eta``;
- ``eight_schools_gym``: `emf_jax.models.eight_schools` (inference_gym's priors,
  ``log_stddev ~ N(5, 1)``, non-centred; the paper's target, where the issue quotes GEMF-T
  36.347 against IAF 36.188; exact -log p(y) = 36.131);
- ``eight_schools_gym_centered``: the same priors, centred: ``school_effects ~
  N(avg_effect, exp(log_stddev))`` (the same evidence);
- ``funnel_observed``: Neal's funnel, d = 10 (``v`` and 9 ``x``'s), with ``y_i ~ N(x_i, 1)``
  observed (`benchmarks.real_models.neals_funnel`);
- ``hier_logistic``: a centred hierarchical logistic regression: ``mu ~ N(0, 1)``,
  ``sigma ~ HalfNormal(1)``, ``alpha_g ~ N(mu, sigma)`` for 6 groups, ``beta ~ N(0, 1)^3``,
  ``y_n ~ Bernoulli(alpha_{g_n} + x_n · beta)``, 120 rows simulated (numpy seed 0).

Methods: ``gemf-t`` (IAF backbone + gated structured layer), ``iaf`` (the IAF baseline),
``full-rank`` (a full-rank Gaussian on the unconstrained vector), ``vip``, ``mif`` and
``gemf-vip`` (an IAF backbone under gated VIP; `emf_jax.reparam`), all through
`emf_jax.build_surrogate_stateless` and fitted with `emf_jax.fit_vi` under one budget: the
same Adam schedule, steps and draws per step, and hidden units for every network. Metric:
the final -ELBO from ``--eval-draws`` fresh draws (lower is better), mean ± SEM over seeds,
plus the mean number of non-finite evaluation draws.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from benchmarks._device import device_name

RESULTS_DIR = Path(__file__).resolve().parent / "results"
METHODS = ("gemf-t", "iaf", "full-rank", "vip", "mif", "gemf-vip")
NEW_METHODS = ("vip", "mif", "gemf-vip")
TARGETS = ("eight_schools_centered", "eight_schools_noncentered", "eight_schools_gym",
           "eight_schools_gym_centered", "funnel_observed", "hier_logistic")


class Budget(NamedTuple):
    num_steps: int
    sample_size: int
    learning_rate: float        # flows: GEMF-T, IAF, MIF, GEMF-VIP
    gaussian_lr: float          # few-parameter Gaussian families: full rank, VIP
    final_lr_fraction: float
    hidden_units: tuple[int, ...]
    eval_draws: int
    num_seeds: int

    def describe(self) -> str:
        return (f"{self.num_steps} Adam steps × {self.sample_size} draws for every method, "
                f"peak learning rate {self.learning_rate:g} (GEMF-T, IAF, MIF, GEMF-VIP) or "
                f"{self.gaussian_lr:g} (full rank, VIP: Gaussian families, as in "
                f"benchmarks/vi.py) with cosine decay to {self.final_lr_fraction:g}×; "
                f"hidden units {list(self.hidden_units)} for every network "
                f"(IAF / GEMF-T / GEMF-VIP: 2 layers; MIF: one conditioner per variable); "
                f"every surrogate with the library's default start; -ELBO from "
                f"{self.eval_draws} fresh draws; mean ± SEM over {self.num_seeds} seeds")


FULL = Budget(2000, 16, 5e-3, 5e-2, 0.1, (32, 32), 2000, 5)
QUICK = Budget(300, 8, 5e-3, 5e-2, 0.1, (16, 16), 1000, 2)
GAUSSIAN_METHODS = ("full-rank", "vip")


def hier_logistic(dtype: Any = np.float32) -> Any:
    """The centred hierarchical logistic regression of the module docstring (pinned)."""
    import jax.numpy as jnp
    from tensorflow_probability.substrates import jax as tfp

    tfd = tfp.distributions
    rng = np.random.default_rng(0)
    num_groups, num_rows, num_features = 6, 120, 3
    group = np.arange(num_rows) % num_groups
    x = rng.normal(size=(num_rows, num_features))
    alpha_true = rng.normal(0.5, 1.0, size=num_groups)
    beta_true = rng.normal(size=num_features)
    logits = alpha_true[group] + x @ beta_true
    y = (rng.uniform(size=num_rows) < 1.0 / (1.0 + np.exp(-logits))).astype(dtype)
    c = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    root = tfd.JointDistributionCoroutine.Root

    def program():
        mu = yield root(tfd.Normal(c(0.0), c(1.0), name="mu"))
        sigma = yield root(tfd.HalfNormal(c(1.0), name="sigma"))
        alpha = yield tfd.Sample(tfd.Normal(mu, sigma), num_groups, name="alpha")
        beta = yield root(tfd.Sample(tfd.Normal(c(0.0), c(1.0)), num_features, name="beta"))
        logit = jnp.take(alpha, group, axis=-1) + jnp.einsum("nd,...d->...n", c(x), beta)
        yield tfd.Independent(tfd.Bernoulli(logits=logit), 1, name="y")

    return tfd.JointDistributionCoroutine(program).experimental_pin(y=c(y))


def eight_schools_gym_centered(dtype: Any = np.float32) -> Any:
    """`emf_jax.models.eight_schools`'s priors in the centred form (pinned)."""
    import jax.numpy as jnp
    from tensorflow_probability.substrates import jax as tfp

    from emf_jax.models import TREATMENT_EFFECTS, TREATMENT_STDDEVS

    tfd = tfp.distributions
    c = lambda v: jnp.asarray(v, dtype)  # noqa: E731

    def program():
        avg = yield tfd.Normal(c(0.0), c(10.0), name="avg_effect")
        log_stddev = yield tfd.Normal(c(5.0), c(1.0), name="log_stddev")
        effects = yield tfd.Sample(tfd.Normal(avg, jnp.exp(log_stddev)), 8,
                                   name="school_effects")
        yield tfd.Independent(tfd.Normal(effects, c(TREATMENT_STDDEVS)), 1, name="obs")

    model = tfd.JointDistributionCoroutineAutoBatched(program)
    return model.experimental_pin(obs=c(TREATMENT_EFFECTS))


def get_target(name: str) -> Any:
    """The pinned model called `name` (one of `TARGETS`)."""
    from benchmarks import real_models

    if name == "eight_schools_centered":
        return real_models.eight_schools_centered().pinned_model
    if name == "eight_schools_noncentered":
        return real_models.eight_schools_centered().nuts_pinned
    if name == "eight_schools_gym":
        import jax.numpy as jnp

        from emf_jax.models import TREATMENT_EFFECTS, eight_schools

        return eight_schools().experimental_pin(obs=jnp.asarray(TREATMENT_EFFECTS,
                                                                 jnp.float32))
    if name == "eight_schools_gym_centered":
        return eight_schools_gym_centered()
    if name == "funnel_observed":
        return real_models.neals_funnel(num_dims=10).pinned_model
    if name == "hier_logistic":
        return hier_logistic()
    raise ValueError(f"unknown target {name!r}; choose one of {TARGETS}")


def _optimizer(budget: Budget, method: str) -> Any:
    import optax

    peak = budget.gaussian_lr if method in GAUSSIAN_METHODS else budget.learning_rate
    decay = optax.cosine_decay_schedule(peak, budget.num_steps,
                                        alpha=budget.final_lr_fraction)
    return optax.adam(decay)


def _options(method: str, budget: Budget) -> dict[str, Any]:
    if method == "full-rank":
        return {}
    return {"hidden_units": budget.hidden_units}


def run_method(target: str, method: str, budget: Budget, log: Callable[[str], None]
               ) -> dict[str, Any]:
    """Fits `method` on `target` for each seed; the per-seed -ELBO and timings."""
    import jax

    import emf_jax

    pinned = get_target(target)
    log_prob = pinned.unnormalized_log_prob
    init_fn, build_fn = emf_jax.build_surrogate_stateless(method, pinned,
                                                          **_options(method, budget))
    optimizer = _optimizer(budget, method)

    @jax.jit
    def evaluate(params: Any, key: Any) -> Any:
        x, log_q = build_fn(params).experimental_sample_and_log_prob(budget.eval_draws,
                                                                     seed=key)
        return log_q - log_prob(x)

    neg_elbos, nonfinite, times = [], [], []
    for seed in range(budget.num_seeds):
        start = time.perf_counter()
        params = init_fn(jax.random.PRNGKey(seed))
        result = emf_jax.fit_vi(log_prob, build_fn, params, optimizer=optimizer,
                                num_steps=budget.num_steps, sample_size=budget.sample_size,
                                seed=seed, chunk_size=min(budget.num_steps, 500),
                                progress_bar=False)
        jax.block_until_ready(result.params)
        times.append(time.perf_counter() - start)
        ratios = np.asarray(evaluate(result.params, jax.random.fold_in(
            jax.random.PRNGKey(seed), 7919)), np.float64)
        finite = np.isfinite(ratios)
        nonfinite.append(int((~finite).sum()))
        neg_elbos.append(float(np.mean(ratios)) if finite.all() else float("inf"))
        log(f"  {target:<26} {method:<10} seed {seed}: -ELBO {neg_elbos[-1]:.3f} "
            f"({nonfinite[-1]} non-finite draws, {times[-1]:.1f} s)")
    return {"neg_elbo": neg_elbos, "nonfinite": nonfinite, "seconds": times}


def _stat(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    if not np.all(np.isfinite(v)):
        return float("inf"), float("nan")
    sem = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")
    return float(v.mean()), sem


def render(results: dict[str, Any], budget: Budget) -> str:
    """The markdown table: one row per target, one column per method; the best in bold."""
    methods = [m for m in METHODS if any(m in results.get(t, {}) for t in TARGETS)]
    lines = [
        "# VIP, MIF and GEMF-VIP against GEMF-T, IAF and full rank (issue 19)",
        "",
        f"Final -ELBO (lower is better), mean ± SEM over seeds. Budget: {budget.describe()}. "
        f"Device: {device_name()}. Produced by `python -m benchmarks.mif`"
        + (f" --seeds {budget.num_seeds} (fewer than {FULL.num_seeds}: CPU time)"
           if budget.num_seeds < FULL.num_seeds else "") + ".",
        "",
        "| target | " + " | ".join(methods) + " |",
        "|---" * (len(methods) + 1) + "|",
    ]
    for target in TARGETS:
        record = results.get(target)
        if not record:
            continue
        stats = {m: _stat(record[m]["neg_elbo"]) for m in methods if m in record}
        best = min(stats, key=lambda m: stats[m][0])
        cells = []
        for m in methods:
            if m not in stats:
                cells.append("—")
                continue
            mean, sem = stats[m]
            text = f"{mean:.3f} ± {sem:.3f}" if np.isfinite(mean) else "inf"
            bad = sum(record[m]["nonfinite"])
            if bad:
                text += f" ({bad} non-finite)"
            cells.append(f"**{text}**" if m == best else text)
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    lines += ["", "Best new architecture against the best of IAF and GEMF-T (difference of "
              "means; 'beyond 2 SEM' uses the root sum of squares of the two SEMs):", ""]
    for target in TARGETS:
        record = results.get(target)
        if not record:
            continue
        present = [m for m in NEW_METHODS if m in record]
        if not present or not all(m in record for m in ("iaf", "gemf-t")):
            continue
        stats = {m: _stat(record[m]["neg_elbo"]) for m in record}
        new = min(present, key=lambda m: stats[m][0])
        old = min(("iaf", "gemf-t"), key=lambda m: stats[m][0])
        diff = stats[old][0] - stats[new][0]
        sem = float(np.hypot(stats[old][1], stats[new][1]))
        verdict = ("beats" if diff > 2 * sem else "loses to" if diff < -2 * sem
                   else "ties (within 2 SEM)")
        lines.append(f"- {target}: {new} {verdict} {old} ({stats[new][0]:.3f} vs "
                     f"{stats[old][0]:.3f}; difference {diff:+.3f}, 2 SEM = {2 * sem:.3f})")
    seconds = {m: np.mean([np.mean(results[t][m]["seconds"]) for t in TARGETS
                           if t in results and m in results[t]]) for m in methods}
    lines += ["", "Mean wall time per fit (s, compilation of the first seed included; on a "
              "shared CPU, so compare them within one run only): "
              + ", ".join(f"{m} {s:.1f}" for m, s in seconds.items()), ""]
    return "\n".join(lines)


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--resume", action="store_true",
                        help="skip (target, method) pairs the saved results hold for as many "
                             "seeds as this run has")
    parser.add_argument("--table-only", action="store_true",
                        help="only rewrite the markdown from the saved results")
    args = parser.parse_args(argv)
    budget = QUICK if args.quick else FULL
    if args.seeds is not None:
        budget = budget._replace(num_seeds=args.seeds)
    stem = "mif_quick" if args.quick else "mif"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.out_dir / f"{stem}.json"
    results: dict[str, Any] = json.loads(json_path.read_text()) if json_path.exists() else {}
    for target in [] if args.table_only else args.targets:
        for method in args.methods:
            done = results.get(target, {}).get(method, {}).get("neg_elbo", [])
            if args.resume and len(done) == budget.num_seeds:
                continue
            record = run_method(target, method, budget, lambda s: print(s, flush=True))
            results.setdefault(target, {})[method] = record
            json_path.write_text(json.dumps(results, indent=1))  # saved after every method
            (args.out_dir / f"{stem}.md").write_text(render(results, budget))
    table = render(results, budget)
    (args.out_dir / f"{stem}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
