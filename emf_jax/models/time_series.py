"""State-space benchmark models: Brownian motion, the Lorenz system and the Van der Pol oscillator.

All three are discretised stochastic processes with one named latent variable per time step,
``x0, x1, ..., x{T-1}``, followed by one observed vector ``"obs"`` holding a noisy view of the
first state coordinate at the observed steps (all steps for "smoothing", the two ends for a
"bridge")::

    x0        ~ Normal(0, initial_scale)                       (per coordinate)
    x{t}      ~ Normal(x{t-1} + dt * drift(x{t-1}), sqrt(dt) * innovation_scale)
    obs[i]    ~ Normal(x{s_i}[0], observation_scale)           ("regression")
             or Bernoulli(logits=logit_scale * x{s_i}[0])       ("classification")

Brownian motion has a scalar state, no drift, ``dt = 1`` and ``initial_scale =
innovation_scale``. The Lorenz system and the Van der Pol oscillator use the Euler-Maruyama
step above, as in inference_gym's ``LorenzSystem`` and the EMF paper's code (the innovation
standard deviation per step is ``sqrt(dt) * innovation_scale``).

The numpy simulators (used by :func:`emf_jax.models.get_target` to make synthetic data) run
the same drift functions.
"""
from __future__ import annotations

import dataclasses
import inspect
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
from tensorflow_probability.substrates import jax as tfp

from emf_jax.models import _common, gaussian

tfd = tfp.distributions

__all__ = ["brownian_motion", "lorenz_system", "van_der_pol"]

DriftFn = Callable[[Any, ModuleType], Any]
"""``drift(state, xp)``: the ODE's right-hand side on ``[..., d]`` states, with ``xp`` the
array namespace (``jax.numpy`` inside the model, ``numpy`` in the simulator)."""


@dataclasses.dataclass(frozen=True)
class StateSpaceSpec:
    """The full, validated settings of a state-space model (static Python values).

    Attributes:
      num_steps: number of time steps ``T``.
      state_dim: dimension of the state, or None for a scalar state.
      initial_scale: scale of the Normal prior of ``x0`` (mean 0).
      step_scale: innovation standard deviation per step (already ``sqrt(dt) * sigma``).
      step_size: the Euler step ``dt`` multiplying the drift.
      drift: the drift function, or None for a random walk.
      observation: "regression" or "classification".
      observation_scale: Gaussian observation noise (regression).
      logit_scale: factor on the logits (classification).
      observed_steps: the observed time indices.
      family: a short name used in descriptions.
    """

    num_steps: int
    state_dim: int | None
    initial_scale: float
    step_scale: float
    step_size: float
    drift: DriftFn | None
    observation: str
    observation_scale: float
    logit_scale: float
    observed_steps: tuple[int, ...]
    family: str

    @property
    def latent_names(self) -> tuple[str, ...]:
        """Names of the latent variables in program order."""
        return tuple(f"x{t}" for t in range(self.num_steps))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Event shape of one latent variable."""
        return () if self.state_dim is None else (self.state_dim,)


def _lorenz_drift(sigma: float, rho: float, beta: float) -> DriftFn:
    def drift(state: Any, xp: ModuleType) -> Any:
        x, y, z = state[..., 0], state[..., 1], state[..., 2]
        return xp.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], axis=-1)

    return drift


def _van_der_pol_drift(mu: float) -> DriftFn:
    def drift(state: Any, xp: ModuleType) -> Any:
        x, v = state[..., 0], state[..., 1]
        return xp.stack([v, mu * (1.0 - x**2) * v - x], axis=-1)

    return drift


def _first_coordinate(value: Any, state_dim: int | None) -> Any:
    return value if state_dim is None else value[..., 0]


def build_state_space_model(
    spec: StateSpaceSpec, dtype: np.dtype
) -> tfd.JointDistributionCoroutineAutoBatched:
    """Builds the joint distribution of a :class:`StateSpaceSpec` in `dtype`."""
    dim = spec.state_dim
    shape = spec.latent_shape
    initial_loc = jnp.zeros(shape, dtype)
    initial_scale = jnp.full(shape, spec.initial_scale, dtype)
    step_scale = jnp.asarray(spec.step_scale, dtype)
    step_size = jnp.asarray(spec.step_size, dtype)
    observation_scale = jnp.asarray(spec.observation_scale, dtype)
    logit_scale = jnp.asarray(spec.logit_scale, dtype)

    def normal(loc: Any, scale: Any, name: str) -> tfd.Distribution:
        if dim is None:
            return tfd.Normal(loc=loc, scale=scale, name=name)
        return tfd.Independent(
            tfd.Normal(loc=loc, scale=scale), reinterpreted_batch_ndims=1, name=name)

    def program():
        x = yield normal(initial_loc, initial_scale, "x0")
        path = [x]
        for t in range(1, spec.num_steps):
            loc = x if spec.drift is None else x + step_size * spec.drift(x, jnp)
            x = yield normal(loc, step_scale, f"x{t}")
            path.append(x)
        locs = jnp.stack(
            [_first_coordinate(path[t], dim) for t in spec.observed_steps], axis=-1)
        yield _common.observation_distribution(
            locs,
            observation=spec.observation,
            observation_scale=observation_scale,
            logit_scale=logit_scale,
        )

    return tfd.JointDistributionCoroutineAutoBatched(program, name=spec.family)


def simulate_state_space(
    spec: StateSpaceSpec, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Samples latents and observations from the model of `spec` in numpy float64.

    The latent path uses the generator first; then one observation per time step is drawn
    (all steps, whatever `spec.observed_steps` is) and the observed ones are kept. So with
    the same seed, smoothing and bridge data share the path and the observations they have
    in common, and regression and classification data share the path.

    Returns:
      ``(latents, obs)``: latents keyed ``x0 ... x{T-1}`` and the observed vector.
    """
    shape = spec.latent_shape
    x = spec.initial_scale * rng.standard_normal(shape)
    path = [x]
    for _ in range(1, spec.num_steps):
        loc = x if spec.drift is None else x + spec.step_size * spec.drift(x, np)
        x = loc + spec.step_scale * rng.standard_normal(shape)
        path.append(x)
    first = np.array([_first_coordinate(v, spec.state_dim) for v in path])
    all_obs = _common.simulate_observations(
        rng,
        first,
        observation=spec.observation,
        observation_scale=spec.observation_scale,
        logit_scale=spec.logit_scale,
    )
    latents = {name: np.asarray(v) for name, v in zip(spec.latent_names, path)}
    return latents, all_obs[list(spec.observed_steps)]


