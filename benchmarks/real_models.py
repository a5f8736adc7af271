"""Public models written by others, as TFP JointDistribution programs (the ``real`` VI suite).

These are not the EMF paper's targets: each follows a published formulation (inference_gym,
TFP's example notebooks, posteriordb/Stan classics), cited in its builder's docstring, and is
written the way its authors wrote it: ``tfd.JointDistributionCoroutine`` with ``Root``, a
``tfd.MarkovChain`` or a Python loop of scalar variables, ``tfd.GaussianProcess``, heavy-tailed
priors exactly as published. No data is downloaded: the S&P 500 closing prices ship inside the
``inference_gym`` package, the Wisconsin breast-cancer data inside scikit-learn, the Eight
Schools data is public (BDA3 table 5.2); the other data sets are simulated from the model
itself with a fixed seed (each docstring says which latents were fixed).

Every builder returns a :class:`RealTarget`. Its ``pinned_model`` is the VI target. Some
posteriors (centred hierarchies, funnels, latent Gaussian processes) are hard for NUTS in the
form the user writes; for those the target also carries a non-centred reparameterisation
(``nuts_pinned``, an equal posterior) and the map of its draws to the model's latents
(``nuts_to_latents``), which ``benchmarks.ground_truth`` samples instead. Targets that describe
the same posterior (the Markov-chain and Python-loop versions of one model) share one ground
truth (``truth_name``): the flat vectors of their latents, in model order, coincide.

Example:
    >>> from benchmarks import real_models
    >>> target = real_models.get_real_target("neals_funnel")
    >>> target.pinned_model.event_shape._fields
    ('v', 'x')
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

__all__ = ["REAL_TARGET_NAMES", "RealTarget", "get_real_target"]


class RealTarget(NamedTuple):
    """One public model with its data.

    Attributes:
      name: the suite name.
      model: the joint distribution (latents and observed variables).
      pinned_model: ``model.experimental_pin(**observations)``, the VI target.
      observations: the pinned data by variable name.
      description: one line: the model, its data and its source.
      truth_name: the name of the ground-truth cache file (shared by equal posteriors).
      nuts_pinned: a pinned model with the same posterior that NUTS samples instead (a
        non-centred form), or None to sample ``pinned_model`` itself.
      nuts_to_latents: maps a dict of ``nuts_pinned``'s latents (leaves ``[..., *event]``)
        to a tuple of ``pinned_model``'s latents in model order; None with ``nuts_pinned``.
    """

    name: str
    model: Any
    pinned_model: Any
    observations: dict[str, Any]
    description: str
    truth_name: str
    nuts_pinned: Any = None
    nuts_to_latents: Optional[Callable[[dict[str, Any]], tuple]] = None


def _tfp():
    from tensorflow_probability.substrates import jax as tfp

    return tfp


def _const(dtype):
    import jax.numpy as jnp

    return lambda value: jnp.asarray(value, dtype)


# ----------------------------------------------------------------------------- stochastic vol.


def sp500_centered_returns(num_points: int = 100) -> np.ndarray:
    """The last `num_points` daily S&P 500 returns (price differences) minus their mean.

    The closing prices ship inside inference_gym (``internal/datasets/sp500_closing_prices``;
    2517 closes from 2010-06-25 to 2020-06-24), as inference_gym's
    ``StochasticVolatilitySP500Small`` uses them (its ``data.sp500_returns`` needs TensorFlow,
    so the same arithmetic is done here).
    """
    from inference_gym.internal.datasets import sp500_closing_prices

    returns = np.diff(np.asarray(sp500_closing_prices.CLOSING_PRICES, np.float64))
    returns = returns[-num_points:]
    return returns - returns.mean()


def _sv_priors(c, tfd, tfb):
    root = tfd.JointDistributionCoroutine.Root
    persistence = yield root(tfd.TransformedDistribution(
        tfd.Beta(concentration1=c(20.0), concentration0=c(1.5)),
        tfb.Shift(c(-1.0))(tfb.Scale(c(2.0))), name="persistence_of_volatility"))
    mean_log_vol = yield root(tfd.Cauchy(loc=c(0.0), scale=c(5.0), name="mean_log_volatility"))
    shock_scale = yield root(tfd.HalfCauchy(loc=c(0.0), scale=c(2.0),
                                            name="white_noise_shock_scale"))
    return persistence, mean_log_vol, shock_scale


def stochastic_volatility(*, markov_chain: bool, num_steps: int = 100,
                          dtype: Any = np.float32) -> RealTarget:
    """Stochastic volatility of 100 daily S&P 500 returns (inference_gym's
    ``StochasticVolatilitySP500Small``, ``targets/stochastic_volatility.py``)::

        persistence ~ 2 Beta(20, 1.5) - 1          (a TransformedDistribution)
        mean_log_volatility ~ Cauchy(0, 5)
        white_noise_shock_scale ~ HalfCauchy(0, 2)
        h_0 ~ N(mu, sigma / sqrt(1 - phi^2)),  h_t ~ N(mu + phi (h_{t-1} - mu), sigma)
        r_t ~ N(0, exp(h_t / 2))

    With ``markov_chain=True`` the log-volatility is one ``tfd.MarkovChain`` (inference_gym's
    ``use_markov_chain=True``); else one scalar variable per step in a Python loop, each
    return observed right after its step: the same density as inference_gym's default,
    which writes that loop as a nested coroutine (that form is
    :func:`stochastic_volatility_nested`).
    """
    import jax.numpy as jnp

    tfp = _tfp()
    tfd, tfb = tfp.distributions, tfp.bijectors
    c = _const(dtype)
    returns = c(sp500_centered_returns(num_steps))

    if markov_chain:
        def program():
            phi, mu, sigma = yield from _sv_priors(c, tfd, tfb)
            h = yield tfd.MarkovChain(
                initial_state_prior=tfd.Normal(loc=mu, scale=sigma / jnp.sqrt(1.0 - phi ** 2)),
                transition_fn=lambda _, h_t: tfd.Normal(loc=phi * (h_t - mu) + mu,
                                                        scale=sigma),
                num_steps=num_steps, name="log_volatility")
            yield tfd.Independent(tfd.Normal(loc=c(0.0), scale=jnp.exp(h / 2.0)), 1,
                                  name="returns")
        observations = {"returns": returns}
    else:
        def program():
            phi, mu, sigma = yield from _sv_priors(c, tfd, tfb)
            h = yield tfd.Normal(loc=mu, scale=sigma / jnp.sqrt(1.0 - phi ** 2),
                                 name="log_volatility_000")
            yield tfd.Normal(loc=c(0.0), scale=jnp.exp(h / 2.0), name="return_000")
            for t in range(1, num_steps):
                h = yield tfd.Normal(loc=mu + phi * (h - mu), scale=sigma,
                                     name=f"log_volatility_{t:03d}")
                yield tfd.Normal(loc=c(0.0), scale=jnp.exp(h / 2.0), name=f"return_{t:03d}")
        observations = {f"return_{t:03d}": returns[t] for t in range(num_steps)}
    model = tfd.JointDistributionCoroutine(program)
    kind = "one tfd.MarkovChain" if markov_chain else "a Python loop of scalar variables"
    return RealTarget(
        name="sv_sp500_markov_chain" if markov_chain else "sv_sp500_loop",
        model=model, pinned_model=model.experimental_pin(**observations),
        observations=observations,
        description=(f"stochastic volatility of the last {num_steps} S&P 500 daily returns "
                     f"(inference_gym StochasticVolatilitySP500Small), log-volatility as "
                     f"{kind}; Beta/Cauchy/HalfCauchy priors"),
        truth_name="sv_sp500")


def stochastic_volatility_nested(*, num_steps: int = 100, dtype: Any = np.float32
                                 ) -> RealTarget:
    """The same stochastic-volatility posterior as :func:`stochastic_volatility`, written as
    inference_gym's default ``StochasticVolatility`` writes it: the log-volatility is a
    **nested** ``tfd.JointDistributionCoroutine`` (a generator with a Python loop of
    ``num_steps`` scalar steps, ``autoregressive_series_fn``) yielded by the outer program,
    and the returns are one ``tfd.Independent`` of the stacked path::

        log_volatility = yield tfd.JointDistributionCoroutine(
            functools.partial(autoregressive_series_fn, ...), name="log_volatility")
        yield tfd.Independent(tfd.Normal(0, exp(stack(log_volatility) / 2)), 1, ...)

    Its latents, flattened in model order, coincide with the Markov-chain form's, so it
    shares that ground truth (``sv_sp500``).
    """
    import jax.numpy as jnp

    tfp = _tfp()
    tfd, tfb = tfp.distributions, tfp.bijectors
    c = _const(dtype)
    root = tfd.JointDistributionCoroutine.Root
    returns = c(sp500_centered_returns(num_steps))

    def autoregressive_series_fn(num_timesteps, mean, noise_scale, persistence):
        x_t = yield root(tfd.Normal(loc=mean,
                                    scale=noise_scale / jnp.sqrt(1.0 - persistence ** 2)))
        for _ in range(num_timesteps - 1):
            x_t = yield tfd.Normal(loc=mean + persistence * (x_t - mean), scale=noise_scale)

    def program():
        phi, mu, sigma = yield from _sv_priors(c, tfd, tfb)
        log_volatility = yield tfd.JointDistributionCoroutine(
            functools.partial(autoregressive_series_fn, num_timesteps=num_steps, mean=mu,
                              noise_scale=sigma, persistence=phi),
            name="log_volatility")
        yield tfd.Independent(
            tfd.Normal(loc=c(0.0), scale=jnp.exp(jnp.stack(log_volatility, axis=-1) / 2.0)),
            1, name="returns")

    observations = {"returns": returns}
    model = tfd.JointDistributionCoroutine(program)
    return RealTarget(
        name="sv_sp500_nested", model=model,
        pinned_model=model.experimental_pin(**observations), observations=observations,
        description=(f"stochastic volatility of the last {num_steps} S&P 500 daily returns "
                     "(inference_gym StochasticVolatilitySP500Small), log-volatility as a "
                     "nested tfd.JointDistributionCoroutine with a Python loop of steps; "
                     "Beta/Cauchy/HalfCauchy priors"),
        truth_name="sv_sp500")


# ----------------------------------------------------------------------------- hierarchical


def eight_schools_centered(*, dtype: Any = np.float32) -> RealTarget:
    """Eight Schools, centred (posteriordb ``eight_schools-eight_schools_centered``; Rubin 1981,
    BDA3 section 5.5)::

        mu ~ N(0, 5);  tau ~ HalfCauchy(0, 5);  theta_j ~ N(mu, tau);  y_j ~ N(theta_j, s_j)

    The data are the published effects and standard errors. NUTS samples the non-centred
    form ``theta = mu + tau * eta`` (the centred one diverges in the funnel's neck).
    """
    from emf_jax.models import TREATMENT_EFFECTS, TREATMENT_STDDEVS

    tfp = _tfp()
    tfd = tfp.distributions
    c = _const(dtype)
    root = tfd.JointDistributionCoroutine.Root
    sigma = c(TREATMENT_STDDEVS)

    def priors():
        mu = yield root(tfd.Normal(c(0.0), c(5.0), name="mu"))
        tau = yield root(tfd.HalfCauchy(c(0.0), c(5.0), name="tau"))
        return mu, tau

    def program():
        mu, tau = yield from priors()
        theta = yield tfd.Sample(tfd.Normal(mu, tau), 8, name="theta")
        yield tfd.Independent(tfd.Normal(theta, sigma), 1, name="y")

    def program_nc():
        mu, tau = yield from priors()
        eta = yield root(tfd.Sample(tfd.Normal(c(0.0), c(1.0)), 8, name="eta"))
        yield tfd.Independent(tfd.Normal(mu[..., None] + tau[..., None] * eta, sigma), 1,
                              name="y")

    observations = {"y": c(TREATMENT_EFFECTS)}
    model = tfd.JointDistributionCoroutine(program)
    nc = tfd.JointDistributionCoroutine(program_nc).experimental_pin(**observations)
    return RealTarget(
        name="eight_schools_centered", model=model,
        pinned_model=model.experimental_pin(**observations), observations=observations,
        description="Eight Schools, centred, tau ~ HalfCauchy(0, 5) (posteriordb "
                    "eight_schools_centered)",
        truth_name="eight_schools_centered", nuts_pinned=nc,
        nuts_to_latents=lambda d: (d["mu"], d["tau"],
                                   d["mu"][..., None] + d["tau"][..., None] * d["eta"]))


# Houses per county: skewed like Minnesota's radon survey (many counties with a few houses).
_RADON_COUNTY_SIZES = (1, 1, 2, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 10, 12, 14, 18, 25, 40)


def radon_centered(*, dtype: Any = np.float32, seed: int = 0) -> RealTarget:
    """Radon, varying intercepts, centred (posteriordb
    ``radon_mn-radon_hierarchical_intercept_centered``; Gelman & Hill 2007, ch. 12)::

        mu_alpha ~ N(0, 10);  sigma_alpha ~ HalfNormal(1);  sigma_y ~ HalfNormal(1)
        beta ~ N(0, 10);  alpha_j ~ N(mu_alpha, sigma_alpha)
        log_radon_i ~ N(alpha_{county_i} + beta * floor_i, sigma_y)

    Data: 20 counties with 1 to 40 houses (172 in all, skewed as Minnesota's survey), floor
    ~ Bernoulli(0.2), simulated from the model (numpy seed `seed`) with the latents fixed near
    Gelman & Hill's Minnesota estimates: mu_alpha 1.5, sigma_alpha 0.3, beta -0.7,
    sigma_y 0.75, alpha_j ~ N(1.5, 0.3). NUTS samples the non-centred form.
    """
    tfp = _tfp()
    tfd = tfp.distributions
    c = _const(dtype)
    root = tfd.JointDistributionCoroutine.Root
    rng = np.random.default_rng(seed)
    county = np.repeat(np.arange(len(_RADON_COUNTY_SIZES)), _RADON_COUNTY_SIZES)
    floor = (rng.uniform(size=county.size) < 0.2).astype(np.float64)
    alpha_true = rng.normal(1.5, 0.3, size=len(_RADON_COUNTY_SIZES))
    log_radon = rng.normal(alpha_true[county] - 0.7 * floor, 0.75)
    num_counties = len(_RADON_COUNTY_SIZES)
    county_j, floor_c = np.asarray(county), c(floor)

    def priors():
        mu_alpha = yield root(tfd.Normal(c(0.0), c(10.0), name="mu_alpha"))
        sigma_alpha = yield root(tfd.HalfNormal(c(1.0), name="sigma_alpha"))
        sigma_y = yield root(tfd.HalfNormal(c(1.0), name="sigma_y"))
        beta = yield root(tfd.Normal(c(0.0), c(10.0), name="beta"))
        return mu_alpha, sigma_alpha, sigma_y, beta

    def likelihood(alpha, beta, sigma_y):
        loc = alpha[..., county_j] + beta[..., None] * floor_c
        return tfd.Independent(tfd.Normal(loc, sigma_y[..., None]), 1, name="log_radon")

    def program():
        mu_alpha, sigma_alpha, sigma_y, beta = yield from priors()
        alpha = yield tfd.Sample(tfd.Normal(mu_alpha, sigma_alpha), num_counties, name="alpha")
        yield likelihood(alpha, beta, sigma_y)

    def program_nc():
        mu_alpha, sigma_alpha, sigma_y, beta = yield from priors()
        raw = yield root(tfd.Sample(tfd.Normal(c(0.0), c(1.0)), num_counties, name="alpha_raw"))
        yield likelihood(mu_alpha[..., None] + sigma_alpha[..., None] * raw, beta, sigma_y)

    observations = {"log_radon": c(log_radon)}
    model = tfd.JointDistributionCoroutine(program)
    nc = tfd.JointDistributionCoroutine(program_nc).experimental_pin(**observations)
    return RealTarget(
        name="radon_centered", model=model,
        pinned_model=model.experimental_pin(**observations), observations=observations,
        description=f"radon varying intercepts, centred, {num_counties} counties / "
                    f"{county.size} houses simulated (posteriordb "
                    "radon_hierarchical_intercept_centered)",
        truth_name="radon_centered", nuts_pinned=nc,
        nuts_to_latents=lambda d: (
            d["mu_alpha"], d["sigma_alpha"], d["sigma_y"], d["beta"],
            d["mu_alpha"][..., None] + d["sigma_alpha"][..., None] * d["alpha_raw"]))


# ----------------------------------------------------------------------------- GP


def _gp_data(num_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """TFP's GP-regression notebook data: f(x) = sin(10 x) exp(-x^2) plus N(0, 0.1^2) noise
    at uniform points of [-1, 1]."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-1.0, 1.0, size=num_points))
    y = np.sin(10.0 * x) * np.exp(-x ** 2) + rng.normal(0.0, 0.1, size=num_points)
    return x[:, None], y


def gaussian_process(*, explicit_cholesky: bool, num_points: int = 20,
                     dtype: Any = np.float32, seed: int = 0) -> RealTarget:
    """Latent-function GP regression after TFP's "Gaussian Process Regression in TFP" notebook
    (its LogNormal(0, 1) hyperpriors and ExponentiatedQuadratic kernel; the function values
    kept latent, as in a non-conjugate GP)::

        amplitude, length_scale, observation_noise_variance ~ LogNormal(0, 1)
        f ~ GP(0, k_EQ(amplitude, length_scale)) at 20 index points (jitter 1e-4)
        y ~ N(f, sqrt(observation_noise_variance))

    Data: the notebook's f(x) = sin(10 x) exp(-x^2) plus noise 0.1 at 20 uniform points of
    [-1, 1] (numpy seed `seed`). With ``explicit_cholesky=False`` f is a
    ``tfd.GaussianProcess``, as TFP users write it; with True the same prior is a
    ``tfd.MultivariateNormalTriL`` with the Cholesky factor of the kernel matrix. NUTS samples
    the three hyperparameters under the marginal likelihood (``y`` a ``tfd.GaussianProcess``
    with the noise variance added), and each draw gets an exact draw of ``f`` from its
    Gaussian conditional.
    """
    import jax.numpy as jnp

    tfp = _tfp()
    tfd, psd = tfp.distributions, tfp.math.psd_kernels
    c = _const(dtype)
    root = tfd.JointDistributionCoroutine.Root
    x_np, y_np = _gp_data(num_points, seed)
    # TFP's default jitter 1e-6 leaves the float32 kernel matrix numerically singular for
    # long length scales; 1e-4 is what float32 users set.
    index_points, jitter = c(x_np), c(1e-4)

    def priors():
        amplitude = yield root(tfd.LogNormal(c(0.0), c(1.0), name="amplitude"))
        length_scale = yield root(tfd.LogNormal(c(0.0), c(1.0), name="length_scale"))
        noise_var = yield root(tfd.LogNormal(c(0.0), c(1.0), name="observation_noise_variance"))
        return amplitude, length_scale, noise_var

    def chol(amplitude, length_scale):
        kernel = psd.ExponentiatedQuadratic(amplitude, length_scale)
        matrix = kernel.matrix(index_points, index_points)
        return jnp.linalg.cholesky(matrix + jitter * jnp.eye(num_points, dtype=dtype))

    def likelihood(f, noise_var):
        return tfd.Independent(tfd.Normal(f, jnp.sqrt(noise_var)[..., None]), 1, name="y")

    def program():
        amplitude, length_scale, noise_var = yield from priors()
        if explicit_cholesky:
            f = yield tfd.MultivariateNormalTriL(loc=jnp.zeros(num_points, dtype),
                                                 scale_tril=chol(amplitude, length_scale),
                                                 name="f")
        else:
            kernel = psd.ExponentiatedQuadratic(amplitude, length_scale)
            f = yield tfd.GaussianProcess(kernel, index_points=index_points,
                                          observation_noise_variance=jitter, name="f")
        yield likelihood(f, noise_var)

    def program_marginal():
        amplitude, length_scale, noise_var = yield from priors()
        kernel = psd.ExponentiatedQuadratic(amplitude, length_scale)
        yield tfd.GaussianProcess(kernel, index_points=index_points,
                                  observation_noise_variance=noise_var + jitter, name="y")

    y_obs = c(y_np)

    def to_latents(d):
        # f | theta, y is Gaussian: with Kf = K + jitter I and S = Kf + noise I,
        # mean Kf S^-1 y and covariance Kf - Kf S^-1 Kf. One exact draw per NUTS draw of theta
        # (numpy seed 0).
        amplitude, length_scale, noise = (d["amplitude"], d["length_scale"],
                                          d["observation_noise_variance"])
        kernel = psd.ExponentiatedQuadratic(amplitude, length_scale)  # batch: the draws
        eye = jnp.eye(num_points, dtype=amplitude.dtype)
        kf = kernel.matrix(index_points, index_points) + jitter * eye
        s_mat = kf + noise[..., None, None] * eye
        gain = jnp.swapaxes(jnp.linalg.solve(s_mat, kf), -1, -2)  # Kf S^-1 (both symmetric)
        mean = jnp.einsum("...ij,j->...i", gain, y_obs)
        cov = kf - gain @ kf
        tril = jnp.linalg.cholesky(0.5 * (cov + jnp.swapaxes(cov, -1, -2)) + 1e-9 * eye)
        z = np.random.default_rng(0).standard_normal(mean.shape)
        f = mean + jnp.einsum("...ij,...j->...i", tril, z)
        return amplitude, length_scale, noise, f

    observations = {"y": y_obs}
    model = tfd.JointDistributionCoroutine(program)
    marginal = tfd.JointDistributionCoroutine(program_marginal).experimental_pin(**observations)
    kind = "MultivariateNormalTriL of the kernel Cholesky" if explicit_cholesky else \
        "tfd.GaussianProcess"
    return RealTarget(
        name="gp_regression_tril" if explicit_cholesky else "gp_regression",
        model=model, pinned_model=model.experimental_pin(**observations),
        observations=observations,
        description=f"latent GP regression, {num_points} points, f as {kind}, LogNormal "
                    "hyperpriors (TFP GP-regression notebook)",
        truth_name="gp_regression", nuts_pinned=marginal, nuts_to_latents=to_latents)


# ----------------------------------------------------------------------------- sparse LR


def breast_cancer_data(num_features: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's Wisconsin breast-cancer data (569 x 30, shipped with the package),
    features standardised to zero mean and unit variance (inference_gym normalises so)."""
    from sklearn.datasets import load_breast_cancer

    features, labels = load_breast_cancer(return_X_y=True)
    features = features[:, :num_features] if num_features else features
    features = (features - features.mean(0)) / features.std(0)
    return features, labels.astype(np.int32)


def sparse_logistic_regression(*, dtype: Any = np.float32) -> RealTarget:
    """inference_gym's ``SparseLogisticRegression``
    (``targets/sparse_logistic_regression.py``) on the breast-cancer data::

        global_scale ~ Gamma(0.5, 0.5);  local_scales_i ~ Gamma(0.5, 0.5)
        unscaled_weights_i ~ N(0, 1);  w = unscaled_weights * local_scales * global_scale
        label_n ~ Bernoulli(logits = [features_n, 1] @ w)

    (31 weights: 30 features and the bias; 63 latents.) inference_gym writes the prior as a
    ``JointDistributionNamed`` plus a separate likelihood function; here the same
    distributions form one coroutine with the labels as its last variable.
    """
    import jax.numpy as jnp

    tfp = _tfp()
    tfd = tfp.distributions
    c = _const(dtype)
    root = tfd.JointDistributionCoroutine.Root
    features, labels = breast_cancer_data()
    design = c(np.concatenate([features, np.ones((features.shape[0], 1))], axis=1))
    num_weights = design.shape[1]

    def program():
        unscaled = yield root(tfd.Sample(tfd.Normal(c(0.0), c(1.0)), num_weights,
                                         name="unscaled_weights"))
        local = yield root(tfd.Sample(tfd.Gamma(c(0.5), c(0.5)), num_weights,
                                      name="local_scales"))
        global_scale = yield root(tfd.Gamma(c(0.5), c(0.5), name="global_scale"))
        weights = unscaled * local * global_scale[..., None]
        logits = jnp.einsum("nd,...d->...n", design, weights)
        yield tfd.Independent(tfd.Bernoulli(logits=logits), 1, name="labels")

    observations = {"labels": jnp.asarray(labels)}
    model = tfd.JointDistributionCoroutine(program)
    return RealTarget(
        name="sparse_logistic_regression", model=model,
        pinned_model=model.experimental_pin(**observations), observations=observations,
        description="sparse logistic regression, Gamma(0.5, 0.5) local/global scales "
                    "(inference_gym SparseLogisticRegression), breast cancer 569 x 30",
        truth_name="sparse_logistic_regression")


# ----------------------------------------------------------------------------- state space


def brownian_missing_middle_observations() -> np.ndarray:
    """inference_gym's shipped ``brownian_motion_missing_middle_observations`` (30 steps,
    steps 10..19 missing as NaN)."""
    from inference_gym.internal.datasets import brownian_motion_missing_middle_observations as data

    return np.asarray(data.OBSERVED_LOC, np.float64)


def brownian_motion_unknown_scales(*, markov_chain: bool, dtype: Any = np.float32
                                   ) -> RealTarget:
    """inference_gym's ``BrownianMotionUnknownScalesMissingMiddleObservations``
    (``targets/brownian_motion.py``) on its shipped data::

        innovation_noise_scale ~ LogNormal(0, 2);  observation_noise_scale ~ LogNormal(0, 2)
        x_0 ~ N(0, innovation),  x_t ~ N(x_{t-1}, innovation)   (30 steps)
        y_t ~ N(x_t, observation_noise_scale) for the 20 observed steps

    With ``markov_chain=True`` the path is one ``tfd.MarkovChain`` (``use_markov_chain=True``),
    else a Python loop of scalar variables (inference_gym's default). The observations are
    pinned only at observed steps (inference_gym masks the NaN steps in its likelihood).
    """
    tfp = _tfp()
    tfd = tfp.distributions
    c = _const(dtype)
    root = tfd.JointDistributionCoroutine.Root
    locs = brownian_missing_middle_observations()
    num_steps = locs.size
    observed = np.flatnonzero(~np.isnan(locs))

    def priors():
        innovation = yield root(tfd.LogNormal(c(0.0), c(2.0), name="innovation_noise_scale"))
        obs_scale = yield root(tfd.LogNormal(c(0.0), c(2.0), name="observation_noise_scale"))
        return innovation, obs_scale

    if markov_chain:
        def program():
            innovation, obs_scale = yield from priors()
            path = yield tfd.MarkovChain(
                initial_state_prior=tfd.Normal(c(0.0), innovation),
                transition_fn=lambda _, x_t: tfd.Normal(x_t, innovation),
                num_steps=num_steps, name="locs")
            yield tfd.Independent(tfd.Normal(path[..., observed], obs_scale[..., None]), 1,
                                  name="observed_locs")
        observations = {"observed_locs": c(locs[observed])}
    else:
        def program():
            innovation, obs_scale = yield from priors()
            x = yield tfd.Normal(c(0.0), innovation, name="x_0")
            xs = [x]
            for t in range(1, num_steps):
                x = yield tfd.Normal(x, innovation, name=f"x_{t}")
                xs.append(x)
            for t in observed:
                yield tfd.Normal(xs[t], obs_scale, name=f"y_{t}")
        observations = {f"y_{t}": c(locs[t]) for t in observed}
    model = tfd.JointDistributionCoroutine(program)
    kind = "tfd.MarkovChain" if markov_chain else "Python loop"
    return RealTarget(
        name="brownian_unknown_scales_markov_chain" if markov_chain
        else "brownian_unknown_scales_loop",
        model=model, pinned_model=model.experimental_pin(**observations),
        observations=observations,
        description=f"Brownian motion, 30 steps (10 missing), LogNormal(0, 2) unknown "
                    f"scales, {kind} (inference_gym BrownianMotionUnknownScales"
                    "MissingMiddleObservations)",
        truth_name="brownian_unknown_scales")


# ----------------------------------------------------------------------------- funnel


def neals_funnel(*, num_dims: int = 10, observation_scale: float = 1.0,
                 dtype: Any = np.float32, seed: int = 0) -> RealTarget:
    """Neal's funnel (Neal 2003; inference_gym ``NealsFunnel(ndims=10)``) with noisy
    observations of its x's::

        v ~ N(0, 3);  x_i ~ N(0, exp(v / 2)),  i = 1..9;  y_i ~ N(x_i, 1)

    Data: one draw of (v, x, y) from the model itself (numpy seed `seed`). NUTS samples the
    non-centred form ``x = exp(v / 2) z``.
    """
    import jax.numpy as jnp

    tfp = _tfp()
    tfd = tfp.distributions
    c = _const(dtype)
    root = tfd.JointDistributionCoroutine.Root
    rng = np.random.default_rng(seed)
    k = num_dims - 1
    v_true = rng.normal(0.0, 3.0)
    x_true = rng.normal(0.0, np.exp(v_true / 2.0), size=k)
    y = rng.normal(x_true, observation_scale)
    obs_scale = c(observation_scale)

    def program():
        v = yield root(tfd.Normal(c(0.0), c(3.0), name="v"))
        x = yield tfd.Sample(tfd.Normal(c(0.0), jnp.exp(v / 2.0)), k, name="x")
        yield tfd.Independent(tfd.Normal(x, obs_scale), 1, name="y")

    def program_nc():
        v = yield root(tfd.Normal(c(0.0), c(3.0), name="v"))
        z = yield root(tfd.Sample(tfd.Normal(c(0.0), c(1.0)), k, name="z"))
        yield tfd.Independent(tfd.Normal(jnp.exp(v / 2.0)[..., None] * z, obs_scale), 1,
                              name="y")

    observations = {"y": c(y)}
    model = tfd.JointDistributionCoroutine(program)
    nc = tfd.JointDistributionCoroutine(program_nc).experimental_pin(**observations)
    return RealTarget(
        name="neals_funnel", model=model, pinned_model=model.experimental_pin(**observations),
        observations=observations,
        description=f"Neal's funnel d={num_dims} with N(x, {observation_scale:g}) "
                    f"observations of its x's (simulated; inference_gym NealsFunnel; "
                    f"true v = {v_true:.2f})",
        truth_name="neals_funnel", nuts_pinned=nc,
        nuts_to_latents=lambda d: (d["v"], jnp.exp(d["v"] / 2.0)[..., None] * d["z"]))


# ----------------------------------------------------------------------------- mixture


def gaussian_mixture_dirichlet(*, num_points: int = 100, dtype: Any = np.float32,
                               seed: int = 0) -> RealTarget:
    """A three-component Gaussian mixture with Dirichlet mixture weights, as the Stan user
    guide's finite mixtures (posteriordb's ``normal_mixture`` with ``K`` components) and TFP
    users write it, the labels summed out by ``tfd.MixtureSameFamily``::

        weights ~ Dirichlet(1, 1, 1)
        locs_k ~ N(m_k, 1),  m = (-2, 0, 2)    (component-specific priors: no label switching)
        scale ~ HalfNormal(2)
        y_i ~ sum_k weights_k N(locs_k, scale),  i = 1..100

    Data: simulated with weights (0.5, 0.3, 0.2), locs (-2.5, 0, 2.5), scale 0.8 (numpy seed
    `seed`). The weights live on the simplex: the Dirichlet is the latent of interest.
    """
    import jax.numpy as jnp

    tfp = _tfp()
    tfd = tfp.distributions
    c = _const(dtype)
    root = tfd.JointDistributionCoroutine.Root
    rng = np.random.default_rng(seed)
    true_weights, true_locs = np.array([0.5, 0.3, 0.2]), np.array([-2.5, 0.0, 2.5])
    component = rng.choice(3, size=num_points, p=true_weights)
    y = rng.normal(true_locs[component], 0.8)

    def program():
        weights = yield root(tfd.Dirichlet(concentration=c(np.ones(3)), name="weights"))
        locs = yield root(tfd.Independent(tfd.Normal(c([-2.0, 0.0, 2.0]), c(1.0)), 1,
                                          name="locs"))
        scale = yield root(tfd.HalfNormal(c(2.0), name="scale"))
        yield tfd.Sample(tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(probs=weights),
            components_distribution=tfd.Normal(locs, jnp.expand_dims(scale, -1))),
            num_points, name="y")

    observations = {"y": c(y)}
    model = tfd.JointDistributionCoroutine(program)
    return RealTarget(
        name="gaussian_mixture_dirichlet", model=model,
        pinned_model=model.experimental_pin(**observations), observations=observations,
        description=(f"3-component Gaussian mixture, Dirichlet(1, 1, 1) weights, "
                     f"{num_points} simulated points (Stan user guide / posteriordb "
                     "normal_mixture, K = 3)"),
        truth_name="gaussian_mixture_dirichlet")


# ----------------------------------------------------------------------------- registry


_BUILDERS: dict[str, Callable[..., RealTarget]] = {
    "eight_schools_centered": eight_schools_centered,
    "neals_funnel": neals_funnel,
    "radon_centered": radon_centered,
    "brownian_unknown_scales_markov_chain": functools.partial(
        brownian_motion_unknown_scales, markov_chain=True),
    "brownian_unknown_scales_loop": functools.partial(
        brownian_motion_unknown_scales, markov_chain=False),
    "gp_regression_tril": functools.partial(gaussian_process, explicit_cholesky=True),
    "gp_regression": functools.partial(gaussian_process, explicit_cholesky=False),
    "sparse_logistic_regression": sparse_logistic_regression,
    "sv_sp500_markov_chain": functools.partial(stochastic_volatility, markov_chain=True),
    "sv_sp500_loop": functools.partial(stochastic_volatility, markov_chain=False),
    "sv_sp500_nested": stochastic_volatility_nested,
    "gaussian_mixture_dirichlet": gaussian_mixture_dirichlet,
}

REAL_TARGET_NAMES: tuple[str, ...] = tuple(_BUILDERS)
"""The suite's target names, cheapest first."""


def get_real_target(name: str, *, dtype: Any = np.float32) -> RealTarget:
    """Builds suite target `name` in `dtype`.

    Args:
      name: one of :data:`REAL_TARGET_NAMES`.
      dtype: the float dtype of the model's parameters and data (float64 for NUTS).

    Returns:
      A :class:`RealTarget`.

    Raises:
      ValueError: for an unknown name.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown real target {name!r}; choose from {REAL_TARGET_NAMES}.")
    return _BUILDERS[name](dtype=dtype)
