"""Location-scale families: the map is affine and every gate stays in closed form."""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from tensorflow_probability.substrates import jax as tfp

from emf_jax.transforms.base import AffineTransform, affine, affine_matvec
from emf_jax.transforms.registry import register_transform

__all__ = ["normal_transform", "mvn_linear_operator_transform"]

tfd = tfp.distributions
tfb = tfp.bijectors

_DIAGONAL_OPERATORS = ("LinearOperatorDiag", "LinearOperatorScaledIdentity",
                       "LinearOperatorIdentity")
_LOWER_TRIANGULAR_OPERATORS = ("LinearOperatorLowerTriangular",)


def normal_transform(dist: Any) -> AffineTransform:
    """Normal(loc, scale): ``x = loc + scale · e`` (parameters broadcast against the value).

    Args:
      dist: a `tfd.Normal`.

    Returns:
      An `AffineTransform` with the real line as support.

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> t = normal_transform(tfp.distributions.Normal(3., 0.5))
      >>> float(t.shift), float(t.scale)
      (3.0, 0.5)
    """
    return affine(dist.loc, dist.scale, None)


def mvn_linear_operator_transform(dist: Any) -> AffineTransform:
    """MultivariateNormalLinearOperator (Diag, TriL, FullCovariance, ...): ``x = loc + S e``.

    Diagonal operators give an elementwise affine map; lower-triangular ones a triangular matrix
    (solved by substitution); any other operator a dense matrix (solved by LU).

    Args:
      dist: a `tfd.MultivariateNormalLinearOperator` (or a subclass such as
        `tfd.MultivariateNormalTriL`).

    Returns:
      An `AffineTransform` with the real line as support.

    Example:
      >>> import jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> dist = tfp.distributions.MultivariateNormalTriL(
      ...     jnp.zeros(2), jnp.array([[1.0, 0.0], [0.5, 2.0]]))
      >>> t = mvn_linear_operator_transform(dist)
      >>> t.scale_matrix.tolist(), t.lower_triangular
      ([[1.0, 0.0], [0.5, 2.0]], True)
    """
    operator = dist.scale
    value_shape = tuple(dist.batch_shape) + tuple(dist.event_shape)
    loc = dist.loc
    loc = jnp.zeros(value_shape, dist.dtype) if loc is None else jnp.broadcast_to(loc, value_shape)
    kind = type(operator).__name__
    if kind in _DIAGONAL_OPERATORS:
        diag = jnp.broadcast_to(operator.diag_part(), value_shape)
        return affine(loc, diag, None)
    matrix = operator.to_dense()
    return affine_matvec(loc, matrix, None,
                         lower_triangular=kind in _LOWER_TRIANGULAR_OPERATORS)


register_transform(tfd.Normal, normal_transform)
register_transform(tfd.MultivariateNormalLinearOperator, mvn_linear_operator_transform)
