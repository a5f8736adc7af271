"""GEMF-T's compile and step time before and after a change of the package, as ratios.

Usage::

    git worktree add /tmp/before <commit>      # a checkout of the earlier version
    python -m benchmarks.house_speed --against /tmp/before

Each measurement runs in a fresh process (no compile cache), alternating between the two
versions for ``--rounds`` rounds so that machine load hits both alike; times are CPU seconds
of the process (``time.process_time``), which a shared machine disturbs less than wall time.
Measured: building the surrogate, the first call of a jitted VI step (trace, lower, compile,
run: "compile") and the steady step (median of 20 calls) of GEMF-T (IAF 512-512, 16 draws)
on the demo's Brownian bridge (30 steps, a Python-loop model). Writes
``benchmarks/results/house_speed.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def worker() -> None:
    """One measurement in this process; prints a JSON line."""
    import jax
    import optax
    from tensorflow_probability.substrates import jax as tfp

    import emf_jax
    from emf_jax import models

    pinned = models.get_target("brownian_bridge_r_gym").pinned_model
    start = time.process_time()
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
        pinned, hidden_units=(512, 512))
    params = init_fn(jax.random.key(0))
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)
    build_s = time.process_time() - start

    @jax.jit
    def step(params, opt_state, key):
        def loss(p):
            return tfp.vi.monte_carlo_variational_loss(
                pinned.unnormalized_log_prob, build_fn(p), sample_size=16, seed=key)
        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    start = time.process_time()
    params, opt_state, value = jax.block_until_ready(step(params, opt_state, jax.random.key(1)))
    compile_s = time.process_time() - start
    times = []
    for i in range(20):
        start = time.process_time()
        params, opt_state, value = jax.block_until_ready(
            step(params, opt_state, jax.random.key(2 + i)))
        times.append(time.process_time() - start)
    print(json.dumps({"build_s": build_s, "compile_s": compile_s,
                      "step_ms": 1000 * statistics.median(times)}))


def run(path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(path), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c",
                          "import benchmarks.house_speed as h; h.worker()"],
                         cwd=path, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: Any = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, required=True,
                        help="a checkout of the earlier version")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    # The worker is this file's: copy it into the earlier checkout if it lacks one.
    target = args.against / "benchmarks" / "house_speed.py"
    if not target.exists():
        target.write_text(Path(__file__).read_text(encoding="utf-8"), encoding="utf-8")
    rows: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        rows["before"].append(run(args.against))
        rows["after"].append(run(REPO))
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("build_s", "compile_s",
                                                              "step_ms")}
           for k, v in rows.items()}
    lines = ["# GEMF-T compile and step time before and after the house redesign", "",
             f"Command: `python -m benchmarks.house_speed --against <checkout>` "
             f"({args.rounds} alternating rounds, fresh processes, CPU seconds, medians). "
             "Target: the demo's 30-step Brownian bridge (Python loop), IAF 512-512, 16 draws.",
             "", "| | build s | compile s | step ms |", "|---|---|---|---|"]
    for k in ("before", "after"):
        lines.append(f"| {k} | {med[k]['build_s']:.2f} | {med[k]['compile_s']:.2f} | "
                     f"{med[k]['step_ms']:.1f} |")
    lines.append(f"| after / before | {med['after']['build_s'] / med['before']['build_s']:.2f} | "
                 f"{med['after']['compile_s'] / med['before']['compile_s']:.2f} | "
                 f"{med['after']['step_ms'] / med['before']['step_ms']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "house_speed.md").write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    main()
