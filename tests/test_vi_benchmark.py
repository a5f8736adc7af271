"""Tests of the VI benchmark (benchmarks/vi.py): the quick benchmark runs at its tiniest size
and writes a finite table; reference draws, table rendering and the command line; and the
synthetic state-space targets' log densities against inference_gym's general models (which
tests/test_models.py checks only on inference_gym's own data)."""
from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import _numpyro_peers, vi
from emf_jax import models

# The quick benchmark's machinery at the tiniest size: one 14-dimensional target, GEMF-T plus
# a peer, two seeds (the second reuses the compiled programs), tiny networks. (Compilation
# dominates: each further method costs ~10-20 s of CI time.)
TINY = ["--quick", "--targets", "binary_tree_linear_4", "--methods", "gemf_t", "numpyro_iaf",
        "--seeds", "2", "--steps", "40", "--sample-size", "4", "--hidden", "8", "8",
        "--eval-draws", "150", "--reference-draws", "100"]


def test_quick_benchmark_at_the_tiniest_size_writes_a_finite_table(tmp_path, monkeypatch,
                                                                  capsys):
    # NumPyro absent: the peer is skipped with a printed note, the rest runs.
    monkeypatch.setattr(_numpyro_peers, "available", lambda: False)
    results = vi.main(TINY + ["--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "numpyro is not installed" in out

    table = (tmp_path / "vi_quick.md").read_text()
    assert (tmp_path / "vi_quick_binary_tree_linear_4.png").stat().st_size > 10_000
    assert (tmp_path / "vi_quick_binary_tree_linear_4_metrics.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "vi_quick.json").read_text())
    assert saved == json.loads(json.dumps(results))
    record = saved["targets"]["binary_tree_linear_4"]
    assert record["reference"] == "exact Gaussian posterior"
    assert record["methods"]["numpyro_iaf"]["status"] == "not run (numpyro not installed)"
    assert "| NumPyro AutoIAFNormal | not run (numpyro not installed) |" in table
    log_evidence = record["log_evidence"]
    assert log_evidence == pytest.approx(
        models.exact_log_marginal_likelihood("binary_tree_linear_4"))
    for method in ("gemf_t",):
        entry = record["methods"][method]
        assert entry["status"] == "ok"
        per = entry["per_seed"]
        assert entry["seeds"] == [0, 1]
        for key in ("neg_elbo", "neg_elbo_se", "log_q_ref", "khat", "fit_seconds"):
            assert len(per[key]) == 2 and np.all(np.isfinite(per[key])), (method, key)
        # -ELBO >= -log p(y): each estimate is a mean of 150 draws, so it may dip below
        # the bound by Monte Carlo error only (4 standard errors).
        for value, se in zip(per["neg_elbo"], per["neg_elbo_se"]):
            assert value >= -log_evidence - 4 * se
        assert entry["steady_ms_per_step"] > 0
        assert f"| {vi.METHODS[method]} | " in table
    assert "## Summary" in table and "binary_tree_linear_4" in table

    # Re-rendering from the saved results (a run in parts) gives the same table; a method
    # marked as not run appears as such without replacing results that exist.
    vi.main(["--quick", "--table-only", "--out-dir", str(tmp_path), "--targets",
             "binary_tree_linear_4", "--mark-not-run", "asvi", "compile time",
             "--mark-not-run", "gemf_t", "compile time"])
    table2 = (tmp_path / "vi_quick.md").read_text()
    assert "| ASVI | not run (compile time) |" in table2
    assert "| GEMF-T | not run" not in table2


def test_reference_draws(tmp_path, monkeypatch):
    target = models.get_target("binary_tree_linear_4")
    ref = vi.load_reference(target, 4000, seed=1)
    names = list(target.pinned_model.event_shape._fields)
    assert list(ref.draws._fields) == names
    exact = target.exact_posterior
    for name, shape in zip(names, target.pinned_model.event_shape):
        assert getattr(ref.draws, name).dtype == np.float32
        draws = np.asarray(getattr(ref.draws, name), np.float64)
        assert draws.shape == (4000,) + tuple(shape)
        # Mean within 4 standard errors (sd / sqrt(n)) of the exact posterior mean.
        np.testing.assert_array_less(
            np.abs(draws.mean(0) - exact.mean[name]), 4 * exact.stddev[name] / math.sqrt(4000))
    # The same seed gives the same draws.
    again = vi.load_reference(target, 4000, seed=1)
    np.testing.assert_array_equal(again.draws[0], ref.draws[0])

    schools = vi.load_reference(models.get_target("eight_schools"), 300)
    assert schools.source.startswith("NUTS")
    assert schools.draws.school_effects_std.shape == (300, 8)
    assert schools.log_evidence == pytest.approx(-36.1308, abs=1e-4)
    # A target with no cached NUTS run and no closed form has no reference.
    from benchmarks import ground_truth

    monkeypatch.setattr(ground_truth, "GROUND_TRUTH_DIR", tmp_path)
    assert vi.load_reference(models.get_target("van_der_pol_bridge_c"), 10) is None
    assert vi.load_reference(models.get_target("brownian_bridge_r"), 10) is not None  # exact


def _fake_entry(values, seeds=(0, 1, 2)):
    per = {k: [] for k in ("neg_elbo", "neg_elbo_se", "log_q_ref", "khat", "fit_seconds",
                           "eval_seconds", "num_nonfinite", "final_loss")}
    for s in seeds:
        per["neg_elbo"].append(values[0] + 0.1 * s)
        per["neg_elbo_se"].append(0.01)
        per["log_q_ref"].append(values[1])
        per["khat"].append(values[2])
        per["fit_seconds"].append(10.0)
        per["eval_seconds"].append(1.0)
        per["num_nonfinite"].append(0)
        per["final_loss"].append(values[0])
    budget = vi.MODES["quick"].budget._asdict()
    return {"status": "ok", "seeds": list(seeds), "per_seed": per, "first_fit_seconds": 10.0,
            "steady_ms_per_step": 2.0, "budget": budget}


def test_table_rendering(tmp_path):
    results = {"targets": {"toy": {
        "description": "a toy", "reference": "exact", "log_evidence": -2.0, "num_latents": 3,
        "methods": {"mean_field": _fake_entry((5.0, -9.0, 0.9)),
                    "gemf_t": _fake_entry((2.5, -1.0, 0.3)),
                    "iaf": _fake_entry((2.2, -2.0, 0.4)),
                    "asvi": {"status": "not run (compile time)"}}}}}
    results["targets"]["toy"]["methods"]["gemf_t"]["compiler_options"] = {
        "xla_disable_hlo_passes": "fusion"}
    path = vi.write_report(results, "full", tmp_path)
    text = path.read_text()
    # mean ± SEM over seeds: 2.2 + 0.1 s for s = 0, 1, 2 -> 2.3 ± 0.1 / sqrt(3) * sqrt(1)
    sem = np.std([2.2, 2.3, 2.4], ddof=1) / math.sqrt(3)
    assert f"| IAF | **2.300 ± {sem:.3f}** | 0.300 ± {sem:.3f} |" in text
    assert "**-1.000 ± 0.000**" in text  # GEMF-T's log q is best
    assert "**0.30 ± 0.00**" in text
    assert "| ASVI | not run (compile time) |" in text
    assert "| toy | IAF (2.300) | 2.600 (2/3) | GEMF-T (-1.000) | -1.000 (1/3) |" in text
    assert "exact -log p(y) = 2.0000" in text
    gemf_row = next(line for line in text.splitlines() if line.startswith("| GEMF-T |"))
    assert "(XLA xla_disable_hlo_passes=fusion)" in gemf_row
    # The metrics plot comes from the saved record alone, with a log-like axis where the
    # values span many orders of magnitude.
    results["targets"]["toy"]["methods"]["iaf"]["per_seed"]["log_q_ref"] = [-1e9] * 3
    vi.plot_metrics(tmp_path / "toy.png", "toy", results["targets"]["toy"])
    assert (tmp_path / "toy.png").stat().st_size > 10_000


def _stats(mean_sem):
    return {m: {"neg_elbo": v, "log_q_ref": None, "khat": None} for m, v in mean_sem.items()}


def test_verdict_rules_on_known_means_and_sems():
    # GEMF-T 10.3 ± 0.1 against full rank 10.0 ± 0.05: 10.3 <= 10.0 + 2 * 0.15 holds, and
    # against IAF 9.0 ± 0.1 (first): 10.3 > 9.0 + 0.2, so not within one SEM of first.
    v = vi.verdict(_stats({"full_rank": (10.0, 0.05), "gemf_t": (10.3, 0.1),
                           "iaf": (9.0, 0.1), "mean_field": (12.0, 0.1)}), True)
    assert v.gaussian[0] == "full_rank" and v.best[0] == "iaf"
    assert (v.rank, v.num_ranked) == (3, 4)
    assert v.vs_gaussian is True and v.vs_first is False
    # Just beyond 2 combined SEM of the Gaussian fails; one combined SEM of first passes.
    v = vi.verdict(_stats({"full_rank": (10.0, 0.05), "gemf_t": (10.31, 0.1)}), True)
    assert v.vs_gaussian is False
    v = vi.verdict(_stats({"iaf": (9.0, 0.1), "gemf_t": (9.19, 0.1)}), True)
    assert v.vs_first is True and v.vs_gaussian is None
    # A non-finite GEMF-T row fails both checks; no GEMF-T row answers neither.
    v = vi.verdict(_stats({"full_rank": (10.0, 0.05), "gemf_t": (float("inf"), float("nan"))}),
                   True)
    assert v.gemf is None and v.vs_gaussian is False and v.vs_first is False
    v = vi.verdict(_stats({"full_rank": (10.0, 0.05)}), False)
    assert v.vs_gaussian is None and v.vs_first is None


def test_verdict_table_in_the_full_report(tmp_path):
    results = {"targets": {"toy": {
        "description": "a toy", "reference": "exact", "log_evidence": None, "num_latents": 3,
        "methods": {"full_rank": _fake_entry((2.0, -9.0, 0.9)),
                    "gemf_t": _fake_entry((5.0, -1.0, 0.3))}}}}
    results["targets"]["toy"]["methods"]["gemf_t"]["created"] = "2026-12-06 20:00:00"
    text = vi.write_report(results, "full", tmp_path).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| toy | 5.100"))
    assert "full-rank 2.100" in row and "| no | no |" in row
    assert "3 seeds, 2026-12-06 20:00:00" in row


@pytest.mark.parametrize("text, value", [
    ("fusion", "fusion"), ("true", True), ("False", False), ("3", 3), ("0.5", 0.5)])
def test_xla_option_values(text, value):
    parsed = vi._option_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_command_line_errors(tmp_path):
    with pytest.raises(SystemExit):
        vi.main(["--quick", "--targets", "no_such_target", "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        vi.main(["--quick", "--eval-draws", "100", "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        vi.main(["--quick", "--methods", "nope", "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        vi.main(["--targets", "eight_schools"])  # a mode is required
    with pytest.raises(SystemExit):
        vi.main(["--quick", "--xla-option", "no_equals_sign", "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit):  # the real suite has its own budget
        vi.main(["--suite", "real", "--full", "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit):  # a paper target is not a real-suite target
        vi.main(["--suite", "real", "--targets", "eight_schools", "--out-dir", str(tmp_path)])
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_numpyro_peers_run(tmp_path):
    pytest.importorskip("numpyro")
    results = vi.main(["--smoke", "--methods", "numpyro_iaf", "numpyro_bnaf", "--no-plots",
                       "--out-dir", str(tmp_path)])
    methods = results["targets"]["binary_tree_linear_4"]["methods"]
    iaf, bnaf = methods["numpyro_iaf"], methods["numpyro_bnaf"]
    assert iaf["status"] == "ok" and bnaf["status"] == "ok"
    assert np.isfinite(iaf["per_seed"]["log_q_ref"][0])
    assert bnaf["per_seed"]["log_q_ref"][0] is None  # BNAF has no inverse
    for entry in (iaf, bnaf):
        assert np.isfinite(entry["per_seed"]["neg_elbo"][0])


# ----------------------------------------------------------------------------- inference_gym


def _random_path(target, rng, scale):
    return {n: np.asarray(target.true_latents[n]
                          + scale * rng.standard_normal(np.shape(target.true_latents[n])),
                          np.float32) for n in target.pinned_model.event_shape._fields}


BRIDGE = list(range(10)) + list(range(20, 30))


@pytest.mark.slow
def test_synthetic_state_space_targets_match_inference_gym():
    """Our synthetic Brownian-motion and Lorenz data sets, smoothing and bridge, in
    inference_gym's general BrownianMotion / LorenzSystem models (NaN or masked steps
    unobserved): the same log density at a point near the true path. (Slow: ~30 s of eager
    first calls; tests/test_models.py checks every target against scipy by default.)"""
    gym = pytest.importorskip("inference_gym.using_jax")
    rng = np.random.default_rng(0)
    for name, observed in (("brownian_smoothing_r", list(range(30))),
                           ("brownian_bridge_r", BRIDGE),
                           ("lorenz_smoothing_r", list(range(30))),
                           ("lorenz_bridge_r", BRIDGE)):
        target = models.get_target(name)
        x = _random_path(target, rng, 0.05)
        path = jnp.stack([jnp.asarray(x[f"x{t}"]) for t in range(30)])
        values = np.full(30, np.nan, np.float32)
        values[observed] = np.asarray(target.observations["obs"])
        if name.startswith("brownian"):
            gym_target = gym.targets.BrownianMotion(values, innovation_noise_scale=0.1,
                                                    observation_noise_scale=0.15)
            theirs = gym_target.unnormalized_log_prob(list(path))
        else:
            gym_target = gym.targets.LorenzSystem(
                np.nan_to_num(values), innovation_scale=0.1, observation_scale=1.0,
                observation_mask=~np.isnan(values), observation_index=0, step_size=0.02)
            theirs = gym_target.unnormalized_log_prob(path)
        ours = target.pinned_model.unnormalized_log_prob(x)
        np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-5, err_msg=name)


# ----------------------------------------------------------------------------- real suite

REAL_TINY = ["--suite", "real", "--quick", "--targets", "eight_schools_centered",
             "gp_regression", "--methods", "mean_field", "gemf_t", "--steps", "20",
             "--sample-size", "4", "--hidden", "8", "8", "--eval-draws", "100",
             "--reference-draws", "100"]


def test_real_suite_quick_writes_moment_metrics_and_records_unsupported(tmp_path):
    # The real suite's machinery at its tiniest: two public models, two methods, one seed.
    results = vi.main(REAL_TINY + ["--out-dir", str(tmp_path)])
    table = (tmp_path / "vi_real_quick.md").read_text()
    saved = json.loads((tmp_path / "vi_real_quick.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert "The GEMF-T rows are from" in table and "| eight_schools_centered |" in table

    schools = saved["targets"]["eight_schools_centered"]
    assert schools["reference"].startswith("NUTS")
    assert schools["num_latents"] == 10
    for method in ("mean_field", "gemf_t"):
        entry = schools["methods"][method]
        assert entry["status"] == "ok", entry["status"]
        per = entry["per_seed"]
        assert entry["seeds"] == [0]
        assert 0 <= per["num_nonfinite_draws"][0] <= 100
        assert 0 <= per["num_nonfinite"][0] <= 20
        for key in ("max_mean_z", "median_sd_ratio", "khat", "fit_seconds"):
            assert np.isfinite(per[key][0]), (method, key)
        assert per["median_sd_ratio"][0] > 0
        assert f"| {vi.METHODS[method]} | " in table
    # tfd.GaussianProcess: until emf_jax maps it, GEMF-T cannot be built and says why; the
    # flat baselines need no per-distribution map.
    gemf = saved["targets"]["gp_regression"]["methods"]["gemf_t"]["status"]
    assert gemf == "ok" or (gemf.startswith("unsupported: ") and "GaussianProcess" in gemf)
    assert saved["targets"]["gp_regression"]["methods"]["mean_field"]["status"] == "ok"


def test_moment_errors_on_known_draws():
    # Two finite draws (0, 0) and (2, 2): mean (1, 1), sd sqrt(2) each; one draw with a
    # non-finite log-weight is left out and counted.
    flat = np.array([[0.0, 0.0], [2.0, 2.0], [5.0, 5.0]])
    log_w = np.array([0.0, 0.0, -np.inf])
    out = vi.moment_errors(flat, log_w, mean=np.array([1.0, 0.0]), stddev=np.array([1.0, 2.0]))
    assert out["num_nonfinite_draws"] == 1
    assert out["max_mean_z"] == pytest.approx(0.5)  # |1 - 0| / 2
    assert out["median_sd_ratio"] == pytest.approx(np.median([math.sqrt(2), math.sqrt(2) / 2]))
    none = vi.moment_errors(flat, np.full(3, np.nan), np.zeros(2), np.ones(2))
    assert none["num_nonfinite_draws"] == 3 and np.isnan(none["max_mean_z"])


def test_real_references_are_shared_by_equal_posteriors():
    from benchmarks import real_models

    chain = real_models.get_real_target("brownian_unknown_scales_markov_chain")
    loop = real_models.get_real_target("brownian_unknown_scales_loop")
    ref_chain = vi.load_real_reference(chain, 200, seed=3)
    ref_loop = vi.load_real_reference(loop, 200, seed=3)
    np.testing.assert_array_equal(ref_chain.mean, ref_loop.mean)
    np.testing.assert_array_equal(ref_chain.draws.locs[:, 7], ref_loop.draws.x_7)
    assert ref_chain.mean.shape == (32,)
    # Eight Schools, centred: the posterior means of mu and tau are about 4.4 and 3.6
    # (posteriordb's reference); 0.3 is several Monte Carlo errors (sd ~3.3, ESS > 1000).
    schools = vi.load_real_reference(real_models.get_real_target("eight_schools_centered"), 10)
    assert schools.mean[0] == pytest.approx(4.4, abs=0.3)
    assert schools.mean[1] == pytest.approx(3.6, abs=0.3)


def test_nested_real_target_reference_keeps_the_nested_structure():
    """sv_sp500_nested (log-volatility a nested JointDistributionCoroutine) shares the Markov
    chain form's NUTS truth: its reference draws have the model's nested structure and
    flatten, in model order, to the chain form's."""
    from benchmarks import real_models

    chain = real_models.get_real_target("sv_sp500_markov_chain")
    nested = real_models.get_real_target("sv_sp500_nested")
    ref_chain = vi.load_real_reference(chain, 50, seed=1)
    ref_nested = vi.load_real_reference(nested, 50, seed=1)
    assert len(ref_nested.draws.log_volatility) == 100
    np.testing.assert_array_equal(ref_nested.draws.log_volatility[17],
                                  ref_chain.draws.log_volatility[:, 17])
    names = list(nested.pinned_model.event_shape._fields)
    flat_nested = vi.flatten_draws(ref_nested.draws, names)
    flat_chain = vi.flatten_draws(ref_chain.draws, list(chain.pinned_model.event_shape._fields))
    np.testing.assert_array_equal(flat_nested, flat_chain)
    # The model's own log-density is finite at the reference draws (they fit its structure).
    log_p = nested.pinned_model.unnormalized_log_prob(ref_nested.draws)
    assert log_p.shape == (50,) and np.all(np.isfinite(np.asarray(log_p)))
