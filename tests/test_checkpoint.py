"""Tests of emf_jax.checkpoint: data-only save/load of pytrees."""
import json
import os
import pathlib
import re
import zipfile

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from tensorflow_probability.substrates import jax as tfp

import emf_jax
from emf_jax import checkpoint
from emf_jax.checkpoint import load, save

tfd = tfp.distributions


def _assert_trees_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert type(a) is type(e) or (isinstance(a, jax.Array) and isinstance(e, jax.Array))
        assert np.asarray(a).dtype == np.asarray(e).dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


@pytest.fixture
def path(tmp_path):
    return tmp_path / "ckpt.npz"


def test_plain_containers_round_trip_without_like(path):
    tree = {
        "a": np.arange(3, dtype=np.int32),
        "b": [1.5, (2, None, True), 3j],
        "c": {"x": jnp.ones((2, 2)), "empty": {}, "nothing": None},
        "d": (),
        "e": [],
        "f": {2: np.float16(0.5), 1: [1]},  # Int keys and a NumPy scalar.
    }
    save(path, tree)
    loaded = load(path)
    assert set(loaded) == {"a", "b", "c", "d", "e", "f"}
    assert loaded["b"][0] == 1.5 and type(loaded["b"][0]) is float
    assert loaded["b"][1] == (2, None, True)
    assert type(loaded["b"][1][0]) is int and type(loaded["b"][1][2]) is bool
    assert loaded["b"][2] == 3j
    assert loaded["c"]["empty"] == {} and loaded["c"]["nothing"] is None
    assert loaded["d"] == () and loaded["e"] == []
    # Without `like`, array leaves come back as NumPy arrays of the saved dtype.
    assert type(loaded["c"]["x"]) is np.ndarray and loaded["c"]["x"].dtype == np.float32
    np.testing.assert_array_equal(loaded["c"]["x"], np.ones((2, 2)))
    assert loaded["a"].dtype == np.int32 and loaded["f"][2].dtype == np.float16
    assert loaded["f"][1] == [1]
    assert jax.tree.structure(loaded) == jax.tree.structure(
        jax.tree.map(np.asarray, tree))


def test_save_writes_exactly_at_path_and_overwrites(tmp_path):
    target = tmp_path / "state.ckpt"  # No .npz suffix is appended.
    save(target, {"x": 1.0})
    save(str(target), {"x": 2.0}, compress=True)
    assert sorted(os.listdir(tmp_path)) == ["state.ckpt"]  # No temporary file left.
    assert load(target) == {"x": 2.0}


def _params():
    return {"layers": [{"w": jnp.ones((2, 3)), "b": jnp.zeros(3)},
                       {"w": jnp.ones((3, 1)), "b": jnp.zeros(1)}],
            "scale": (jnp.asarray(0.5), jnp.arange(2, dtype=jnp.int32))}


def test_optax_state_round_trip_with_like(path):
    params = {"layers": [{"w": jnp.ones((2, 3))}, {"w": jnp.ones((3, 1))}],
              "scale": (jnp.asarray(0.5), jnp.ones(2))}
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    update = jax.jit(optimizer.update)
    grads = jax.tree.map(jnp.ones_like, params)
    state = optimizer.init(params)
    for _ in range(3):
        _, state = update(grads, state, params)
    save(path, state)
    loaded = load(path, like=optimizer.init(params))
    _assert_trees_equal(loaded, state)
    adam_state = loaded[1][0]
    assert type(adam_state) is optax.ScaleByAdamState
    assert int(adam_state.count) == 3
    assert isinstance(adam_state.mu["layers"][0]["w"], jax.Array)
    # A template of ShapeDtypeStructs (no memory allocated) works too.
    shapes = jax.eval_shape(optimizer.init, params)
    _assert_trees_equal(load(path, like=shapes), state)
    # The loaded state resumes training exactly like the original.
    _assert_trees_equal(update(grads, loaded, params), update(grads, state, params))


def test_named_tuples_without_like_come_back_as_dicts(path):
    params = {"w": jnp.ones(2)}
    state = optax.adam(1e-2).init(params)
    save(path, state)
    loaded = load(path)
    assert isinstance(loaded, tuple) and len(loaded) == 2
    assert set(loaded[0]) == {"count", "mu", "nu"}
    np.testing.assert_array_equal(loaded[0]["mu"]["w"], np.zeros(2))
    assert loaded[1] == {}  # optax.EmptyState has no fields.


def test_tfp_struct_tuple_round_trip_with_like(path):
    def model():
        yield tfd.Normal(0.0, 1.0, name="z")
        yield tfd.Sample(tfd.Normal(0.0, 1.0), 3, name="x")

    sample = tfd.JointDistributionCoroutine(model).sample(seed=jax.random.PRNGKey(0))
    save(path, sample)
    loaded = load(path, like=sample)
    assert type(loaded) is type(sample)
    _assert_trees_equal(loaded, sample)
    assert set(load(path)) == {"z", "x"}


