"""Exact maps for multivariate families: simplices, correlation and covariance matrices, GPs.

Each map goes from as many N(0, 1) noise dimensions as the family has degrees of freedom.
For Dirichlet, LKJ / CholeskyLKJ and Wishart the classical constructions draw *independent*
scalar coordinates (Beta stick fractions, Beta partial correlations, Chi2 and Normal Bartlett
entries) and then apply a fixed, parameter-dependent bijection onto the support::

    e  --(elementwise quantile maps: a MonotoneTransform)-->  u  --(support bijector)-->  x

so the gate ``u = λ·f(e) + (1 − λ)·e`` acts elementwise on the unconstrained coordinates, as
for the scalar families. Each coordinate's gated map is strictly increasing (``λ f' + 1 − λ >
0``), so it stays invertible, and its inverse is the gates' monotone one (a safeguarded Newton
solve per coordinate, `emf_jax.gates`); no new kind of map is needed. The scalar
quantiles are whatever the registry holds for `tfd.Beta` and `tfd.Chi2` (`transform_for`),
so faster scalar maps speed these families up too.

- **Dirichlet(α)**, ``K`` categories, ``K − 1`` noise dimensions: stick fractions
  ``v_k ~ Beta(α_k, Σ_{j>k} α_j)`` are independent, ``u_k = logit v_k``, and
  ``x_k = v_k Π_{j<k}(1 − v_j)``, ``x_K = Π_{j<K}(1 − v_j)`` (`LogitStickBreaking`).
- **LKJ(d, η)** and **CholeskyLKJ(d, η)**, ``d(d − 1)/2`` noise dimensions: the C-vine.
  The canonical partial correlations ``z_ij`` (row ``i`` > column ``j``, the correlation
  of variables ``i`` and ``j`` given ``0..j−1``) are independent with
  ``(z_ij + 1)/2 ~ Beta(β_j, β_j)``, ``β_j = η + (d − 2 − j)/2`` (0-based ``j``), and
  ``u_ij = logit((z_ij + 1)/2) = 2 atanh z_ij``. The Cholesky factor of the correlation
  matrix is ``L_ij = z_ij (1 − Σ_{k<j} L_ik²)^{1/2}``, ``L_ii = (1 − Σ_{k<i} L_ik²)^{1/2}``
  (`PartialCorrelationCholesky`). Lewandowski, Kurowicka and Joe (2009), section 2.
- **WishartTriL / WishartLinearOperator(df, S)**, ``d(d + 1)/2`` noise dimensions: the
  Bartlett decomposition ``W = S A Aᵀ Sᵀ`` with ``A`` lower triangular,
  ``A_ii² ~ Chi2(df − i)`` (0-based ``i``) and ``A_ij ~ N(0, 1)`` below the diagonal
  (`BartlettWishart`). ``u`` holds the Chi2 map's unconstrained values for the diagonal,
  then the Normal entries (identity map) row by row.

Gaussian families are affine in the noise, so their gates stay in closed form:

- **MultivariateNormalPrecisionFactorLinearOperator(loc, F)**, precision ``F Fᵀ``:
  ``x = loc + F⁻ᵀ e``.
- **GaussianProcess** and **GaussianProcessRegressionModel**: ``x = m + L e`` with
  ``L = cholesky(K + (σ² + jitter)·I)``, exactly the marginal TFP samples from and evaluates
  `log_prob` with (`get_marginal_distribution`: the kernel matrix at the index points, the
  observation or predictive noise variance on the diagonal, and the family's `cholesky_fn`,
  which adds `jitter`). Kernel parameters can be parents.

**Densities.** A support bijector's log-determinant is taken with respect to the coordinates
in which the family's `log_prob` is a density: the first ``K − 1`` coordinates of the
simplex, the strictly lower triangle of a correlation matrix (LKJ) or of its Cholesky factor
(CholeskyLKJ), the lower triangle (with the diagonal) of a Wishart matrix. With
``input_output_cholesky=True`` TFP's LKJ and Wishart take and return Cholesky factors but
their `log_prob` stays the density of the *matrix* at ``L Lᵀ``; the bijector then returns
``L`` and its log-determinant is that of the map onto the matrix, so that the structured
layer's density and the model's `log_prob` refer to the same measure.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tensorflow_probability.substrates import jax as tfp

from emf_jax.transforms.base import (
    AffineTransform,
    MonotoneTransform,
    Transform,
    affine,
    affine_matvec,
    with_support,
)
from emf_jax.transforms.registry import (
    UnsupportedDistributionError,
    current_variable,
    register_transform,
    transform_for,
)

tfd = tfp.distributions
tfb = tfp.bijectors
tfde = tfp.experimental.distributions
Array = jax.Array

__all__ = [
    "BartlettWishart",
    "LogitStickBreaking",
    "PartialCorrelationCholesky",
    "dirichlet_transform",
    "gaussian_process_transform",
    "lkj_transform",
    "mvn_precision_factor_transform",
    "wishart_transform",
]

_LOG2 = 0.6931471805599453


def _strict_lower(d: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-major indices of the strictly lower triangle of a ``d × d`` matrix."""
    return np.tril_indices(d, -1)


