"""Data-only checkpoints of pytrees: `save` and `load`.

A checkpoint is one NumPy `.npz` archive (written with `np.savez`, exactly at the given
path, atomically): an entry `leaf_<i>` per array leaf and an entry `__emf_jax__` holding
UTF-8 JSON metadata: the format name and version, every leaf's key path, dtype and
shape, and a description of the tree's structure. Loading reads it with
`np.load(..., allow_pickle=False)` and parses JSON: it never executes code from the file.

What can be saved: any JAX pytree (dicts, lists, tuples, named tuples such as optax
states and TFP `StructTuple`s, `None`, registered custom nodes) whose leaves are arrays
(NumPy or JAX, including bfloat16 and other `ml_dtypes` types and typed PRNG keys) or
Python scalars (`bool`, `int`, `float`, `complex`).

What comes back:

- With `like=` (a template pytree, e.g. the initial parameters, `optimizer.init(params)`
  or `jax.eval_shape(optimizer.init, params)`), the leaves are put into the template's
  structure, so named tuples and custom nodes come back as their own types. The number
  of leaves, their key paths, shapes and dtypes must match the template. Each leaf takes
  the kind of the template's leaf: a `jax.Array` or `jax.ShapeDtypeStruct` leaf gives a
  `jax.Array`, a NumPy leaf a NumPy array, a Python scalar a Python scalar.
- Without `like`, plain containers are rebuilt from the metadata: dicts, lists, tuples
  and `None` as such; named tuples and other custom nodes as dicts keyed by their field
  names (or lists, for nodes whose children have only positions). Array leaves come back
  as NumPy arrays (typed PRNG keys as JAX key arrays), Python scalars as Python scalars.

Any problem with the file (not found aside, which raises `FileNotFoundError`): corrupt
or truncated, not a checkpoint of ours, a pickled object inside, a newer format, or a
mismatch with `like`, raises a `ValueError` that names the path.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

__all__ = ["load", "register_path_migration", "register_zero_filled_leaves", "save"]

PyTree = Any

FORMAT_NAME = "emf_jax.checkpoint"
FORMAT_VERSION = 1
_META_KEY = "__emf_jax__"
_PY_SCALARS = {"bool": bool, "int": int, "float": float, "complex": complex}


def _leaf_key(index: int) -> str:
    return f"leaf_{index}"


# ------------------------------------------------------------------------------ dtypes


def _ml_dtype(name: str) -> np.dtype | None:
    """The `ml_dtypes` dtype called `name` (e.g. bfloat16), or None."""
    candidate = getattr(ml_dtypes, name, None) if name.isidentifier() else None
    try:
        dtype = np.dtype(candidate)
    except TypeError:
        return None
    if candidate is None or dtype.name != name or dtype.type.__module__ != "ml_dtypes":
        return None
    return dtype


def _encode_array(x: np.ndarray, path: str) -> tuple[np.ndarray, str]:
    """The array to store and its encoding: 'raw' or 'bits' (ml_dtypes as unsigned)."""
    dtype = x.dtype
    if dtype.kind in "biufc" and dtype.type.__module__ == "numpy":
        if not dtype.isnative:
            x = x.astype(dtype.newbyteorder("="))
        return x, "raw"
    if _ml_dtype(dtype.name) is not None:
        return x.view(np.dtype(f"u{dtype.itemsize}")), "bits"
    raise TypeError(f"cannot save leaf {path}: dtype {dtype} is not a numeric dtype; "
                    "checkpoints hold numeric arrays and Python scalars only.")


# ------------------------------------------------------------------------------- save


def _key_entry_json(entry: Any) -> Any:
    if isinstance(entry, jax.tree_util.DictKey):
        key = entry.key
    elif isinstance(entry, jax.tree_util.SequenceKey):
        key = entry.idx
    elif isinstance(entry, jax.tree_util.GetAttrKey):
        key = entry.name
    elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
        key = entry.key
    else:
        key = str(entry)
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        key = str(key)
    return key


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _encode_tree(tree: PyTree, leaves: list) -> dict:
    """JSON description of `tree`; appends its leaves in JAX's flatten order."""
    if tree is None:
        return {"kind": "none"}
    treedef: Any = jax.tree.structure(tree)
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:
        node: dict[str, Any] = {"kind": "leaf", "index": len(leaves)}
        if type(tree) in _PY_SCALARS.values():
            node["py"] = type(tree).__name__
        leaves.append(tree)
        return node
    children_with_paths, _ = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: x is not tree)
    keys = [_key_entry_json(path[0]) for path, _ in children_with_paths]
    children = [_encode_tree(child, leaves) for _, child in children_with_paths]
    if isinstance(tree, dict):
        return {"kind": "dict", "keys": keys, "children": children}
    if isinstance(tree, tuple) and hasattr(type(tree), "_fields"):
        return {"kind": "namedtuple", "type": _type_name(tree), "keys": keys,
                "children": children}
    if isinstance(tree, (list, tuple)):
        return {"kind": "list" if isinstance(tree, list) else "tuple", "children": children}
    return {"kind": "node", "type": _type_name(tree), "keys": keys, "children": children}


