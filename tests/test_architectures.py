"""Architectures as named stage chains: one table row per architecture, shared param keys."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorflow_probability.substrates import jax as tfp

import emf_jax
from emf_jax import architectures
from emf_jax.architectures import ARCHITECTURES, Architecture, LatentLayout, Stage

tfd = tfp.distributions
SMALL = dict(hidden_units=(4,), num_backbone_layers=2)


def _model():
    return tfd.JointDistributionNamed(dict(
        s=tfd.HalfNormal(1.0), x=lambda s: tfd.Sample(tfd.Normal(0.0, s), 2)))


def test_every_architecture_with_a_backbone_has_the_same_param_keys():
    keys = {}
    for name, arch in ARCHITECTURES.items():
        init_fn, _ = emf_jax.build_emf_surrogate_posterior_stateless(
            _model(), architecture=name, **SMALL)
        params = init_fn(jax.random.key(0))
        # The surrogate adds its affine base stage ("base", issue 14) to every architecture.
        keys[name] = sorted(k for k in params if k != "base")
        if arch.num_backbone_segments:
            assert isinstance(params["backbone"], tuple)
            assert len(params["backbone"]) == arch.num_backbone_segments
    # The reparameterisation rows (VIP, MIF, GEMF-VIP: issue 19) replace the structured map
    # by a layer whose parameters are "reparam".
    reparam = {k for k, a in ARCHITECTURES.items() if a.placement == "reparam"}
    assert reparam == {"vip", "mif", "gemf-vip"}
    with_backbone = {k for k, a in ARCHITECTURES.items() if a.num_backbone_segments}
    assert {tuple(keys[k]) for k in with_backbone - reparam} == {("backbone", "structured")}
    assert keys["structured"] == ["structured"]
    assert {tuple(keys[k]) for k in reparam - with_backbone} == {("reparam", "structured")}
    assert {tuple(keys[k]) for k in reparam & with_backbone} == {
        ("backbone", "reparam", "structured")}
    assert set(keys) == with_backbone | reparam | {"structured"}


def test_a_new_architecture_is_one_table_row(monkeypatch):
    # Structured layer between two backbone segments, then the support: a row, nothing else.
    row = Architecture("sandwich", "middle", True,
                       (Stage("backbone", 0), Stage("map"), Stage("backbone", 1),
                        Stage("support")))
    monkeypatch.setitem(ARCHITECTURES, "sandwich", row)
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
        _model(), architecture="sandwich", **SMALL)
    q = build_fn(init_fn(jax.random.key(0)))
    draws = jax.jit(lambda k: q.sample(3, seed=k))(jax.random.key(1))
    assert bool(jnp.all(draws["s"] > 0))
    density_init, density_build = emf_jax.build_emf_density_stateless(
        _model(), architecture="sandwich", **SMALL)
    log_p = jax.jit(lambda p, x: density_build(p).log_prob(x))(
        density_init(jax.random.key(0)), draws)
    assert log_p.shape == (3,) and bool(jnp.all(jnp.isfinite(log_p)))


def test_the_middle_placement_splits_the_backbone_layers():
    assert architectures._segment_layers(ARCHITECTURES["gemf-m"], 5) == (2, 3)
    assert architectures._segment_layers(ARCHITECTURES["gemf-t"], 5) == (5,)
    assert architectures._segment_layers(ARCHITECTURES["structured"], 5) == ()
    with pytest.raises(ValueError, match="num_backbone_layers >= 2"):
        architectures._segment_layers(ARCHITECTURES["gemf-m"], 1)


def test_latent_layout_round_trip():
    layout = LatentLayout(((), (2, 3), (1,)), (0, 1, 7, 8))
    z = jnp.arange(16.0).reshape(2, 8)
    parts = layout.to_parts(z)
    assert [p.shape for p in parts] == [(2,), (2, 2, 3), (2, 1)]
    np.testing.assert_array_equal(layout.to_flat(parts), z)


def test_stage_names_read_like_the_docs():
    assert [str(s) for s in ARCHITECTURES["gemf-b"].stages] == ["map", "backbone[0]", "support"]
