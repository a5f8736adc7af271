"""Two-dimensional toy densities used in the paper's density-estimation experiments.

Every generator has the signature ``fn(key, num_samples, *, ..., dtype=None) -> [N, 2]``, is a
pure function of ``key`` and compiles under ``jax.jit`` with ``num_samples`` static. The
definitions follow the common FFJORD-style toy sets (``8gaussians``, ``checkerboard``,
``2spirals``) and a rotated grid of Gaussians (``diamond``); they are stated exactly in each
docstring.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from emf_jax.datasets._utils import DTypeLike, check_float, check_int, resolve_dtype

__all__ = ["eight_gaussians", "checkerboard", "two_spirals", "diamond"]


def eight_gaussians(key: jax.Array, num_samples: int, *, radius: float = 2.0 * math.sqrt(2.0),
                    scale: float = 0.5 / math.sqrt(2.0),
                    dtype: DTypeLike | None = None) -> jax.Array:
    """Equal mixture of 8 isotropic Gaussians on a circle.

    The centres are ``radius * (cos(k pi / 4), sin(k pi / 4))`` for ``k = 0..7`` and each
    component has standard deviation ``scale`` in every direction. The defaults
    (radius ``4 / sqrt(2) ~ 2.83``, scale ``0.5 / sqrt(2) ~ 0.354``) are FFJORD's
    ``8gaussians``: centres at distance 4, noise 0.5, all divided by sqrt(2).

    Args:
      key: a JAX PRNG key.
      num_samples: number of points ``N`` (>= 1, static).
      radius: distance of the centres from the origin (> 0).
      scale: standard deviation of each component (> 0).
      dtype: floating output dtype; ``None`` for JAX's default float dtype.

    Returns:
      An array of shape ``[N, 2]``.

    Example:
      With a tiny ``scale`` every point lies about ``radius`` from the origin.

      >>> import jax, jax.numpy as jnp
      >>> x = eight_gaussians(jax.random.key(0), 500, radius=2.0, scale=1e-3)
      >>> x.shape, bool(jnp.allclose(jnp.linalg.norm(x, axis=-1), 2.0, atol=0.01))
      ((500, 2), True)
    """
    num_samples = check_int(num_samples, "num_samples", 1)
    radius = check_float(radius, "radius", positive=True)
    scale = check_float(scale, "scale", positive=True)
    return _eight_gaussians(key, num_samples, radius, scale, resolve_dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _eight_gaussians(key: jax.Array, num_samples: int, radius: float, scale: float,
                     dtype: jnp.dtype) -> jax.Array:
    key_mode, key_noise = jax.random.split(key)
    mode = jax.random.randint(key_mode, (num_samples,), 0, 8)
    angle = mode.astype(dtype) * (math.pi / 4.0)
    centres = radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    return centres + scale * jax.random.normal(key_noise, (num_samples, 2), dtype)


def checkerboard(key: jax.Array, num_samples: int, *, dtype: DTypeLike | None = None) -> jax.Array:
    """Uniform density on the dark squares of a 4 x 4 checkerboard on ``[-4, 4]^2``.

    The board has squares of side 2. The square containing ``(x, y)`` is filled when
    ``floor(x / 2) + floor(y / 2)`` is even, which gives 8 filled squares, each with
    probability 1/8 and density ``1 / 32`` inside (FFJORD's ``checkerboard``).

    Args:
      key: a JAX PRNG key.
      num_samples: number of points ``N`` (>= 1, static).
      dtype: floating output dtype; ``None`` for JAX's default float dtype.

    Returns:
      An array of shape ``[N, 2]``.

    Example:
      Every point lies on a filled square (``floor(x/2) + floor(y/2)`` even).

      >>> import jax, jax.numpy as jnp
      >>> x = checkerboard(jax.random.key(0), 500)
      >>> bool((jnp.floor(x / 2).sum(axis=-1) % 2 == 0).all()), bool((jnp.abs(x) <= 4).all())
      (True, True)
    """
    num_samples = check_int(num_samples, "num_samples", 1)
    return _checkerboard(key, num_samples, resolve_dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _checkerboard(key: jax.Array, num_samples: int, dtype: jnp.dtype) -> jax.Array:
    key_cell, key_pos = jax.random.split(key)
    # Column i in {0..3}, then one of the two filled rows j of that column (i + j even).
    cell = jax.random.randint(key_cell, (num_samples,), 0, 8)
    column = cell // 2
    row = 2 * (cell % 2) + column % 2
    corner = jnp.stack([column, row], axis=-1).astype(dtype) * 2.0 - 4.0
    return corner + 2.0 * jax.random.uniform(key_pos, (num_samples, 2), dtype)


def two_spirals(key: jax.Array, num_samples: int, *, noise: float = 0.1,
                dtype: DTypeLike | None = None) -> jax.Array:
    """Two interleaved spiral arms, symmetric about the origin (FFJORD's ``2spirals``).

    With ``u, v1, v2 ~ U[0, 1)``, ``n = 3 pi sqrt(u)`` (1.5 turns) and a fair sign ``s``::

        p = s * (-n cos(n) + 0.5 v1,  n sin(n) + 0.5 v2)
        x = p / 3 + noise * eps,       eps ~ N(0, I_2)

    Args:
      key: a JAX PRNG key.
      num_samples: number of points ``N`` (>= 1, static).
      noise: standard deviation of the isotropic Gaussian noise (>= 0).
      dtype: floating output dtype; ``None`` for JAX's default float dtype.

    Returns:
      An array of shape ``[N, 2]``.

    Example:
      >>> import jax
      >>> two_spirals(jax.random.key(0), 4).shape
      (4, 2)
    """
    num_samples = check_int(num_samples, "num_samples", 1)
    noise = check_float(noise, "noise", nonnegative=True)
    return _two_spirals(key, num_samples, noise, resolve_dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _two_spirals(key: jax.Array, num_samples: int, noise: float,
                 dtype: jnp.dtype) -> jax.Array:
    key_u, key_jitter, key_sign, key_noise = jax.random.split(key, 4)
    n = 3.0 * math.pi * jnp.sqrt(jax.random.uniform(key_u, (num_samples,), dtype))
    jitter = 0.5 * jax.random.uniform(key_jitter, (num_samples, 2), dtype)
    arm = jnp.stack([-n * jnp.cos(n), n * jnp.sin(n)], axis=-1) + jitter
    sign = jnp.where(jax.random.bernoulli(key_sign, 0.5, (num_samples, 1)), 1.0, -1.0)
    points = sign.astype(dtype) * arm / 3.0
    return points + noise * jax.random.normal(key_noise, (num_samples, 2), dtype)


def diamond(key: jax.Array, num_samples: int, *, width: int = 20, bound: float = 2.5,
            scale: float = 0.04, dtype: DTypeLike | None = None) -> jax.Array:
    """A square grid of small Gaussians rotated by 45 degrees, forming a diamond.

    The ``width * width`` centres are the points of ``linspace(-bound, bound, width)^2``,
    rotated by 45 degrees about the origin (so the outer corners lie on the axes at distance
    ``bound * sqrt(2)``). Each point picks a centre uniformly and adds isotropic Gaussian
    noise of standard deviation ``scale``. With the defaults the grid spacing is
    ``5 / 19 ~ 0.26``, about 6.6 standard deviations, so the 400 modes are well separated.

    Args:
      key: a JAX PRNG key.
      num_samples: number of points ``N`` (>= 1, static).
      width: number of grid points per side (>= 1).
      bound: half-width of the grid before rotation (> 0).
      scale: standard deviation of each component (> 0).
      dtype: floating output dtype; ``None`` for JAX's default float dtype.

    Returns:
      An array of shape ``[N, 2]``.

    Example:
      The rotated grid fills the diamond ``|x| + |y| <= bound * sqrt(2)``.

      >>> import jax, jax.numpy as jnp
      >>> x = diamond(jax.random.key(0), 500, width=5, bound=1.0, scale=1e-4)
      >>> bool((jnp.abs(x).sum(axis=-1) <= 2 ** 0.5 + 1e-3).all())
      True
    """
    num_samples = check_int(num_samples, "num_samples", 1)
    width = check_int(width, "width", 1)
    bound = check_float(bound, "bound", positive=True)
    scale = check_float(scale, "scale", positive=True)
    return _diamond(key, num_samples, width, bound, scale, resolve_dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _diamond(key: jax.Array, num_samples: int, width: int, bound: float, scale: float,
             dtype: jnp.dtype) -> jax.Array:
    key_mode, key_noise = jax.random.split(key)
    grid = jnp.linspace(-bound, bound, width, dtype=dtype) if width > 1 else jnp.zeros(
        (1,), dtype
    )
    index = jax.random.randint(key_mode, (num_samples, 2), 0, width)
    centres = grid[index]
    cos = sin = math.sqrt(0.5)
    rotation = jnp.asarray([[cos, -sin], [sin, cos]], dtype=dtype)
    points = centres @ rotation.T
    return points + scale * jax.random.normal(key_noise, (num_samples, 2), dtype)
