"""The property suite over every registered family: float32 and float64, jit and non-jit.

One row per family in `ROWS`, built from `tests.structured_models` (every registered family
has one there, `tests/test_families.py`), plus the maps the issue found untested: the
dense-operator MVN branch and the accepting path of the scalar-CDF fallback. Each row runs
once per dtype through one function (`_everything`) that computes all checks at once on a
few events; it is compiled once (jit) and also run eagerly (non-jit) on the same inputs.

The checks, each of which can fail for a wrong map:

- **round trip** of the gated map ``e → x → e`` at random gates λ ∈ (0, 1) (the gated map is
  invertible) and of the ungated map;
- **log-det** of the gated and the ungated map, and of their inverses, against
  ``slogdet(jax.jacfwd)`` of the map onto the coordinates in which the family's density is
  taken, with an *absolute* tolerance per coordinate (`_log_det_tol`);
- **quantile**: the ungated map at ``e = Φ⁻¹(q)`` against the family's quantile ``F⁻¹(q)``
  from scipy.stats (or an elementary formula) at fixed probabilities q — independent of the
  map's own code and of `log_prob`; for the Gaussian (affine) families the map
  ``x = m + S e`` against the family's mean and covariance (``S Sᵀ = Σ``).

The default run holds every row; `test_every_family_backbone_and_architecture_has_a_row`
fails when the registry, `BACKBONES` or `ARCHITECTURES` gains a name the tables lack.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.special
import scipy.stats
from jax.flatten_util import ravel_pytree
from tensorflow_probability.substrates import jax as tfp

from emf_jax.apply import apply_forward, apply_inverse
from emf_jax.transforms import registry, transform_for
from tests import structured_models as sm

tfd = tfp.distributions
linalg = tfp.tf2jax.linalg

PARENT = 0.2                              # the parent value every row's child is built at
PROBABILITIES = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
NUM_EVENTS = 2                            # random events per row for round trip and log-det


def _np(value: Any) -> np.ndarray:
    return np.asarray(value, np.float64)


# -- quantile references: (distribution at the parent, probabilities q[K, *value_shape]) ->
# F⁻¹(q), computed in float64 by scipy from the distribution's parameters. ------------------

def _scipy(make_frozen: Callable[[Any], Any]) -> Callable[[Any, np.ndarray], np.ndarray]:
    return lambda d, q: make_frozen(d).ppf(q)


def _bisect_cdf(cdf: Callable[[float], float], low: float, high: float):
    """F⁻¹ of an increasing scalar CDF by Brent's method, to float64 precision."""
    def quantile(q: np.ndarray) -> np.ndarray:
        flat = [scipy.optimize.brentq(lambda x, p=p: cdf(x) - p, low, high, xtol=1e-15,
                                      rtol=4 * np.finfo(float).eps) for p in np.ravel(q)]
        return np.reshape(flat, np.shape(q))
    return quantile


def _mixture_quantile(d: Any, q: np.ndarray) -> np.ndarray:
    w = scipy.special.softmax(_np(d.mixture_distribution.logits))
    comp = d.components_distribution
    loc, scale = _np(comp.loc), _np(comp.scale)
    cdf = lambda x: float(np.sum(w * scipy.stats.norm.cdf(x, loc, scale)))  # noqa: E731
    return _bisect_cdf(cdf, -50.0, 50.0)(q)


def _von_mises_quantile(d: Any, q: np.ndarray) -> np.ndarray:
    # TFP's VonMises lives on [-π, π]: its CDF there is G(x) = F(x) − F(−π), F scipy's
    # (cumulative across periods) von Mises CDF about `loc`.
    frozen = scipy.stats.vonmises(_np(d.concentration), loc=_np(d.loc))
    offset = frozen.cdf(-np.pi)
    assert abs(frozen.cdf(np.pi) - offset - 1.0) < 1e-12, "scipy's vonmises CDF wraps"
    return _bisect_cdf(lambda x: float(frozen.cdf(x) - offset), -np.pi, np.pi)(q)


def _sinh_arcsinh_quantile(d: Any, q: np.ndarray) -> np.ndarray:
    # TFP's definition: Y = loc + scale · F(Z) · 2 / F₀(2), F(z) = sinh((asinh z + skew)·tail),
    # F₀ the same with skew 0, Z ~ N(0, 1); increasing in Z, so F⁻¹(q) is Y at Z = Φ⁻¹(q).
    skew, tail = _np(d.skewness), _np(d.tailweight)
    z = scipy.stats.norm.ppf(q)
    return _np(d.loc) + _np(d.scale) * np.sinh((np.arcsinh(z) + skew) * tail) * 2.0 / np.sinh(
        np.arcsinh(2.0) * tail)