def _leaf_to_numpy(leaf: Any, path: str) -> tuple[np.ndarray, dict]:
    info: dict[str, Any] = {"path": path}
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        info["key_impl"] = str(jax.random.key_impl(leaf))
        leaf = jax.random.key_data(leaf)
    if isinstance(leaf, (bool, int, float, complex, np.ndarray, np.generic, jax.Array)):
        array = np.asarray(leaf)
    else:
        raise TypeError(f"cannot save leaf {path} of type {type(leaf).__name__}: checkpoints "
                        "hold arrays and Python scalars only.")
    stored, encoding = _encode_array(array, path)
    info.update(dtype=array.dtype.name, shape=list(array.shape), encoding=encoding)
    return stored, info


def save(path: str | os.PathLike, tree: PyTree, *, compress: bool = False) -> None:
    """Saves a pytree of arrays to a data-only `.npz` checkpoint.

    The file is written exactly at `path` (no suffix is added; `.npz` is a good choice)
    through a temporary file in the same directory that replaces `path` when complete.

    Args:
      path: destination file; its directory must exist.
      tree: a pytree whose leaves are arrays or Python scalars (see the module docstring).
      compress: whether to zip-compress the arrays (`np.savez_compressed`).

    Returns:
      None; the file at `path` holds the checkpoint.

    Raises:
      TypeError: if a leaf is not an array or Python scalar, or has a non-numeric dtype.

    Example:
      >>> import os, tempfile, jax.numpy as jnp
      >>> path = os.path.join(tempfile.mkdtemp(), "params.npz")
      >>> save(path, {"w": jnp.ones(3), "steps": 10})
      >>> restored = load(path)
      >>> restored["w"].tolist(), restored["steps"]
      ([1.0, 1.0, 1.0], 10)
    """
    path = os.fspath(path)
    leaves: list = []
    structure = _encode_tree(tree, leaves)
    paths_and_leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if len(paths_and_leaves) != len(leaves) or any(
            a is not b for (_, a), b in zip(paths_and_leaves, leaves)):
        raise AssertionError("internal error: structure encoding disagrees with jax.tree")
    arrays, infos = {}, []
    for index, (key_path, leaf) in enumerate(paths_and_leaves):
        stored, info = _leaf_to_numpy(leaf, jax.tree_util.keystr(key_path) or "<root>")
        arrays[_leaf_key(index)] = stored
        infos.append(info)
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "leaves": infos,
            "structure": structure}
    arrays[_META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            writer: Callable[..., None] = np.savez_compressed if compress else np.savez
            writer(f, **arrays)
        os.chmod(tmp_path, 0o644)  # mkstemp creates owner-only files.
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


# ------------------------------------------------------------------------------- load


class _CheckpointError(Exception):
    """A problem with the file's content; `load` re-raises it as a ValueError."""


def _read_archive(path: str) -> tuple[dict, list[np.ndarray]]:
    """Reads and checks the metadata and the stored arrays (not yet decoded)."""
    with open(path, "rb") as f:  # FileNotFoundError etc. propagate unchanged.
        try:
            archive = np.load(f, allow_pickle=False)
        except ValueError as err:  # Includes "pickled data" refusals.
            raise _CheckpointError(f"not an emf_jax checkpoint ({err})") from err
        except Exception as err:  # Any failure to parse untrusted bytes.
            raise _CheckpointError(f"corrupt or truncated file ({err!r})") from err
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise _CheckpointError("not an emf_jax checkpoint (a single .npy array, not an "
                                   ".npz archive)")
        with archive:
            return _read_entries(archive)


def _read_entries(archive: Any) -> tuple[dict, list[np.ndarray]]:
    if _META_KEY not in archive.files:
        raise _CheckpointError("not an emf_jax checkpoint (no metadata entry)")
    try:
        meta_bytes = archive[_META_KEY]
        if meta_bytes.dtype != np.uint8 or meta_bytes.ndim != 1:
            raise _CheckpointError("malformed metadata entry")
        meta = json.loads(meta_bytes.tobytes().decode("utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise _CheckpointError("not an emf_jax checkpoint (unknown format)")
        version = meta.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise _CheckpointError(f"unsupported format version {version!r} (this "
                                   f"version of emf_jax reads up to {FORMAT_VERSION})")
        infos = meta.get("leaves")
        if not isinstance(infos, list):
            raise _CheckpointError("malformed metadata (no leaf list)")
        expected = {_META_KEY} | {_leaf_key(i) for i in range(len(infos))}
        if set(archive.files) != expected:
            extra = sorted(set(archive.files) - expected)
            missing = sorted(expected - set(archive.files))
            raise _CheckpointError(f"entries do not match the metadata (missing {missing}, "
                                   f"unexpected {extra})")
        arrays = [archive[_leaf_key(i)] for i in range(len(infos))]
    except _CheckpointError:
        raise
    except ValueError as err:  # Refused object (pickled) arrays, bad JSON, bad headers.
        raise _CheckpointError(f"corrupt or unreadable content ({err})") from err
    except Exception as err:  # Any other failure to parse untrusted bytes.
        raise _CheckpointError(f"corrupt or truncated content ({err!r})") from err
    return meta, arrays


def _decode_leaf(stored: np.ndarray, info: Any, index: int) -> Any:
    """The stored array decoded into its saved dtype (NumPy or JAX key array)."""
    try:
        path, dtype_name, shape = info["path"], info["dtype"], tuple(info["shape"])
        encoding, key_impl = info["encoding"], info.get("key_impl")
    except (TypeError, KeyError) as err:
        raise _CheckpointError(f"malformed metadata for leaf {index}") from err
    if encoding == "raw":
        try:
            dtype = np.dtype(str(dtype_name))
        except TypeError:
            dtype = None
        ok = dtype is not None and dtype.kind in "biufc" and stored.dtype == dtype
    elif encoding == "bits":
        dtype = _ml_dtype(str(dtype_name))
        ok = dtype is not None and stored.dtype == np.dtype(f"u{dtype.itemsize}")
    else:
        ok = False
    if not ok or stored.shape != shape:
        raise _CheckpointError(f"leaf {path} does not match its metadata (stored "
                               f"{stored.dtype}{list(stored.shape)}, metadata "
                               f"{dtype_name}{list(shape)}, encoding {encoding!r})")
    value: Any = stored.view(dtype) if encoding == "bits" and dtype is not None else stored
    if key_impl is not None:
        try:
            value = jax.random.wrap_key_data(value, impl=str(key_impl))
        except (ValueError, TypeError) as err:
            raise _CheckpointError(f"leaf {path}: bad PRNG key data ({err})") from err
    return value


def _build_plain(node: Any, leaves: list, used: set) -> PyTree:
    """Rebuilds plain containers from the JSON structure."""
    if not isinstance(node, dict):
        raise _CheckpointError("malformed structure metadata")
    kind = node.get("kind")
    if kind == "none":
        return None
    if kind == "leaf":
        index = node.get("index")
        if not isinstance(index, int) or not 0 <= index < len(leaves) or index in used:
            raise _CheckpointError("malformed structure metadata (bad leaf index)")
        used.add(index)
        value = leaves[index]
        py = node.get("py")
        if py is not None:
            if py not in _PY_SCALARS or np.shape(value) != ():
                raise _CheckpointError("malformed structure metadata (bad scalar)")
            value = _PY_SCALARS[py](value.item())
        return value
    children = node.get("children")
    if not isinstance(children, list):
        raise _CheckpointError("malformed structure metadata (no children)")
    built = [_build_plain(child, leaves, used) for child in children]
    if kind == "list":
        return built
    if kind == "tuple":
        return tuple(built)
    if kind in ("dict", "namedtuple", "node"):
        keys = node.get("keys")
        if not isinstance(keys, list) or len(keys) != len(built):
            raise _CheckpointError("malformed structure metadata (keys)")
        if kind == "node" and all(isinstance(k, int) for k in keys):
            return built
        return dict(zip(keys, built))
    raise _CheckpointError(f"malformed structure metadata (unknown kind {kind!r})")


def _fill_template(like: PyTree, leaves: list, infos: list) -> PyTree:
    template, treedef = jax.tree_util.tree_flatten_with_path(like)
    if len(template) != len(leaves):
        raise _CheckpointError(f"the file holds {len(leaves)} leaves but `like` has "
                               f"{len(template)}")
    out = []
    for (key_path, want), have, info in zip(template, leaves, infos):
        path = jax.tree_util.keystr(key_path) or "<root>"
        if info["path"] != path:
            raise _CheckpointError(f"leaf path mismatch: the file has {info['path']} where "
                                   f"`like` has {path}")
        have_dtype = have.dtype
        if type(want) in _PY_SCALARS.values():
            if (isinstance(have, jax.Array) or have.shape != ()
                    or info["py"] not in (None, type(want).__name__)
                    or have_dtype.kind != np.asarray(want).dtype.kind):
                raise _CheckpointError(
                    f"leaf {path}: the file has {have_dtype}{list(np.shape(have))}, `like` "
                    f"has a Python {type(want).__name__}")
            out.append(type(want)(have.item()))
            continue
        want_dtype, want_shape = getattr(want, "dtype", None), getattr(want, "shape", None)
        if want_dtype is None or want_shape is None:
            raise _CheckpointError(f"leaf {path} of `like` is a {type(want).__name__}, not "
                                   "an array, ShapeDtypeStruct or Python scalar")
        if tuple(want_shape) != tuple(have.shape) or want_dtype != have_dtype:
            raise _CheckpointError(
                f"leaf {path}: the file has {have_dtype}{list(have.shape)}, `like` has "
                f"{want_dtype}{list(want_shape)}")
        if isinstance(want, (jax.Array, jax.ShapeDtypeStruct)):
            out.append(have if isinstance(have, jax.Array) else jnp.asarray(have))
        else:
            out.append(np.asarray(have))
    return jax.tree.unflatten(treedef, out)


def load(path: str | os.PathLike, like: PyTree | None = None) -> PyTree:
    """Loads a checkpoint written by `save`, without executing any code from the file.

    Args:
      path: the checkpoint file.
      like: optional template pytree (arrays, `jax.ShapeDtypeStruct`s or Python scalars as
        leaves) giving the structure, key paths, shapes and dtypes to expect; see the
        module docstring for what comes back with and without it.

    Returns:
      The saved pytree.

    Raises:
      FileNotFoundError: if `path` does not exist.
      ValueError: naming `path`, if the file is corrupt, truncated, not an emf_jax
        checkpoint, holds pickled data, has a newer format version, or does not match
        `like` (the message names the first mismatched leaf path).

    Example:
      >>> import os, tempfile, jax.numpy as jnp, optax
      >>> params = {"w": jnp.zeros(2)}
      >>> optimizer = optax.adam(1e-2)
      >>> path = os.path.join(tempfile.mkdtemp(), "state.npz")
      >>> save(path, optimizer.init(params))
      >>> state = load(path, like=optimizer.init(params))
      >>> type(state[0]).__name__, state[0].mu["w"].shape
      ('ScaleByAdamState', (2,))
    """
    path = os.fspath(path)
    try:
        meta, stored = _read_archive(path)
        leaves = [_decode_leaf(array, info, i)
                  for i, (array, info) in enumerate(zip(stored, meta["leaves"]))]
        if like is None:
            used: set = set()
            tree = _build_plain(meta.get("structure"), leaves, used)
            if len(used) != len(leaves):
                raise _CheckpointError("malformed structure metadata (unused leaves)")
            return tree
        infos = _scalar_infos(meta)
        try:
            return _fill_template(like, leaves, infos)
        except _CheckpointError as mismatch:
            migrated = _migrated_order(like, infos)
            if migrated is None:
                raise mismatch
            order, infos = migrated
            template = jax.tree.leaves(like)
            filled = [leaves[i] if i is not None
                      else np.zeros(np.shape(template[k]), np.asarray(template[k]).dtype)
                      for k, i in enumerate(order)]
            return _fill_template(like, filled, infos)
    except _CheckpointError as err:
        raise ValueError(f"cannot load checkpoint {path!r}: {err}.") from err


# Functions ``old key path -> current key path`` registered by the modules whose parameter
# layouts changed (e.g. `emf_jax.architectures`); tried in order when a file does not match
# `like` as stored.
_PATH_MIGRATIONS: list[Callable[[str], str]] = []


def register_path_migration(migration: Callable[[str], str]) -> Callable[[str], str]:
    """Registers a key-path rewrite that `load` tries when a file does not match `like`.

    A migration maps a leaf's key path as stored (e.g. ``"['lower']['w']"``) to its path in
    the current layout. `load` applies every registered migration in turn to all stored
    paths and accepts the first that gives exactly the paths of `like` (in any order); the
    leaves' shapes and dtypes are then checked as usual.

    Args:
      migration: ``migration(path) -> path``; it returns paths it does not know unchanged.

    Returns:
      `migration` itself (so that it can be used as a decorator).

    Example:
      >>> import os, tempfile, numpy as np
      >>> path = os.path.join(tempfile.mkdtemp(), "old.npz")
      >>> save(path, {"old_name": np.zeros(2)})
      >>> _ = register_path_migration(lambda p: p.replace("['old_name']", "['new_name']"))
      >>> sorted(load(path, like={"new_name": np.zeros(2)}))
      ['new_name']
      >>> _ = _PATH_MIGRATIONS.pop()  # (the example's migration is not kept)
    """
    _PATH_MIGRATIONS.append(migration)
    return migration


# Predicates on current key paths: leaves that layouts before a change did not have, and
# whose zero value is what an old checkpoint means (e.g. an identity stage's parameters and
# their zero optimizer moments). `load` fills them with zeros of `like`'s shape and dtype.
_ZERO_FILLED_LEAVES: list[Callable[[str], bool]] = []


def register_zero_filled_leaves(predicate: Callable[[str], bool]) -> Callable[[str], bool]:
    """Registers key paths that `load` fills with zeros when an older file lacks them.

    Args:
      predicate: ``predicate(path) -> bool`` on the key paths of `like`.

    Returns:
      `predicate` itself.

    Example:
      >>> import os, tempfile, numpy as np
      >>> path = os.path.join(tempfile.mkdtemp(), "old.npz")
      >>> save(path, {"w": np.ones(2)})
      >>> _ = register_zero_filled_leaves(lambda p: p.startswith("['new_stage']"))
      >>> loaded = load(path, like={"w": np.ones(2), "new_stage": np.ones(3)})
      >>> loaded["new_stage"].tolist()
      [0.0, 0.0, 0.0]
      >>> _ = _ZERO_FILLED_LEAVES.pop()  # (the example's rule is not kept)
    """
    _ZERO_FILLED_LEAVES.append(predicate)
    return predicate


def _migrated_order(like: PyTree, infos: list[dict]
                    ) -> tuple[list[int | None], list[dict]] | None:
    """The stored leaves' order and infos that match `like` after a migration, or None.

    An order entry of None marks a leaf that the file lacks and that is zero-filled.
    """
    template = jax.tree_util.tree_flatten_with_path(like)[0]
    wanted = [jax.tree_util.keystr(p) or "<root>" for p, _ in template]
    identity: Callable[[str], str] = lambda path: path  # noqa: E731
    for migration in [identity, *_PATH_MIGRATIONS]:
        paths = [migration(info["path"]) for info in infos]
        if len(set(paths)) != len(paths) or not set(paths) <= set(wanted):
            continue
        missing = set(wanted) - set(paths)
        if not all(any(rule(p) for rule in _ZERO_FILLED_LEAVES) for p in missing):
            continue
        if migration is identity and not missing:
            continue  # the stored layout itself, which did not match
        index = {p: i for i, p in enumerate(paths)}
        order = [index.get(p) for p in wanted]
        return order, [dict(infos[i], path=wanted[k]) if i is not None
                       else {"path": wanted[k], "py": None}
                       for k, i in enumerate(order)]
    return None


def _scalar_infos(meta: dict) -> list[dict]:
    """Per-leaf path and Python scalar type (from the structure) for `_fill_template`."""
    infos = [{"path": info["path"], "py": None} for info in meta["leaves"]]

    def visit(node: Any) -> None:
        if not isinstance(node, dict):
            raise _CheckpointError("malformed structure metadata")
        if node.get("kind") == "leaf":
            index = node.get("index")
            if not isinstance(index, int) or not 0 <= index < len(infos):
                raise _CheckpointError("malformed structure metadata (bad leaf index)")
            infos[index]["py"] = node.get("py")
        children = node.get("children", [])
        if not isinstance(children, list):
            raise _CheckpointError("malformed structure metadata (no children)")
        for child in children:
            visit(child)

    visit(meta.get("structure"))
    return infos
