"""The registry of the EMF paper's VI benchmark targets: :func:`get_target` by name.

Names follow the paper's code: ``{family}_{smoothing|bridge}_{r|c}`` for the time series
("r": Gaussian observations, "c": Bernoulli observations; "bridge": the middle third of the
series unobserved), ``eight_schools``, and ``binary_tree_{linear|tanh}_{4|8}``. Two more use
inference_gym's published data instead of synthetic data: ``brownian_bridge_r_gym`` and
``lorenz_bridge_r_gym``.

Synthetic data are drawn from the model itself (numpy, float64, ``np.random.default_rng(seed)``):
with one seed, a family's four variants share the latent path, and the bridge observes a subset
of the smoothing observations. Data are rounded to float32 precision, so a target holds the same
data, and the same exact posterior, in float32 and float64.
"""
from __future__ import annotations

import operator
from typing import Any, Callable

import numpy as np

from emf_jax.models import _common, _data, schools, time_series, trees

__all__ = [
    "EXACT_TARGET_NAMES",
    "TARGET_NAMES",
    "exact_log_marginal_likelihood",
    "get_target",
]


def _bridge_steps(num_steps: int) -> tuple[int, ...]:
    """The paper's bridge: the first and last thirds observed (0-9 and 20-29 for T = 30)."""
    third = num_steps // 3
    return tuple(range(third)) + tuple(range(num_steps - third, num_steps))