def _kumaraswamy_quantile(d: Any, q: np.ndarray) -> np.ndarray:
    # F(x) = 1 − (1 − xᵃ)ᵇ, so F⁻¹(q) = (1 − (1 − q)^(1/b))^(1/a).
    a, b = _np(d.concentration1), _np(d.concentration0)
    return (1.0 - (1.0 - q) ** (1.0 / b)) ** (1.0 / a)


QUANTILES: dict[str, Callable[[Any, np.ndarray], np.ndarray]] = {
    "Normal": _scipy(lambda d: scipy.stats.norm(_np(d.loc), _np(d.scale))),
    "LogNormal": _scipy(lambda d: scipy.stats.lognorm(_np(d.scale), scale=np.exp(_np(d.loc)))),
    "Uniform": _scipy(lambda d: scipy.stats.uniform(_np(d.low), _np(d.high) - _np(d.low))),
    "HalfNormal": _scipy(lambda d: scipy.stats.halfnorm(scale=_np(d.scale))),
    "Laplace": _scipy(lambda d: scipy.stats.laplace(_np(d.loc), _np(d.scale))),
    "Logistic": _scipy(lambda d: scipy.stats.logistic(_np(d.loc), _np(d.scale))),
    "Cauchy": _scipy(lambda d: scipy.stats.cauchy(_np(d.loc), _np(d.scale))),
    "Gumbel": _scipy(lambda d: scipy.stats.gumbel_r(_np(d.loc), _np(d.scale))),
    "Exponential": _scipy(lambda d: scipy.stats.expon(scale=1.0 / _np(d.rate))),
    "Weibull": _scipy(lambda d: scipy.stats.weibull_min(_np(d.concentration),
                                                        scale=_np(d.scale))),
    "Gamma": _scipy(lambda d: scipy.stats.gamma(_np(d.concentration), scale=1 / _np(d.rate))),
    "Beta": _scipy(lambda d: scipy.stats.beta(_np(d.concentration1), _np(d.concentration0))),
    "StudentT": _scipy(lambda d: scipy.stats.t(_np(d.df), _np(d.loc), _np(d.scale))),
    "InverseGamma": _scipy(lambda d: scipy.stats.invgamma(_np(d.concentration),
                                                          scale=_np(d.scale))),
    "Chi2": _scipy(lambda d: scipy.stats.chi2(_np(d.df))),
    "TruncatedNormal": _scipy(lambda d: scipy.stats.truncnorm(
        (_np(d.low) - _np(d.loc)) / _np(d.scale), (_np(d.high) - _np(d.loc)) / _np(d.scale),
        _np(d.loc), _np(d.scale))),
    "HalfCauchy": _scipy(lambda d: scipy.stats.halfcauchy(_np(d.loc), _np(d.scale))),
    "Pareto": _scipy(lambda d: scipy.stats.pareto(_np(d.concentration), scale=_np(d.scale))),
    "Kumaraswamy": _kumaraswamy_quantile,
    "LogLogistic": _scipy(lambda d: scipy.stats.fisk(1.0 / _np(d.scale),
                                                     scale=np.exp(_np(d.loc)))),
    "Chi": _scipy(lambda d: scipy.stats.chi(_np(d.df))),
    "GaussianMixture": _mixture_quantile,
    "SinhArcsinh": _sinh_arcsinh_quantile,
    "IndependentGamma": _scipy(lambda d: scipy.stats.gamma(
        _np(d.distribution.concentration), scale=1 / _np(d.distribution.rate))),
    "SampleLaplace": _scipy(lambda d: scipy.stats.laplace(_np(d.distribution.loc),
                                                          _np(d.distribution.scale))),
    "GeneralizedPareto": _scipy(lambda d: scipy.stats.genpareto(
        _np(d.concentration), _np(d.loc), _np(d.scale))),
    "Triangular": _scipy(lambda d: scipy.stats.triang(
        (_np(d.peak) - _np(d.low)) / (_np(d.high) - _np(d.low)), _np(d.low),
        _np(d.high) - _np(d.low))),
    "VonMises": _von_mises_quantile,
    "fallback:ExponentiallyModifiedGaussian": _scipy(lambda d: scipy.stats.exponnorm(
        1.0 / (_np(d.scale) * _np(d.rate)), _np(d.loc), _np(d.scale))),
}