@pytest.mark.parametrize("dtype", [
    jnp.bfloat16, jnp.float16, jnp.float32, jnp.int8, jnp.uint16, jnp.int32, jnp.bool_,
    jnp.complex64, ml_dtypes.float8_e5m2, ml_dtypes.float8_e4m3fn,
])
def test_dtypes_round_trip(path, dtype):
    values = jnp.asarray(np.arange(-3, 3).reshape(2, 3)).astype(dtype)
    save(path, {"v": values})
    plain = load(path)["v"]
    assert plain.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(plain, np.asarray(values))
    templated = load(path, like={"v": values})["v"]
    assert isinstance(templated, jax.Array) and templated.dtype == values.dtype
    np.testing.assert_array_equal(np.asarray(templated), np.asarray(values))


def test_float64_round_trip(path, x64):
    tree = {"x": jnp.linspace(0.0, 1.0, 5, dtype=jnp.float64) / 3.0,
            "n": jnp.arange(3, dtype=jnp.int64)}
    save(path, tree)
    loaded = load(path, like=tree)
    assert loaded["x"].dtype == jnp.float64 and loaded["n"].dtype == jnp.int64
    np.testing.assert_array_equal(np.asarray(loaded["x"]), np.asarray(tree["x"]))
    assert load(path)["x"].dtype == np.float64


def test_typed_prng_key_round_trip(path):
    key = jax.random.key(3)
    raw = jax.random.PRNGKey(3)
    save(path, {"key": key, "raw": raw})
    for loaded in (load(path), load(path, like={"key": key, "raw": raw})):
        assert jax.dtypes.issubdtype(loaded["key"].dtype, jax.dtypes.prng_key)
        np.testing.assert_array_equal(jax.random.key_data(loaded["key"]),
                                      jax.random.key_data(key))
        np.testing.assert_array_equal(
            jax.random.normal(loaded["key"], (2,)), jax.random.normal(key, (2,)))
        np.testing.assert_array_equal(np.asarray(loaded["raw"]), np.asarray(raw))


# ------------------------------------------------------------------------------ errors


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.npz")


def test_corrupt_file(path):
    path.write_bytes(os.urandom(256))
    with pytest.raises(ValueError, match=re.escape(repr(str(path)))):
        load(path)


def test_truncated_file(path):
    save(path, {"w": np.arange(1000.0)})
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"cannot load checkpoint .*ckpt\.npz.*(corrupt|trunc)"):
        load(path)


def test_corrupt_array_bytes(path):
    save(path, {"w": np.arange(1000.0)}, compress=True)
    content = bytearray(path.read_bytes())
    content[200:260] = bytes(60)  # Inside the compressed array data.
    path.write_bytes(bytes(content))
    with pytest.raises(ValueError, match="ckpt.npz"):
        load(path)


def test_files_that_are_not_ours(tmp_path):
    npz = tmp_path / "other.npz"
    np.savez(npz, x=np.ones(2))
    with pytest.raises(ValueError, match="other.npz.*not an emf_jax checkpoint"):
        load(npz)
    npy = tmp_path / "array.npy"
    np.save(npy, np.ones(2))
    with pytest.raises(ValueError, match="array.npy.*single .npy array"):
        load(npy)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt.*not an emf_jax checkpoint"):
        load(text)