# ----------------------------------------------------------------------------- specs


def _checked_spec(
    family: str,
    settings: Mapping[str, Any],
    *,
    state_dim: int | None,
    drift: Callable[[Mapping[str, Any]], DriftFn | None],
) -> StateSpaceSpec:
    """The checks and derived values every state-space spec shares.

    `settings` are a public builder's arguments (`dtype` aside). Brownian motion has no
    ``step_size`` (1) and no ``initial_scale`` (the innovation scale). `drift` checks the
    drift's own parameters and is called after the step's checks.
    """
    num_steps = _common.check_int(settings["num_steps"], "num_steps", 1)
    dt = _common.check_positive(settings.get("step_size", 1.0), "step_size")
    scale = _common.check_positive(settings["innovation_scale"], "innovation_scale")
    initial = settings.get("initial_scale")
    return StateSpaceSpec(
        num_steps=num_steps,
        state_dim=state_dim,
        initial_scale=scale if initial is None else _common.check_positive(
            initial, "initial_scale"),
        step_scale=float(np.sqrt(dt)) * scale,
        step_size=dt,
        drift=drift(settings),
        observation=_common.check_observation(settings["observation"]),
        observation_scale=_common.check_positive(
            settings["observation_scale"], "observation_scale"),
        logit_scale=_common.check_real(settings["logit_scale"], "logit_scale"),
        observed_steps=_common.check_steps(
            settings["observed_steps"], num_steps, "observed_steps"),
        family=family,
    )