def _fill_strict_lower(values: Array, d: int) -> Array:
    rows, cols = _strict_lower(d)
    out = jnp.zeros(values.shape[:-1] + (d, d), values.dtype)
    return out.at[..., rows, cols].set(values)


def _diag(m: Array) -> Array:
    return jnp.diagonal(m, axis1=-2, axis2=-1)


def _set_diag(m: Array, diag: Array) -> Array:
    d = m.shape[-1]
    idx = np.arange(d)
    return m.at[..., idx, idx].set(diag)


def _shape_tuple(shape: Any) -> tuple:
    return tuple(int(s) if s is not None else None for s in shape)


# ------------------------------------------------------------------------------- bijectors


class LogitStickBreaking(tfb.Bijector):
    """Stick-breaking from the logits of the stick fractions onto the simplex.

    ``u ∈ ℝ^{K−1} ↦ x ∈ Δ^{K−1} ⊂ ℝ^K`` with ``v_k = σ(u_k)``:
    ``x_k = v_k Π_{j<k}(1 − v_j)`` (``k < K``) and ``x_K = Π_{j<K}(1 − v_j)``, computed in
    logs (``log(1 − v) = log σ(−u)``). Inverse: ``u_k = log x_k − log Σ_{j>k} x_j``.
    The Jacobian onto ``x_1..x_{K−1}`` is lower triangular:
    ``log|det| = Σ_k [log x_k + log σ(−u_k)]``.

    Args:
      validate_args: passed to `tfb.Bijector`.
      name: the bijector's name.

    Example:
      >>> import jax.numpy as jnp
      >>> b = LogitStickBreaking()
      >>> x = b.forward(jnp.zeros(2))               # fractions 1/2: [1/2, 1/4, 1/4]
      >>> x.tolist(), b.inverse(x).tolist()
      ([0.5, 0.25, 0.25], [0.0, 0.0])
    """

    def __init__(self, *, validate_args: bool = False, name: str = "logit_stick_breaking"):
        parameters = dict(locals())
        super().__init__(forward_min_event_ndims=1, inverse_min_event_ndims=1,
                         is_constant_jacobian=False, validate_args=validate_args,
                         parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype):
        return {}

    @staticmethod
    def _log_parts(u):
        log_v = jax.nn.log_sigmoid(u)
        log_rest = jax.nn.log_sigmoid(-u)
        before = jnp.cumsum(log_rest, axis=-1) - log_rest      # Σ_{j<k} log(1 − v_j)
        log_x = jnp.concatenate([log_v + before, jnp.sum(log_rest, -1, keepdims=True)], -1)
        return log_x, log_rest

    def _forward(self, u):
        return jnp.exp(self._log_parts(u)[0])

    def _inverse(self, x):
        tail = jnp.flip(jnp.cumsum(jnp.flip(x, -1), axis=-1), -1)   # Σ_{j≥k} x_j
        return jnp.log(x[..., :-1]) - jnp.log(tail[..., 1:])

    def _forward_log_det_jacobian(self, u):
        log_x, log_rest = self._log_parts(u)
        return jnp.sum(log_x[..., :-1] + log_rest, axis=-1)

    def _forward_event_shape(self, input_shape):
        shape = _shape_tuple(input_shape)
        return tfp.tf2jax.TensorShape(shape[:-1] + (None if shape[-1] is None
                                                    else shape[-1] + 1,))

    def _inverse_event_shape(self, output_shape):
        shape = _shape_tuple(output_shape)
        return tfp.tf2jax.TensorShape(shape[:-1] + (None if shape[-1] is None
                                                    else shape[-1] - 1,))

    def _forward_event_shape_tensor(self, input_shape):
        return jnp.concatenate([jnp.asarray(input_shape)[:-1],
                                jnp.asarray(input_shape)[-1:] + 1])

    def _inverse_event_shape_tensor(self, output_shape):
        return jnp.concatenate([jnp.asarray(output_shape)[:-1],
                                jnp.asarray(output_shape)[-1:] - 1])


