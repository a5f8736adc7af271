"""Dense Gaussian algebra for the exact posteriors of the linear-Gaussian benchmarks.

A linear-Gaussian model (a Gaussian Bayesian network) is written as

    z_i = c_i + sum_{j < i} B_ij z_j + d_i e_i,     e ~ N(0, I),

over all its nodes ``z`` (latents and observations) in program order. Then
``z = A (c + D e)`` with ``A = (I - B)^{-1}``, so ``z`` is Gaussian with mean ``A c`` and
covariance ``A D^2 A^T``; conditioning on the observed nodes gives ``log p(obs)`` and the
posterior of the latents in closed form.

Everything here is numpy in float64 (independent of JAX's x64 setting), vectorised over leading
batch dimensions where noted.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["condition_gaussian", "gaussian_network_moments"]

_LOG_2PI = float(np.log(2.0 * np.pi))


def gaussian_network_moments(
    coefficients: np.ndarray, offsets: np.ndarray, scales: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a linear-Gaussian network.

    Args:
      coefficients: ``[..., n, n]`` strictly lower-triangular ``B`` (``B_ij`` is the weight
        of parent ``j`` in node ``i``).
      offsets: ``[..., n]`` constants ``c``.
      scales: ``[..., n]`` positive noise scales ``d``.

    Returns:
      ``(mean [..., n], covariance [..., n, n])`` in float64.

    Example:
      >>> import numpy as np
      >>> b = np.array([[0.0, 0.0], [1.0, 0.0]])      # z1 = z0 + noise
      >>> mean, cov = gaussian_network_moments(b, np.zeros(2), np.ones(2))
      >>> cov.tolist()
      [[1.0, 1.0], [1.0, 2.0]]
    """
    b = np.asarray(coefficients, dtype=np.float64)
    c = np.asarray(offsets, dtype=np.float64)
    d = np.asarray(scales, dtype=np.float64)
    n = b.shape[-1]
    if b.shape[-2:] != (n, n) or c.shape[-1] != n or d.shape[-1] != n:
        raise ValueError(
            f"coefficients must be [..., n, n] with offsets and scales [..., n]; got shapes "
            f"{b.shape}, {c.shape}, {d.shape}.")
    if np.any(np.triu(b) != 0.0):
        raise ValueError("coefficients must be strictly lower triangular (parents come first).")
    eye = np.eye(n)
    a = np.linalg.solve(eye - b, np.broadcast_to(eye, b.shape))
    mean = np.einsum("...ij,...j->...i", a, c)
    cov = np.einsum("...ik,...k,...jk->...ij", a, d**2, a)
    return mean, cov


def condition_gaussian(
    mean: np.ndarray,
    covariance: np.ndarray,
    observed: Sequence[int] | np.ndarray,
    values: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Conditions a joint Gaussian on some of its coordinates.

    Args:
      mean: ``[..., n]`` joint mean.
      covariance: ``[..., n, n]`` joint covariance.
      observed: indices of the observed coordinates (the others are the latents, kept in
        their order).
      values: ``[m]`` or ``[..., m]`` observed values.

    Returns:
      ``(log_evidence [...], posterior_mean [..., n - m], posterior_covariance
      [..., n - m, n - m])``: the log density of the observed values under their marginal,
      and the conditional moments of the remaining coordinates.

    Example:
      >>> import numpy as np
      >>> cov = np.array([[1.0, 1.0], [1.0, 2.0]])
      >>> log_ev, m, c = condition_gaussian(np.zeros(2), cov, [1], np.array([2.0]))
      >>> round(float(m[0]), 6), round(float(c[0, 0]), 6)
      (1.0, 0.5)
    """
    mean = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(covariance, dtype=np.float64)
    n = mean.shape[-1]
    obs = np.asarray(observed, dtype=int)
    if obs.ndim != 1 or obs.size == 0 or obs.min() < 0 or obs.max() >= n:
        raise ValueError(f"observed must be a non-empty list of indices in [0, {n}).")
    lat = np.setdiff1d(np.arange(n), obs)
    y = np.asarray(values, dtype=np.float64)
    if y.shape[-1] != obs.size:
        raise ValueError(f"values has {y.shape[-1]} entries, observed has {obs.size}.")

    s_oo = cov[..., obs[:, None], obs[None, :]]
    s_lo = cov[..., lat[:, None], obs[None, :]]
    s_ll = cov[..., lat[:, None], lat[None, :]]
    resid = y - mean[..., obs]

    chol = np.linalg.cholesky(s_oo)
    # whitened residual and cross-covariance: L^{-1} r, L^{-1} S_ol
    w = np.linalg.solve(chol, resid[..., None])[..., 0]
    v = np.linalg.solve(chol, np.swapaxes(s_lo, -1, -2))
    log_det = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    log_evidence = -0.5 * (np.sum(w**2, axis=-1) + log_det + obs.size * _LOG_2PI)

    post_mean = mean[..., lat] + np.einsum("...ki,...k->...i", v, w)
    post_cov = s_ll - np.einsum("...ki,...kj->...ij", v, v)
    post_cov = 0.5 * (post_cov + np.swapaxes(post_cov, -1, -2))
    return log_evidence, post_mean, post_cov
