"""A tempered start: shrink a surrogate's base noise until its draws keep the target finite.

An embedded-model flow starts at the model's prior. With heavy-tailed priors (Cauchy,
HalfCauchy, wide LogNormal) a few prior draws land where the likelihood overflows (a
log-volatility of 6·10⁴ makes ``exp(h / 2)`` infinite), and a variational fit that starts
there sees non-finite terms from its first step. The tempered start keeps "start at the
model" as far as it is safe: draws are ``x = T(tau * z)`` with ``z ~ N(0, I)``, ``T`` the
initial flow (the prior's structured layer), and ``tau`` the largest temperature of a fixed
ladder (1, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01) such that at least `min_finite_fraction` of a
fixed batch of probe draws ``T(probe_scale * tau * z)`` have a finite target log-density
and a finite flow log-determinant. Smaller ``tau`` concentrates the draws around the prior's
median (``z = 0``), where the likelihood is finite for any model whose prior median is a
sensible point.

Why probe at ``probe_scale = 2`` times the temperature: a batch of 32 draws reaches about
2.1 standard deviations per coordinate, while a fit of 3000 steps of 16 draws reaches
about 4.3; probing at twice the spread checks the tail that the fit will meet, not only
the bulk the probe sees. Measured on a Cauchy / HalfCauchy model with an exp link
(tests/test_robustness.py), the temperature that only the bulk qualifies (0.5) left
heavy-tailed log-weights after 500 steps (ELBO -33 ± 20, and -10³⁵ on another seed);
the probed choice (0.25) gave -3.2 and -1.8.

All rungs share one batch of base noise (common random numbers) and run as one batched
forward pass and one batched target evaluation, so the selection costs one trace of the
flow and of the target and works under `jax.jit` (the choice is an ``argmax``, not Python
control flow). When no rung qualifies the smallest is taken.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tensorflow_probability.substrates.jax.internal import nest_util

from emf_jax._checks import as_key, check_callable, check_int
from emf_jax._numerics import guard_draws

__all__ = ["DEFAULT_GATE_CANDIDATES", "DEFAULT_TEMPERATURE_LADDER", "WarmStart",
           "finite_fraction_by_temperature", "gaussian_warm_start", "select_temperature"]

Array = jax.Array

# Decreasing temperatures tried at initialisation, the first being the untempered start.
DEFAULT_TEMPERATURE_LADDER: tuple[float, ...] = (1.0, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01)


def _check_ladder(ladder: Sequence[float]) -> np.ndarray:
    values = np.asarray(ladder, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"`ladder` must be a non-empty sequence of temperatures, got {ladder!r}.")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"`ladder` temperatures must be finite and > 0, got {ladder!r}.")
    if np.any(np.diff(values) >= 0):
        raise ValueError(f"`ladder` must be strictly decreasing, got {ladder!r}.")
    return values


def finite_fraction_by_temperature(
    forward_and_log_det: Callable[[Array], tuple[Any, Array]],
    target_log_prob_fn: Callable[..., Array],
    key: Any,
    *,
    event_size: int,
    dtype: Any = jnp.float32,
    ladder: Sequence[float] = DEFAULT_TEMPERATURE_LADDER,
    num_draws: int = 32,
) -> Array:
    """The share of draws ``x = T(tau * z)`` with a finite target, for every rung ``tau``.

    Args:
      forward_and_log_det: ``T``: ``z[..., D] -> (values, log|det dT/dz|[...])``, e.g. an
        embedded flow's forward pass with its initial parameters.
      target_log_prob_fn: the unnormalised target log-density, called as TFP's fitters call it
        (``f(*values)`` for tuple-like values, ``f(**values)`` for dicts, else ``f(values)``),
        on a leading batch axis.
      key: a PRNG key (or int) for the shared base noise.
      event_size: ``D``.
      dtype: the noise dtype.
      ladder: the temperatures, strictly decreasing and positive.
      num_draws: draws per rung (the same base noise for every rung).

    Returns:
      An array ``[len(ladder)]``: the fraction of each rung's draws whose target
      log-density and log-determinant are both finite.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> target = lambda x: -jnp.exp(50. * x[..., 0])   # overflows for x > 1.77
      >>> fractions = finite_fraction_by_temperature(
      ...     lambda z: (z, jnp.zeros(z.shape[:-1])), target, jax.random.key(0),
      ...     event_size=1, ladder=(1.0, 0.1), num_draws=64)
      >>> bool(fractions[0] < 1.0), float(fractions[1])
      (True, 1.0)
    """
    check_callable("forward_and_log_det", forward_and_log_det)
    check_callable("target_log_prob_fn", target_log_prob_fn)
    temperatures = _check_ladder(ladder)
    num_draws = check_int("num_draws", num_draws, 1)
    event_size = check_int("event_size", event_size, 1)
    noise = jax.random.normal(as_key(key, "key"), (num_draws, event_size), dtype)
    z = jnp.asarray(temperatures, dtype)[:, None, None] * noise
    values, log_det = forward_and_log_det(z.reshape((-1, event_size)))
    target = nest_util.call_fn(target_log_prob_fn, values)
    finite = jnp.isfinite(target) & jnp.isfinite(log_det)
    return jnp.mean(finite.reshape((len(temperatures), num_draws)).astype(dtype), axis=1)


def select_temperature(
    forward_and_log_det: Callable[[Array], tuple[Any, Array]],
    target_log_prob_fn: Callable[..., Array],
    key: Any,
    *,
    event_size: int,
    dtype: Any = jnp.float32,
    ladder: Sequence[float] = DEFAULT_TEMPERATURE_LADDER,
    num_draws: int = 32,
    min_finite_fraction: float = 1.0,
    probe_scale: float = 2.0,
) -> Array:
    """The largest temperature of `ladder` whose draws keep the target finite.

    ``tau = ladder[r]`` for the first rung ``r`` whose `finite_fraction_by_temperature` at
    ``probe_scale * ladder[r]`` is at least `min_finite_fraction`; the last (smallest) rung
    when none is. Traceable under `jax.jit`.

    Args:
      forward_and_log_det: ``T``: ``z[..., D] -> (values, log|det dT/dz|[...])``.
      target_log_prob_fn: the unnormalised target log-density (see
        `finite_fraction_by_temperature`).
      key: a PRNG key (or int) for the shared base noise.
      event_size: ``D``.
      dtype: the noise dtype (also that of the result).
      ladder: the temperatures, strictly decreasing and positive.
      num_draws: draws per rung.
      min_finite_fraction: the share of finite draws a rung needs, in (0, 1].
      probe_scale: the probe draws' spread relative to the rung (> 0; see the module
        docstring for the default 2).

    Returns:
      ``tau``, a scalar array of `dtype`.

    Raises:
      ValueError: for a bad ladder, count or fraction.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> target = lambda x: -jnp.exp(50. * x[..., 0])   # overflows for x > 1.77
      >>> identity = lambda z: (z, jnp.zeros(z.shape[:-1]))
      >>> tau = jax.jit(lambda key: select_temperature(identity, target, key, event_size=1))
      >>> float(tau(jax.random.key(0)))  # probes at 2 tau: x = 0.5 z stays below 1.77
      0.25
    """
    if not 0.0 < float(min_finite_fraction) <= 1.0:
        raise ValueError(f"`min_finite_fraction` must be in (0, 1], got {min_finite_fraction}.")
    if not float(probe_scale) > 0:
        raise ValueError(f"`probe_scale` must be > 0, got {probe_scale}.")
    temperatures = _check_ladder(ladder)
    fractions = finite_fraction_by_temperature(
        forward_and_log_det, target_log_prob_fn, key, event_size=event_size, dtype=dtype,
        ladder=tuple(float(probe_scale) * temperatures), num_draws=num_draws)
    # Compare counts, not fractions, so that a fraction of exactly 1 is never lost to rounding.
    needed = np.ceil(float(min_finite_fraction) * num_draws - 1e-9)
    ok = jnp.round(fractions * num_draws) >= needed
    rung = jnp.where(jnp.any(ok), jnp.argmax(ok), len(temperatures) - 1)
    return jnp.asarray(temperatures, dtype)[rung]


# Initial gates tried by the warm start, the preferred first. λ = 0.5 blends the prior's
# non-centred map with the identity; λ = 0.01 leaves the flow in the latents' unconstrained
# space (centred: a Gaussian stage there is a full-rank Gaussian over the latents). The
# paper's λ = 0.999 is not a candidate: measured on public models (docs/concepts.md), a fit
# started there keeps its gates near 1 (Adam moves the logit w ≈ 6.9 by about the learning
# rate per step), which traps it where the prior's parameterisation is poor (Lorenz bridge
# −ELBO 385 against 69 from 0.5; Brownian motion with unknown scales 11.2 against −0.4).
DEFAULT_GATE_CANDIDATES: tuple[float, ...] = (0.5, 0.01)


class WarmStart(NamedTuple):
    """The result of `gaussian_warm_start`.

    Attributes:
      params: the chosen candidate's parameters after the pilot fit.
      choice: its index (an int32 scalar).
      elbos: ``[num_candidates]``, each candidate's ELBO after the pilot (the mean of its
        finite evaluation terms).
      num_finite: ``[num_candidates]``, how many of the evaluation draws were finite.

    Example:
      >>> import jax.numpy as jnp
      >>> start = WarmStart({"shift": jnp.array(2.0)}, jnp.int32(1),
      ...                   jnp.array([-3.2, -0.1]), jnp.array([256, 256]))
      >>> int(start.choice), round(float(start.elbos[start.choice]), 1)
      (1, -0.1)
    """

    params: Any
    choice: Array
    elbos: Array
    num_finite: Array


def _elbo_terms(forward_and_log_det: Callable[[Any, Array], tuple[Any, Array]],
                target_log_prob_fn: Callable[..., Array], params: Any, z: Array) -> Array:
    """``log p(T(z)) − log q(T(z))`` per draw, with non-finite draws' cotangents dropped."""
    values, log_det = forward_and_log_det(params, z)
    values, log_det = guard_draws((values, log_det), 1)
    log_noise = jnp.sum(-0.5 * jnp.square(z) - 0.5 * np.log(2 * np.pi), axis=-1)
    return nest_util.call_fn(target_log_prob_fn, values) - (log_noise - log_det)