class _TriangularFactorBijector(tfb.Bijector):
    """What the two matrix bijectors share: a flat vector to a matrix ``L`` or ``L Lᵀ``.

    A subclass sets ``_dimension`` (``d``) and ``_output_cholesky`` and defines
    `_cholesky_and_log_det` (``u ↦ (L, log-det)``), `_inverse` and `_num_coordinates` (the
    length of ``u``); the log-determinants and the event shapes follow from those here.
    """

    _dimension: int
    _output_cholesky: bool

    @classmethod
    def _parameter_properties(cls, dtype):
        return {}

    def _cholesky_and_log_det(self, u):
        raise NotImplementedError

    def _num_coordinates(self) -> int:
        raise NotImplementedError

    def _forward(self, u):
        chol = self._cholesky_and_log_det(u)[0]
        return chol if self._output_cholesky else chol @ jnp.swapaxes(chol, -1, -2)

    def _forward_log_det_jacobian(self, u):
        return self._cholesky_and_log_det(u)[1]

    def _inverse_log_det_jacobian(self, x):
        return -self._cholesky_and_log_det(self._inverse(x))[1]

    def _forward_event_shape(self, input_shape):
        shape = _shape_tuple(input_shape)
        return tfp.tf2jax.TensorShape(shape[:-1] + (self._dimension, self._dimension))

    def _inverse_event_shape(self, output_shape):
        shape = _shape_tuple(output_shape)
        return tfp.tf2jax.TensorShape(shape[:-2] + (self._num_coordinates(),))

    def _forward_event_shape_tensor(self, input_shape):
        d = self._dimension
        return jnp.concatenate([jnp.asarray(input_shape)[:-1], jnp.array([d, d])])

    def _inverse_event_shape_tensor(self, output_shape):
        return jnp.concatenate([jnp.asarray(output_shape)[:-2],
                                jnp.array([self._num_coordinates()])])


