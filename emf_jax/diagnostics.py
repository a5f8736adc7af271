"""Diagnostics of fitted surrogates: the PSIS k-hat of importance weights, and plots.

- :func:`psis_khat`: the Pareto-smoothed importance sampling shape estimate k̂ (Vehtari,
  Simpson, Gelman, Yao and Gabry, "Pareto smoothed importance sampling", JMLR 2024) of the
  log importance weights ``log p(x, y) - log q(x)`` of draws ``x ~ q``. It estimates how heavy
  the right tail of the weights is: k̂ < 0.5 means the weights have finite variance and ``q``
  is a good importance proposal for ``p``; 0.5 < k̂ < 0.7 still gives usable importance
  sampling estimates; k̂ > 0.7 means ``q`` misses mass of the posterior (the estimate of
  E_p[f] converges impractically slowly). Unlike the ELBO, it looks at the mass-covering
  side of the fit.
- :func:`elbo`: the one ELBO estimate of the package and its benchmarks, with its standard
  error and the number of draws whose log weight was not finite (counted, never dropped in
  silence).
- :func:`plot_elbo_trace` and :func:`plot_marginals`: matplotlib figures of a fit's loss
  trace and of a surrogate's marginals against reference draws.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from tensorflow_probability.substrates.jax.internal import nest_util

__all__ = ["ElboEstimate", "elbo", "plot_elbo_trace", "plot_marginals", "psis_khat",
           "psis_tail_length"]

Array = jax.Array

# Zhang & Stephens (2009): grid size 30 + sqrt(n); the grid's scale comes from the first
# quartile of the exceedances with this factor.
_ZS_PRIOR_SCALE = 3.0
# Vehtari et al.: weakly informative prior on k, worth this many observations at k = 0.5.
_PRIOR_K_WEIGHT = 10.0
_PRIOR_K_CENTRE = 0.5
# Smallest number of draws for which the tail has at least 5 points (ceil(25 / 5) = 5).
_MIN_DRAWS = 25


class ElboEstimate(NamedTuple):
    """A Monte Carlo ELBO estimate (see `elbo`).

    Attributes:
      mean: the mean log weight over the finite draws (``-inf`` when none is finite).
      sem: its standard error (``std / sqrt(number of finite draws)``).
      num_nonfinite: draws whose log weight was NaN or infinite.
      log_weights: every draw's ``log p(x, y) - log q(x)``, as a NumPy array.

    Example:
      >>> import numpy as np
      >>> ElboEstimate(-1.0, 0.1, 0, np.zeros(3)).mean
      -1.0
    """

    mean: float
    sem: float
    num_nonfinite: int
    log_weights: np.ndarray


def elbo(target_log_prob_fn: Callable[..., Any], surrogate: Any, *, num_draws: int = 1000,
         seed: Any) -> ElboEstimate:
    """The ELBO ``E_q[log p(x, y) − log q(x)]`` of a surrogate, from fresh draws.

    The draws and their surrogate log-densities come from one call of
    ``surrogate.experimental_sample_and_log_prob`` (jit-compiled); the target is called as
    `tfp.vi` calls it: ``target(*x)`` for tuple-like draws, ``target(**x)`` for dicts,
    ``target(x)`` otherwise. Draws whose log weight is not finite are left out of the mean and
    counted in ``num_nonfinite``: a caller must report them.

    Args:
      target_log_prob_fn: the unnormalised target log-density, e.g.
        ``pinned.unnormalized_log_prob``.
      surrogate: a `tfd.Distribution` with `experimental_sample_and_log_prob`.
      num_draws: Monte Carlo draws.
      seed: a PRNG key or an int.

    Returns:
      An `ElboEstimate`.

    Example:
      >>> import jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> estimate = elbo(tfd.Normal(0., 1.).log_prob, tfd.Normal(0., 1.), num_draws=100,
      ...                 seed=jax.random.key(0))
      >>> round(estimate.mean, 6), estimate.num_nonfinite     # q = p: the ELBO is log Z = 0
      (0.0, 0)
    """
    from emf_jax._checks import as_key, check_int
    num_draws = check_int("num_draws", num_draws, 1)

    def log_weights(key):
        x, log_q = surrogate.experimental_sample_and_log_prob(num_draws, seed=key)
        return nest_util.call_fn(target_log_prob_fn, x) - log_q

    weights = np.asarray(jax.jit(log_weights)(as_key(seed)), dtype=np.float64)
    finite = np.isfinite(weights)
    count = int(finite.sum())
    if count == 0:
        return ElboEstimate(-math.inf, math.nan, int(weights.size), weights)
    kept = weights[finite]
    sem = float(kept.std(ddof=1) / math.sqrt(count)) if count > 1 else math.nan
    return ElboEstimate(float(kept.mean()), sem, int(weights.size - count), weights)


def psis_tail_length(num_draws: int) -> int:
    """Number of largest weights PSIS fits the generalised Pareto to.

    ``M = ceil(min(S / 5, 3 sqrt(S)))`` for ``S`` draws (Vehtari et al. 2024), the rule that
    keeps the bias of k̂ small while its variance decreases with ``S``.

    Args:
      num_draws: the number of importance weights ``S``.

    Returns:
      ``M`` as a Python int.

    Example:
      >>> psis_tail_length(1000), psis_tail_length(100)
      (95, 20)
    """
    if isinstance(num_draws, bool) or not isinstance(num_draws, (int, np.integer)):
        raise TypeError(f"num_draws must be an integer, got {num_draws!r}.")
    if num_draws < _MIN_DRAWS:
        raise ValueError(f"num_draws must be >= {_MIN_DRAWS} (a tail of >= 5), got {num_draws}.")
    return int(math.ceil(min(0.2 * num_draws, 3.0 * math.sqrt(num_draws))))


def _gpd_shape_zhang_stephens(exceedances: Array) -> Array:
    """Posterior-mean estimate of the generalised Pareto shape of sorted exceedances.

    Zhang & Stephens (2009): the profile likelihood of ``theta = -k / sigma`` is evaluated on a
    grid of ``30 + sqrt(n)`` points placed by the sample's first quartile and maximum; the
    estimate of ``theta`` is the likelihood-weighted grid mean, and
    ``k = mean(log(1 - theta x))``. Then the weakly informative prior of Vehtari et al.
    shrinks ``k`` towards 0.5 with the weight of 10 observations.

    Args:
      exceedances: ``[n]`` non-negative values in ascending order, the last one positive.

    Returns:
      The shape estimate k̂ (a scalar of the input's dtype).
    """
    x = exceedances
    n = x.shape[0]
    dtype = x.dtype
    m = 30 + int(math.sqrt(n))
    j = jnp.arange(1, m + 1, dtype=dtype)
    first_quartile = x[int(n / 4 + 0.5) - 1]
    theta = 1.0 / x[-1] + (1.0 - jnp.sqrt(m / (j - 0.5))) / (_ZS_PRIOR_SCALE * first_quartile)
    k_of_theta = jnp.mean(jnp.log1p(-theta[:, None] * x[None, :]), axis=1)
    profile = n * (jnp.log(-theta / k_of_theta) - k_of_theta - 1.0)
    profile = jnp.where(jnp.isnan(profile), -jnp.inf, profile)
    weights = jax.nn.softmax(profile)
    # Grid points of negligible weight are dropped, as in the reference implementations,
    # so that a grid point with an unstable likelihood cannot drag the mean.
    weights = jnp.where(weights >= 10 * jnp.finfo(dtype).eps, weights, 0.0)
    theta_hat = jnp.sum(weights * theta) / jnp.sum(weights)
    k_hat = jnp.mean(jnp.log1p(-theta_hat * x))
    return (n * k_hat + _PRIOR_K_WEIGHT * _PRIOR_K_CENTRE) / (n + _PRIOR_K_WEIGHT)


def psis_khat(log_weights: Any) -> Array:
    """The PSIS Pareto shape diagnostic k̂ of a vector of log importance weights.

    The ``M`` largest weights (:func:`psis_tail_length`) are taken as exceedances over the
    ``(M + 1)``-th largest, and a generalised Pareto distribution is fitted to them by Zhang &
    Stephens' (2009) estimator with Vehtari et al.'s (2024) weakly informative prior on the
    shape. The weights are used relative to their maximum, so any additive constant in the
    log weights (an unnormalised target) does not matter.

    Rules of thumb (Vehtari et al. 2024): k̂ < 0.5 good; k̂ < ``min(1 - 1 / log10(S), 0.7)``
    usable; larger means the proposal misses posterior mass. Exactly equal tail weights (no
    tail at all, e.g. ``q = p``) give ``-inf``; a NaN log weight gives NaN, a ``+inf`` one
    ``+inf``. ``-inf`` log weights (zero weights) are allowed.

    Works under ``jax.jit`` and ``jax.vmap`` (the tail length is static, from the shape).

    Args:
      log_weights: ``[S]`` log importance weights ``log p(x_s) - log q(x_s)``, ``S >= 25``.

    Returns:
      k̂ as a scalar array (float64 under ``jax_enable_x64``, else float32).

    Raises:
      ValueError: if `log_weights` is not one-dimensional or has fewer than 25 entries.
      TypeError: if `log_weights` is not real.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> u = jax.random.uniform(jax.random.key(0), (4000,))
      >>> pareto_weights = (1.0 - u) ** -0.8 - 1.0         # generalised Pareto, k = 0.8
      >>> round(float(psis_khat(jnp.log(pareto_weights))), 1)
      0.8
      >>> bool(psis_khat(jnp.zeros(100)) < 0.5)              # equal weights: no tail
      True
    """
    lw = jnp.asarray(log_weights)
    if not (jnp.issubdtype(lw.dtype, jnp.floating) or jnp.issubdtype(lw.dtype, jnp.integer)):
        raise TypeError(f"log_weights must be real, got dtype {lw.dtype}.")
    if lw.ndim != 1:
        raise ValueError(f"log_weights must be one-dimensional, got shape {lw.shape}.")
    num = lw.shape[0]
    if num < _MIN_DRAWS:
        raise ValueError(f"log_weights must have >= {_MIN_DRAWS} entries, got {num}.")
    dtype = jnp.promote_types(lw.dtype, jnp.result_type(float))
    if jnp.issubdtype(lw.dtype, jnp.integer):
        dtype = jnp.result_type(float)
    # One compiled program per (length, dtype): eager use would otherwise dispatch (and
    # compile) each of the few dozen operations separately.
    return _psis_khat(lw.astype(dtype))


@jax.jit
def _psis_khat(lw: Array) -> Array:
    num = lw.shape[0]
    dtype = lw.dtype
    tail_len = psis_tail_length(num)

    has_nan = jnp.any(jnp.isnan(lw))
    has_pos_inf = jnp.any(lw == jnp.inf)
    safe = jnp.where(jnp.isnan(lw) | (lw == jnp.inf), -jnp.inf, lw)
    ordered = jnp.sort(safe)
    top = ordered[-1]
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    # Exceedances on the scale of the largest weight (exp(lw - max) <= 1: no overflow; the
    # Pareto shape does not depend on the scale).
    cutoff = jnp.exp(ordered[num - tail_len - 1] - top)
    exceedances = jnp.exp(ordered[num - tail_len:] - top) - cutoff
    exceedances = jnp.maximum(exceedances, 0.0)

    no_tail = exceedances[-1] <= 0.0
    # Guard the estimator against division by zero when there is no tail; the result is
    # replaced below.
    fit_input = jnp.where(no_tail, jnp.linspace(1.0, 2.0, tail_len, dtype=dtype), exceedances)
    # A quartile exceedance that underflowed to zero while the maximum did not: a tail
    # spanning more orders of magnitude than the dtype holds, i.e. an extremely heavy one.
    underflow = fit_input[int(tail_len / 4 + 0.5) - 1] <= 0.0
    fit_input = jnp.where(underflow, jnp.linspace(1.0, 2.0, tail_len, dtype=dtype), fit_input)
    k_hat = _gpd_shape_zhang_stephens(fit_input)
    k_hat = jnp.where(no_tail, -jnp.inf, k_hat)
    k_hat = jnp.where(underflow & ~no_tail, jnp.inf, k_hat)
    k_hat = jnp.where(has_pos_inf, jnp.inf, k_hat)
    return jnp.where(has_nan, jnp.nan, k_hat)


# ----------------------------------------------------------------------------- plots


def _flatten_draws(samples: Any, name: str) -> np.ndarray:
    """Draws as one ``[n, d]`` float array: each leaf ``[n, *event]`` flattened, in order."""
    leaves = jax.tree.leaves(samples)
    if not leaves:
        raise ValueError(f"{name} has no arrays.")
    flat = []
    num = None
    for leaf in leaves:
        arr = np.asarray(leaf, dtype=np.float64)
        if arr.ndim == 0:
            raise ValueError(f"{name}: every leaf needs a leading sample axis; got a scalar.")
        if num is None:
            num = arr.shape[0]
        elif arr.shape[0] != num:
            raise ValueError(
                f"{name}: leaves have different numbers of draws ({num} and {arr.shape[0]}).")
        flat.append(arr.reshape(num, -1))
    return np.concatenate(flat, axis=1)


def _new_axes(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def plot_elbo_trace(
    losses: Union[Any, Mapping[str, Any]],
    *,
    ax: Any = None,
    label: Optional[str] = None,
    window: Optional[int] = None,
    skip: float = 0.0,
    log_evidence: Optional[float] = None,
    title: Optional[str] = None,
    max_points: int = 1000,
) -> Any:
    """Plots a VI loss trace (the per-step negative ELBO estimates) with a moving average.

    Args:
      losses: ``[num_steps]`` per-step losses (e.g. ``fit_vi(...).losses``), or a mapping
        ``{label: losses}`` to overlay several fits. Non-finite entries (skipped steps) are
        left out of the moving average.
      ax: a matplotlib axes to draw in; None makes a new figure.
      label: legend label of a single trace.
      window: moving-average window in steps; None uses ``max(1, num_steps // 50)``.
      skip: fraction of the first steps left out of the plot (the start of a fit can be
        orders of magnitude above the rest), in ``[0, 1)``.
      log_evidence: if given, a horizontal line at ``-log p(y)``, the loss's lower bound.
      title: the axes title.
      max_points: each curve is thinned to at most this many points (keeps figures of long
        fits small; the moving average is computed before thinning).

    Returns:
      The matplotlib ``Figure``.

    Raises:
      ValueError: if a trace is not one-dimensional or empty, or `skip` is out of range.

    Example:
      >>> import numpy as np
      >>> fig = plot_elbo_trace({"a": 1.0 / np.arange(1, 101)}, log_evidence=0.0)
      >>> len(fig.axes[0].lines)
      3
    """
    if not 0.0 <= float(skip) < 1.0:
        raise ValueError(f"skip must be in [0, 1), got {skip!r}.")
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise ValueError(f"max_points must be an integer >= 2, got {max_points!r}.")
    traces = dict(losses) if isinstance(losses, Mapping) else {label: losses}
    fig, ax = _new_axes(ax, (6.0, 3.5))
    for index, (name, trace) in enumerate(traces.items()):
        values = np.asarray(trace, dtype=np.float64)
        if values.ndim != 1 or values.size == 0:
            raise ValueError(
                f"losses{'' if name is None else f'[{name!r}]'} must be a non-empty "
                f"one-dimensional array, got shape {values.shape}.")
        start = int(skip * values.size)
        steps = np.arange(values.size)[start:]
        values = values[start:]
        width = window or max(1, values.size // 50)
        finite = np.isfinite(values)
        kernel = np.ones(width)
        # Moving average over finite entries only.
        sums = np.convolve(np.where(finite, values, 0.0), kernel, mode="valid")
        counts = np.convolve(finite.astype(float), kernel, mode="valid")
        with np.errstate(invalid="ignore", divide="ignore"):
            smooth = sums / counts
        colour = f"C{index % 10}"
        stride = max(1, math.ceil(values.size / max_points))
        ax.plot(steps[::stride], np.where(finite, values, np.nan)[::stride], color=colour,
                alpha=0.25, lw=0.6)
        ax.plot(steps[width - 1:][::stride], smooth[::stride], color=colour, lw=1.4,
                label=name)
    if log_evidence is not None:
        ax.axhline(-float(log_evidence), color="k", ls="--", lw=0.8, label="-log p(y)")
    ax.set_xlabel("step")
    ax.set_ylabel("-ELBO (per-step estimate)")
    if title:
        ax.set_title(title)
    if any(name is not None for name in traces) or log_evidence is not None:
        ax.legend(fontsize=7)
    return fig


def plot_marginals(
    samples: Any,
    reference: Any = None,
    *,
    ax: Any = None,
    label: str = "surrogate",
    reference_label: str = "reference",
    quantiles: Sequence[float] = (0.05, 0.95),
    title: Optional[str] = None,
) -> Any:
    """Plots the marginal medians and central intervals of draws, coordinate by coordinate.

    Every latent coordinate (leaves flattened in order, e.g. the time steps of a series) is
    one position on the x axis; the band spans the given quantiles of the draws. Reference
    draws (e.g. NUTS ground truth) are drawn underneath in grey.

    Args:
      samples: draws with a leading sample axis: an array ``[n]`` / ``[n, d]`` or a pytree of
        such arrays (e.g. ``surrogate.sample(1000, seed=...)``).
      reference: draws of the same structure and flattened size, or None.
      ax: a matplotlib axes to draw in; None makes a new figure.
      label, reference_label: legend labels.
      quantiles: the band's lower and upper quantiles, ``0 <= lo < hi <= 1``.
      title: the axes title.

    Returns:
      The matplotlib ``Figure``.

    Raises:
      ValueError: for mismatched sizes, draws without a sample axis or bad quantiles.

    Example:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> fig = plot_marginals({"x": rng.normal(size=(500, 3))},
      ...                      reference={"x": rng.normal(size=(800, 3))})
      >>> len(fig.axes[0].collections)
      2
    """
    lo, hi = (float(q) for q in quantiles)
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"quantiles must satisfy 0 <= lo < hi <= 1, got {tuple(quantiles)}.")
    draws = _flatten_draws(samples, "samples")
    fig, ax = _new_axes(ax, (6.0, 3.5))
    index = np.arange(draws.shape[1])
    if reference is not None:
        ref = _flatten_draws(reference, "reference")
        if ref.shape[1] != draws.shape[1]:
            raise ValueError(
                f"reference has {ref.shape[1]} coordinates per draw, samples {draws.shape[1]}.")
        r_lo, r_mid, r_hi = np.quantile(ref, [lo, 0.5, hi], axis=0)
        ax.fill_between(index, r_lo, r_hi, color="0.8", label=f"{reference_label} "
                        f"{100 * (hi - lo):.0f}%")
        ax.plot(index, r_mid, color="0.4", lw=1.0, ls="--")
    s_lo, s_mid, s_hi = np.quantile(draws, [lo, 0.5, hi], axis=0)
    ax.fill_between(index, s_lo, s_hi, color="C0", alpha=0.35,
                    label=f"{label} {100 * (hi - lo):.0f}%")
    ax.plot(index, s_mid, color="C0", lw=1.2)
    ax.set_xlabel("latent coordinate")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    return fig
