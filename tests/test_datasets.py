"""Tests for emf_jax.datasets: shapes, dtypes, determinism and statistical sanity.

Statistical tolerances are 5 standard errors of the checked statistic at the sample size used
(for a sample standard deviation of M normal draws the standard error is about
``sd / sqrt(2 M)``), with fixed seeds.
"""
from __future__ import annotations

import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emf_jax import datasets
from emf_jax.datasets import hierarchical as hierarchical_module

Z = 5.0  # tolerances in standard errors

EXPECTED_SHAPES = {
    "eight_gaussians": (2,),
    "checkerboard": (2,),
    "two_spirals": (2,),
    "diamond": (2,),
    "brownian_motion": (30, 1),
    "ornstein_uhlenbeck": (30, 1),
    "lorenz": (30, 3),
    "van_der_pol": (120, 2),
    "iris": (10, 4),
    "digits": (20, 64),
}


def _key(seed: int) -> jax.Array:
    return jax.random.key(seed)


def _assert_std(samples, expected, *, what):
    samples = np.asarray(samples, np.float64)
    tol = Z * expected / math.sqrt(2 * samples.size)
    assert abs(samples.std() - expected) < tol, (what, samples.std(), expected, tol)


def _assert_mean_zero(samples, sd, *, what):
    samples = np.asarray(samples, np.float64)
    tol = Z * sd / math.sqrt(samples.size)
    assert abs(samples.mean()) < tol, (what, samples.mean(), tol)


# ----------------------------------------------------------------------------- all data sets


def test_registry_names():
    assert set(datasets.DATASETS) == set(EXPECTED_SHAPES)
    with pytest.raises(TypeError):
        datasets.DATASETS["new"] = datasets.lorenz  # read-only


@pytest.mark.parametrize("name", sorted(EXPECTED_SHAPES))
def test_shape_dtype_determinism(name):
    options = {"source": "synthetic"} if name in ("iris", "digits") else {}
    x = datasets.load(name, _key(0), 17, **options)
    assert x.shape == (17,) + EXPECTED_SHAPES[name]
    assert x.dtype == jnp.float32
    assert np.all(np.isfinite(x))
    np.testing.assert_array_equal(x, datasets.load(name, _key(0), 17, **options))
    assert not np.array_equal(x, datasets.load(name, _key(1), 17, **options))


@pytest.mark.parametrize("name", ["eight_gaussians", "brownian_motion", "iris"])
def test_float64(name, x64):
    options = {"source": "synthetic"} if name == "iris" else {}
    assert datasets.load(name, _key(0), 3, **options).dtype == jnp.float64
    assert datasets.load(name, _key(0), 3, dtype=jnp.float32, **options).dtype == jnp.float32


def test_jit_with_static_num_samples():
    sample = jax.jit(datasets.brownian_motion, static_argnums=1, static_argnames="num_steps")
    x = sample(_key(0), 4, num_steps=5)
    assert x.shape == (4, 5, 1)
    np.testing.assert_allclose(x, datasets.brownian_motion(_key(0), 4, num_steps=5), rtol=1e-6)
    keys = jax.random.split(_key(1), 3)
    batched = jax.vmap(lambda k: datasets.checkerboard(k, 5))(keys)
    assert batched.shape == (3, 5, 2)