# -- Gaussian references: the family's mean and covariance, for x = m + S e. -----------------

def _tfp_moments(d: Any) -> tuple[np.ndarray, np.ndarray]:
    return _np(d.mean()), _np(d.covariance())


def _gaussian_process_moments(d: Any) -> tuple[np.ndarray, np.ndarray]:
    # TFP factors (and samples, and evaluates log_prob with) the covariance plus `jitter`·I;
    # `covariance()` leaves the jitter out.
    mean, cov = _tfp_moments(d)
    return mean, cov + float(d.jitter) * np.eye(cov.shape[-1])


def _markov_chain_moments(d: Any) -> tuple[np.ndarray, np.ndarray]:
    # Linear-Gaussian steps x_t = a·x_{t−1} + b·ε_t, read off the transition at 0 and 1.
    init = d.initial_state_prior
    a = float(d.transition_fn(0, 1.0).loc - d.transition_fn(0, 0.0).loc)
    b = float(d.transition_fn(0, 0.0).scale)
    n = d.num_steps
    mean = float(init.loc) * a ** np.arange(n)
    var = np.empty(n)
    var[0] = float(init.scale) ** 2
    for t in range(1, n):
        var[t] = a * a * var[t - 1] + b * b
    s, t = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    cov = a ** np.abs(t - s) * var[np.minimum(s, t)]    # Cov(x_s, x_t) = a^|t−s|·Var(x_min)
    return mean, cov


def _precision_factor_moments(d: Any) -> tuple[np.ndarray, np.ndarray]:
    factor = _np(d.precision_factor.to_dense())
    return _np(d.loc), np.linalg.inv(factor @ factor.T)


GAUSSIANS: dict[str, Callable[[Any], tuple[np.ndarray, np.ndarray]]] = {
    "MultivariateNormalDiag": _tfp_moments,
    "MultivariateNormalTriL": _tfp_moments,
    "MultivariateNormalFullCovariance": _tfp_moments,
    "MultivariateNormalDenseOperator": _tfp_moments,
    "MultivariateNormalPrecisionFactorLinearOperator": _precision_factor_moments,
    "GaussianProcess": _gaussian_process_moments,
    "GaussianProcessRegressionModel": _gaussian_process_moments,
    "MarkovChain": _markov_chain_moments,
}


class Row(NamedTuple):
    """One family of the property suite: its conditional and its free coordinates."""

    make: Callable[[Any, Any], Any]             # (parent, dtype) -> distribution
    free: Optional[Callable[[Any], Any]]        # value -> free coordinates (None: all)


_DENSE = [[1.0, 0.4, -0.2], [0.3, 1.5, 0.1], [-0.5, 0.2, 0.9]]  # not triangular, invertible

ROWS: dict[str, Row] = {
    **{name: Row(make, None) for name, make in sm.FAMILIES.items()},
    **{name: Row(make, free) for name, (make, free) in sm.STRUCTURED_FAMILIES.items()},
    # The dense branch of the MVN map (affine.py: `affine_matvec(..., lower_triangular=False)`,
    # gates.py: slogdet and `jnp.linalg.solve`): a full, non-triangular scale operator.
    "MultivariateNormalDenseOperator": Row(lambda p, d: tfd.MultivariateNormalLinearOperator(
        p + jnp.asarray([0.0, 1.0, -1.0], d),
        linalg.LinearOperatorFullMatrix(jnp.asarray(_DENSE, d))), None),
    # A continuous scalar family with no registered class: the scalar-CDF fallback accepts it.
    "fallback:ExponentiallyModifiedGaussian": Row(
        lambda p, d: tfd.ExponentiallyModifiedGaussian(p, jnp.asarray(0.8, d),
                                                       jnp.asarray(1.5, d)), None),
}