def gaussian_warm_start(
    forward_and_log_det: Callable[[Any, Array], tuple[Any, Array]],
    target_log_prob_fn: Callable[..., Array],
    candidates: Any,
    key: Any,
    *,
    trainable: Any,
    event_size: int,
    dtype: Any = jnp.float32,
    num_steps: int = 200,
    sample_size: int = 16,
    learning_rate: float = 1e-2,
    num_eval_draws: int = 256,
    probe_scale: float = 2.0,
) -> WarmStart:
    """Fits each candidate start briefly and keeps the best, preferring the first.

    Each candidate is a parameter set of one flow ``T`` (stacked on a leading axis). A pilot
    fit maximises the ELBO of ``x = T(z)``, ``z ~ N(0, I)``, over the `trainable` leaves only
    (the others are held fixed) with Adam at `learning_rate` for `num_steps` steps of
    `sample_size` draws; draws whose term is not finite are left out of the average and of
    the gradient, and a step whose loss or gradient is still not finite is skipped. In an
    embedded flow whose backbone starts at the identity, training only the affine base stage
    and the gates makes the pilot a Gaussian fit in the space each candidate's gates define,
    at the learning rate of a Gaussian, which is cheap and is where a Gaussian baseline would
    be.

    The choice. All candidates are scored on the same `num_eval_draws` base draws (common
    random numbers). A candidate is eligible when its evaluation draws are all finite, and so
    are the same draws with the noise scaled by `probe_scale` (a margin for the wider tails a
    long fit explores: a map that overflows just beyond the pilot's draws disqualifies its
    candidate before the fit meets it). Among the eligible candidates, the first of
    them (in the given order: the model's own start first) is kept when its ELBO is within
    two standard errors of the best one's (the standard error of the best candidate's own
    estimate: a poor candidate's log-weights are heavy-tailed, so a paired test would be
    too wide to ever reject it); else the best is taken. When no candidate is eligible, the
    one with the most finite evaluation draws is taken. Traceable under `jax.jit` (a
    `lax.scan` and an ``argmax``).

    Args:
      forward_and_log_det: ``T(params, z[..., D]) -> (values, log|det dT/dz|[...])``.
      target_log_prob_fn: the unnormalised target log-density (called as TFP's fitters
        call it).
      candidates: a pytree of parameters with a leading axis of candidates.
      key: a PRNG key (or int).
      trainable: a pytree of Python bools with the structure of one candidate: which leaves
        the pilot trains.
      event_size: ``D``.
      dtype: the noise dtype.
      num_steps: pilot steps (>= 1).
      sample_size: draws per pilot step (>= 1).
      learning_rate: Adam's step size.
      num_eval_draws: draws that score each candidate (>= 2).
      probe_scale: the noise scale of the eligibility probe (>= 1).

    Returns:
      A `WarmStart`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> target = tfp.distributions.Normal(3., 0.5).log_prob
      >>> flow = lambda p, z: (p["shift"] + jnp.exp(p["log_scale"]) * z[..., 0],
      ...                      jnp.broadcast_to(p["log_scale"], z.shape[:-1]))
      >>> candidates = {"shift": jnp.array([0., 2.]), "log_scale": jnp.zeros(2)}
      >>> start = gaussian_warm_start(flow, target, candidates, jax.random.key(0),
      ...                             trainable={"shift": False, "log_scale": True},
      ...                             event_size=1)
      >>> int(start.choice), round(float(start.params["shift"]), 1)
      (1, 2.0)
    """
    check_callable("forward_and_log_det", forward_and_log_det)
    check_callable("target_log_prob_fn", target_log_prob_fn)
    event_size = check_int("event_size", event_size, 1)
    num_steps = check_int("num_steps", num_steps, 1)
    sample_size = check_int("sample_size", sample_size, 1)
    num_eval_draws = check_int("num_eval_draws", num_eval_draws, 2)
    if not float(probe_scale) >= 1.0:
        raise ValueError(f"`probe_scale` must be >= 1, got {probe_scale!r}.")
    mask = jax.tree.map(bool, trainable)
    optimizer = optax.adam(learning_rate)
    fit_key, eval_key = jax.random.split(as_key(key, "key"))

    def loss(params: Any, z: Array) -> Array:
        params = jax.tree.map(lambda p, m: p if m else jax.lax.stop_gradient(p), params, mask)
        terms = _elbo_terms(forward_and_log_det, target_log_prob_fn, params, z)
        finite = jnp.isfinite(terms)
        total = jnp.sum(jnp.where(finite, terms, jnp.zeros((), terms.dtype)))
        return -total / jnp.maximum(jnp.sum(finite), 1).astype(terms.dtype)

    def pilot(params: Any) -> Any:
        def step(carry: tuple[Any, Any], t: Array) -> tuple[tuple[Any, Any], None]:
            params, opt_state = carry
            z = jax.random.normal(jax.random.fold_in(fit_key, t), (sample_size, event_size),
                                  dtype)
            value, grads = jax.value_and_grad(loss)(params, z)
            updates, new_state = optimizer.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            ok = jnp.isfinite(value) & _tree_all_finite(grads)
            kept = jax.tree.map(lambda a, b: jnp.where(ok, a, b), (new_params, new_state),
                                (params, opt_state))
            return kept, None

        (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)),
                                      jnp.arange(num_steps))
        return params

    # Candidates one after another (`lax.map`), not vmapped: a batched candidate axis would
    # batch the structured layer's CPU fusion barriers (see `emf_jax.structured`), and the
    # pilot of a long Python-loop model would compile as O(T²).
    trained = jax.lax.map(pilot, candidates)
    z_eval = jax.random.normal(eval_key, (num_eval_draws, event_size), dtype)
    # One pass over the evaluation draws and their probe copies at `probe_scale`: each copy
    # of the model's program in this function is compiled, and a long one costs seconds.
    both = jax.lax.map(lambda p: _elbo_terms(forward_and_log_det, target_log_prob_fn, p,
                                             jnp.concatenate([z_eval, probe_scale * z_eval])),
                       trained)
    terms, probe_terms = both[:, :num_eval_draws], both[:, num_eval_draws:]
    finite = jnp.isfinite(terms)
    num_finite = jnp.sum(finite, axis=1)
    zero = jnp.zeros((), terms.dtype)
    elbos = (jnp.sum(jnp.where(finite, terms, zero), axis=1)
             / jnp.maximum(num_finite, 1).astype(terms.dtype))
    probe_finite = jnp.all(jnp.isfinite(probe_terms), axis=1)
    full = (num_finite == num_eval_draws) & probe_finite
    first = jnp.argmax(full)
    best = jnp.argmax(jnp.where(full, elbos, -jnp.inf))
    sem_best = jnp.std(terms[best]) / np.sqrt(num_eval_draws)
    keep_first = elbos[first] >= elbos[best] - 2 * sem_best
    best_full = jnp.where(keep_first, first, best)
    choice = jnp.where(jnp.any(full), best_full, jnp.argmax(num_finite)).astype(jnp.int32)
    params = jax.tree.map(lambda leaf: leaf[choice], trained)
    return WarmStart(params, choice, elbos, num_finite.astype(jnp.int32))


def _tree_all_finite(tree: Any) -> Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)]
    return functools.reduce(jnp.logical_and, leaves, jnp.asarray(True))