class PartialCorrelationCholesky(_TriangularFactorBijector):
    """C-vine: logits of canonical partial correlations to a correlation matrix (or its factor).

    ``u ∈ ℝ^{d(d−1)/2}`` (the strictly lower triangle, row by row) ↦ ``z = tanh(u/2)`` ↦
    the Cholesky factor ``L`` with ``L_ij = z_ij exp(½ S_ij)``, ``L_ii = exp(½ S_ii)``, where
    ``S_ij = Σ_{k<j} log(1 − z_ik²)`` and ``log(1 − z²) = log 4 + log σ(u) + log σ(−u)``.
    Inverse, with ``r_j = (Σ_{k≥j} L_ik²)^{1/2}`` (the rest of row ``i``):
    ``u_ij = 2 sign(L_ij)·[log(r_j + |L_ij|) − log r_{j+1}]`` (``= 2 atanh(L_ij / r_j)``).

    Log-determinants: onto the strictly lower triangle of ``L``,
    ``Σ_{i>j} [½ S_ij + log(1 − z_ij²) − log 2]``; onto that of ``R = L Lᵀ`` add
    ``Σ_i (d − 1 − i) log L_ii``.

    Args:
      dimension: ``d``.
      output_cholesky: return ``L`` (else ``R = L Lᵀ``).
      density_of_correlation: take the log-determinant onto ``R``'s strictly lower triangle
        (else onto ``L``'s).
      validate_args: passed to `tfb.Bijector`.
      name: the bijector's name.

    Example:
      >>> import jax.numpy as jnp
      >>> b = PartialCorrelationCholesky(2, output_cholesky=False, density_of_correlation=True)
      >>> r = b.forward(jnp.array([jnp.log(3.0)]))   # z = tanh(log(3)/2) = 1/2
      >>> [round(v, 4) for v in r.ravel().tolist()], round(float(b.inverse(r)[0]), 4)
      ([1.0, 0.5, 0.5, 1.0], 1.0986)
    """

    def __init__(self, dimension: int, *, output_cholesky: bool, density_of_correlation: bool,
                 validate_args: bool = False, name: str = "partial_correlation_cholesky"):
        parameters = dict(locals())
        self._dimension = int(dimension)
        self._output_cholesky = bool(output_cholesky)
        self._density_of_correlation = bool(density_of_correlation)
        super().__init__(forward_min_event_ndims=1, inverse_min_event_ndims=2,
                         is_constant_jacobian=False, validate_args=validate_args,
                         parameters=parameters, name=name)

    def _cholesky_and_log_det(self, u):
        d = self._dimension
        log_1mz2 = 2 * _LOG2 + jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u)
        z = jnp.tanh(u / 2)
        ell = _fill_strict_lower(log_1mz2, d)
        s = jnp.cumsum(ell, axis=-1) - ell                      # exclusive, along each row
        chol = _fill_strict_lower(z, d) * jnp.exp(0.5 * s)
        log_diag = 0.5 * _diag(s)
        chol = _set_diag(chol, jnp.exp(log_diag))
        rows, cols = _strict_lower(d)
        log_det = jnp.sum(0.5 * s[..., rows, cols] + log_1mz2 - _LOG2, axis=-1)
        if self._density_of_correlation:
            log_det = log_det + jnp.sum(np.arange(d - 1, -1, -1) * log_diag, axis=-1)
        return chol, log_det

    def _inverse(self, x):
        d = self._dimension
        chol = x if self._output_cholesky else jnp.linalg.cholesky(x)
        sq = jnp.square(chol)
        rest = jnp.sqrt(jnp.flip(jnp.cumsum(jnp.flip(sq, -1), axis=-1), -1))   # r_j
        rows, cols = _strict_lower(d)
        entry = chol[..., rows, cols]
        r_j = rest[..., rows, cols]
        r_next = rest[..., rows, cols + 1]
        return 2 * jnp.sign(entry) * (jnp.log(r_j + jnp.abs(entry)) - jnp.log(r_next))


    def _num_coordinates(self) -> int:
        d = self._dimension
        return d * (d - 1) // 2


