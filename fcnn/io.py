"""Checkpoints: params, model state, optimizer state and metadata in one ``.npz`` file.

File layout (format version 1). One uncompressed ``.npz`` (a zip of ``.npy``
members, written by ``np.savez``; weights barely compress, so compression would
only cost time) with these members::

    params/<path>        one array per leaf of params,    e.g. "params/conv1/w"
    state/<path>         one array per leaf of the model state, e.g. "state/bn1/mean"
    opt_state/<path>     one array per leaf of the optimizer state, e.g. "opt_state/step",
                         "opt_state/velocity/conv1/w" (absent when no optimizer state was saved)
    __meta__             uint8 (B,): UTF-8 JSON, never a pickled object:
                         {"format": "fcnn-checkpoint", "format_version": 1,
                          "fcnn_version": "0.2.0",
                          "trees": {"params": S, "state": S, "opt_state": S or null},
                          "meta": {... the caller's dict ...}}

``<path>`` joins dict keys with ``"/"`` (see ``fcnn.tree.flatten_dict``). Each
skeleton ``S`` mirrors its tree with every array replaced by ``null``, so empty
sub-dicts (``state == {}``, ``{"velocity": {}}``) and the key order come back
exactly; ``"opt_state": null`` means no optimizer state was saved.

Writing is atomic: the file goes to a temporary name in the destination folder,
is flushed and fsynced, then renamed over ``path`` (``os.replace``), so a crash
or an error leaves any earlier checkpoint at ``path`` intact. ``path`` is used
exactly as given (no ``.npz`` is appended). Reading uses ``allow_pickle=False``
and refuses anything it does not recognise with a ``CheckpointError`` naming the
file; nothing is ever unpickled. Reading checks before it decompresses: the header
(``__meta__``) may hold at most ``MAX_META_BYTES`` bytes nested at most
``MAX_META_DEPTH`` deep, every member's shape and dtype are read from its ``.npy``
header and must agree with its size in the zip, and with ``expected=`` (the trees
the model builds) with the model too, so a small file that inflates to gigabytes
is refused from a few hundred bytes of headers.

    save_checkpoint("run/model.npz", params=params, state=state, opt_state=opt_state,
                    meta={"model": model.spec, "epoch": 3, "rng": generator_state(rng)})
    header = read_checkpoint_header("run/model.npz")      # meta and member shapes only
    params_like, state_like, _ = init(model_from(header.meta), rng, in_shape)
    ckpt = load_checkpoint("run/model.npz", expected={"params": params_like, "state": state_like})
"""

from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from .atomic import atomic_write

__all__ = [
    "FORMAT_MARKER",
    "FORMAT_VERSION",
    "MAX_META_BYTES",
    "MAX_META_DEPTH",
    "Checkpoint",
    "CheckpointError",
    "CheckpointHeader",
    "MemberInfo",
    "check_params_match",
    "fcnn_version",
    "generator_state",
    "load_checkpoint",
    "read_checkpoint_header",
    "restore_generator",
    "save_checkpoint",
]

FORMAT_MARKER = "fcnn-checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"
PREFIXES = ("params", "state", "opt_state")
SEP = "/"

# The header is JSON a few kilobytes long (model spec, config, history, rng state): far
# above any real one, and small enough that parsing it costs little memory.
MAX_META_BYTES = 8 * 1024 * 1024
# Nesting of the header's JSON (a model spec nests a few levels per block of layers).
MAX_META_DEPTH = 64
# Longest .npy header read (NumPy's own default guard).
_MAX_NPY_HEADER = 10_000

# Errors that reading tampered or truncated zip/npy data can raise (RuntimeError: an
# encrypted member; NotImplementedError: an unknown compression method).
_READ_ERRORS = (
    ValueError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    RuntimeError,
    NotImplementedError,
)

