"""Models shared by the structured-layer tests: one per family, and multi-variable models.

Every factory takes a dtype so the same model runs in float32 and float64.
"""
from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from tensorflow_probability.substrates import jax as tfp

tfd = tfp.distributions
tfb = tfp.bijectors
tfde = tfp.experimental.distributions
psd = tfp.math.psd_kernels
linalg = tfp.tf2jax.linalg
Root = tfd.JointDistributionCoroutine.Root


def _c(value, dtype):
    return jnp.asarray(value, dtype)


# name -> fn(parent, dtype) -> distribution of the child, given a Normal parent value.
# Parameters depend on the parent, so the conditional structure is exercised too.
FAMILIES: dict[str, Callable[[Any, Any], Any]] = {
    "Normal": lambda p, d: tfd.Normal(p, _c(0.7, d)),
    "MultivariateNormalDiag": lambda p, d: tfd.MultivariateNormalDiag(
        p + _c([0.0, 1.0, -1.0], d), _c([0.5, 1.5, 2.0], d)),
    "MultivariateNormalTriL": lambda p, d: tfd.MultivariateNormalTriL(
        p + _c([0.0, 1.0, -1.0], d), _c([[1.0, 0, 0], [0.5, 0.8, 0], [-0.3, 0.2, 1.2]], d)),
    "MultivariateNormalFullCovariance": lambda p, d: tfd.MultivariateNormalFullCovariance(
        p + _c([0.0, 1.0], d), _c([[2.0, 0.6], [0.6, 1.0]], d)),
    "LogNormal": lambda p, d: tfd.LogNormal(0.3 * p, _c(0.5, d)),
    "Uniform": lambda p, d: tfd.Uniform(p - 1.0, p + _c(2.0, d)),
    "HalfNormal": lambda p, d: tfd.HalfNormal(jnp.exp(0.3 * p)),
    "Laplace": lambda p, d: tfd.Laplace(p, _c(0.8, d)),
    "Logistic": lambda p, d: tfd.Logistic(p, _c(0.6, d)),
    "Cauchy": lambda p, d: tfd.Cauchy(p, _c(0.5, d)),
    "Gumbel": lambda p, d: tfd.Gumbel(p, _c(1.3, d)),
    "Exponential": lambda p, d: tfd.Exponential(jnp.exp(0.3 * p)),
    "Weibull": lambda p, d: tfd.Weibull(_c(1.7, d), jnp.exp(0.3 * p)),
    "Gamma": lambda p, d: tfd.Gamma(_c(2.5, d), jnp.exp(0.3 * p)),
    "Beta": lambda p, d: tfd.Beta(jnp.exp(0.3 * p) + 1.0, _c(3.0, d)),
    "StudentT": lambda p, d: tfd.StudentT(_c(4.0, d), p, _c(1.5, d)),
    "InverseGamma": lambda p, d: tfd.InverseGamma(_c(3.0, d), jnp.exp(0.3 * p)),
    "Chi2": lambda p, d: tfd.Chi2(jnp.exp(0.2 * p) + 2.0),
    "TruncatedNormal": lambda p, d: tfd.TruncatedNormal(p, _c(1.0, d), _c(-1.0, d), _c(2.0, d)),
    "HalfCauchy": lambda p, d: tfd.HalfCauchy(_c(0.0, d), jnp.exp(0.3 * p)),
    "Pareto": lambda p, d: tfd.Pareto(_c(3.0, d), jnp.exp(0.3 * p)),
    "Kumaraswamy": lambda p, d: tfd.Kumaraswamy(jnp.exp(0.3 * p) + 1.0, _c(2.0, d)),
    "LogLogistic": lambda p, d: tfd.LogLogistic(0.3 * p, _c(0.4, d)),
    "Chi": lambda p, d: tfd.Chi(jnp.exp(0.2 * p) + 2.0),
    "GaussianMixture": lambda p, d: tfd.MixtureSameFamily(
        tfd.Categorical(logits=_c([0.0, 0.5, -0.5], d)),
        tfd.Normal(p + _c([-3.0, 0.0, 3.0], d), _c([0.5, 1.0, 0.7], d))),
    "SinhArcsinh": lambda p, d: tfd.SinhArcsinh(p, _c(1.0, d), skewness=_c(0.5, d),
                                                tailweight=_c(1.2, d)),
    "IndependentGamma": lambda p, d: tfd.Independent(
        tfd.Gamma(_c([1.5, 3.0], d), jnp.exp(0.3 * p)), 1),
    "SampleLaplace": lambda p, d: tfd.Sample(tfd.Laplace(p, _c(1.0, d)), 2),
    "GeneralizedPareto": lambda p, d: tfd.GeneralizedPareto(p, jnp.exp(0.3 * p), _c(0.2, d)),
    "Triangular": lambda p, d: tfd.Triangular(p - 1.0, p + _c(2.0, d), p + _c(0.3, d)),
    "VonMises": lambda p, d: tfd.VonMises(0.5 * p, _c(2.0, d)),
    "MarkovChain": lambda p, d: tfd.MarkovChain(
        tfd.Normal(p, _c(1.0, d)), lambda _, x: tfd.Normal(_c(0.8, d) * x, _c(0.5, d)), 4),
    "MultivariateNormalPrecisionFactorLinearOperator": lambda p, d: (
        tfde.MultivariateNormalPrecisionFactorLinearOperator(
            p + _c([0.0, 1.0, -1.0], d), linalg.LinearOperatorLowerTriangular(
                _c([[2.0, 0, 0], [0.5, 1.0, 0], [0.1, -0.3, 0.8]], d)))),
    "GaussianProcess": lambda p, d: tfd.GaussianProcess(
        psd.ExponentiatedQuadratic(jnp.exp(0.3 * p), _c(0.4, d)),
        index_points=_c(np.linspace(0.0, 1.0, 4)[:, None], d),
        observation_noise_variance=_c(0.05, d), jitter=_c(1e-5, d)),
    "GaussianProcessRegressionModel": lambda p, d: tfd.GaussianProcessRegressionModel(
        psd.ExponentiatedQuadratic(jnp.exp(0.3 * p), _c(0.5, d)),
        index_points=_c(np.linspace(0.0, 1.0, 3)[:, None], d),
        observation_index_points=_c([[0.2], [0.7]], d), observations=_c([1.0, -0.5], d),
        observation_noise_variance=_c(0.1, d), predictive_noise_variance=_c(0.02, d),
        jitter=_c(1e-5, d)),
}