class BartlettWishart(_TriangularFactorBijector):
    """The Bartlett decomposition: unconstrained coordinates to a Wishart matrix (or factor).

    ``u = [u_diag (d), u_off (d(d−1)/2, row by row)]`` ↦ ``c = B(u_diag)`` (the Chi2 map's
    support bijector, elementwise), ``A_ii = √c_i``, ``A_ij = u_off`` below the diagonal,
    ``L = S A`` and ``W = L Lᵀ``, for a lower-triangular ``S`` with positive diagonal
    (``S Sᵀ`` = the Wishart scale). Log-determinant onto the lower triangle of ``W``:
    ``Σ_i [log B'(u_i) − log 2 − ½ log c_i] + Σ_i (i + 1) log S_ii + d log 2
    + Σ_i (d − i) log L_ii`` (0-based ``i``; the last two terms are the Jacobians of
    ``A ↦ S A`` and of ``L ↦ L Lᵀ`` on lower-triangular matrices).

    Args:
      scale_tril: ``S``, ``[..., d, d]`` lower triangular with a positive diagonal.
      diag_bijector: ``B``, maps the diagonal coordinates to the Chi2 values ``c`` (e.g.
        `tfb.Softplus`).
      output_cholesky: return ``L`` (the log-determinant stays that onto ``W``), else ``W``.
      validate_args: passed to `tfb.Bijector`.
      name: the bijector's name.

    Example:
      >>> import jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> b = BartlettWishart(jnp.eye(2), tfp.bijectors.Exp(), output_cholesky=False)
      >>> w = b.forward(jnp.array([jnp.log(4.0), jnp.log(9.0), 1.0]))   # A = [[2, 0], [1, 3]]
      >>> w.tolist(), [round(v, 4) for v in b.inverse(w).tolist()]
      ([[4.0, 2.0], [2.0, 10.0]], [1.3863, 2.1972, 1.0])
    """

    def __init__(self, scale_tril: Array, diag_bijector: Any, *, output_cholesky: bool,
                 validate_args: bool = False, name: str = "bartlett_wishart"):
        parameters = dict(locals())
        self._scale_tril = scale_tril
        self._diag_bijector = diag_bijector
        self._output_cholesky = bool(output_cholesky)
        self._dimension = int(scale_tril.shape[-1])
        super().__init__(forward_min_event_ndims=1, inverse_min_event_ndims=2,
                         is_constant_jacobian=False, validate_args=validate_args,
                         parameters=parameters, name=name)

    def _diag_forward(self, u_diag):
        b = self._diag_bijector
        if b is None:
            return u_diag, jnp.zeros_like(u_diag)
        return b.forward(u_diag), b.forward_log_det_jacobian(u_diag, event_ndims=0)

    def _cholesky_and_log_det(self, u):
        d = self._dimension
        c, diag_log_det = self._diag_forward(u[..., :d])
        log_a = 0.5 * jnp.log(c)
        a = _set_diag(_fill_strict_lower(u[..., d:], d), jnp.exp(log_a))
        s = self._scale_tril
        chol = s @ a
        log_s = jnp.log(_diag(s))
        log_l = log_s + log_a
        i = np.arange(d)
        log_det = (jnp.sum(diag_log_det - _LOG2 - log_a, -1) + jnp.sum((i + 1) * log_s, -1)
                   + d * _LOG2 + jnp.sum((d - i) * log_l, -1))
        return chol, log_det

    def _inverse(self, x):
        d = self._dimension
        chol = x if self._output_cholesky else jnp.linalg.cholesky(x)
        s = jnp.broadcast_to(self._scale_tril, chol.shape[:-2] + self._scale_tril.shape[-2:])
        a = jax.scipy.linalg.solve_triangular(s, chol, lower=True)
        c = jnp.square(_diag(a))
        b = self._diag_bijector
        u_diag = c if b is None else b.inverse(c)
        rows, cols = _strict_lower(d)
        return jnp.concatenate([u_diag, a[..., rows, cols]], axis=-1)


    def _num_coordinates(self) -> int:
        d = self._dimension
        return d * (d + 1) // 2


# ------------------------------------------------------------------------------------ maps


def _value_shape(dist: Any) -> tuple[int, ...]:
    return tuple(dist.batch_shape) + tuple(dist.event_shape)


def _as_monotone(t: Transform, family: str) -> MonotoneTransform:
    if not isinstance(t, MonotoneTransform):
        raise UnsupportedDistributionError(
            f"{current_variable()} is a {family}, whose map needs an elementwise monotone map "
            f"of its scalar conditionals; the registered one is a {type(t).__name__}")
    return t


def _logit_space(t: MonotoneTransform, family: str) -> MonotoneTransform:
    """The Beta map with ``u`` = logit of the Beta value (its support is a plain sigmoid)."""
    support = t.support_bijector
    if isinstance(support, tfb.Sigmoid) and support.low is None and support.high is None:
        return t
    raise UnsupportedDistributionError(
        f"{current_variable()} is a {family}, whose map needs the Beta map on the logit scale "
        f"(support bijector Sigmoid onto (0, 1)); the registered one has {type(support).__name__}")


