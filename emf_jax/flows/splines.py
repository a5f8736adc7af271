"""Rational-quadratic neural spline flows (Durkan et al., 2019, "Neural Spline Flows").

The elementwise transform is a monotone rational-quadratic spline on ``[-B, B]`` with ``K``
bins and the identity (linear tails of slope 1) outside. Spline layers are the generic
autoregressive (MADE) and coupling (MLP) layers with this transform; `neural_spline_flow`
stacks them.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from emf_jax.flows.autoregressive import masked_autoregressive_layer, validate_direction
from emf_jax.flows.base import Array, Elementwise, Flow, positive_from_raw, validate_event_size
from emf_jax.flows.coupling import coupling_layer
from emf_jax.flows.permutations import PermutationSpec
from emf_jax.flows.stack import stack_layers

__all__ = ["rational_quadratic_spline", "neural_spline_flow"]


def _gather(values: Array, index: Array) -> Array:
    # A one-hot contraction rather than a gather: cheaper to compile and differentiate.
    one_hot = index[..., None] == jnp.arange(values.shape[-1])
    return jnp.sum(jnp.where(one_hot, values, jnp.zeros_like(values)), axis=-1)


def rational_quadratic_spline(
    *,
    num_bins: int = 32,
    bound: float = 4.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> Elementwise:
    """The rational-quadratic spline transform with linear (identity) tails outside [-B, B].

    Raw parameters per element (``3K - 1`` of them): ``K`` width logits, ``K`` height logits
    and ``K - 1`` interior-knot derivative pre-activations. Widths and heights are
    ``min + (1 - K min) softmax(logits)`` scaled to ``2B``; knots ``(x_k, y_k)`` run from
    ``(-B, -B)`` to ``(B, B)``; interior derivatives are ``1 + (1 - min_derivative) elu(.)``
    (exactly 1 at raw 0, see `positive_from_raw`) and the boundary derivatives are 1, so the
    tails join with slope 1. Raw parameters 0 give the identity (up to rounding).

    In bin ``k`` with ``w_k = x_{k+1} - x_k``, ``h_k = y_{k+1} - y_k``, ``s_k = h_k / w_k``,
    ``xi = (x - x_k) / w_k`` and ``d_k`` the knot derivatives:

    - forward: ``y = y_k + h_k (s_k xi^2 + d_k xi (1 - xi)) / (s_k + g_k xi (1 - xi))`` with
      ``g_k = d_{k+1} + d_k - 2 s_k``;
    - log-det: ``log dy/dx = 2 log s_k + log(d_{k+1} xi^2 + 2 s_k xi (1 - xi) + d_k (1 - xi)^2)
      - 2 log(s_k + g_k xi (1 - xi))``;
    - inverse: ``xi = 2c / (-b - sqrt(b^2 - 4ac))`` with ``a = h_k (s_k - d_k) + (y - y_k) g_k``,
      ``b = h_k d_k - (y - y_k) g_k``, ``c = -s_k (y - y_k)``; ``x = x_k + xi w_k``; its log-det
      is minus the forward one at that ``x``.

    Outside ``[-B, B]``: ``y = x`` and log-det 0.

    Args:
      num_bins: ``K >= 1`` (paper default 32).
      bound: ``B > 0`` (paper: 4 to 15).
      min_bin_width: lower bound of each bin width as a fraction of ``2B``.
      min_bin_height: lower bound of each bin height as a fraction of ``2B``.
      min_derivative: lower bound of the knot derivatives.

    Returns:
      An `Elementwise` with ``num_params == 3 * num_bins - 1``.

    Example:
      >>> import jax.numpy as jnp
      >>> t = rational_quadratic_spline(num_bins=4)
      >>> y, ldj = t.forward(jnp.zeros((3, t.num_params)), jnp.array([-5.0, 0.5, 2.0]))
      >>> y.round(4).tolist(), bool(abs(ldj).max() < 1e-6)
      ([-5.0, 0.5, 2.0], True)
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)):
        raise TypeError(f"num_bins must be an int, got {type(num_bins).__name__}")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    num_bins = int(num_bins)
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    for name, value in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
        if not 0 <= value * num_bins < 1:
            raise ValueError(f"{name} must be in [0, 1 / num_bins), got {value}")
    if not 0 < min_derivative < 1:
        raise ValueError(f"min_derivative must be in (0, 1), got {min_derivative}")
    bound = float(bound)
    num_params = 3 * num_bins - 1

    min_sizes = np.array([[min_bin_width], [min_bin_height]])

    def spline_params(raw: Array) -> tuple[Array, Array]:
        """Knots ``[..., 2, K + 1]`` (row 0: x, row 1: y) and derivatives ``[..., K + 1]``."""
        if raw.shape[-1] != num_params:
            raise ValueError(f"raw spline parameters must have last dimension {num_params} "
                             f"(3 * num_bins - 1), got shape {raw.shape}")
        logits = raw[..., :2 * num_bins].reshape(raw.shape[:-1] + (2, num_bins))
        mins = jnp.asarray(min_sizes, raw.dtype)
        cum = jnp.cumsum(mins + (1.0 - mins * num_bins) * jax.nn.softmax(logits, axis=-1), -1)
        edge = jnp.zeros_like(cum[..., :1])
        # Exact end points: the first knot is -B and the last is B.
        knots = 2.0 * bound * jnp.concatenate([edge, cum[..., :-1], edge + 1.0], -1) - bound
        inner = positive_from_raw(raw[..., 2 * num_bins:], min_derivative)[0]
        ones = jnp.ones_like(inner[..., :1])
        return knots, jnp.concatenate([ones, inner, ones], axis=-1)

    def bin_values(knots: Array, derivs: Array, z: Array, row: int) -> tuple[Array, ...]:
        """``(x_k, w_k, y_k, h_k, d_k, d_{k+1})`` of the bin holding ``z`` along knot ``row``."""
        index = jnp.sum(z[..., None] >= knots[..., row, 1:-1], axis=-1)
        table = jnp.concatenate([knots[..., :-1], knots[..., 1:], derivs[..., None, :-1],
                                 derivs[..., None, 1:]], axis=-2)  # [..., 6, K]
        x_lo, y_lo, x_hi, y_hi, d_lo, d_hi = jnp.moveaxis(
            _gather(table, index[..., None]), -1, 0)
        return x_lo, x_hi - x_lo, y_lo, y_hi - y_lo, d_lo, d_hi

    def log_derivative(xi, s, d_lo, d_hi):
        one_minus = 1.0 - xi
        denom = s + (d_hi + d_lo - 2.0 * s) * xi * one_minus
        numer = d_hi * xi**2 + 2.0 * s * xi * one_minus + d_lo * one_minus**2
        return 2.0 * jnp.log(s) + jnp.log(numer) - 2.0 * jnp.log(denom)

    def forward(raw: Array, x: Array) -> tuple[Array, Array]:
        inside = (x >= -bound) & (x <= bound)
        xc = jnp.where(inside, x, 0.0)  # a safe in-range value where the tails apply
        x_lo, w, y_lo, h, d_lo, d_hi = bin_values(*spline_params(raw), xc, 0)
        s = h / w
        xi = (xc - x_lo) / w
        xi_1mxi = xi * (1.0 - xi)
        y = y_lo + h * (s * xi**2 + d_lo * xi_1mxi) / (s + (d_hi + d_lo - 2.0 * s) * xi_1mxi)
        ldj = log_derivative(xi, s, d_lo, d_hi)
        return jnp.where(inside, y, x), jnp.where(inside, ldj, jnp.zeros_like(ldj))

    def inverse(raw: Array, y: Array) -> tuple[Array, Array]:
        inside = (y >= -bound) & (y <= bound)
        yc = jnp.where(inside, y, 0.0)
        x_lo, w, y_lo, h, d_lo, d_hi = bin_values(*spline_params(raw), yc, 1)
        s = h / w
        dy = yc - y_lo
        g = d_hi + d_lo - 2.0 * s
        a = h * (s - d_lo) + dy * g
        b = h * d_lo - dy * g
        c = -s * dy
        disc = jnp.maximum(b**2 - 4.0 * a * c, 0.0)
        xi = 2.0 * c / (-b - jnp.sqrt(disc))
        x = x_lo + xi * w
        ldj = -log_derivative(xi, s, d_lo, d_hi)
        return jnp.where(inside, x, y), jnp.where(inside, ldj, jnp.zeros_like(ldj))

    return Elementwise(num_params, forward, inverse)


