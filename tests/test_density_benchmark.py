"""The generalization benchmark's gap statistics (benchmarks/density.py): the standard
errors are the per-row sd / sqrt(n), and the gap beyond the exact density cancels the rows'
own spread."""
from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.density import gap_statistics


def test_gap_standard_errors_match_their_definition():
    rng = np.random.default_rng(0)
    val, test = rng.normal(0.0, 3.0, 400), rng.normal(0.0, 3.0, 900)
    s = gap_statistics(val, test, np.zeros(400), np.zeros(900))
    assert s["gap"] == pytest.approx(test.mean() - val.mean())
    expected = math.hypot(val.std(ddof=1) / math.sqrt(400), test.std(ddof=1) / math.sqrt(900))
    assert s["gap_se"] == pytest.approx(expected)
    assert s["exact_gap"] == 0.0 and s["exact_gap_se"] == 0.0
    assert s["excess"] == pytest.approx(s["gap"])


def test_excess_removes_the_rows_own_spread():
    # Rows with a large spread (sd 10) shared by the model and the exact density; the model
    # adds 0.3 nats on the test rows, with a small per-row noise (sd 0.1).
    rng = np.random.default_rng(1)
    n = 2000
    exact_val, exact_test = rng.normal(0.0, 10.0, n), rng.normal(0.0, 10.0, n)
    val = exact_val + rng.normal(0.0, 0.1, n)
    test = exact_test + 0.3 + rng.normal(0.0, 0.1, n)
    s = gap_statistics(val, test, exact_val, exact_test)
    se = 0.1 * math.sqrt(2.0 / n)
    assert s["excess_se"] == pytest.approx(se, rel=0.1)
    assert abs(s["excess"] - 0.3) < 4 * se
    assert s["gap_se"] > 50 * s["excess_se"]  # the raw gap carries the rows' spread


def test_gap_statistics_rejects_unpaired_rows():
    with pytest.raises(ValueError, match="same rows"):
        gap_statistics(np.zeros(5), np.zeros(6), np.zeros(5), np.zeros(7))
    with pytest.raises(ValueError, match="`val_nll`"):
        gap_statistics(np.zeros(1), np.zeros(6), np.zeros(1), np.zeros(6))