def dirichlet_transform(dist: Any) -> Transform:
    """Dirichlet(α): independent Beta stick fractions, then stick-breaking onto the simplex.

    ``v_k ~ Beta(α_k, Σ_{j>k} α_j)``, ``k = 1..K−1`` (the Beta map of the registry, on the
    logit scale ``u_k = logit v_k``), then `LogitStickBreaking`. ``K − 1`` noise dimensions.

    Args:
      dist: a `tfd.Dirichlet`.

    Returns:
      A `MonotoneTransform` on ``[..., K − 1]`` whose support bijector is
      `LogitStickBreaking`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> from emf_jax.apply import apply_forward
      >>> t = dirichlet_transform(tfp.distributions.Dirichlet(jnp.ones(3)))
      >>> _, x, _ = jax.jit(lambda e: apply_forward(t, e))(jnp.zeros(2))
      >>> x.shape, round(float(x.sum()), 5)       # a point of the simplex
      ((3,), 1.0)
    """
    alpha = jnp.broadcast_to(dist.concentration, _value_shape(dist)).astype(dist.dtype)
    if alpha.shape[-1] < 2:
        raise UnsupportedDistributionError(
            f"{current_variable()} is a Dirichlet with {alpha.shape[-1]} category: it has no "
            "degree of freedom to map; pin it")
    rest = jnp.flip(jnp.cumsum(jnp.flip(alpha, -1), axis=-1), -1)[..., 1:]   # Σ_{j>k} α_j
    beta = _as_monotone(transform_for(tfd.Beta(alpha[..., :-1], rest)), "Dirichlet")
    return with_support(_logit_space(beta, "Dirichlet"), LogitStickBreaking())


def lkj_transform(dist: Any) -> Transform:
    """LKJ(d, η) and CholeskyLKJ(d, η): the C-vine with Beta partial correlations.

    ``(z_ij + 1)/2 ~ Beta(β_j, β_j)``, ``β_j = η + (d − 2 − j)/2`` for the strictly lower
    entries (row-major, 0-based column ``j``), mapped by the registry's Beta map on the logit
    scale, then `PartialCorrelationCholesky`. ``d(d − 1)/2`` noise dimensions.

    Args:
      dist: a `tfd.LKJ` (also with ``input_output_cholesky=True``) or `tfd.CholeskyLKJ`.

    Returns:
      A `MonotoneTransform` on ``[..., d(d − 1)/2]`` with a `PartialCorrelationCholesky`
      support.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> from emf_jax.apply import apply_forward
      >>> t = lkj_transform(tfp.distributions.LKJ(3, 2.0))
      >>> _, r, _ = jax.jit(lambda e: apply_forward(t, e))(jnp.array([0.5, -1.0, 0.3]))
      >>> r.shape, jnp.diag(r).round(5).tolist()      # a correlation matrix
      ((3, 3), [1.0, 1.0, 1.0])
    """
    d = int(dist.dimension)
    if d < 2:
        raise UnsupportedDistributionError(
            f"{current_variable()} is a {type(dist).__name__} of dimension {d}: it has no "
            "degree of freedom to map; pin it")
    eta = jnp.asarray(dist.concentration, dist.dtype)
    eta = jnp.broadcast_to(eta, tuple(dist.batch_shape))
    cols = _strict_lower(d)[1]
    conc = eta[..., None] + jnp.asarray((d - 2 - cols) / 2, dist.dtype)
    beta = _as_monotone(transform_for(tfd.Beta(conc, conc)), type(dist).__name__)
    if isinstance(dist, tfd.CholeskyLKJ):
        support = PartialCorrelationCholesky(d, output_cholesky=True,
                                             density_of_correlation=False)
    else:
        support = PartialCorrelationCholesky(d, output_cholesky=bool(dist.input_output_cholesky),
                                             density_of_correlation=True)
    return with_support(_logit_space(beta, type(dist).__name__), support)


