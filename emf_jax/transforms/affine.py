"""Location-scale families: the map is affine and every gate stays in closed form."""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from tensorflow_probability.substrates import jax as tfp

from emf_jax.transforms.base import AffineTransform, affine, affine_matvec
from emf_jax.transforms.registry import register_transform

tfd = tfp.distributions
tfb = tfp.bijectors

_DIAGONAL_OPERATORS = ("LinearOperatorDiag", "LinearOperatorScaledIdentity",
                       "LinearOperatorIdentity")
_LOWER_TRIANGULAR_OPERATORS = ("LinearOperatorLowerTriangular",)


def normal_transform(dist: Any) -> AffineTransform:
    """Normal(loc, scale): ``x = loc + scale · e`` (parameters broadcast against the value)."""
    return affine(dist.loc, dist.scale, None)


def mvn_linear_operator_transform(dist: Any) -> AffineTransform:
    """MultivariateNormalLinearOperator (Diag, TriL, FullCovariance, ...): ``x = loc + S e``.

    Diagonal operators give an elementwise affine map; lower-triangular ones a triangular matrix
    (solved by substitution); any other operator a dense matrix (solved by LU).
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