def neural_spline_flow(
    event_size: int,
    *,
    num_layers: int = 6,
    num_bins: int = 32,
    hidden_units: Sequence[int] = (32, 32),
    bound: float = 4.0,
    conditioner: str = "autoregressive",
    direction: str = "iaf",
    activation: Callable[[Array], Array] = jax.nn.relu,
    permutation: PermutationSpec = "reverse",
    permutation_seed: int = 0,
    output_init_scale: float = 1e-2,
    dtype: jnp.dtype = jnp.float32,
) -> Flow:
    """A neural spline flow: rational-quadratic spline layers with permutations between.

    Defaults follow the EMF paper's NSF variants (6 layers, 32 bins, network [32, 32],
    bound 4). Each layer applies `rational_quadratic_spline` to every coordinate with
    parameters from a MADE of the earlier coordinates (``conditioner="autoregressive"``; see
    `masked_autoregressive_layer` for the IAF/MAF formulas) or from an MLP of the first half
    (``conditioner="coupling"``; see `coupling_layer`). Log-det: the sum of the spline
    log-derivatives.

    Args:
      event_size: ``D``.
      num_layers: number of spline layers.
      num_bins: spline bins ``K``.
      hidden_units: conditioner hidden widths.
      bound: spline interval ``[-bound, bound]``; identity outside.
      conditioner: ``"autoregressive"`` or ``"coupling"``.
      direction: ``"iaf"`` or ``"maf"`` for the autoregressive conditioner (ignored by
        coupling layers, whose both directions are one pass).
      activation: conditioner hidden activation.
      permutation: between layers; see `stack_layers`.
      permutation_seed: seed of a ``"random"`` permutation.
      output_init_scale: conditioner output-kernel scale at init (0: exact identity at init).
      dtype: parameter dtype.

    Returns:
      A `Flow` whose parameters are one spline layer's ``{"conditioner": ...}`` (a MADE's or
      an MLP's), stacked by `stack_layers`: a leading axis of size ``num_layers``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> flow = neural_spline_flow(3, num_layers=2, num_bins=4, hidden_units=(8,))
      >>> params = flow.init(jax.random.PRNGKey(0))
      >>> flow.forward_and_log_det(params, jnp.zeros((2, 3)))[0].shape
      (2, 3)
    """
    event_size = validate_event_size(event_size)
    direction = validate_direction(direction)
    spline = rational_quadratic_spline(num_bins=num_bins, bound=bound)
    if conditioner == "autoregressive":
        layer = masked_autoregressive_layer(
            event_size, elementwise=spline, hidden_units=hidden_units, activation=activation,
            direction=direction, output_init_scale=output_init_scale, dtype=dtype)
    elif conditioner == "coupling":
        layer = coupling_layer(event_size, elementwise=spline, hidden_units=hidden_units,
                               activation=activation, output_init_scale=output_init_scale,
                               dtype=dtype)
    else:
        raise ValueError(
            f"conditioner must be 'autoregressive' or 'coupling', got {conditioner!r}")
    return stack_layers(layer, num_layers, permutation=permutation,
                        permutation_seed=permutation_seed)