def _positive_diagonal_tril(scale: Any) -> Array:
    """A lower-triangular ``S`` with a positive diagonal and ``S Sᵀ`` = the scale's ``M Mᵀ``."""
    matrix = scale.to_dense()
    if type(scale).__name__ in ("LinearOperatorLowerTriangular", "LinearOperatorDiag",
                                "LinearOperatorScaledIdentity", "LinearOperatorIdentity"):
        tril = jnp.tril(matrix)
        # Flipping the sign of a column leaves S Sᵀ unchanged.
        return tril * jnp.where(_diag(tril) < 0, -1.0, 1.0).astype(tril.dtype)[..., None, :]
    return jnp.linalg.cholesky(matrix @ jnp.swapaxes(matrix, -1, -2))


def wishart_transform(dist: Any) -> MonotoneTransform:
    """WishartTriL / WishartLinearOperator(df, scale): the Bartlett decomposition.

    ``u`` = the registry's Chi2 map of ``Chi2(df − i)`` for the ``d`` diagonal entries of
    ``A``, then the identity (``A_ij ~ N(0, 1)``) for its ``d(d − 1)/2`` strictly lower
    entries; `BartlettWishart` gives ``W = S A Aᵀ Sᵀ``. ``d(d + 1)/2`` noise dimensions.

    Args:
      dist: a `tfd.WishartTriL` or `tfd.WishartLinearOperator` (also with
        ``input_output_cholesky=True``).

    Returns:
      A `MonotoneTransform` on ``[..., d(d + 1)/2]`` with a `BartlettWishart` support.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> from emf_jax.apply import apply_forward
      >>> t = wishart_transform(tfp.distributions.WishartTriL(4.0, jnp.eye(2)))
      >>> _, w, _ = jax.jit(lambda e: apply_forward(t, e))(jnp.zeros(3))
      >>> w.shape, bool(jnp.all(jnp.linalg.eigvalsh(w) > 0))    # positive definite
      ((2, 2), True)
    """
    d = int(dist.event_shape[-1])
    batch = tuple(dist.batch_shape)
    df = jnp.broadcast_to(jnp.asarray(dist.df, dist.dtype), batch)
    chi2 = _as_monotone(
        transform_for(tfd.Chi2(df[..., None] - jnp.arange(d, dtype=dist.dtype))), "Wishart")
    scale = jnp.broadcast_to(_positive_diagonal_tril(dist.scale), batch + (d, d))
    support = BartlettWishart(scale, chi2.support_bijector,
                              output_cholesky=bool(dist.input_output_cholesky))

    def split(v):
        return v[..., :d], v[..., d:]

    def forward(e):
        e_diag, e_off = split(e)
        return jnp.concatenate([chi2.forward(e_diag), e_off], -1)

    def inverse(u):
        u_diag, u_off = split(u)
        return jnp.concatenate([chi2.inverse(u_diag), u_off], -1)

    def forward_log_derivative(e, u):
        (e_diag, e_off), (u_diag, _) = split(e), split(u)
        return jnp.concatenate([chi2.forward_log_derivative(e_diag, u_diag),
                                jnp.zeros_like(e_off)], -1)

    return chi2._replace(forward=forward, inverse=inverse,
                         forward_log_derivative=forward_log_derivative,
                         support_bijector=support, noise_limit=None)


