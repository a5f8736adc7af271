"""The Gaussian binary-tree benchmark of the EMF paper (a tree of colliders).

The paper's tree is generated from its leaves towards a single root, which is observed::

    layer0      ~ Normal(0, leaf_scale)^(2^(depth-1))             (the leaves)
    layer{k}[i] ~ Normal(f(layer{k-1}[2i]) - f(layer{k-1}[2i+1]), node_scale)
    obs[0]      ~ Normal(f(layer{depth-2}[0]) - f(layer{depth-2}[1]), node_scale)

with ``f`` the identity ("linear") or ``tanh``. A tree of depth ``D`` has ``2^D - 1`` nodes:
``2^D - 2`` latent ones in ``D - 1`` vector variables ``layer0 ... layer{D-2}`` (one variable per
layer, so the program has ``D`` variables rather than ``2^D - 1``), and the observed root
``obs`` of shape ``[1]``. The defaults follow the paper's code: linear trees use
``leaf_scale = 0.2, node_scale = 0.15``; tanh trees ``0.1`` and ``0.05``.

Each node is a noisy *difference* of its two parents' values, so the posterior couples sibling
subtrees through the observed root ("explaining away"); the linear tree is Gaussian and has a
closed-form posterior (:func:`binary_tree_exact_posterior`).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from tensorflow_probability.substrates import jax as tfp

from emf_jax.models import _common, gaussian

tfd = tfp.distributions

__all__ = ["BINARY_TREE_LINKS", "binary_tree"]

BINARY_TREE_LINKS = ("linear", "tanh")
"""The coupling functions ``f`` of :func:`binary_tree`."""

_DEFAULT_SCALES = {"linear": (0.2, 0.15), "tanh": (0.1, 0.05)}


@dataclasses.dataclass(frozen=True)
class BinaryTreeSpec:
    """Validated settings of :func:`binary_tree`.

    Attributes:
      depth: number of layers, leaves and root included.
      link: "linear" or "tanh".
      leaf_scale: prior scale of the leaves.
      node_scale: noise scale of every other node.
    """

    depth: int
    link: str
    leaf_scale: float
    node_scale: float

    @property
    def latent_names(self) -> tuple[str, ...]:
        """Names of the latent layers in program order."""
        return tuple(f"layer{k}" for k in range(self.depth - 1))

    @property
    def latent_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Event shapes of the latent layers in program order."""
        return tuple((2 ** (self.depth - 1 - k),) for k in range(self.depth - 1))


def binary_tree_spec(
    depth: int = 4,
    *,
    link: str = "linear",
    leaf_scale: float | None = None,
    node_scale: float | None = None,
) -> BinaryTreeSpec:
    """Validated settings of :func:`binary_tree` (same arguments)."""
    depth = _common.check_int(depth, "depth", 2)
    if link not in BINARY_TREE_LINKS:
        raise ValueError(f"link must be one of {BINARY_TREE_LINKS}, got {link!r}.")
    default_leaf, default_node = _DEFAULT_SCALES[link]
    return BinaryTreeSpec(
        depth=depth,
        link=link,
        leaf_scale=_common.check_positive(
            default_leaf if leaf_scale is None else leaf_scale, "leaf_scale"),
        node_scale=_common.check_positive(
            default_node if node_scale is None else node_scale, "node_scale"),
    )


def _parent_difference(values, link: str, xp):
    f = values if link == "linear" else xp.tanh(values)
    return f[..., 0::2] - f[..., 1::2]