# Bit generators ``restore_generator`` knows, by the name their state carries.
_BIT_GENERATORS: dict[str, type[np.random.BitGenerator]] = {
    "PCG64": np.random.PCG64,
    "PCG64DXSM": np.random.PCG64DXSM,
    "Philox": np.random.Philox,
    "SFC64": np.random.SFC64,
    "MT19937": np.random.MT19937,
}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or whose trees do not match the model."""


class Checkpoint(NamedTuple):
    """What ``load_checkpoint`` returns.

    ``params``, ``state``: nested dicts of arrays; ``opt_state``: the same, or
    ``None`` when none was saved; ``meta``: the caller's dict as saved (tuples
    come back as lists); ``fcnn_version``: the version of fcnn that wrote the file.
    """

    params: dict[str, Any]
    state: dict[str, Any]
    opt_state: dict[str, Any] | None
    meta: dict[str, Any]
    fcnn_version: str


class MemberInfo(NamedTuple):
    """A checkpoint member as its ``.npy`` header declares it, read without its data;
    ``stored_bytes``: its size in the file (smaller than the data only if compressed)."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    stored_bytes: int


class CheckpointHeader(NamedTuple):
    """What ``read_checkpoint_header`` returns: ``meta`` and ``fcnn_version`` as in
    ``Checkpoint``, and ``members``: every array's declared ``MemberInfo`` by its
    ``"/"``-joined key (``"params/conv1/w"``); no array data is read."""

    meta: dict[str, Any]
    fcnn_version: str
    members: dict[str, MemberInfo]


# --- saving ------------------------------------------------------------------------------


def fcnn_version() -> str:
    """``fcnn.__version__``, which checkpoints and ONNX files record."""
    # Imported lazily: fcnn/__init__.py may import this module.
    from . import __version__

    return str(__version__)


def _to_numpy(leaf: Any, path: str) -> np.ndarray[Any, Any]:
    """A leaf as a NumPy array (CuPy arrays are copied to the host)."""
    if not isinstance(leaf, np.ndarray | np.generic) and hasattr(leaf, "__cuda_array_interface__"):
        leaf = leaf.get()
    if not isinstance(leaf, np.ndarray | np.generic):
        raise TypeError(
            f"save_checkpoint: {path}: leaves must be arrays, got {type(leaf).__name__} "
            "(wrap numbers in np.asarray)"
        )
    arr = np.asarray(leaf)
    if arr.dtype.hasobject:
        raise TypeError(
            f"save_checkpoint: {path}: object arrays cannot be saved (dtype {arr.dtype})"
        )
    return arr


def _flatten_tree(
    tree: Any, prefix: str, out: dict[str, np.ndarray[Any, Any]]
) -> dict[str, Any] | None:
    """Add ``tree``'s leaves to ``out`` under ``prefix``; return its skeleton (None for a leaf)."""
    if not isinstance(tree, Mapping):
        out[prefix] = _to_numpy(tree, prefix)
        return None
    skeleton: dict[str, Any] = {}
    for key, sub in tree.items():
        if not isinstance(key, str):
            raise TypeError(f"save_checkpoint: {prefix}: keys must be str, got {key!r}")
        if not key or SEP in key:
            raise ValueError(
                f"save_checkpoint: {prefix}: keys must be non-empty without {SEP!r}, got {key!r}"
            )
        skeleton[key] = _flatten_tree(sub, f"{prefix}{SEP}{key}", out)
    return skeleton