def test_load_errors_and_options():
    with pytest.raises(ValueError, match="Unknown data set 'mnist'"):
        datasets.load("mnist", _key(0), 3)
    assert datasets.load("ornstein_uhlenbeck", _key(0), 3, num_steps=7).shape == (3, 7, 1)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: datasets.eight_gaussians(_key(0), 0), ValueError, "num_samples"),
        (lambda: datasets.checkerboard(_key(0), 2.5), TypeError, "num_samples"),
        (lambda: datasets.two_spirals(_key(0), 3, noise=-1.0), ValueError, "noise"),
        (lambda: datasets.diamond(_key(0), 3, width=0), ValueError, "width"),
        (lambda: datasets.brownian_motion(_key(0), 3, sigma=0.0), ValueError, "sigma"),
        (lambda: datasets.lorenz(_key(0), 3, dt=-0.1), ValueError, "dt"),
        (lambda: datasets.van_der_pol(_key(0), 3, dtype=jnp.int32), TypeError, "dtype"),
        (lambda: datasets.iris_like(_key(0), 3, group_mean="median"), ValueError,
         "group_mean"),
        (lambda: datasets.iris_like(_key(0), 3, source="web"), ValueError, "source"),
        (lambda: datasets.iris_like(_key(0), 3, num_items=50, group_mean="rest",
                                    source="synthetic"), ValueError, "num_items"),
        (lambda: datasets.digits_like(_key(0), 3, alpha=0.5, source="synthetic"),
         ValueError, "alpha"),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------- 2-D toys