def _tolerances(dtype: Any) -> dict[str, float]:
    """Absolute tolerances from the dtype's machine epsilon ε.

    - round trip, per coordinate: ``C_rt·ε·max(1, |e|)`` with C_rt = 2¹⁰. The inverse of a
      numeric map stops at a residual of a few ulps of ``Φ⁻¹(F(x))``, and the error of ``e``
      is that residual times the condition of ``e ↦ x ↦ e`` through the support bijector
      (≲ 10² at the events used); measured maximum: about 30ε (float32) and 60ε (float64).
    - log-det, per coordinate: ``C_ld·ε`` with C_ld = 2¹⁰, summed over the D coordinates
      (``D·C_ld·ε``; about 1.2e-4 per coordinate in float32). Each coordinate's term is a sum
      of O(10) log-density terms of magnitude ≲ 10, each rounded to O(ε) relative; jacfwd
      through the Newton solve (implicit function theorem) adds the solve's residual over
      the derivative. Measured maximum: about 40ε per coordinate.
    - quantile: ``C_q·ε·max(1, |x|)`` with C_q = 2¹², relative to the value: the map composes
      Φ, a (special-function or Newton) quantile and the support bijector; at q ∈ [0.05, 0.95]
      the quantile's condition number ``q·(F⁻¹)'(q)/F⁻¹(q)`` is ≲ 30 for these rows, and
      the special-function inverses (igammainv, betaincinv) are accurate to ~10² ulps.
    """
    eps = float(jnp.finfo(dtype).eps)
    return {"round_trip": 2.0 ** 10 * eps, "log_det": 2.0 ** 10 * eps,
            "quantile": 2.0 ** 12 * eps}


def _noise_shape(t: Any, dist: Any) -> tuple[int, ...]:
    value_shape = tuple(dist.batch_shape) + tuple(dist.event_shape)
    if hasattr(t, "unconstrained_shape"):
        return tuple(t.unconstrained_shape(value_shape))
    support = t.support_bijector
    return value_shape if support is None else tuple(support.inverse_event_shape(value_shape))


def _check_fn(name: str, dtype: Any) -> tuple[Callable, tuple[int, ...]]:
    """The one function that computes every check of a row, and the row's noise shape."""
    row = ROWS[name]
    free = (lambda x: x) if row.free is None else row.free
    noise_shape = _noise_shape(transform_for(row.make(jnp.asarray(PARENT, dtype), dtype)),
                               row.make(jnp.asarray(PARENT, dtype), dtype))

    def one_event(parent, e, w):
        t = transform_for(row.make(parent, dtype), variable_name=name)
        flat_e, unravel = ravel_pytree(e)

        def mapped(flat, gate):
            x = apply_forward(t, unravel(flat), gate)[1]
            return jnp.ravel(free(x))

        # Only the gated map: its log-det sums the ungated map's log f'(e) (through
        # log(λ·f'(e) + 1 − λ)) and its inverse solves with the ungated inverse f⁻¹, so a
        # wrong f' or f⁻¹ fails here too; the ungated values are checked by the quantiles.
        _, x, log_det = apply_forward(t, e, w)
        e_back, _, inverse_log_det = apply_inverse(t, x, w)
        return {"gated": dict(x=x, e_back=e_back, log_det=log_det,
                              inverse_log_det=inverse_log_det,
                              jacobian=jax.jacfwd(mapped)(flat_e, w))}

    def probe(parent, e):
        t = transform_for(row.make(parent, dtype), variable_name=name)
        return apply_forward(t, e, None)[1]

    def everything(parent, events, gates, probes):
        return (jax.vmap(one_event, (None, 0, 0))(parent, events, gates),
                jax.vmap(probe, (None, 0))(parent, probes))

    return everything, noise_shape


def _inputs(name: str, dtype: Any, noise_shape: tuple[int, ...]):
    """Random events and gates (fixed seeds), and the probe noise of the quantile checks."""
    seed = sum(map(ord, name))
    events = jax.random.normal(jax.random.key(seed), (NUM_EVENTS,) + noise_shape, dtype)
    # Gates spread across (0, 1) (w ~ 2·N(0, 1)), not only the near-identity start.
    gates = 2.0 * jax.random.normal(jax.random.key(seed + 1), (NUM_EVENTS,), dtype)
    if name in GAUSSIANS:
        # e = 0 and the unit vectors: x(0) = m and x(e_i) − m = S[:, i].
        size = int(np.prod(noise_shape))
        probes = np.concatenate([np.zeros((1, size)), np.eye(size)]).reshape(
            (size + 1,) + noise_shape)
    else:
        # Every coordinate at the same probability: e = Φ⁻¹(q).
        probes = np.broadcast_to(scipy.stats.norm.ppf(PROBABILITIES).reshape(
            (-1,) + (1,) * len(noise_shape)), (PROBABILITIES.size,) + noise_shape)
    return events, gates, jnp.asarray(probes, dtype)