def _check_json(value: Any, where: str) -> Any:
    """A copy of ``value`` as plain JSON types; raise naming ``where`` if it is not JSON-able."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"save_checkpoint: {where} is {value!r}; JSON has no NaN/inf")
        return float(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(
                    f"save_checkpoint: {where} has the key {k!r}; JSON object keys must be str"
                )
            out[k] = _check_json(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, list | tuple):
        return [_check_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    hint = (
        " (convert with .tolist(), int() or float())"
        if isinstance(value, np.ndarray | np.generic)
        else ""
    )
    raise TypeError(
        f"save_checkpoint: {where} is a {type(value).__module__}.{type(value).__qualname__}, "
        f"which is not JSON-serialisable{hint}"
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    params: Mapping[str, Any],
    state: Mapping[str, Any],
    opt_state: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write params, state, optional optimizer state and ``meta`` to ``path``, atomically.

    The trees are nested dicts with str keys (non-empty, without ``"/"``) and
    NumPy (or CuPy) array leaves of any non-object dtype; NumPy scalars are
    saved as 0-d arrays. ``meta`` must be JSON-serialisable (dicts with str keys,
    lists/tuples, str, int, finite float, bool, None); otherwise ``TypeError``
    (``ValueError`` for NaN/inf) names the offending key. Nothing is written
    when validation fails. The folder of ``path`` must exist; an existing file
    at ``path`` keeps its permission bits, a new one gets ``0o644``.
    """
    fs_path = os.fspath(path)
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    trees: dict[str, Any] = {}
    for prefix, tree in (("params", params), ("state", state), ("opt_state", opt_state)):
        if tree is None and prefix == "opt_state":
            trees[prefix] = None
            continue
        if not isinstance(tree, Mapping):
            raise TypeError(f"save_checkpoint: {prefix} must be a dict, got {type(tree).__name__}")
        trees[prefix] = _flatten_tree(tree, prefix, arrays)
    header = {
        "format": FORMAT_MARKER,
        "format_version": FORMAT_VERSION,
        "fcnn_version": fcnn_version(),
        "trees": trees,
        "meta": _check_json({} if meta is None else meta, "meta"),
    }
    text = json.dumps(header, allow_nan=False, ensure_ascii=False)
    arrays[META_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    with atomic_write(fs_path, "wb") as f:
        # A file object, not a name: np.savez appends ".npz" only to names.
        # (No allow_pickle= here: older NumPy would save it as an array; leaves
        # were checked for object dtypes above.)
        members: dict[str, Any] = arrays
        np.savez(f, **members)


# --- loading -----------------------------------------------------------------------------


def _skeleton_leaves(skeleton: Any, prefix: str, where: str) -> list[str]:
    """The leaf paths a skeleton promises, validating it as it goes."""
    if skeleton is None:
        return [prefix]
    if not isinstance(skeleton, dict):
        raise CheckpointError(f"{where}: malformed tree structure at {prefix!r} in {META_KEY}")
    out: list[str] = []
    for key, sub in skeleton.items():
        if not key or SEP in key:
            raise CheckpointError(f"{where}: malformed key {key!r} under {prefix!r} in {META_KEY}")
        out.extend(_skeleton_leaves(sub, f"{prefix}{SEP}{key}", where))
    return out


def _build(skeleton: dict[str, Any], prefix: str, arrays: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: arrays[f"{prefix}{SEP}{key}"]
        if sub is None
        else _build(sub, f"{prefix}{SEP}{key}", arrays)
        for key, sub in skeleton.items()
    }


def _depth(value: Any) -> int:
    """How many JSON containers ``value`` nests (``1`` is 0, ``[[1]]`` is 2); iterative,
    so any depth is safe."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, outer = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if isinstance(node, dict | list):
            deepest = max(deepest, outer + 1)
            stack.extend((child, outer + 1) for child in children)
    return deepest


def _parse_header(raw: bytes, where: str) -> dict[str, Any]:
    """The ``__meta__`` bytes as a validated header dict, or ``CheckpointError``."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise CheckpointError(f"{where}: {META_KEY} is JSON nested too deeply") from None
    except ValueError as err:  # UnicodeDecodeError, JSONDecodeError, over-long int literals
        raise CheckpointError(f"{where}: {META_KEY} is not valid UTF-8 JSON ({err})") from err
    if _depth(header) > MAX_META_DEPTH:
        raise CheckpointError(
            f"{where}: {META_KEY} is JSON nested more than {MAX_META_DEPTH} levels deep"
        )
    if not isinstance(header, dict) or header.get("format") != FORMAT_MARKER:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise CheckpointError(
            f"{where}: not an fcnn checkpoint (format marker {found!r}, expected {FORMAT_MARKER!r})"
        )
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{where}: unsupported format version {version!r}")
    written_by = header.get("fcnn_version")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: written with format version {version} (fcnn {written_by}); this fcnn "
            f"({fcnn_version()}) reads format version {FORMAT_VERSION}: upgrade fcnn"
        )
    if not isinstance(written_by, str):
        raise CheckpointError(f"{where}: {META_KEY} lacks the fcnn_version string")
    if not isinstance(header.get("meta"), dict):
        raise CheckpointError(f"{where}: {META_KEY} lacks the 'meta' object")
    trees = header.get("trees")
    if not isinstance(trees, dict) or set(trees) != set(PREFIXES):
        raise CheckpointError(f"{where}: {META_KEY} lacks the tree structures {list(PREFIXES)}")
    for prefix in ("params", "state"):
        if not isinstance(trees[prefix], dict):
            raise CheckpointError(f"{where}: malformed tree structure for {prefix!r}")
    return header