def build_binary_tree(
    spec: BinaryTreeSpec, dtype: np.dtype
) -> tfd.JointDistributionCoroutineAutoBatched:
    """Builds the joint distribution of a :class:`BinaryTreeSpec` in `dtype`."""
    num_leaves = 2 ** (spec.depth - 1)
    leaf_scale = jnp.asarray(spec.leaf_scale, dtype)
    node_scale = jnp.asarray(spec.node_scale, dtype)

    def program():
        layer = yield tfd.Independent(
            tfd.Normal(loc=jnp.zeros(num_leaves, dtype), scale=leaf_scale),
            reinterpreted_batch_ndims=1,
            name="layer0",
        )
        for k in range(1, spec.depth):
            name = f"layer{k}" if k < spec.depth - 1 else _common.OBSERVED_NAME
            layer = yield tfd.Independent(
                tfd.Normal(loc=_parent_difference(layer, spec.link, jnp), scale=node_scale),
                reinterpreted_batch_ndims=1,
                name=name,
            )

    return tfd.JointDistributionCoroutineAutoBatched(
        program, name=f"binary_tree_{spec.link}_{spec.depth}")


def simulate_binary_tree(
    spec: BinaryTreeSpec, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Samples the tree in numpy float64; returns ``(latent layers by name, obs [1])``."""
    layer = spec.leaf_scale * rng.standard_normal(2 ** (spec.depth - 1))
    layers = [layer]
    for _ in range(1, spec.depth):
        loc = _parent_difference(layer, spec.link, np)
        layer = loc + spec.node_scale * rng.standard_normal(loc.shape)
        layers.append(layer)
    return dict(zip(spec.latent_names, layers[:-1])), layers[-1]


def binary_tree(
    depth: int = 4,
    *,
    link: str = "linear",
    leaf_scale: float | None = None,
    node_scale: float | None = None,
    dtype: _common.DTypeLike | None = None,
) -> tfd.JointDistributionCoroutineAutoBatched:
    """The EMF paper's Gaussian binary tree with its root observed.

    Args:
      depth: number of layers (>= 2); the tree has ``2^depth - 1`` nodes.
      link: the coupling ``f``: "linear" (identity) or "tanh".
      leaf_scale: prior scale of the leaves; None for the paper's value (0.2 linear,
        0.1 tanh).
      node_scale: noise scale of inner nodes and root; None for the paper's value (0.15
        linear, 0.05 tanh).
      dtype: floating dtype; None for JAX's default float.

    Returns:
      A ``tfd.JointDistributionCoroutineAutoBatched`` over ``layer0`` (``2^(depth-1)``
      leaves), ..., ``layer{depth-2}`` (2 nodes) and ``obs`` (the root, shape ``[1]``).

    Example:
      >>> model = binary_tree(3, link="tanh")
      >>> [str(s) for s in model.event_shape]
      ['(4,)', '(2,)', '(1,)']
    """
    spec = binary_tree_spec(depth, link=link, leaf_scale=leaf_scale, node_scale=node_scale)
    return build_binary_tree(spec, _common.resolve_dtype(dtype))


def binary_tree_exact_posterior(
    spec: BinaryTreeSpec, obs: np.ndarray
) -> _common.ExactPosterior:
    """The exact posterior of a linear binary tree given its observed root.

    Args:
      spec: the settings of a tree with ``link="linear"``.
      obs: the observed root, shape ``[1]``.

    Returns:
      An :class:`~emf_jax.models.ExactPosterior` over ``layer0 ... layer{depth-2}``.
    """
    if spec.link != "linear":
        raise ValueError(f"the exact posterior exists only for link='linear', got {spec.link!r}.")
    sizes = [2 ** (spec.depth - 1 - k) for k in range(spec.depth)]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    n = int(starts[-1])
    b = np.zeros((n, n))
    scales = np.full(n, spec.node_scale)
    scales[: sizes[0]] = spec.leaf_scale
    for k in range(1, spec.depth):
        child = starts[k] + np.arange(sizes[k])
        b[child, starts[k - 1] + 2 * np.arange(sizes[k])] = 1.0
        b[child, starts[k - 1] + 2 * np.arange(sizes[k]) + 1] = -1.0
    mean, cov = gaussian.gaussian_network_moments(b, np.zeros(n), scales)
    log_ev, post_mean, post_cov = gaussian.condition_gaussian(
        mean, cov, [n - 1], np.asarray(obs, dtype=np.float64).reshape(1))
    return _common.make_exact_posterior(
        log_ev, post_mean, post_cov, spec.latent_names, spec.latent_shapes)