def _assert_checks(name, dtype, results, events, probes):
    tol = _tolerances(dtype)
    by_event, probed = jax.tree.map(np.asarray, results)
    size = int(np.prod(events.shape[1:]))
    events = np.asarray(events, np.float64)
    for label, got in by_event.items():
        for leaf in (got["x"], got["log_det"]):
            assert np.all(np.isfinite(leaf)), f"{name} ({label}): non-finite values"
        assert got["x"].dtype == dtype, f"{name} ({label}): dtype {got['x'].dtype} != {dtype}"
        scale = np.maximum(1.0, np.abs(events))
        err = np.max(np.abs(got["e_back"] - events) / scale)
        assert err <= tol["round_trip"], (
            f"{name} ({label}): round trip error {err:.3g} > {tol['round_trip']:.3g}")
        for i in range(events.shape[0]):
            jac = np.asarray(got["jacobian"][i], np.float64).reshape(size, size)
            sign, expected = np.linalg.slogdet(jac)
            assert sign != 0, f"{name} ({label}): singular Jacobian"
            bound = size * tol["log_det"]
            err = abs(float(got["log_det"][i]) - expected)
            assert err <= bound, (f"{name} ({label}): log-det {float(got['log_det'][i]):.8g} "
                                  f"!= slogdet(jacfwd) {expected:.8g} (error {err:.3g} > "
                                  f"{bound:.3g} = D·{tol['log_det']:.3g}, D = {size})")
            err = abs(float(got["inverse_log_det"][i]) + expected)
            assert err <= bound, (f"{name} ({label}): inverse log-det "
                                  f"{float(got['inverse_log_det'][i]):.8g} != {-expected:.8g}")
    # The reference is the distribution the map was built from (parameters in `dtype`).
    dist = ROWS[name].make(jnp.asarray(PARENT, dtype), dtype)
    if name in QUANTILES:
        # The reference at the probabilities of the rounded probe noise, Φ(e) in float64.
        q = scipy.stats.norm.cdf(np.asarray(probes, np.float64))
        expected = QUANTILES[name](dist, q)
        err = np.max(np.abs(probed - expected) / np.maximum(1.0, np.abs(expected)))
        assert err <= tol["quantile"], (
            f"{name}: the ungated map at Φ⁻¹(q) differs from the quantile F⁻¹(q) by {err:.3g} "
            f"(> {tol['quantile']:.3g}); map {probed.ravel()[:5]}, quantile "
            f"{expected.ravel()[:5]}")
    elif name in GAUSSIANS:
        mean, cov = GAUSSIANS[name](dist)
        flat = probed.reshape(probed.shape[0], -1).astype(np.float64)
        columns = (flat[1:] - flat[0]).T
        # float32 parameters: the reference moments themselves carry O(ε_32) relative error.
        atol = tol["quantile"] * max(1.0, float(np.max(np.abs(cov))))
        np.testing.assert_allclose(flat[0], np.ravel(mean), atol=atol, err_msg=f"{name}: mean")
        np.testing.assert_allclose(columns @ columns.T, cov, atol=atol,
                                   err_msg=f"{name}: S Sᵀ != covariance")


def _run(name: str, dtype: Any, use_jit: bool) -> None:
    fn, noise_shape = _check_fn(name, dtype)
    events, gates, probes = _inputs(name, dtype, noise_shape)
    fn = jax.jit(fn) if use_jit else fn
    results = fn(jnp.asarray(PARENT, dtype), events, gates, probes)
    _assert_checks(name, np.dtype(dtype), results, events, probes)


# Rows whose maps solve numerically or evaluate special-function inverses compile for
# several seconds each: float32 under jit in the default run, the rest under `-m slow`.
# The structured families' default coverage is tests/test_structured_families.py (round
# trip, log-det onto the free coordinates, two-sample and moment tests, float32 and float64).
HEAVY = {"Gamma", "Chi2", "Chi", "InverseGamma", "Beta", "StudentT", "IndependentGamma",
         "TruncatedNormal", "GaussianMixture", "GeneralizedPareto", "Triangular", "VonMises",
         "fallback:ExponentiallyModifiedGaussian", *sm.STRUCTURED_FAMILIES}