def _rewrite_metadata(path, edit):
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays[checkpoint._META_KEY].tobytes())
    edit(meta)
    arrays[checkpoint._META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_newer_format_version_and_inconsistent_metadata(path):
    save(path, {"w": np.ones(3)})
    _rewrite_metadata(path, lambda m: m.update(version=checkpoint.FORMAT_VERSION + 1))
    with pytest.raises(ValueError, match="unsupported format version"):
        load(path)
    save(path, {"w": np.ones(3)})
    _rewrite_metadata(path, lambda m: m["leaves"][0].update(shape=[4]))
    with pytest.raises(ValueError, match=r"leaf \['w'\] does not match its metadata"):
        load(path)
    save(path, {"w": np.ones(3)})
    _rewrite_metadata(path, lambda m: m["leaves"][0].update(dtype="object"))
    with pytest.raises(ValueError, match=r"leaf \['w'\] does not match its metadata"):
        load(path)


def test_pickled_object_array_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.npz"
    meta = {"format": checkpoint.FORMAT_NAME, "version": 1, "structure": {
        "kind": "dict", "keys": ["w"], "children": [{"kind": "leaf", "index": 0}]},
        "leaves": [{"path": "['w']", "dtype": "float32", "shape": [1], "encoding": "raw"}]}
    with open(path, "wb") as f:
        np.savez(f, leaf_0=np.array([Exploit()], dtype=object),
                 **{checkpoint._META_KEY: np.frombuffer(json.dumps(meta).encode(), np.uint8)})
    with zipfile.ZipFile(path) as archive:  # The payload really is a pickle.
        assert b"pwned" in archive.read("leaf_0.npy")
    with pytest.raises(ValueError, match="evil.npz.*(pickle|[Oo]bject)"):
        load(path)
    assert not marker.exists()


def test_wrong_template(path):
    params = _params()
    save(path, params)
    bad_shape = jax.tree.map(lambda x: x, params)
    bad_shape["layers"][1]["w"] = jnp.ones((3, 2))
    with pytest.raises(ValueError, match=re.escape(
            "leaf ['layers'][1]['w']: the file has float32[3, 1], `like` has float32[3, 2]")):
        load(path, like=bad_shape)
    bad_dtype = jax.tree.map(lambda x: x, params)
    bad_dtype["scale"] = (jnp.asarray(0.5), jnp.arange(2, dtype=jnp.float32))
    with pytest.raises(ValueError, match=re.escape("leaf ['scale'][1]: the file has int32")):
        load(path, like=bad_dtype)
    with pytest.raises(ValueError, match="ckpt.npz.*holds 6 leaves but `like` has 5"):
        load(path, like={**params, "scale": (jnp.asarray(0.5),)})
    renamed = {"layers": params["layers"], "scales": params["scale"]}
    with pytest.raises(ValueError, match=re.escape("leaf path mismatch")):
        load(path, like=renamed)
    with pytest.raises(ValueError, match="Python float"):
        load(path, like={**params, "scale": (0.5, params["scale"][1]), "layers": [
            {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)},
            {"w": np.ones((3, 1), np.float32), "b": 1.0}]})


def test_save_rejects_non_array_leaves(path):
    with pytest.raises(TypeError, match=r"leaf \['name'\] of type str"):
        save(path, {"name": "adam"})
    with pytest.raises(TypeError, match=r"leaf \['o'\]: dtype object"):
        save(path, {"o": np.array([None], dtype=object)})
    assert not path.exists()


# ------------------------------------------------------- checkpoints of earlier layouts

_DATA = pathlib.Path(__file__).parent / "data"


@pytest.mark.parametrize("architecture", ["gemf-t", "gemf-m", "structured"])
def test_checkpoints_written_before_the_stage_chains_load(architecture):
    """tests/data holds params + Adam states saved by emf_jax before the stage-chain layout
    (``{"lower", "upper", ...}`` for gemf-m, a bare backbone for gemf-t), with the draws and
    log-densities they gave then."""
    tfd = tfp.distributions

    def program():
        mu = yield tfd.Normal(0., 1., name="mu")
        s = yield tfd.HalfNormal(1., name="s")
        yield tfd.Sample(tfd.Normal(mu, s), 2, name="x")

    pinned = tfd.JointDistributionCoroutineAutoBatched(program).experimental_pin(
        x=jnp.array([0.5, 1.5]))
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
        pinned, architecture=architecture, hidden_units=(4,), num_backbone_layers=2)
    params = init_fn(jax.random.key(0))
    like = {"params": params, "opt_state": optax.adam(1e-3).init(params)}
    loaded = emf_jax.load(_DATA / f"checkpoint_v0_{architecture}.npz", like=like)
    assert jax.tree.structure(loaded) == jax.tree.structure(like)
    expected = np.load(_DATA / f"checkpoint_v0_{architecture}_expected.npz")
    surrogate = build_fn(loaded["params"])
    draws = surrogate.sample(3, seed=jax.random.key(1))
    # Same parameters and noise: equal up to float32 rounding of the same operations.
    np.testing.assert_allclose(draws.mu, expected["mu"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(draws.s, expected["s"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(surrogate.log_prob(draws), expected["log_prob"], rtol=1e-4,
                               atol=1e-4)
    # The optimizer state's moments were migrated along with the parameters.
    assert jax.tree.structure(loaded["opt_state"][0].mu) == jax.tree.structure(params)


def test_old_layout_still_rejected_when_no_migration_fits(tmp_path):
    path = tmp_path / "other.npz"
    emf_jax.save(path, {"lower": np.zeros(2), "structured": {}, "upper": np.zeros(3)})
    with pytest.raises(ValueError, match="cannot load checkpoint"):
        emf_jax.load(path, like={"backbone": (np.zeros(2), np.zeros(2)), "structured": {}})


def test_migrate_params_converts_optimizer_states():
    from emf_jax.architectures import migrate_params
    old = {"lower": {"w": 1.0}, "upper": {"w": 2.0}, "structured": {"gates": {}}}
    migrated = migrate_params([old, {"backbone": {"w": 3.0}, "structured": {}}])
    assert migrated == [{"backbone": ({"w": 1.0}, {"w": 2.0}), "structured": {"gates": {}}},
                        {"backbone": ({"w": 3.0},), "structured": {}}]
