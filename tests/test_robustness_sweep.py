"""Tests of the robustness sweep's bookkeeping (benchmarks/robustness.py --sweep): which fits
pass, and that the table counts and marks the failures. The fits themselves are benchmarks
(minutes per target), not tests."""
from __future__ import annotations

import math

from benchmarks import robustness


def _row(**changes):
    row = dict(suite="real", target="t", fitter="fit_vi", steps=300, sample_size=8, seed=0,
               compiler_options=None, status="ok", bad_leaves=0, leaves=12,
               nonfinite_steps=0, nonfinite_draws=0, init_seconds=1.0, seconds=2.0,
               warnings=[], initial_elbo=-40.0, initial_finite_draws=500, elbo=-32.0,
               elbo_sem=0.05, finite_draws=500, eval_draws=500)
    row.update(changes)
    return row


def test_a_fit_passes_only_with_finite_params_and_an_elbo_finite_over_all_draws():
    assert robustness.sweep_passes(_row())
    assert not robustness.sweep_passes(_row(bad_leaves=1))
    assert not robustness.sweep_passes(_row(finite_draws=499))
    assert not robustness.sweep_passes(_row(elbo=-math.inf))
    assert not robustness.sweep_passes(_row(status="unsupported: GaussianProcess"))


def test_the_sweep_table_counts_failures_and_lists_unsupported_targets(tmp_path):
    rows = [_row(), _row(fitter="tfp", finite_draws=480, elbo=-math.inf, nonfinite_draws=None),
            dict(suite="real", target="gp", fitter="tfp", steps=300, sample_size=8,
                 status="unsupported: GaussianProcess")]
    text = robustness.write_sweep_table(rows, tmp_path / "sweep.md")
    assert (tmp_path / "sweep.md").read_text() == text
    assert "**1 of 2 fits pass**; 1 not run" in text
    assert "| real | t | tfp | **no** | -inf | 480/500 |" in text
    assert "| real | gp | tfp | — | unsupported: GaussianProcess |" in text
    assert "300 steps × 8 draws" in text
