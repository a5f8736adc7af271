"""Time-series generators of the paper's density-estimation experiments.

Every generator has the signature ``fn(key, num_samples, *, num_steps, ..., dtype=None)``
and returns an array of shape ``[N, T, state_dim]`` (time-major within a sample). It is a pure
function of ``key`` and compiles under ``jax.jit`` with ``num_samples`` (and the options)
static; the recursion runs in one ``jax.lax.scan``.

All processes are written as a discrete-time recursion with a standard-normal innovation
``eps_t`` per step and coordinate::

    x_0     = initial_loc + initial_scale * eps_0
    x_{t+1} = step(x_t) + innovation_scale * eps_{t+1}

For the continuous-time systems (Lorenz, Van der Pol) ``step`` is one explicit Euler step
``x + dt * f(x)``; with ``innovation_scale = s`` this is Euler-Maruyama for
``dx = f(x) dt + (s / sqrt(dt)) dW``.

Use :func:`flatten_time_series` to obtain ``[N, T * state_dim]`` in the order of the
variables ``x0, x1, ...`` of :func:`emf_jax.templates.random_walk` and
:func:`emf_jax.templates.smooth_walk`.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from emf_jax.datasets._utils import DTypeLike, check_float, check_int, resolve_dtype

__all__ = [
    "brownian_motion",
    "ornstein_uhlenbeck",
    "lorenz",
    "van_der_pol",
    "lorenz_drift",
    "van_der_pol_drift",
    "flatten_time_series",
    "unflatten_time_series",
]


@functools.partial(jax.jit, static_argnums=tuple(range(1, 9)))
def _simulate(
    key: jax.Array,
    num_samples: int,
    num_steps: int,
    state_dim: int,
    initial_loc: float,
    initial_scale: float,
    innovation_scale: float,
    step: tuple,
    dtype: jnp.dtype,
) -> jax.Array:
    """Runs ``x_{t+1} = step(x_t) + innovation_scale * eps`` and returns ``[N, T, D]``.

    ``step`` is a hashable spec (so that repeated calls hit the compilation cache):
    ``('walk',)``, ``('ar', a)``, ``('lorenz', dt, sigma, rho, beta)`` or
    ``('van_der_pol', dt, mu)``.
    """
    kind, *args = step

    def step_fn(x: jax.Array) -> jax.Array:
        if kind == "walk":
            return x
        if kind == "ar":
            return args[0] * x
        if kind == "lorenz":
            dt, sigma, rho, beta = args
            return x + dt * lorenz_drift(x, sigma=sigma, rho=rho, beta=beta)
        if kind == "van_der_pol":
            dt, mu = args
            return x + dt * van_der_pol_drift(x, mu=mu)
        raise ValueError(f"unknown step {step!r}")  # pragma: no cover - internal

    noise = jax.random.normal(key, (num_steps, num_samples, state_dim), dtype)
    x0 = initial_loc + initial_scale * noise[0]

    def body(x, eps):
        x_next = step_fn(x) + innovation_scale * eps
        return x_next, x_next

    _, rest = jax.lax.scan(body, x0, noise[1:])
    path = jnp.concatenate([x0[None], rest], axis=0)
    return jnp.swapaxes(path, 0, 1)


def brownian_motion(key: jax.Array, num_samples: int, *, num_steps: int = 30, sigma: float = 0.1,
                    dtype: DTypeLike | None = None) -> jax.Array:
    """Discrete Brownian motion (Gaussian random walk) started at the origin.

    ``x_0 ~ N(0, sigma^2)`` and ``x_t = x_{t-1} + sigma * eps_t``, i.e. the partial sums of
    ``T`` independent ``N(0, sigma^2)`` increments (paper: 30 steps, sigma 0.1).

    Args:
      key: a JAX PRNG key.
      num_samples: number of paths ``N`` (>= 1, static).
      num_steps: number of time steps ``T`` (>= 1).
      sigma: standard deviation of each increment (> 0).
      dtype: floating output dtype; ``None`` for JAX's default float dtype.

    Returns:
      An array of shape ``[N, T, 1]``.

    Example:
      The variance at step ``t`` is ``(t + 1) sigma^2``:

      >>> import jax
      >>> x = brownian_motion(jax.random.key(0), 20000, num_steps=4, sigma=1.0)
      >>> x.shape, [round(float(v)) for v in x[..., 0].var(axis=0)]
      ((20000, 4, 1), [1, 2, 3, 4])
    """
    num_samples = check_int(num_samples, "num_samples", 1)
    num_steps = check_int(num_steps, "num_steps", 1)
    sigma = check_float(sigma, "sigma", positive=True)
    return _simulate(
        key, num_samples, num_steps, 1, 0.0, sigma, sigma, ("walk",), resolve_dtype(dtype)
    )


def ornstein_uhlenbeck(key: jax.Array, num_samples: int, *, num_steps: int = 30, a: float = 0.8,
                       initial_scale: float = 5.0, sigma: float = 0.5,
                       dtype: DTypeLike | None = None) -> jax.Array:
    """Discrete Ornstein-Uhlenbeck process (a Gaussian AR(1) chain) reverting to 0.

    ``x_0 ~ N(0, initial_scale^2)`` and ``x_t = a * x_{t-1} + sigma * eps_t`` (paper:
    30 steps, a 0.8, initial scale 5, sigma 0.5). This is the exact unit-time-step
    discretisation of ``dx = -theta x dt + s dW`` with ``a = exp(-theta)``. For ``|a| < 1``
    the marginal variance at step ``t`` is
    ``a^(2t) initial_scale^2 + sigma^2 (1 - a^(2t)) / (1 - a^2)``, which tends to the
    stationary ``sigma^2 / (1 - a^2)``.

    Args:
      key: a JAX PRNG key.
      num_samples: number of paths ``N`` (>= 1, static).
      num_steps: number of time steps ``T`` (>= 1).
      a: autoregressive coefficient (finite).
      initial_scale: standard deviation of ``x_0`` (> 0).
      sigma: standard deviation of the innovations (> 0).
      dtype: floating output dtype; ``None`` for JAX's default float dtype.

    Returns:
      An array of shape ``[N, T, 1]``.

    Example:
      >>> import jax
      >>> ornstein_uhlenbeck(jax.random.key(0), 2, num_steps=5).shape
      (2, 5, 1)
    """
    num_samples = check_int(num_samples, "num_samples", 1)
    num_steps = check_int(num_steps, "num_steps", 1)
    a = check_float(a, "a")
    initial_scale = check_float(initial_scale, "initial_scale", positive=True)
    sigma = check_float(sigma, "sigma", positive=True)
    return _simulate(
        key, num_samples, num_steps, 1, 0.0, initial_scale, sigma, ("ar", a),
        resolve_dtype(dtype),
    )


def lorenz_drift(
    x: jax.Array, *, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0
) -> jax.Array:
    """The Lorenz vector field ``f(x)`` for states ``x`` of shape ``[..., 3]``.

    ``f(x, y, z) = (sigma (y - x), x (rho - z) - y, x y - beta z)``.

    Args:
      x: states, last axis of size 3.
      sigma: Prandtl number.
      rho: Rayleigh number.
      beta: geometric factor.

    Returns:
      An array with the shape of ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> lorenz_drift(jnp.array([1.0, 1.0, 0.0])).tolist()
      [0.0, 27.0, 1.0]
    """
    u, v, w = x[..., 0], x[..., 1], x[..., 2]
    return jnp.stack([sigma * (v - u), u * (rho - w) - v, u * v - beta * w], axis=-1)


def lorenz(key: jax.Array, num_samples: int, *, num_steps: int = 30, dt: float = 0.02,
           sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0,
           initial_loc: float = 0.0, initial_scale: float = 1.0, innovation_scale: float = 0.1,
           dtype: DTypeLike | None = None) -> jax.Array:
    """Noisy Lorenz system integrated with Euler-Maruyama (paper: 30 steps, dt 0.02).

    ``x_0 ~ N(initial_loc, initial_scale^2 I_3)`` and
    ``x_{t+1} = x_t + dt * f(x_t) + innovation_scale * eps_{t+1}`` with ``f`` the Lorenz
    field (:func:`lorenz_drift`, standard chaotic parameters by default). The paper fixes
    only ``dt`` and the number of steps; the start ``N(0, I)`` and the per-step innovation
    0.1 are this library's documented defaults.

    Args:
      key: a JAX PRNG key.
      num_samples: number of paths ``N`` (>= 1, static).
      num_steps: number of time steps ``T`` (>= 1).
      dt: Euler step size (> 0).
      sigma: Prandtl number of the Lorenz field.
      rho: Rayleigh number of the Lorenz field.
      beta: geometric factor of the Lorenz field.
      initial_loc: mean of every coordinate of ``x_0``.
      initial_scale: standard deviation of every coordinate of ``x_0`` (> 0).
      innovation_scale: standard deviation of the per-step noise (>= 0).
      dtype: floating output dtype; ``None`` for JAX's default float dtype.

    Returns:
      An array of shape ``[N, T, 3]``.

    Example:
      >>> import jax
      >>> lorenz(jax.random.key(0), 2).shape
      (2, 30, 3)
    """
    field = {"sigma": sigma, "rho": rho, "beta": beta}
    return _euler_maruyama(key, num_samples, num_steps, dt, "lorenz", field, 3,
                           (initial_loc, initial_scale, innovation_scale), dtype)


def van_der_pol_drift(x: jax.Array, *, mu: float = 1.0) -> jax.Array:
    """The Van der Pol vector field for states ``x = (position, velocity)`` of shape ``[..., 2]``.

    ``f(p, v) = (v, mu (1 - p^2) v - p)``.

    Args:
      x: states, last axis of size 2.
      mu: damping parameter.

    Returns:
      An array with the shape of ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> van_der_pol_drift(jnp.array([2.0, 1.0])).tolist()
      [1.0, -5.0]
    """
    p, v = x[..., 0], x[..., 1]
    return jnp.stack([v, mu * (1.0 - p * p) * v - p], axis=-1)


def van_der_pol(key: jax.Array, num_samples: int, *, num_steps: int = 120, dt: float = 0.05,
                mu: float = 1.0, initial_loc: float = 0.0, initial_scale: float = 1.0,
                innovation_scale: float = 0.1, dtype: DTypeLike | None = None) -> jax.Array:
    """Noisy Van der Pol oscillator integrated with Euler-Maruyama (paper: 120 steps, dt 0.05).

    ``x_0 ~ N(initial_loc, initial_scale^2 I_2)`` and
    ``x_{t+1} = x_t + dt * f(x_t) + innovation_scale * eps_{t+1}`` with ``f`` the Van der Pol
    field (:func:`van_der_pol_drift`); the state is ``(position, velocity)``.

    Args:
      key: a JAX PRNG key.
      num_samples: number of paths ``N`` (>= 1, static).
      num_steps: number of time steps ``T`` (>= 1).
      dt: Euler step size (> 0).
      mu: damping parameter of the oscillator.
      initial_loc: as for :func:`lorenz` (both coordinates).
      initial_scale: as for :func:`lorenz` (both coordinates).
      innovation_scale: as for :func:`lorenz`.
      dtype: as for :func:`lorenz`.

    Returns:
      An array of shape ``[N, T, 2]``; :func:`flatten_time_series` makes it ``[N, 2 T]``.

    Example:
      >>> import jax
      >>> flatten_time_series(van_der_pol(jax.random.key(0), 2, num_steps=10)).shape
      (2, 20)
    """
    return _euler_maruyama(key, num_samples, num_steps, dt, "van_der_pol", {"mu": mu}, 2,
                           (initial_loc, initial_scale, innovation_scale), dtype)


def _euler_maruyama(key: jax.Array, num_samples: int, num_steps: int, dt: float, kind: str,
                    field: dict[str, float], state_dim: int,
                    start_and_noise: tuple[float, float, float],
                    dtype: DTypeLike | None) -> jax.Array:
    """Checks the options the Euler-Maruyama generators share, then runs `_simulate`.

    ``field`` holds the vector field's parameters by name, in the order `_simulate`'s step
    spec ``(kind, dt, *field)`` takes them; ``start_and_noise`` is ``(initial_loc,
    initial_scale, innovation_scale)``.
    """
    num_samples = check_int(num_samples, "num_samples", 1)
    num_steps = check_int(num_steps, "num_steps", 1)
    dt = check_float(dt, "dt", positive=True)
    params = tuple(check_float(value, name) for name, value in field.items())
    initial_loc, initial_scale, innovation_scale = start_and_noise
    initial_loc = check_float(initial_loc, "initial_loc")
    initial_scale = check_float(initial_scale, "initial_scale", positive=True)
    innovation_scale = check_float(innovation_scale, "innovation_scale", nonnegative=True)
    return _simulate(
        key, num_samples, num_steps, state_dim, initial_loc, initial_scale, innovation_scale,
        (kind, dt) + params, resolve_dtype(dtype),
    )


def flatten_time_series(paths: jax.Array) -> jax.Array:
    """Flattens ``[N, T, D]`` paths to ``[N, T * D]`` in time-major order.

    Entry ``t * D + d`` of a row is coordinate ``d`` at step ``t``: the order of the variables
    ``x0, x1, ..., x{T-1}`` of :func:`emf_jax.templates.random_walk` and
    :func:`emf_jax.templates.smooth_walk` concatenated.

    Args:
      paths: an array of shape ``[N, T, D]``.

    Returns:
      An array of shape ``[N, T * D]``.

    Raises:
      ValueError: if ``paths`` is not 3-dimensional.

    Example:
      >>> import jax.numpy as jnp
      >>> flatten_time_series(jnp.arange(6.0).reshape(1, 3, 2)).tolist()
      [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]]
    """
    paths = jnp.asarray(paths)
    if paths.ndim != 3:
        raise ValueError(f"paths must have shape [N, T, D], got shape {paths.shape}.")
    return paths.reshape(paths.shape[0], -1)


def unflatten_time_series(flat: jax.Array, state_dim: int) -> jax.Array:
    """Inverse of :func:`flatten_time_series`: ``[N, T * D]`` to ``[N, T, D]``.

    Args:
      flat: an array of shape ``[N, T * D]``.
      state_dim: the state size ``D`` (>= 1).

    Returns:
      An array of shape ``[N, T, D]``.

    Raises:
      ValueError: if ``flat`` is not 2-dimensional or its width is not a multiple of
        ``state_dim``.

    Example:
      >>> import jax.numpy as jnp
      >>> unflatten_time_series(jnp.zeros((4, 6)), 3).shape
      (4, 2, 3)
    """
    state_dim = check_int(state_dim, "state_dim", 1)
    flat = jnp.asarray(flat)
    if flat.ndim != 2 or flat.shape[1] % state_dim:
        raise ValueError(
            f"flat must have shape [N, T * {state_dim}], got shape {flat.shape}."
        )
    return flat.reshape(flat.shape[0], -1, state_dim)
