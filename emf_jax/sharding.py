"""Data parallelism over devices for `fit_vi` and `fit_density` (with `jax.sharding`).

A fit given ``mesh=`` (a `jax.sharding.Mesh`) or ``devices=`` (a list of devices, made into a
one-axis mesh) keeps the parameters and optimiser state replicated on every device and
splits one axis of the work across all of the mesh's devices:

- `fit_vi`: the Monte Carlo sample axis (the draws of the surrogate and the target's
  log-density evaluations);
- `fit_density`: the minibatch axis (the rows whose log-likelihood is evaluated).

The split is expressed as sharding constraints inside the one jit-compiled program, so the
computation (and its random draws) is the same as on one device: only the order of the
final reductions differs, hence results agree to floating-point tolerance. The gradient's
all-reduce is inserted by XLA.

Multi-host: call ``jax.distributed.initialize()`` first in every process, then build the mesh
over ``jax.devices()`` (all processes' devices) and run the same fit in every process.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["DataParallel", "data_parallel"]


class DataParallel:
    """How a fit spreads its work: a leading-axis sharding and a replicated one.

    Usually made by `data_parallel` from a fit's ``mesh=`` / ``devices=`` options. Plans
    compare equal when their shardings do, so a plan can be a static argument of a jit.

    Args:
      mesh: the device mesh; axis 0 of the work is split over all of its axes together.

    Attributes:
      mesh: the device mesh.
      batch: a `NamedSharding` splitting axis 0 over every device of the mesh.
      replicated: a `NamedSharding` keeping a copy on every device.
      num_devices: the number of devices.

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from jax.sharding import Mesh
      >>> plan = DataParallel(Mesh(np.asarray(jax.devices()[:1]), ("data",)))
      >>> plan.num_devices, plan == data_parallel(devices=jax.devices()[:1])
      (1, True)
      >>> params = plan.replicate({"w": jnp.ones(2)})     # outside jit: a copy on every device
      >>> params["w"].sharding == plan.replicated
      True
      >>> jax.jit(plan.shard_leading_axis)(jnp.ones((4, 2))).shape   # inside jit: rows split
      (4, 2)
    """

    def __init__(self, mesh: Mesh):
        self.mesh = mesh
        self.batch = NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names)))
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.num_devices = int(mesh.devices.size)

    def __hash__(self) -> int:
        return hash((self.batch, self.replicated))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, DataParallel) and other.batch == self.batch
                and other.replicated == self.replicated)

    def shard_leading_axis(self, tree: Any) -> Any:
        """Constrains every array leaf of `tree` (inside jit) to be split along axis 0."""
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, self.batch), tree)

    def replicate(self, tree: Any) -> Any:
        """Places every leaf of `tree` on all devices (outside jit)."""
        return jax.device_put(tree, self.replicated)

    def check_divisible(self, size: int, what: str) -> None:
        """Raises ValueError unless `size` splits evenly over the devices."""
        if size % self.num_devices:
            raise ValueError(f"{what}={size} must be a multiple of the number of devices "
                             f"({self.num_devices}) to split it evenly across them.")


def data_parallel(mesh: Optional[Mesh] = None,
                  devices: Optional[Sequence[Any]] = None) -> Optional[DataParallel]:
    """The `DataParallel` plan of a fit's ``mesh=`` / ``devices=`` options (None: no plan).

    Args:
      mesh: a `jax.sharding.Mesh`; the work is split over all of its devices (all its axes
        together).
      devices: a sequence of devices (e.g. ``jax.devices()``), made into a one-axis mesh.

    Returns:
      A `DataParallel`, or None when neither option is given.

    Raises:
      ValueError: both options given, or an empty device list.
      TypeError: `mesh` is not a `jax.sharding.Mesh`.

    Example:
      >>> import jax
      >>> plan = data_parallel(devices=jax.devices()[:1])
      >>> plan.num_devices
      1
    """
    if mesh is not None and devices is not None:
        raise ValueError("give either `mesh` or `devices`, not both.")
    if devices is not None:
        devices = list(devices)
        if not devices:
            raise ValueError("`devices` is empty: give at least one device.")
        mesh = Mesh(np.asarray(devices, dtype=object), ("data",))
    if mesh is None:
        return None
    if not isinstance(mesh, Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}.")
    return DataParallel(mesh)