def _round_data(
    latents: dict[str, np.ndarray], obs: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Rounds synthetic data to float32 precision: the same data in every dtype."""
    return ({k: _common.round_to_float32(v) for k, v in latents.items()},
            _common.round_to_float32(obs))


def _pin(
    name: str,
    model: Any,
    obs: np.ndarray,
    dtype: np.dtype,
    true_latents: dict[str, np.ndarray] | None,
    description: str,
    exact: _common.ExactPosterior | None,
) -> _common.BenchmarkTarget:
    observations = _common.as_observations(obs, dtype)
    if true_latents is not None:
        true_latents = {k: np.asarray(v, dtype=dtype) for k, v in true_latents.items()}
    return _common.BenchmarkTarget(
        name=name,
        model=model,
        pinned_model=model.experimental_pin(**observations),
        observations=observations,
        true_latents=true_latents,
        description=description,
        exact_posterior=exact,
    )


_SPECS = {
    "brownian": (time_series.brownian_motion_spec, 30, "Brownian motion"),
    "lorenz": (time_series.lorenz_system_spec, 30, "Lorenz system"),
    "van_der_pol": (time_series.van_der_pol_spec, 120, "Van der Pol oscillator"),
}


def _state_space_target(family: str, setting: str, kind: str) -> Callable[..., Any]:
    spec_fn, num_steps, pretty = _SPECS[family]
    observation = "regression" if kind == "r" else "classification"
    observed = None if setting == "smoothing" else _bridge_steps(num_steps)
    name = f"{family}_{setting}_{kind}"

    def make(seed: int, dtype: np.dtype) -> _common.BenchmarkTarget:
        spec = spec_fn(num_steps, observation=observation, observed_steps=observed)
        latents, obs = time_series.simulate_state_space(spec, np.random.default_rng(seed))
        latents, obs = _round_data(latents, obs)
        exact = None
        if family == "brownian" and kind == "r":
            exact = time_series.brownian_exact_posterior(spec, obs)
        span = "all steps" if observed is None else (
            f"steps 0-{observed[num_steps // 3 - 1]} and {observed[num_steps // 3]}-"
            f"{num_steps - 1}")
        noise = (f"N(x[0], {spec.observation_scale:g})" if kind == "r"
                 else f"Bernoulli(logits={spec.logit_scale:g} x[0])")
        description = (
            f"{pretty}, {num_steps} steps, {setting}: {noise} observed at {span}; "
            f"synthetic data (seed {seed}).")
        model = time_series.build_state_space_model(spec, dtype)
        return _pin(name, model, obs, dtype, latents, description, exact)

    return make


def _gym_bridge_target(family: str) -> Callable[..., Any]:
    spec_fn, num_steps, pretty = _SPECS[family]
    obs = {"brownian": _data.GYM_BROWNIAN_BRIDGE_OBS,
           "lorenz": _data.GYM_LORENZ_BRIDGE_OBS}[family]

    def make(seed: int, dtype: np.dtype) -> _common.BenchmarkTarget:
        del seed  # fixed, published data
        spec = spec_fn(num_steps, observed_steps=_bridge_steps(num_steps))
        exact = time_series.brownian_exact_posterior(spec, obs) if family == "brownian" else None
        description = (
            f"{pretty} bridge, {num_steps} steps, N(x[0], {spec.observation_scale:g}) observed "
            "at steps 0-9 and 20-29; inference_gym's published data.")
        model = time_series.build_state_space_model(spec, dtype)
        return _pin(f"{family}_bridge_r_gym", model, obs, dtype, None, description, exact)

    return make


def _eight_schools_target(seed: int, dtype: np.dtype) -> _common.BenchmarkTarget:
    del seed  # real data
    model = schools.eight_schools(dtype=dtype)
    obs = np.asarray(schools.TREATMENT_EFFECTS)
    description = (
        "Eight Schools, non-centred: avg_effect ~ N(0, 10), log_stddev ~ N(5, 1), "
        "school_effects_std ~ N(0, 1)^8; Rubin's (1981) data.")
    return _pin("eight_schools", model, obs, dtype, None, description,
                schools.eight_schools_exact_posterior())


def _binary_tree_target(link: str, depth: int) -> Callable[..., Any]:
    name = f"binary_tree_{link}_{depth}"

    def make(seed: int, dtype: np.dtype) -> _common.BenchmarkTarget:
        spec = trees.binary_tree_spec(depth, link=link)
        latents, obs = trees.simulate_binary_tree(spec, np.random.default_rng(seed))
        latents, obs = _round_data(latents, obs)
        exact = trees.binary_tree_exact_posterior(spec, obs) if link == "linear" else None
        description = (
            f"Gaussian binary tree ({link} coupling), depth {depth} ({2 ** depth - 1} nodes): "
            f"leaves ~ N(0, {spec.leaf_scale:g}), node ~ N(f(a) - f(b), {spec.node_scale:g}), "
            f"root observed; synthetic data (seed {seed}).")
        model = trees.build_binary_tree(spec, dtype)
        return _pin(name, model, obs, dtype, latents, description, exact)

    return make


_REGISTRY: dict[str, Callable[[int, np.dtype], _common.BenchmarkTarget]] = {}
for _family in ("brownian", "lorenz", "van_der_pol"):
    for _setting in ("smoothing", "bridge"):
        for _kind in ("r", "c"):
            _REGISTRY[f"{_family}_{_setting}_{_kind}"] = _state_space_target(
                _family, _setting, _kind)
_REGISTRY["eight_schools"] = _eight_schools_target
for _link in ("linear", "tanh"):
    for _depth in (4, 8):
        _REGISTRY[f"binary_tree_{_link}_{_depth}"] = _binary_tree_target(_link, _depth)
_REGISTRY["brownian_bridge_r_gym"] = _gym_bridge_target("brownian")
_REGISTRY["lorenz_bridge_r_gym"] = _gym_bridge_target("lorenz")

TARGET_NAMES: tuple[str, ...] = tuple(_REGISTRY)
"""Names accepted by :func:`get_target`."""

EXACT_TARGET_NAMES: tuple[str, ...] = (
    "brownian_smoothing_r",
    "brownian_bridge_r",
    "brownian_bridge_r_gym",
    "eight_schools",
    "binary_tree_linear_4",
    "binary_tree_linear_8",
)
"""Targets whose :attr:`BenchmarkTarget.exact_posterior` is available (not None)."""


def get_target(
    name: str, *, seed: int = 0, dtype: _common.DTypeLike | None = None
) -> _common.BenchmarkTarget:
    """Builds a benchmark target by name, with its (synthetic or real) data pinned.

    Args:
      name: one of :data:`TARGET_NAMES`.
      seed: seed of the synthetic data (``np.random.default_rng(seed)``); ignored by
        ``eight_schools`` and the ``*_gym`` targets, whose data are fixed.
      dtype: floating dtype of the model; None for JAX's default float (float64 under
        ``jax_enable_x64``).

    Returns:
      A :class:`~emf_jax.models.BenchmarkTarget`.

    Raises:
      ValueError: for an unknown name or a negative seed.

    Example:
      >>> target = get_target("brownian_bridge_r_gym")
      >>> round(target.exact_posterior.log_marginal_likelihood, 4)
      5.613
      >>> len(target.pinned_model.event_shape)
      30
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown target {name!r}; expected one of {TARGET_NAMES}.")
    seed = _common.check_int(seed, "seed", 0)
    return _REGISTRY[name](seed, _common.resolve_dtype(dtype))


def exact_log_marginal_likelihood(
    target: _common.BenchmarkTarget | str, *, seed: int = 0
) -> float:
    """The exact ``log p(obs)`` of a target that has a closed-form posterior.

    Args:
      target: a :class:`~emf_jax.models.BenchmarkTarget` or a name in
        :data:`EXACT_TARGET_NAMES`.
      seed: the data seed when `target` is a name.

    Returns:
      ``log p(obs)`` as a Python float (computed in float64).

    Raises:
      ValueError: if the target has no closed-form evidence.

    Example:
      >>> round(exact_log_marginal_likelihood("eight_schools"), 4)
      -36.1308
    """
    if isinstance(target, str):
        if target not in EXACT_TARGET_NAMES:
            raise ValueError(
                f"target {target!r} has no closed-form log marginal likelihood; those that do "
                f"are {EXACT_TARGET_NAMES}.")
        target = get_target(target, seed=operator.index(seed))
    if not isinstance(target, _common.BenchmarkTarget):
        raise TypeError(f"target must be a BenchmarkTarget or a name, got {type(target).__name__}.")
    if target.exact_posterior is None:
        raise ValueError(f"target {target.name!r} has no closed-form log marginal likelihood.")
    return target.exact_posterior.log_marginal_likelihood