_SCALE_TRIL = [[1.0, 0.0, 0.0], [0.5, 2.0, 0.0], [-0.3, 0.1, 0.7]]


def _strict_lower(m):
    return m[..., np.tril_indices(m.shape[-1], -1)[0], np.tril_indices(m.shape[-1], -1)[1]]


def _lower(m):
    return m[..., np.tril_indices(m.shape[-1])[0], np.tril_indices(m.shape[-1])[1]]


def _outer(chol):
    return chol @ jnp.swapaxes(chol, -1, -2)


# Families whose value has more coordinates than noise dimensions (simplices, matrices):
# name -> (fn(parent, dtype) -> distribution, free_coordinates(value) -> flat vector). The
# free coordinates are those in which the family's log_prob is a density (e.g. the first
# K − 1 of a simplex, the lower triangle of a Wishart matrix even when the distribution
# returns its Cholesky factor); the support bijector's log-det is checked against them.
STRUCTURED_FAMILIES: dict[str, tuple[Callable[[Any, Any], Any], Callable[[Any], Any]]] = {
    "Dirichlet": (lambda p, d: tfd.Dirichlet(jnp.exp(0.2 * p) * _c([1.5, 2.0, 3.0, 2.5], d)),
                  lambda x: x[..., :-1]),
    "LKJ": (lambda p, d: tfd.LKJ(3, 1.5 + 0.5 * jnp.exp(0.3 * p)), _strict_lower),
    "LKJCholeskyOutput": (lambda p, d: tfd.LKJ(3, 1.5 + 0.5 * jnp.exp(0.3 * p),
                                               input_output_cholesky=True),
                          lambda x: _strict_lower(_outer(x))),
    "CholeskyLKJ": (lambda p, d: tfd.CholeskyLKJ(4, 1.2 + jnp.exp(0.3 * p)), _strict_lower),
    "WishartTriL": (lambda p, d: tfd.WishartTriL(4.0 + jnp.exp(0.2 * p), _c(_SCALE_TRIL, d)),
                    _lower),
    "WishartTriLCholeskyOutput": (
        lambda p, d: tfd.WishartTriL(4.0 + jnp.exp(0.2 * p), _c(_SCALE_TRIL, d),
                                     input_output_cholesky=True),
        lambda x: _lower(_outer(x))),
    "WishartLinearOperator": (
        lambda p, d: tfd.WishartLinearOperator(
            3.5 + jnp.exp(0.2 * p), linalg.LinearOperatorFullMatrix(
                _c([[1.0, 0.4], [-0.2, 0.8]], d))),
        _lower),
}


def family_model(family: str, dtype) -> Any:
    """parent ~ N(0.2, 1); child ~ FAMILIES[family](parent) (or STRUCTURED_FAMILIES)."""
    make = FAMILIES[family] if family in FAMILIES else STRUCTURED_FAMILIES[family][0]

    def program():
        parent = yield tfd.Normal(_c(0.2, dtype), _c(1.0, dtype), name="parent")
        yield make(parent, dtype).copy(name="child")

    # AutoBatched: batches of values are vectorised, whatever the child's parameter shapes.
    return tfd.JointDistributionCoroutineAutoBatched(program)