# The heaviest float32 rows (10-40 s of compilation each on a 2-core CI machine) also move
# to `-m slow`; their gated layers keep default coverage in tests/test_structured.py
# (round trip and log-det vs jacfwd through the traced model, float32 and float64).
SLOWEST = {"Beta", "Chi", "Chi2", "GaussianMixture", "TruncatedNormal",
           "fallback:ExponentiallyModifiedGaussian"}


def _grid(dtypes, *, heavy_by_default):
    for name in sorted(ROWS):
        for dtype in dtypes:
            slow = (name in sm.STRUCTURED_FAMILIES or name in SLOWEST
                    or (name in HEAVY and not heavy_by_default))
            yield pytest.param(name, dtype, id=f"{name}-{jnp.dtype(dtype).name}",
                               marks=(pytest.mark.slow,) if slow else ())


def _with_dtype(dtype, fn):
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", dtype == jnp.float64)
    try:
        fn()
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.mark.parametrize("name,dtype", list(_grid([jnp.float32], heavy_by_default=True))
                         + list(_grid([jnp.float64], heavy_by_default=False)))
def test_family_properties_under_jit(name, dtype):
    _with_dtype(dtype, lambda: _run(name, dtype, use_jit=True))


# Eager evaluation repeats what the jitted variant checks op by op, so by default it runs
# for the light float32 rows only; the whole grid runs under `-m slow`.
@pytest.mark.parametrize("name,dtype", list(_grid([jnp.float32], heavy_by_default=False))
                         + [pytest.param(*p.values, id=p.id, marks=(pytest.mark.slow,))
                            for p in _grid([jnp.float64], heavy_by_default=False)])
def test_family_properties_without_jit(name, dtype):
    _with_dtype(dtype, lambda: _run(name, dtype, use_jit=False))


def test_the_fallback_row_reaches_the_scalar_cdf_fallback():
    dist = ROWS["fallback:ExponentiallyModifiedGaussian"].make(jnp.float32(PARENT), jnp.float32)
    registered = [c.__name__ for c in type(dist).__mro__ if c in registry._REGISTRY]
    assert not registered, f"the fallback row's family is registered through {registered}"
    assert registry._FALLBACKS[0](dist) is not None, "the scalar-CDF fallback declined it"


def test_every_family_backbone_and_architecture_has_a_row(monkeypatch):
    """Fails, naming them, for registered families, backbones or architectures without a row.

    Expectations come from the sources of truth: the registry (emf_jax's own maps), and
    `emf_jax.architectures.BACKBONES` / `ARCHITECTURES`; the tables are `ROWS` (with
    `QUANTILES` / `GAUSSIANS` / the structured families for the reference check) here and
    `tests.test_learning.ARCHITECTURE_ROWS` / `BACKBONE_ROWS`.
    """
    from emf_jax.architectures import ARCHITECTURES, BACKBONES
    from tests import test_learning

    originals = dict(registry._REGISTRY)
    used: set[type] = set()
    for cls, fn in originals.items():
        def recording(d, cls=cls, fn=fn):
            used.add(cls)
            return fn(d)
        monkeypatch.setitem(registry._REGISTRY, cls, recording)
    for name, row in ROWS.items():
        transform_for(row.make(jnp.float32(PARENT), jnp.float32), variable_name=name)
    own = {cls for cls, fn in originals.items()
           if fn.__module__.startswith("emf_jax.") and not cls.__name__.startswith("_")}
    problems = []
    missing = sorted(cls.__name__ for cls in own - used)
    if missing:
        problems.append(f"registered families without a row in tests/test_properties.ROWS "
                        f"(add one to tests/structured_models.FAMILIES): {missing}")
    unreferenced = sorted(n for n in ROWS if n not in QUANTILES and n not in GAUSSIANS
                          and n not in sm.STRUCTURED_FAMILIES)
    if unreferenced:
        problems.append(f"rows without a quantile or Gaussian reference: {unreferenced}")
    for label, table, truth in (
            ("architectures", test_learning.ARCHITECTURE_ROWS, ARCHITECTURES),
            ("backbones", test_learning.BACKBONE_ROWS, BACKBONES)):
        lacking = sorted(set(truth) - set(table))
        stale = sorted(set(table) - set(truth))
        if lacking:
            problems.append(f"{label} without a row in tests/test_learning.py: {lacking}")
        if stale:
            problems.append(f"rows in tests/test_learning.py for unknown {label}: {stale}")
    assert not problems, "; ".join(problems)