def _npy_header(fp: Any, where: str, key: str, stored_bytes: int) -> MemberInfo:
    """Read a ``.npy`` header from ``fp`` (left just before the data); never the data."""
    try:
        version = np.lib.format.read_magic(fp)
    except ValueError as err:
        raise CheckpointError(f"{where}: entry {key!r} is not a .npy array ({err})") from err
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fp, max_header_size=_MAX_NPY_HEADER)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fp, max_header_size=_MAX_NPY_HEADER)
    else:
        raise CheckpointError(f"{where}: entry {key!r} has unsupported .npy version {version}")
    if dtype.hasobject:
        raise CheckpointError(
            f"{where}: entry {key!r} is an object array, which cannot be read without unpickling"
        )
    return MemberInfo(tuple(int(d) for d in shape), dtype, stored_bytes)


class _Member(NamedTuple):
    info: zipfile.ZipInfo
    declared: MemberInfo


def _scan(zf: zipfile.ZipFile, where: str) -> tuple[dict[str, Any], dict[str, _Member]]:
    """The parsed header and every other member's declared shape and dtype.

    Reads the ``.npy`` headers and the ``__meta__`` bytes only (at most ``MAX_META_BYTES``);
    a member whose declared size disagrees with its size in the zip is refused here.
    """
    keys: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if key in keys:
            raise CheckpointError(f"{where}: entry {key!r} appears twice")
        keys[key] = info
    if META_KEY not in keys:
        raise CheckpointError(f"{where}: no {META_KEY} entry; not an fcnn checkpoint")
    unknown = [
        k
        for k in keys
        if k != META_KEY and not any(k.startswith(p + SEP) and k != p + SEP for p in PREFIXES)
    ]
    if unknown:
        raise CheckpointError(
            f"{where}: unexpected entries {sorted(unknown)}; "
            f"expected only {META_KEY} and keys under {[p + SEP for p in PREFIXES]}"
        )
    members: dict[str, _Member] = {}
    raw = b""
    for key, info in keys.items():
        with zf.open(info) as fp:
            declared = _npy_header(fp, where, key, info.compress_size)
            data_bytes = math.prod(declared.shape) * declared.dtype.itemsize
            if fp.tell() + data_bytes != info.file_size:
                raise CheckpointError(
                    f"{where}: entry {key!r} declares {declared.shape} {declared.dtype} "
                    f"({data_bytes} bytes) but holds {info.file_size - fp.tell()} bytes"
                )
            if key == META_KEY:
                if declared.dtype != np.uint8 or len(declared.shape) != 1:
                    raise CheckpointError(f"{where}: {META_KEY} is not a uint8 byte array")
                if data_bytes > MAX_META_BYTES:
                    raise CheckpointError(
                        f"{where}: {META_KEY} holds {data_bytes} bytes; the limit is "
                        f"{MAX_META_BYTES}"
                    )
                raw = fp.read(data_bytes)
            else:
                members[key] = _Member(info, declared)
    header = _parse_header(raw, where)
    for prefix in PREFIXES:
        skeleton = header["trees"][prefix]
        promised = set() if skeleton is None else set(_skeleton_leaves(skeleton, prefix, where))
        present = {k for k in members if k.startswith(prefix + SEP)}
        if promised != present:
            raise CheckpointError(
                f"{where}: {prefix} entries disagree with the recorded structure: "
                f"missing {sorted(promised - present)}, unexpected {sorted(present - promised)}"
            )
    return header, members


def _open_zip(path: str | os.PathLike[str]) -> tuple[zipfile.ZipFile, str]:
    fs_path = os.fspath(path)
    where = f"checkpoint {fs_path!r}"
    if not os.path.isfile(fs_path):
        raise FileNotFoundError(f"{where}: no such file")
    if not zipfile.is_zipfile(fs_path):
        raise CheckpointError(f"{where}: not a zip (.npz) file")
    try:
        return zipfile.ZipFile(fs_path), where
    except _READ_ERRORS as err:
        raise CheckpointError(f"{where}: cannot be read as .npz ({err})") from err