def test_eight_gaussians_modes():
    n = 8000
    x = np.asarray(datasets.eight_gaussians(_key(2), n), np.float64)
    radius, scale = 2.0 * math.sqrt(2.0), 0.5 / math.sqrt(2.0)
    angles = np.arange(8) * np.pi / 4
    centres = radius * np.stack([np.cos(angles), np.sin(angles)], -1)
    nearest = np.argmin(((x[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    counts = np.bincount(nearest, minlength=8)
    assert np.all(np.abs(counts - n / 8) < Z * math.sqrt(n / 8 * 7 / 8)), counts
    for k in range(8):
        cluster = x[nearest == k]
        assert np.all(np.abs(cluster.mean(0) - centres[k]) < Z * scale / math.sqrt(len(cluster)))
    _assert_std(x - centres[nearest], scale, what="component scale")


def test_checkerboard_squares():
    n = 8000
    x = np.asarray(datasets.checkerboard(_key(3), n), np.float64)
    assert np.all(np.abs(x) <= 4.0)
    cell = np.floor(x / 2.0).astype(int)
    assert np.all((cell.sum(1) % 2) == 0)  # only the filled squares
    index = (cell[:, 0] + 2) * 4 + (cell[:, 1] + 2)
    counts = np.bincount(index, minlength=16)
    filled = counts[counts > 0]
    assert len(filled) == 8
    assert np.all(np.abs(filled - n / 8) < Z * math.sqrt(n / 8 * 7 / 8)), filled
    offset = x / 2.0 - np.floor(x / 2.0)  # uniform on [0, 1) within a square
    assert np.all(np.abs(offset.mean(0) - 0.5) < Z * math.sqrt(1 / 12 / n))


def test_two_spirals_geometry():
    n = 8000
    x = np.asarray(datasets.two_spirals(_key(4), n), np.float64)
    # Point symmetry about the origin.
    _assert_mean_zero(x[:, 0], x[:, 0].std(), what="x mean")
    _assert_mean_zero(x[:, 1], x[:, 1].std(), what="y mean")
    # Without noise, 3 |x| lies within the jitter (at most 0.5 sqrt 2) of n = 3 pi sqrt(u).
    clean = 3.0 * np.asarray(datasets.two_spirals(_key(5), n, noise=0.0), np.float64)
    r = np.linalg.norm(clean, axis=1)
    assert r.max() <= 3 * np.pi + 0.5 * math.sqrt(2) + 1e-4
    # E[n] = 2 pi and sd(n) = pi / sqrt(2); the jitter moves r by at most 0.71.
    assert abs(r.mean() - 2 * np.pi) < 0.5 * math.sqrt(2) + Z * (np.pi / math.sqrt(2 * n))
    # Each point is within the jitter of one of the two arms +-(-n cos n, n sin n).
    grid = np.linspace(0.0, 3 * np.pi, 5000)  # arc length between grid points <= 0.019
    arm = np.stack([-grid * np.cos(grid), grid * np.sin(grid)], -1)
    points = clean[:1000]
    distance = np.minimum(
        np.linalg.norm(points[:, None] - arm[None], axis=-1).min(1),
        np.linalg.norm(-points[:, None] - arm[None], axis=-1).min(1),
    )
    assert distance.max() <= 0.5 * math.sqrt(2) + 0.02


def test_diamond_grid():
    n, width, bound, scale = 8000, 4, 2.5, 0.04
    x = np.asarray(datasets.diamond(_key(6), n, width=width, bound=bound, scale=scale),
                   np.float64)
    c = math.sqrt(0.5)
    unrotated = x @ np.array([[c, -c], [c, c]])  # rotate back by -45 degrees
    grid = np.linspace(-bound, bound, width)
    index = np.argmin(np.abs(unrotated[..., None] - grid), axis=-1)
    _assert_std(unrotated - grid[index], scale, what="component scale")
    for axis in range(2):
        counts = np.bincount(index[:, axis], minlength=width)
        p = 1 / width
        assert np.all(np.abs(counts - n * p) < Z * math.sqrt(n * p * (1 - p))), counts
    # The rotated outer corners lie on the axes at distance bound * sqrt(2).
    assert abs(np.abs(x).max() - bound * math.sqrt(2)) < 6 * scale


# ----------------------------------------------------------------------------- time series


def test_brownian_motion_increments():
    n, sigma = 2000, 0.1
    x = np.asarray(datasets.brownian_motion(_key(7), n, sigma=sigma), np.float64)[..., 0]
    increments = np.diff(x, axis=1)
    _assert_std(x[:, 0], sigma, what="x0")
    _assert_std(increments, sigma, what="increments")
    _assert_mean_zero(increments, sigma, what="increments")
    lag1 = np.mean(increments[:, 1:] * increments[:, :-1]) / sigma**2
    assert abs(lag1) < Z / math.sqrt(increments[:, 1:].size)


def test_ornstein_uhlenbeck_marginal_variance():
    n, a, s0, sigma, steps = 4000, 0.8, 5.0, 0.5, 30
    x = np.asarray(datasets.ornstein_uhlenbeck(_key(8), n), np.float64)[..., 0]
    t = np.array([0, 1, 3, steps - 1])
    var = a ** (2 * t) * s0**2 + sigma**2 * (1 - a ** (2 * t)) / (1 - a**2)
    for k, v in zip(t, var):
        _assert_std(x[:, k], math.sqrt(v), what=f"marginal sd at t={k}")
    stationary = sigma**2 / (1 - a**2)
    assert abs(var[-1] - stationary) < 1e-4  # t = 29 is stationary to this precision
    residual = x[:, 1:] - a * x[:, :-1]
    _assert_std(residual, sigma, what="innovations")


def _lorenz_np(x, sigma=10.0, rho=28.0, beta=8.0 / 3.0):
    u, v, w = x[..., 0], x[..., 1], x[..., 2]
    return np.stack([sigma * (v - u), u * (rho - w) - v, u * v - beta * w], -1)


def _van_der_pol_np(x, mu=1.0):
    p, v = x[..., 0], x[..., 1]
    return np.stack([v, mu * (1 - p**2) * v - p], -1)


@pytest.mark.parametrize(
    "name, drift, dt, state_dim",
    [("lorenz", _lorenz_np, 0.02, 3), ("van_der_pol", _van_der_pol_np, 0.05, 2)],
)
def test_euler_maruyama_residuals(name, drift, dt, state_dim, x64):
    # float64 so that the recomputed Euler step is exact to ~1e-12 even where |x| ~ 50.
    n, innovation = 500, 0.1
    x = np.asarray(datasets.load(name, _key(9), n, num_steps=20), np.float64)
    assert x.shape == (n, 20, state_dim)
    _assert_std(x[:, 0], 1.0, what="initial state")
    _assert_mean_zero(x[:, 0], 1.0, what="initial state")
    residual = x[:, 1:] - (x[:, :-1] + dt * drift(x[:, :-1]))
    for d in range(state_dim):
        _assert_std(residual[..., d], innovation, what=f"innovation, coordinate {d}")
    # Without noise the paths are the deterministic Euler recursion.
    clean = np.asarray(datasets.load(name, _key(9), 4, num_steps=20, innovation_scale=0.0))
    np.testing.assert_allclose(clean[:, 1:], clean[:, :-1] + dt * drift(clean[:, :-1]),
                               rtol=1e-12, atol=1e-12)


def test_drift_functions_match_numpy():
    x = np.random.default_rng(0).normal(0.0, 5.0, (6, 3))
    np.testing.assert_allclose(datasets.lorenz_drift(jnp.asarray(x)), _lorenz_np(x), rtol=1e-5)
    np.testing.assert_allclose(datasets.van_der_pol_drift(jnp.asarray(x[:, :2]), mu=2.0),
                               _van_der_pol_np(x[:, :2], mu=2.0), rtol=1e-5)


def test_flatten_time_series_order():
    paths = jnp.arange(2 * 3 * 4.0).reshape(2, 3, 4)
    flat = datasets.flatten_time_series(paths)
    assert flat.shape == (2, 12)
    assert flat[1, 2 * 4 + 3] == paths[1, 2, 3]  # entry t * D + d
    np.testing.assert_array_equal(datasets.unflatten_time_series(flat, 4), paths)
    with pytest.raises(ValueError, match="paths"):
        datasets.flatten_time_series(paths[0])
    with pytest.raises(ValueError, match="flat"):
        datasets.unflatten_time_series(flat, 5)


# ----------------------------------------------------------------------------- hierarchical


@pytest.fixture(scope="module")
def sklearn_datasets():
    return pytest.importorskip("sklearn.datasets")


def _assert_standardized(groups):
    """Items of ``[G, items, F]`` groups have mean 0 and variance 1 per feature.

    Groups are the independent units (items in a group share a class), so the standard
    errors come from the spread of the per-group averages.
    """
    first = groups.mean(1)
    second = (groups**2).mean(1)
    num_groups = len(groups)
    mean_tol = Z * first.std(0) / math.sqrt(num_groups)
    assert np.all(np.abs(first.mean(0)) < mean_tol), (first.mean(0), mean_tol)
    var_tol = Z * second.std(0) / math.sqrt(num_groups) + mean_tol**2  # |mean|^2 < mean_tol^2
    variance = second.mean(0) - first.mean(0) ** 2
    assert np.all(np.abs(variance - 1.0) < var_tol), (variance, var_tol)


def _member_ids(rows, data, atol=1e-4):
    """Index of each row among the rows of ``data`` (first match within atol), -1 if none."""
    matches = np.all(np.abs(rows[:, None] - data[None]) <= atol, axis=-1)
    return np.where(matches.any(1), matches.argmax(1), -1)


@pytest.mark.parametrize("group_mean", ["class", "items", "rest"])
def test_iris_groups_are_members_of_one_class(group_mean, sklearn_datasets):
    iris = sklearn_datasets.load_iris()
    data, target = iris.data, iris.target
    mean, std = data.mean(0), data.std(0)
    x = np.asarray(datasets.iris_like(_key(10), 40, group_mean=group_mean, dequantize=False,
                                      source="sklearn"), np.float64)
    assert x.shape == (40, 10, 4)
    raw = x * std + mean
    # Iris has duplicate rows: compare values, and check the classes of the matches.
    for group in raw:
        ids = _member_ids(group[1:], data)
        assert np.all(ids >= 0)
        classes = target[ids]
        assert np.all(classes == classes[0])
        members = data[target == classes[0]]
        if group_mean == "class":
            expected = members.mean(0)
        elif group_mean == "items":
            expected = group[1:].mean(0)
        else:
            expected = (members.sum(0) - group[1:].sum(0)) / (len(members) - 9)
        np.testing.assert_allclose(group[0], expected, atol=1e-4)
        # Drawn without replacement: never more copies of a value than the class holds.
        values, copies = np.unique(group[1:], axis=0, return_counts=True)
        available = [np.sum(np.all(np.isclose(members, v, atol=1e-4), 1)) for v in values]
        assert np.all(copies <= available)


def test_iris_dequantization_and_standardization(sklearn_datasets):
    data = sklearn_datasets.load_iris().data
    x = np.asarray(datasets.iris_like(_key(11), 3000, source="sklearn"), np.float64)
    # Standardised by the whole data set: overall mean 0 and sd 1 (classes are balanced).
    _assert_standardized(x[:, 1:])
    items = x[:, 1:].reshape(-1, 4)
    raw = items * data.std(0) + data.mean(0)
    # Within half a measurement step (0.05 cm) of the 0.1 cm grid, and not on it.
    offset = raw * 10.0 - np.round(raw * 10.0)
    assert np.all(np.abs(offset) <= 0.5 + 1e-4)
    assert np.abs(offset).mean() > 0.2  # uniform on [-1/2, 1/2): mean |u| = 1/4


def test_digits_groups(sklearn_datasets):
    digits = sklearn_datasets.load_digits()
    alpha = 0.05
    x = np.asarray(datasets.digits_like(_key(12), 12, source="sklearn"), np.float64)
    assert x.shape == (12, 20, 64)
    bound = math.log((1 - alpha) / alpha)
    assert np.all(np.abs(x) < bound + 1e-5)
    # Undo the logit: 17 p - 1/2 is the pixel plus dequantisation noise in [-1/2, 1/2).
    p = (1.0 / (1.0 + np.exp(-x[:, 1:])) - alpha) / (1 - 2 * alpha)
    noisy_pixels = 17 * p - 0.5
    for group, group_pixels in zip(x, noisy_pixels):
        # Distinct integer images differ by >= 1 somewhere, so this identifies the image.
        ids = _member_ids(group_pixels, digits.data, atol=0.5 + 1e-3)
        assert np.all(ids >= 0)
        classes = digits.target[ids]
        assert np.all(classes == classes[0])
        midpoint = (digits.data[digits.target == classes[0]] + 0.5) / 17
        expected = np.log(alpha + (1 - 2 * alpha) * midpoint) - np.log1p(
            -(alpha + (1 - 2 * alpha) * midpoint))
        np.testing.assert_allclose(group[0], expected.mean(0), atol=1e-4)


def test_synthetic_stand_ins_statistics():
    x = np.asarray(datasets.iris_like(_key(13), 3000, source="synthetic"), np.float64)
    _assert_standardized(x[:, 1:])
    # Row 0 is one of the 3 class means; 'items' mode averages the items exactly.
    assert len(np.unique(np.round(x[:, 0], 5), axis=0)) == 3
    y = np.asarray(datasets.iris_like(_key(13), 5, source="synthetic", group_mean="items"))
    np.testing.assert_allclose(y[:, 0], y[:, 1:].mean(1), rtol=1e-5, atol=1e-6)
    d = np.asarray(datasets.digits_like(_key(14), 200, source="synthetic"), np.float64)
    assert len(np.unique(np.round(d[:, 0], 5), axis=0)) == 10
    _assert_std(d[:, 1:] - d[:, :1], 0.5, what="synthetic digits noise")


def test_missing_sklearn(monkeypatch):
    # The real loader's message when scikit-learn cannot be imported.
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match=r"emf_jax\[bench\]"):
        hierarchical_module._sklearn_data.__wrapped__("iris")

    def unavailable(name):
        raise ImportError("no scikit-learn")

    monkeypatch.setattr(hierarchical_module, "_sklearn_data", unavailable)
    with pytest.raises(ImportError):
        datasets.iris_like(_key(0), 3, source="sklearn")
    with pytest.warns(UserWarning, match="synthetic stand-in"):
        x = datasets.digits_like(_key(0), 3)
    assert x.shape == (3, 20, 64)
