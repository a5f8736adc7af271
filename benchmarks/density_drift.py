"""Why GEMF-T trails MAF on the generalization benchmark's nonlinear-drift set (issue 17).

Usage (from the repository root)::

    python -m benchmarks.density_drift                   # every variant, about 5 CPU-minutes
    python -m benchmarks.density_drift --variants maf gate-0.1

Each variant is one default fit of `benchmarks.density`'s generalization benchmark (seed 0,
3000 rows with the default 10% validation split, 2000 test rows, Adam 1e-3, batch 100, at most
3000 steps, the default 2 MAF layers of (512, 512)) with one thing changed: the initial gate
λ of GEMF-T (the default is 0.999), a larger learning rate for the gates alone, decoupled
weight decay, smaller conditioners, or the structured layer at the bottom (GEMF-B). The
gated random walk alone ("structured", Adam 1e-2) gives the maximum-likelihood gates of the
template without a flow. The table goes to ``benchmarks/results/density_drift.md``.
"""
from __future__ import annotations

import argparse
import datetime
import time
import warnings
from typing import Any, Optional, Sequence

import jax
import numpy as np
import optax

from benchmarks._device import device_name
from benchmarks.density import GENERALIZATION_SETS, RESULTS_DIR, log_prob
from emf_jax import fit_density, templates
from emf_jax.density import build_emf_density_stateless

# name: (architecture, build options, optimiser options, fit options)
VARIANTS: dict[str, tuple[str, dict, dict, dict]] = {
    "maf": ("flow", {}, {}, {}),
    "gemf-t": ("gemf-t", {}, {}, {}),
    "gate-0.9": ("gemf-t", {"initial_gate": 0.9}, {}, {}),
    "gate-0.5": ("gemf-t", {"initial_gate": 0.5}, {}, {}),
    "gate-0.1": ("gemf-t", {"initial_gate": 0.1}, {}, {}),
    "gate-0.01": ("gemf-t", {"initial_gate": 0.01}, {}, {}),
    "gate-lr-3e-2": ("gemf-t", {}, {"gate_lr": 3e-2}, {}),
    "weight-decay-0.1": ("gemf-t", {}, {"weight_decay": 0.1}, {}),
    "gemf-t-64": ("gemf-t", {"hidden_units": (64, 64)}, {}, {}),
    "maf-64": ("flow", {"hidden_units": (64, 64)}, {}, {}),
    "gemf-b": ("gemf-b", {}, {}, {}),
    "structured": ("structured", {}, {"learning_rate": 1e-2},
                   {"pretrain_model_steps": 0, "patience": None}),
}


def _optimizer(learning_rate: float = 1e-3, weight_decay: float = 0.0,
               gate_lr: Optional[float] = None) -> optax.GradientTransformation:
    base = (optax.adam(learning_rate) if weight_decay == 0.0
            else optax.adamw(learning_rate, weight_decay=weight_decay))
    if gate_lr is None:
        return base

    def labels(params: Any) -> Any:
        tree = jax.tree.map(lambda _: "rest", params)
        tree["structured"]["gates"] = jax.tree.map(lambda _: "gate",
                                                   params["structured"]["gates"])
        return tree

    return optax.multi_transform({"rest": base, "gate": optax.adam(gate_lr)}, labels)


def run_variant(name: str, steps: int = 3000) -> dict:
    """One fit of a variant on the nonlinear-drift set; its NLLs and fitted gates."""
    architecture, build_options, optimiser_options, fit_options = VARIANTS[name]
    spec = GENERALIZATION_SETS["nonlinear_drift"]
    data = spec.draw(np.random.default_rng([0, 1]), 3000).astype(np.float32)
    test = spec.draw(np.random.default_rng([2**31 - 1, 7]), 2000).astype(np.float32)
    model_fn, model_params = templates.random_walk(*spec.model[1:])
    init_fn, build_fn = build_emf_density_stateless(model_fn, model_params,
                                                    architecture=architecture, **build_options)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_density(build_fn, init_fn(jax.random.fold_in(jax.random.key(0), 2)),
                             data, optimizer=_optimizer(**optimiser_options), num_steps=steps,
                             batch_size=100, seed=0, progress_bar=False, **fit_options)
    seconds = time.perf_counter() - start
    test_lp = log_prob(build_fn, result.params, test)
    gates = result.params.get("structured", {}).get("gates")
    mean_gate = (float(np.mean(jax.nn.sigmoid(np.asarray(jax.tree.leaves(gates)))))
                 if gates else float("nan"))
    return dict(variant=name, val_nll=float(np.min(result.validation_losses)),
                test_nll=float(-np.mean(test_lp)), median_test_nll=float(-np.median(test_lp)),
                worst=float(np.min(test_lp)), best_step=int(result.best_step),
                mean_gate=mean_gate,
                exact_test=float(-np.mean(spec.log_prob(test.astype(np.float64)))),
                overfit=any("overfits" in str(w.message) for w in caught),
                fit_seconds=round(seconds, 1))


def main(argv: Optional[Sequence[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args(argv)
    rows = []
    for name in args.variants or VARIANTS:
        r = run_variant(name, args.steps)
        print(r, flush=True)
        rows.append(r)
    lines = [
        "# GEMF-T on the nonlinear-drift set: what changes its test NLL", "",
        f"Written {datetime.date.today().isoformat()} by `python -m benchmarks.density_drift`"
        f" on {device_name()}, float32, seed 0 (see the script's docstring). Exact test NLL "
        f"{rows[0]['exact_test']:.3f}. \"gate\": the mean fitted λ over the 20 variables.", "",
        "| variant | validation NLL | test NLL | median test NLL | worst test log-density | "
        "best step | gate | overfit warning | fit s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['val_nll']:.3f} | {r['test_nll']:.3f} | "
                     f"{r['median_test_nll']:.3f} | {r['worst']:.1f} | {r['best_step']} | "
                     f"{r['mean_gate']:.4f} | {'yes' if r['overfit'] else 'no'} | "
                     f"{r['fit_seconds']} |")
    text = "\n".join(lines) + "\n"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    tag = "density_drift" if not args.variants else "density_drift_partial"
    (RESULTS_DIR / f"{tag}.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