def read_checkpoint_header(path: str | os.PathLike[str]) -> CheckpointHeader:
    """A checkpoint's ``meta``, ``fcnn_version`` and every member's declared shape and
    dtype, without reading any array's data (see ``CheckpointHeader``).

    Raises what ``load_checkpoint`` raises for the file's structure and header, so a
    caller can build the model the meta describes and then load with ``expected=``.
    """
    zf, where = _open_zip(path)
    try:
        with zf:
            header, members = _scan(zf, where)
    except CheckpointError:
        raise
    except _READ_ERRORS as err:
        raise CheckpointError(f"{where}: cannot be read as .npz ({err})") from err
    return CheckpointHeader(
        meta=header["meta"],
        fcnn_version=header["fcnn_version"],
        members={k: m.declared for k, m in members.items()},
    )


_TREE_NAMES = {"params": "params", "state": "state", "opt_state": "optimizer state"}


def load_checkpoint(
    path: str | os.PathLike[str], *, expected: Mapping[str, Any] | None = None
) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``.

    ``expected``: optional trees the file must match, by prefix (``{"params": P,
    "state": S, "opt_state": O}``, any subset), e.g. a freshly ``init``-ed model's;
    their leaves need only ``.shape`` and ``.dtype``. Each is compared with the shapes
    and dtypes the members declare (``check_params_match``) before any array data is
    decompressed, so a file that would inflate to more than the model needs is refused.

    Raises ``FileNotFoundError`` when ``path`` is not a file and
    ``CheckpointError`` (a ``ValueError``) naming ``path`` when it is not a zip
    (``.npz``) file, lacks ``__meta__``, has a header over ``MAX_META_BYTES`` bytes,
    nested over ``MAX_META_DEPTH`` levels or otherwise unparsable, the wrong format
    marker or an unsupported format version, holds object arrays, members outside
    ``params/``, ``state/``, ``opt_state/`` or members whose declared size is not their
    size, disagrees with its recorded tree structure, or with ``expected``. Nothing is
    unpickled (``allow_pickle=False``).
    """
    unknown = sorted(set(expected or {}) - set(PREFIXES))
    if unknown:
        raise ValueError(f"load_checkpoint: expected has unknown trees {unknown}; use {PREFIXES}")
    zf, where = _open_zip(path)
    try:
        with zf:
            header, members = _scan(zf, where)
            declared = {k: m.declared for k, m in members.items()}
            for prefix, tree in (expected or {}).items():
                skeleton = header["trees"][prefix]
                if skeleton is None:
                    raise CheckpointError(f"{where}: has no {_TREE_NAMES[prefix]} saved")
                try:
                    check_params_match(
                        tree, _build(skeleton, prefix, declared), _TREE_NAMES[prefix]
                    )
                except CheckpointError as err:
                    raise CheckpointError(f"{where}: {err}") from err
            arrays: dict[str, Any] = {}
            for key, member in members.items():
                with zf.open(member.info) as fp:
                    arrays[key] = np.lib.format.read_array(
                        fp, allow_pickle=False, max_header_size=_MAX_NPY_HEADER
                    )
    except CheckpointError:
        raise
    except _READ_ERRORS as err:
        raise CheckpointError(f"{where}: cannot be read as .npz ({err})") from err

    trees: dict[str, Any] = {}
    for prefix in PREFIXES:
        skeleton = header["trees"][prefix]
        trees[prefix] = None if skeleton is None else _build(skeleton, prefix, arrays)
    return Checkpoint(
        params=trees["params"],
        state=trees["state"],
        opt_state=trees["opt_state"],
        meta=header["meta"],
        fcnn_version=header["fcnn_version"],
    )


# --- checking a loaded tree against a model ------------------------------------------------


def _leaf_sig(leaf: Any) -> tuple[tuple[int, ...], np.dtype[Any]]:
    shape = getattr(leaf, "shape", None)
    dtype = getattr(leaf, "dtype", None)
    if shape is None or dtype is None:
        arr = np.asarray(leaf)
        shape, dtype = arr.shape, arr.dtype
    return tuple(int(d) for d in shape), np.dtype(dtype)


def _subtree_paths(tree: Any, path: str) -> list[str]:
    """Leaf paths of ``tree`` under ``path``; an empty dict counts as one path (``a/b/``)."""
    if not isinstance(tree, Mapping):
        return [path]
    if not tree:
        return [f"{path}{SEP}" if path else "<root>"]
    out: list[str] = []
    for k, sub in tree.items():
        out.extend(_subtree_paths(sub, f"{path}{SEP}{k}" if path else str(k)))
    return out


def _compare(
    ref: Any, got: Any, path: str, missing: list[str], extra: list[str], wrong: list[str]
) -> None:
    ref_node, got_node = isinstance(ref, Mapping), isinstance(got, Mapping)
    if ref_node and got_node:
        for k in ref:
            sub = f"{path}{SEP}{k}" if path else str(k)
            if k in got:
                _compare(ref[k], got[k], sub, missing, extra, wrong)
            else:
                missing.extend(_subtree_paths(ref[k], sub))
        for k in got:
            if k not in ref:
                extra.extend(_subtree_paths(got[k], f"{path}{SEP}{k}" if path else str(k)))
    elif ref_node or got_node:

        def kind(node: bool) -> str:
            return "a dict" if node else "an array"

        wrong.append(
            f"{path or '<root>'}: {kind(ref_node)} in the model, {kind(got_node)} in the file"
        )
    else:
        (rs, rd), (gs, gd) = _leaf_sig(ref), _leaf_sig(got)
        if rs != gs:
            wrong.append(f"{path}: shape {rs} in the model, {gs} in the file")
        if rd != gd:
            wrong.append(f"{path}: dtype {rd} in the model, {gd} in the file")


def check_params_match(model_params_like: Any, loaded: Any, what: str = "params") -> None:
    """Raise ``CheckpointError`` unless ``loaded`` has exactly the structure, shapes and
    dtypes of ``model_params_like`` (e.g. freshly ``init``-ed params of the model in meta).

    The message lists, by path, the keys missing from the file, the keys the
    model does not have, and every shape or dtype mismatch, e.g.
    ``conv1/w: shape (8, 1, 3, 3) in the model, (8, 1, 5, 5) in the file``.
    """
    missing: list[str] = []
    extra: list[str] = []
    wrong: list[str] = []
    _compare(model_params_like, loaded, "", missing, extra, wrong)
    problems: list[str] = []
    if missing:
        problems.append("missing in the file: " + ", ".join(missing))
    if extra:
        problems.append("not in the model: " + ", ".join(extra))
    problems.extend(wrong)
    if problems:
        raise CheckpointError(f"{what} do not match the model:\n  " + "\n  ".join(problems))


# --- random generator state ----------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Bit-generator state as JSON types: arrays become lists, NumPy ints become ints."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    return value


def generator_state(rng: np.random.Generator) -> dict[str, Any]:
    """``rng``'s exact position as a JSON-able dict (``rng.bit_generator.state`` with arrays
    as lists; the ints can exceed 64 bits, which JSON keeps exactly). Store it in ``meta``
    and resume with ``restore_generator``."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"generator_state: expected a numpy.random.Generator, got {type(rng)}")
    state: dict[str, Any] = _plain(rng.bit_generator.state)
    return state


def restore_generator(state: Mapping[str, Any]) -> np.random.Generator:
    """A ``Generator`` at exactly the position ``generator_state`` recorded.

    Knows PCG64, PCG64DXSM, Philox, SFC64 and MT19937; raises ``CheckpointError``
    (a ``ValueError``) for any other name or a malformed state.
    """
    name = state.get("bit_generator") if isinstance(state, Mapping) else None
    if not isinstance(name, str) or name not in _BIT_GENERATORS:
        raise CheckpointError(
            f"restore_generator: unknown bit generator {name!r}; known: {sorted(_BIT_GENERATORS)}"
        )
    bit_gen = _BIT_GENERATORS[name]()
    try:
        bit_gen.state = dict(state)
    except (ValueError, TypeError, KeyError, OverflowError) as err:
        raise CheckpointError(f"restore_generator: malformed {name} state ({err})") from err
    return np.random.Generator(bit_gen)