_FAMILY_SPECS: dict[str, Callable[[Mapping[str, Any]], StateSpaceSpec]] = {
    "brownian_motion": lambda s: _checked_spec(
        "brownian_motion", s, state_dim=None, drift=lambda _: None),
    "lorenz_system": lambda s: _checked_spec(
        "lorenz_system", s, state_dim=3, drift=lambda d: _lorenz_drift(
            _common.check_real(d["sigma"], "sigma"),
            _common.check_real(d["rho"], "rho"),
            _common.check_real(d["beta"], "beta"))),
    "van_der_pol": lambda s: _checked_spec(
        "van_der_pol", s, state_dim=2,
        drift=lambda d: _van_der_pol_drift(_common.check_real(d["mu"], "mu"))),
}
"""Family name -> its spec from a public builder's arguments (``dtype`` aside)."""


def _spec_function(builder: Callable[..., Any]) -> Callable[..., StateSpaceSpec]:
    """The validated-settings function of a public builder: its arguments and defaults.

    The public builder's signature is the one place that names the arguments and their
    defaults; this binds a call against it, so the two cannot drift apart.
    """
    family = builder.__name__
    signature = inspect.signature(builder)

    def spec_fn(*args: Any, **kwargs: Any) -> StateSpaceSpec:
        if "dtype" in kwargs:
            raise TypeError(f"{family}_spec takes no dtype (a spec is dtype-free).")
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        settings = dict(bound.arguments)
        del settings["dtype"]
        return _FAMILY_SPECS[family](settings)

    spec_fn.__name__ = spec_fn.__qualname__ = f"{family}_spec"
    spec_fn.__doc__ = f"Validated settings of :func:`{family}` (same arguments, dtype aside)."
    return spec_fn


def _build(family: str, arguments: dict[str, Any]) -> tfd.JointDistributionCoroutineAutoBatched:
    """A public builder's model from its ``locals()``: the spec, then the program in `dtype`."""
    settings = dict(arguments)
    dtype = _common.resolve_dtype(settings.pop("dtype"))
    return build_state_space_model(_FAMILY_SPECS[family](settings), dtype)


# ----------------------------------------------------------------------------- public builders


def brownian_motion(
    num_steps: int = 30, *, innovation_scale: float = 0.1, observation: str = "regression",
    observation_scale: float = 0.15, logit_scale: float = 5.0,
    observed_steps: Sequence[int] | None = None, dtype: _common.DTypeLike | None = None,
) -> tfd.JointDistributionCoroutineAutoBatched:
    """Brownian motion observed with Gaussian noise or through Bernoulli labels.

    ``x0 ~ N(0, innovation_scale)``, ``x{t} ~ N(x{t-1}, innovation_scale)``, and
    ``obs[i] ~ N(x{s_i}, observation_scale)`` (regression) or
    ``Bernoulli(logits=logit_scale * x{s_i})`` (classification) for the observed steps
    ``s_i``. Defaults are the EMF paper's (and inference_gym's) settings.

    Args:
      num_steps: number of time steps (latent variables ``x0 ... x{T-1}``).
      innovation_scale: standard deviation of ``x0`` and of each increment.
      observation: "regression" or "classification".
      observation_scale: Gaussian observation noise (regression).
      logit_scale: factor on the logits (classification).
      observed_steps: increasing time indices that are observed; None observes all steps
        (smoothing). The paper's bridge observes ``range(10)`` and ``range(20, 30)``.
      dtype: floating dtype of the parameters; None for JAX's default float.

    Returns:
      A ``tfd.JointDistributionCoroutineAutoBatched`` over ``x0 ... x{T-1}, obs``.

    Example:
      >>> model = brownian_motion(5, observed_steps=[0, 4])
      >>> [str(s) for s in model.event_shape][-2:]
      ['()', '(2,)']
    """
    return _build("brownian_motion", locals())


