"""What the start pilot of `fit_density` costs (issue 17): one default GEMF-T fit with and
without the pilot, each from a cold compile cache.

Usage (from the repository root)::

    python -m benchmarks.density_pilot_cost                      # the banana set, 1000 steps
    python -m benchmarks.density_pilot_cost --dataset nonlinear_drift --steps 1000

Each fit is the generalization benchmark's (`benchmarks.density`: its training and
validation rows of seed 0, Adam 1e-3, batch 100) with a fixed number of steps (no early
stopping, so both fits take the same steps) and a freshly built density (so each compiles
its own programs, as a user's first fit does). The pilot fits the two gate starts for 500
steps each; the fit without it (``pilot_steps=0``) starts at the first. The table goes to
``benchmarks/results/density_pilot_cost.md`` (``--tag`` appends a name, e.g. to keep the
numbers of an older version of the library side by side).
"""
from __future__ import annotations

import argparse
import datetime
import time
from typing import Optional, Sequence

import jax

from benchmarks._device import device_name
from benchmarks.density import (
    GEN_TRAIN_SIZE,
    GEN_VALID_SIZE,
    GENERALIZATION_SETS,
    RESULTS_DIR,
    _generalization_rows,
    _plain_adam,
    make_template,
)
from emf_jax import fit_density
from emf_jax.density import build_emf_density_stateless


def time_fit(dataset: str, steps: int, pilot: bool) -> tuple[float, int]:
    """Seconds of one cold default GEMF-T fit, and the start it chose (-1: no pilot)."""
    spec = GENERALIZATION_SETS[dataset]
    train, valid = _generalization_rows(spec, 0, GEN_TRAIN_SIZE, GEN_VALID_SIZE)
    init_fn, build_fn = build_emf_density_stateless(*make_template(spec.model, "continuity"),
                                                    architecture="gemf-t")
    start = time.perf_counter()
    result = fit_density(build_fn, init_fn(jax.random.key(2)), train, validation_data=valid,
                         optimizer=_plain_adam(1e-3), num_steps=steps, batch_size=100, seed=0,
                         patience=None, pilot_steps="auto" if pilot else 0,
                         progress_bar=False)
    jax.block_until_ready(result.params)
    return time.perf_counter() - start, int(result.start_choice)


def main(argv: Optional[Sequence[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="banana_tail", choices=sorted(GENERALIZATION_SETS))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    rows = []
    for pilot in (False, True):
        seconds, choice = time_fit(args.dataset, args.steps, pilot)
        rows.append((pilot, seconds, choice))
        print(f"{args.dataset} pilot={pilot}: {seconds:.1f} s (start {choice})", flush=True)
    base = rows[0][1]
    lines = [f"# The start pilot's cost{' (' + args.tag + ')' if args.tag else ''}", "",
             f"Written {datetime.date.today().isoformat()} by `python -m "
             f"benchmarks.density_pilot_cost --dataset {args.dataset} --steps {args.steps}` "
             f"on {device_name()}: one default GEMF-T fit of {args.steps} steps, cold, "
             "without and with the pilot, in one process (wall clock on a shared CPU).", "",
             "| method | fit s | ratio to the fit without pilot | chosen start |",
             "|---|---|---|---|"]
    lines += [f"| GEMF-T {'with' if p else 'without'} pilot | {s:.1f} | {s / base:.2f} | {c} |"
              for p, s, c in rows]
    text = "\n".join(lines) + "\n"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = "density_pilot_cost" + (f"_{args.tag}" if args.tag else "")
    (RESULTS_DIR / f"{name}.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
