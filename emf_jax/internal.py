"""What the benchmarks need from inside the package, with no stability promise.

Benchmarks import only public names and this module (shared/design.md). Everything here may
change or move between versions without notice; user code should not depend on it.

- `flat_latent_layout`, `FlatLatentLayout`: a model's latents as one flat unconstrained
  vector through TFP's default event-space bijector (the baselines' view).
- `split_flat`: the last axis of a flat array split into named parts.
- `GYM_BROWNIAN_BRIDGE_OBS`: inference_gym's Brownian-bridge observations (30 steps).
"""
from __future__ import annotations

from emf_jax._structure import FlatLatentLayout, flat_latent_layout
from emf_jax.models._common import split_flat
from emf_jax.models._data import GYM_BROWNIAN_BRIDGE_OBS

__all__ = ["FlatLatentLayout", "GYM_BROWNIAN_BRIDGE_OBS", "flat_latent_layout", "split_flat"]