def hierarchical(dtype) -> Any:
    """Eight-schools-like: mean, log-scale, non-centred effects, observations pinned later."""
    def program():
        mu = yield Root(tfd.Normal(_c(0.0, dtype), _c(5.0, dtype), name="mu"))
        tau = yield Root(tfd.HalfNormal(_c(2.0, dtype), name="tau"))
        theta = yield tfd.Sample(tfd.Normal(mu, tau), 4, name="theta")
        yield tfd.Independent(tfd.Normal(theta, _c([1.0, 2.0, 1.5, 3.0], dtype)), 1, name="y")

    return tfd.JointDistributionCoroutine(program)


def chain(dtype, num_steps: int = 30) -> Any:
    """A 30-step random walk written as a Python loop (one variable per step)."""
    def program():
        x = yield Root(tfd.Normal(_c(0.0, dtype), _c(1.0, dtype), name="x0"))
        for t in range(1, num_steps):
            x = yield tfd.Normal(x, _c(0.1, dtype), name=f"x{t}")

    return tfd.JointDistributionCoroutine(program)


def vector_valued(dtype) -> Any:
    """A vector latent with a full-rank conditional and a vector child."""
    def program():
        z = yield Root(tfd.MultivariateNormalTriL(
            jnp.zeros(3, dtype), _c([[1.0, 0, 0], [0.3, 0.7, 0], [0.1, -0.2, 0.5]], dtype),
            name="z"))
        yield tfd.MultivariateNormalDiag(jnp.tanh(z), jnp.exp(0.2 * z), name="w")

    return tfd.JointDistributionCoroutine(program)


def constrained(dtype) -> Any:
    """Positive and bounded latents whose parameters depend on each other."""
    def program():
        rate = yield Root(tfd.LogNormal(_c(0.0, dtype), _c(0.5, dtype), name="rate"))
        scale = yield tfd.Gamma(_c(2.0, dtype), rate, name="scale")
        p = yield tfd.Beta(1.0 + scale, _c(2.0, dtype), name="p")
        yield tfd.Normal(p, scale, name="x")

    return tfd.JointDistributionCoroutine(program)


def sequential(dtype) -> Any:
    """The hierarchical model as a JointDistributionSequentialAutoBatched (list structure)."""
    return tfd.JointDistributionSequentialAutoBatched([
        tfd.Normal(_c(0.0, dtype), _c(1.0, dtype), name="a"),
        lambda a: tfd.HalfNormal(jnp.exp(0.3 * a), name="b"),
        lambda b, a: tfd.Sample(tfd.Normal(a, b), 2, name="c"),
    ])


def named(dtype) -> Any:
    """A JointDistributionNamed (dict structure)."""
    return tfd.JointDistributionNamed(dict(
        a=tfd.Normal(_c(0.0, dtype), _c(1.0, dtype)),
        b=lambda a: tfd.Gamma(_c(2.0, dtype), jnp.exp(0.3 * a)),
        c=lambda b, a: tfd.Normal(a, b),
    ))


def pinned_hierarchical(dtype) -> Any:
    return hierarchical(dtype).experimental_pin(y=_c([1.0, -0.5, 2.0, 0.3], dtype))


def gp_kernel_parents(dtype) -> Any:
    """A GP latent whose amplitude and length scale are LogNormal latents; noisy values."""
    index_points = _c(np.linspace(0.0, 1.0, 5)[:, None], dtype)

    def program():
        amplitude = yield Root(tfd.LogNormal(_c(0.0, dtype), _c(0.3, dtype), name="amplitude"))
        length_scale = yield Root(tfd.LogNormal(_c(-1.0, dtype), _c(0.3, dtype),
                                                name="length_scale"))
        f = yield tfd.GaussianProcess(psd.ExponentiatedQuadratic(amplitude, length_scale),
                                      index_points=index_points, jitter=_c(1e-5, dtype),
                                      name="f")
        yield tfd.Independent(tfd.Normal(f, _c(0.3, dtype)), 1, name="y")

    return tfd.JointDistributionCoroutineAutoBatched(program)


MULTI_VARIABLE_MODELS: dict[str, Callable[[Any], Any]] = {
    "hierarchical": hierarchical,
    "chain30": chain,
    "vector_valued": vector_valued,
    "constrained": constrained,
    "pinned_hierarchical": pinned_hierarchical,
    "sequential": sequential,
    "named": named,
    "gp_kernel_parents": gp_kernel_parents,
}