def lorenz_system(
    num_steps: int = 30, *, step_size: float = 0.02, innovation_scale: float = 0.1,
    initial_scale: float = 1.0, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0,
    observation: str = "regression", observation_scale: float = 1.0, logit_scale: float = 2.0,
    observed_steps: Sequence[int] | None = None, dtype: _common.DTypeLike | None = None,
) -> tfd.JointDistributionCoroutineAutoBatched:
    """The stochastic Lorenz system (Euler-Maruyama), observed in its first coordinate.

    The state ``x{t} = (x, y, z)`` has drift ``(sigma (y - x), x (rho - z) - y, x y - beta z)``;
    ``x0 ~ N(0, initial_scale)^3`` and each step adds ``N(0, sqrt(step_size) *
    innovation_scale)`` noise per coordinate (as inference_gym's ``ConvectionLorenzBridge``).
    Observations: ``N(x{s}[0], observation_scale)`` or ``Bernoulli(logits=logit_scale *
    x{s}[0])``.

    Args:
      num_steps: number of time steps.
      step_size: Euler step ``dt``.
      innovation_scale: diffusion scale (per-step noise ``sqrt(dt) * innovation_scale``).
      initial_scale: scale of the initial state.
      sigma, rho, beta: the Lorenz parameters.
      observation: "regression" or "classification".
      observation_scale: Gaussian observation noise (regression).
      logit_scale: factor on the logits (classification).
      observed_steps: observed time indices; None observes all.
      dtype: floating dtype; None for JAX's default float.

    Returns:
      A ``tfd.JointDistributionCoroutineAutoBatched`` over ``x0 ... x{T-1}`` (each of shape
      ``[3]``) and ``obs``.

    Example:
      >>> model = lorenz_system(4)
      >>> [str(s) for s in model.event_shape][-2:]
      ['(3,)', '(4,)']
    """
    return _build("lorenz_system", locals())


def van_der_pol(
    num_steps: int = 120, *, step_size: float = 0.05, mu: float = 1.0,
    innovation_scale: float = 0.1, initial_scale: float = 1.0, observation: str = "regression",
    observation_scale: float = 0.5, logit_scale: float = 1.0,
    observed_steps: Sequence[int] | None = None, dtype: _common.DTypeLike | None = None,
) -> tfd.JointDistributionCoroutineAutoBatched:
    """The stochastic Van der Pol oscillator (Euler-Maruyama), observed in its position.

    The state ``x{t} = (x, v)`` has drift ``(v, mu (1 - x^2) v - x)``; ``x0 ~ N(0,
    initial_scale)^2`` and each step adds ``N(0, sqrt(step_size) * innovation_scale)`` noise.
    Observations: ``N(x{s}[0], observation_scale)`` or ``Bernoulli(logits=logit_scale *
    x{s}[0])``. Defaults follow the EMF paper's code (120 steps, dt 0.05, mu 1, logits 1 x).

    Args:
      mu: the damping parameter. The other arguments are :func:`lorenz_system`'s.

    Returns:
      The joint distribution over ``x0 ... x{T-1}`` (each of shape ``[2]``) and ``obs``.

    Example:
      >>> model = van_der_pol(3, observation="classification")
      >>> model.dtype[-1] == model.dtype.obs
      True
    """
    return _build("van_der_pol", locals())


brownian_motion_spec = _spec_function(brownian_motion)
lorenz_system_spec = _spec_function(lorenz_system)
van_der_pol_spec = _spec_function(van_der_pol)


def brownian_exact_posterior(
    spec: StateSpaceSpec, obs: np.ndarray
) -> _common.ExactPosterior:
    """The exact posterior of a Brownian-motion regression model (dense Gaussian algebra).

    Args:
      spec: the settings of a Brownian-motion model with ``observation="regression"``.
      obs: the observed values.

    Returns:
      An :class:`~emf_jax.models.ExactPosterior` over ``x0 ... x{T-1}``.
    """
    if spec.family != "brownian_motion" or spec.observation != "regression":
        raise ValueError(
            "the exact posterior exists only for Brownian motion with regression "
            f"observations, got {spec.family} with {spec.observation}.")
    t, m = spec.num_steps, len(spec.observed_steps)
    b = np.zeros((t + m, t + m))
    b[np.arange(1, t), np.arange(t - 1)] = 1.0
    b[t + np.arange(m), list(spec.observed_steps)] = 1.0
    scales = np.concatenate([np.full(t, spec.step_scale), np.full(m, spec.observation_scale)])
    scales[0] = spec.initial_scale
    mean, cov = gaussian.gaussian_network_moments(b, np.zeros(t + m), scales)
    log_ev, post_mean, post_cov = gaussian.condition_gaussian(
        mean, cov, np.arange(t, t + m), np.asarray(obs, dtype=np.float64))
    return _common.make_exact_posterior(
        log_ev, post_mean, post_cov, spec.latent_names, [()] * t)