def mvn_precision_factor_transform(dist: Any) -> AffineTransform:
    """MultivariateNormalPrecisionFactorLinearOperator(loc, F): ``x = loc + F⁻ᵀ e``.

    The precision is ``F Fᵀ``, so the covariance is ``F⁻ᵀ F⁻¹`` (TFP's own sampler). A
    diagonal ``F`` gives an elementwise scale ``1/F_ii``; any other a dense matrix, whose
    gated inverse is a linear solve (closed form).

    Args:
      dist: a `tfp.experimental.distributions.MultivariateNormalPrecisionFactorLinearOperator`.

    Returns:
      An `AffineTransform` on the real line.

    Example:
      >>> import jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> op = tfp.tf2jax.linalg.LinearOperatorLowerTriangular(jnp.array([[2., 0.], [1., 1.]]))
      >>> dist = tfp.experimental.distributions.MultivariateNormalPrecisionFactorLinearOperator(
      ...     jnp.zeros(2), op)
      >>> mvn_precision_factor_transform(dist).scale_matrix.tolist()     # F⁻ᵀ
      [[0.5, -0.5], [0.0, 1.0]]
    """
    value_shape = _value_shape(dist)
    loc = dist.loc
    loc = (jnp.zeros(value_shape, dist.dtype) if loc is None
           else jnp.broadcast_to(loc, value_shape).astype(dist.dtype))
    factor = dist.precision_factor
    if type(factor).__name__ in ("LinearOperatorDiag", "LinearOperatorScaledIdentity",
                                 "LinearOperatorIdentity"):
        return affine(loc, jnp.broadcast_to(1 / factor.diag_part(), value_shape), None)
    dense = factor.to_dense()
    eye = jnp.broadcast_to(jnp.eye(dense.shape[-1], dtype=dense.dtype), dense.shape)
    if type(factor).__name__ == "LinearOperatorLowerTriangular":
        # F⁻ᵀ = (F⁻¹)ᵀ, with F⁻¹ by substitution.
        inv = jax.scipy.linalg.solve_triangular(dense, eye, lower=True)
    else:
        inv = jnp.linalg.solve(dense, eye)
    return affine_matvec(loc, jnp.swapaxes(inv, -1, -2), None, lower_triangular=False)


def gaussian_process_transform(dist: Any) -> Transform:
    """GaussianProcess / GaussianProcessRegressionModel: ``x = m + L e`` from TFP's marginal.

    ``dist.get_marginal_distribution()`` is the multivariate normal TFP samples from and
    evaluates `log_prob` with: mean ``m`` at the index points and
    ``L = cholesky_fn(K + σ²·I)``, where ``σ²`` is the observation noise variance (for a
    regression model, the predictive noise variance and the posterior kernel) and the
    default ``cholesky_fn`` adds `jitter` to the diagonal. Its map is the marginal's
    (lower-triangular affine, gates in closed form).

    Args:
      dist: a `tfd.GaussianProcess` or `tfd.GaussianProcessRegressionModel`.

    Returns:
      The marginal's map: an `AffineTransform` on the real line.

    Raises:
      UnsupportedDistributionError: when the marginal's value shape differs from the
        process's.

    Example:
      >>> import jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> kernel = tfp.math.psd_kernels.ExponentiatedQuadratic(1.0, 0.5)
      >>> gp = tfp.distributions.GaussianProcess(kernel, jnp.linspace(0., 1., 3)[:, None],
      ...                                        jitter=1e-6)
      >>> t = gaussian_process_transform(gp)
      >>> l = t.scale_matrix
      >>> bool(jnp.allclose(l @ l.T, gp.covariance() + 1e-6 * jnp.eye(3), atol=1e-6))
      True
    """
    marginal = dist.get_marginal_distribution()
    t = transform_for(marginal)
    got, want = _value_shape(marginal), _value_shape(dist)
    if got != want:
        raise UnsupportedDistributionError(
            f"{current_variable()} is a {type(dist).__name__} whose marginal has value shape "
            f"{got}, not the process's {want}")
    return t


register_transform(tfd.Dirichlet, dirichlet_transform)
register_transform(tfd.LKJ, lkj_transform)
register_transform(tfd.CholeskyLKJ, lkj_transform)
register_transform(tfd.WishartLinearOperator, wishart_transform)
register_transform(tfd.WishartTriL, wishart_transform)
register_transform(tfde.MultivariateNormalPrecisionFactorLinearOperator,
                   mvn_precision_factor_transform)
register_transform(tfd.GaussianProcess, gaussian_process_transform)
register_transform(tfd.GaussianProcessRegressionModel, gaussian_process_transform)
