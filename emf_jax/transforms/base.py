"""The two kinds of per-variable map from N(0, 1) noise to a variable's conditional.

Every map acts on one whole variable value (no sample dimensions; the structured layer
vectorises over those) and is split in two parts:

    e  --(map in unconstrained space)-->  u  --(support bijector)-->  x

The gate acts on the first part only (``u = λ·f(e) + (1 − λ)·e``), so every gate value keeps
``x`` inside the variable's support. ``u`` has the variable's *unconstrained* shape, which is
the event shape except for families such as Dirichlet.

`AffineTransform`: ``f(e) = shift + scale · e`` (elementwise scale) or
``f(e) = shift + M e`` (a matrix acting on the last axis), with closed-form inverse and
log-det, also when gated.

`MonotoneTransform`: an elementwise, strictly increasing ``f`` given by its forward, inverse and
elementwise log-derivative. The gated inverse is found numerically.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

__all__ = [
    "AffineTransform",
    "MonotoneTransform",
    "Transform",
    "affine",
    "affine_matvec",
    "with_support",
    "support_forward",
    "support_inverse",
    "support_forward_log_det",
    "support_inverse_log_det",
]

Array = jax.Array


class AffineTransform(NamedTuple):
    """``f(e) = shift + scale * e`` (elementwise) or ``shift + scale_matrix @ e`` (last axis).

    Exactly one of `scale` and `scale_matrix` is set.

    Attributes:
      shift: broadcastable to the unconstrained value shape.
      scale: positive elementwise scale, broadcastable to the value shape, or None.
      scale_matrix: ``[..., d, d]`` matrix acting on the last axis, or None.
      lower_triangular: whether `scale_matrix` is lower triangular (static).
      support_bijector: maps ``u`` into the support (a `tfb.Bijector`), or None for the
        identity (the whole real line; it saves the bijector's overhead).

    Example:
      >>> import emf_jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> t = emf_jax.transforms.transform_for(tfp.distributions.Normal(1., 2.))
      >>> type(t).__name__, float(t.shift), float(t.scale), t.support_bijector
      ('AffineTransform', 1.0, 2.0, None)
    """

    shift: Array
    scale: Optional[Array]
    scale_matrix: Optional[Array]
    lower_triangular: bool
    support_bijector: Any


class MonotoneTransform(NamedTuple):
    """An elementwise strictly increasing map ``u = f(e)`` in unconstrained space.

    Attributes:
      forward: ``e -> u``.
      inverse: ``u -> e``.
      forward_log_derivative: ``(e, u) -> log f'(e)`` elementwise (``u = f(e)`` is passed so
        that implementations need not recompute it).
      support_bijector: maps ``u`` into the support (a `tfb.Bijector`).
      noise_limit: None, or ``L``: a gated map evaluates ``f`` on ``|e| <= L`` only and
        continues beyond as its identity part (`emf_jax.gates`), for maps that float32
        cannot represent further out (the Gamma quantile's lower tail underflows to 0).

    Example:
      >>> import jax.numpy as jnp, emf_jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> t = emf_jax.transforms.transform_for(tfp.distributions.HalfNormal(1.))
      >>> u = t.forward(jnp.zeros(()))            # the median, in unconstrained space
      >>> round(float(t.support_bijector.forward(u)), 4)     # HalfNormal's median
      0.6745
      >>> abs(round(float(t.inverse(u)), 4))
      0.0
    """

    forward: Callable[[Array], Array]
    inverse: Callable[[Array], Array]
    forward_log_derivative: Callable[[Array, Array], Array]
    support_bijector: Any
    noise_limit: Optional[float] = None


Transform = Union[AffineTransform, MonotoneTransform]


def affine(shift: Array, scale: Array, support_bijector: Any) -> AffineTransform:
    """An elementwise affine transform ``u = shift + scale * e``.

    Args:
      shift: broadcastable to the variable's unconstrained value shape.
      scale: positive, broadcastable to the value shape.
      support_bijector: maps ``u`` into the support, or None for the real line.

    Returns:
      An `AffineTransform`.

    Example:
      >>> import jax.numpy as jnp
      >>> from emf_jax import gates
      >>> t = affine(1.0, 2.0, None)
      >>> gates.gated_forward(t, jnp.array([0.0, 1.0]))[0].tolist()
      [1.0, 3.0]
    """
    return AffineTransform(shift, scale, None, False, support_bijector)


def affine_matvec(
    shift: Array, scale_matrix: Array, support_bijector: Any, *, lower_triangular: bool
) -> AffineTransform:
    """A matrix transform ``u = shift + scale_matrix @ e`` acting on the last axis.

    Args:
      shift: ``[..., d]``.
      scale_matrix: ``[..., d, d]``, invertible.
      support_bijector: maps ``u`` into the support, or None for the real line.
      lower_triangular: whether `scale_matrix` is lower triangular (its inverse is then
        solved by substitution).

    Returns:
      An `AffineTransform`.

    Example:
      >>> import jax.numpy as jnp
      >>> from emf_jax import gates
      >>> t = affine_matvec(jnp.zeros(2), jnp.array([[1.0, 0.0], [1.0, 2.0]]), None,
      ...                   lower_triangular=True)
      >>> u, log_det = gates.gated_forward(t, jnp.ones(2))
      >>> u.tolist(), round(float(log_det), 4)         # log|det| = log 2
      ([1.0, 3.0], 0.6931)
    """
    return AffineTransform(shift, None, scale_matrix, lower_triangular, support_bijector)


def with_support(transform: Transform, support_bijector: Any) -> Transform:
    """The same map in unconstrained space with another support bijector.

    Used by wrappers such as `tfd.TransformedDistribution`, whose map is the base's map
    followed by the bijector: ``x = g(B_base(u))``.

    Args:
      transform: an `AffineTransform` or `MonotoneTransform`.
      support_bijector: the new ``u -> x`` bijector (a `tfb.Bijector`), or None for the
        identity.

    Returns:
      A transform of the same type, equal to `transform` except for its support bijector.

    Example:
      >>> import jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> t = with_support(affine(0.0, 1.0, None), tfp.bijectors.Exp())
      >>> type(t).__name__, round(float(support_forward(t, jnp.ones(()))), 4)    # x = exp(u)
      ('AffineTransform', 2.7183)
    """
    return transform._replace(support_bijector=support_bijector)


def support_forward(transform: Transform, u: Array) -> Array:
    """``x = B(u)``: the transform's support bijector applied (the identity when it is None).

    Args:
      transform: an `AffineTransform` or `MonotoneTransform`.
      u: a value in unconstrained space.

    Returns:
      ``x``, the value in the support.

    Example:
      >>> import jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> t = affine(0.0, 1.0, tfp.bijectors.Exp())
      >>> round(float(support_forward(t, jnp.log(2.0))), 4)
      2.0
      >>> support_forward(affine(0.0, 1.0, None), 3.0)              # no bijector: x = u
      3.0
    """
    return _through_support(transform, u, "forward")


def support_inverse(transform: Transform, x: Array) -> Array:
    """``u = B⁻¹(x)``: the inverse of `support_forward` (the identity when ``B`` is None).

    Args:
      transform: as for `support_forward`.
      x: a value in the support.

    Returns:
      ``u``, the value in unconstrained space.

    Example (with this module's ``jnp``):
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> round(float(support_inverse(affine(0.0, 1.0, tfp.bijectors.Exp()), jnp.array(2.0))), 4)
      0.6931
    """
    return _through_support(transform, x, "inverse")


def support_forward_log_det(transform: Transform, u: Array) -> Array:
    """``log |det dB(u)/du|``, summed over the whole value (0 for the identity).

    Args:
      transform: an `AffineTransform` or `MonotoneTransform`.
      u: one whole value of the variable in unconstrained space (all its axes are event axes).

    Returns:
      A scalar: the log-determinant of the support bijector's Jacobian at ``u``.

    Example:
      >>> import jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> t = affine(0.0, 1.0, tfp.bijectors.Exp())
      >>> float(support_forward_log_det(t, jnp.array([0.5, 1.0])))    # Σ u for exp
      1.5
    """
    return _through_support(transform, u, "forward_log_det_jacobian")


def support_inverse_log_det(transform: Transform, x: Array) -> Array:
    """``log |det dB⁻¹(x)/dx|``, summed over the whole value (0 for the identity).

    Args:
      transform: as for `support_forward_log_det`.
      x: one whole value of the variable in the support (all its axes are event axes).

    Returns:
      A scalar: the log-determinant of the inverse support bijector's Jacobian at ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> t = affine(0.0, 1.0, tfp.bijectors.Exp())
      >>> round(float(support_inverse_log_det(t, jnp.array([1.0, 2.0]))), 4)   # −Σ log x
      -0.6931
    """
    return _through_support(transform, x, "inverse_log_det_jacobian")


def _through_support(transform: Transform, value: Array, method: str) -> Array:
    """``transform.support_bijector.<method>(value)``, or the identity's result when it is None.

    One place for the None case of the four ``support_*`` functions: the value itself for
    ``forward``/``inverse``, a scalar 0 for the log-dets (taken over the whole value).
    """
    support = transform.support_bijector
    log_det = method.endswith("log_det_jacobian")
    if support is None:
        return jnp.zeros((), value.dtype) if log_det else value
    if log_det:
        return getattr(support, method)(value, event_ndims=jnp.ndim(value))
    return getattr(support, method)(value)
