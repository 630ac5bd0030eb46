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
                          "fcnn_version": "0.3.0",
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
and refuses anything it does not recognise with a one-line ``CheckpointError`` naming
the file; nothing is ever unpickled.

Reading is bounded by what is really in the file, not by what the file says about
itself, and everything is checked before any array data is decompressed:

- the zip may list at most ``MAX_MEMBERS`` entries, counted before ``zipfile`` parses
  its directory;
- each member's data must lie in the file, between its own header and the next member
  (so members never overlap and their stored sizes add up to at most the file's size);
  a stored member inflates to exactly its stored size, a deflated one to at most what
  deflate can produce; other compression methods are refused;
- the header (``__meta__``) may hold at most ``MAX_META_BYTES`` bytes, ``MAX_META_ITEMS``
  JSON values and ``MAX_META_DEPTH`` levels of nesting, counted while it is parsed;
- every member's shape and dtype come from its ``.npy`` header and must account for
  exactly its size; with ``expected=`` (the trees the model builds) they must be the
  model's; and all the arrays together may take at most ``MAX_INFLATION`` times the
  file's size (a decompression bomb is refused from its headers, even one whose shapes
  the model expects);
- array data is then read in chunks and counted: memory is taken only for bytes that
  arrived, never for a declared shape, and a member that ends early is refused.

See docs/security.md for the limits and what a caller should do. For example::

    save_checkpoint("run/model.npz", params=params, state=state, opt_state=opt_state,
                    meta={"model": model.spec, "epoch": 3, "rng": generator_state(rng)})
    header = read_checkpoint_header("run/model.npz")      # meta and member shapes only
    params_like, state_like, _ = init(model_from(header.meta), rng, in_shape)
    ckpt = load_checkpoint("run/model.npz", expected={"params": params_like, "state": state_like})
"""

from __future__ import annotations

import contextlib
import json
import json.decoder
import json.scanner
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any, NamedTuple

import numpy as np

from .atomic import atomic_write

__all__ = [
    "FORMAT_MARKER",
    "FORMAT_VERSION",
    "MAX_INFLATION",
    "MAX_MEMBERS",
    "MAX_META_BYTES",
    "MAX_META_DEPTH",
    "MAX_META_ITEMS",
    "Checkpoint",
    "CheckpointError",
    "CheckpointHeader",
    "MemberInfo",
    "check_finite",
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
# Values in the header's JSON (a training run's header holds hundreds; a thousand epochs
# of history about ten thousand): bounds the memory the parsed header takes.
MAX_META_ITEMS = 250_000
# Entries in the zip: one per array (a model with Adam's state has three per parameter).
MAX_MEMBERS = 10_000
# A checkpoint's arrays may take at most this many times the file's size (fcnn writes them
# uncompressed; weights barely compress; a deflate bomb inflates a thousandfold).
MAX_INFLATION = 16
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
    ``stored_bytes``: its size in the file (smaller than the data only if compressed),
    checked to lie in the file: the members' ``stored_bytes`` add up to at most its size."""

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


def _few(names: Sequence[str], shown: int = 5) -> str:
    """``names`` for a message: the first ``shown`` and how many more, so a file with a
    hundred thousand wrong entries still gets a one-line error."""
    return f"[{_listed([repr(n) for n in names], shown=shown)}]"


def _reason(err: BaseException) -> str:
    """An exception's message, or its type's name when it has none (``EOFError()``)."""
    return str(err) or type(err).__name__


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


class _HeaderTooLargeError(Exception):
    """Raised inside the JSON parser when the header passes a bound."""


def _bounded_json(text: str) -> Any:
    """``json.loads(text)``, stopped as soon as it has made more than ``MAX_META_ITEMS``
    values or opened more than ``MAX_META_DEPTH`` nested containers.

    The standard parser builds the whole value before anything can be counted (8 MiB of
    ``[],`` make 2.7 million lists, over 400 MB), so this one counts while it parses: the
    pure-Python scanner of the ``json`` module, its strings still decoded in C, with the
    array and object parsers wrapped to count what they read and how deep they are.
    """
    items, depth = 0, 0

    def counted(scan_once: Any) -> Any:
        def scan(s: str, idx: int) -> Any:
            nonlocal items
            items += 1
            if items > MAX_META_ITEMS:
                raise _HeaderTooLargeError(f"holds more than {MAX_META_ITEMS} JSON values")
            return scan_once(s, idx)

        return scan

    def nested(parse: Any, at: int) -> Any:
        def parse_container(*args: Any) -> Any:
            nonlocal depth
            depth += 1
            try:
                if depth > MAX_META_DEPTH:
                    raise _HeaderTooLargeError(
                        f"is JSON nested more than {MAX_META_DEPTH} levels deep"
                    )
                return parse(*args[:at], counted(args[at]), *args[at + 1 :])
            finally:
                depth -= 1

        return parse_container

    decoder = json.JSONDecoder()
    decoder.parse_array = nested(json.decoder.JSONArray, 1)  # type: ignore[attr-defined]
    decoder.parse_object = nested(json.decoder.JSONObject, 2)  # type: ignore[attr-defined]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder.decode(text)


def _parse_header(raw: bytes | bytearray, where: str) -> dict[str, Any]:
    """The ``__meta__`` bytes as a validated header dict, or ``CheckpointError``."""
    try:
        header = _bounded_json(raw.decode("utf-8"))
    except _HeaderTooLargeError as err:
        raise CheckpointError(f"{where}: {META_KEY} {err}") from None
    except ValueError as err:  # UnicodeDecodeError, JSONDecodeError, over-long int literals
        raise CheckpointError(f"{where}: {META_KEY} is not valid UTF-8 JSON ({err})") from err
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


# --- the zip file, checked against the bytes really in it ----------------------------------
#
# A zip states each member's sizes twice (local header, central directory) and zipfile
# believes the central directory. Nothing here does: before any member is read, every
# member's data must lie inside the file, between its own local header and the next
# member's (so members never overlap and together hold at most the file's bytes), a
# stored member's inflated size must be its stored size, and a deflated one's at most
# what deflate can produce from it. Then data is read in chunks and counted, and
# memory is only ever taken for bytes that arrived.

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory record
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_LOCAL = struct.Struct("<4s5H3L2H")  # local file header, before its name and extra field
_DEFLATE_MAX_RATIO = 1032  # deflate never inflates one byte into more (RFC 1951's 258/2 bits)
_CHUNK = 1 << 20
_MAX_DIRECTORY_BYTES = MAX_MEMBERS * 1024  # an entry: 46 bytes, its name and a zip64 field


class _Zip(NamedTuple):
    """An open checkpoint: the zip, its file, the name errors use, the file's size and
    where its central directory starts (where the members' data must end)."""

    zf: zipfile.ZipFile
    file: IO[bytes]
    where: str
    size: int
    directory_start: int


def _directory(f: IO[bytes], size: int, where: str) -> int:
    """Where the central directory starts, found as ``zipfile`` finds it (the end record
    without a comment, else the last one in the final 64 KiB; a zip64 record just before
    it); refuses a directory that could list more than ``MAX_MEMBERS`` entries, before
    ``zipfile`` parses one of them."""
    f.seek(max(0, size - _EOCD.size - (1 << 16)))
    tail = f.read()
    at = len(tail) - _EOCD.size
    if tail[at : at + 4] != b"PK\x05\x06" or tail[-2:] != b"\0\0":
        at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + _EOCD.size > len(tail):
        raise CheckpointError(f"{where}: not a zip (.npz) file")
    cd_size = _EOCD.unpack_from(tail, at)[5]
    end = size - len(tail) + at
    if end >= _EOCD64_LOCATOR.size + _EOCD64.size:
        f.seek(end - _EOCD64_LOCATOR.size)
        if f.read(4) == b"PK\x06\x07":  # zip64: its record lies just before the locator
            end -= _EOCD64_LOCATOR.size + _EOCD64.size
            f.seek(end)
            record = f.read(_EOCD64.size)
            if record[:4] != b"PK\x06\x06":
                raise CheckpointError(f"{where}: not a zip (.npz) file (no zip64 end record)")
            cd_size = _EOCD64.unpack(record)[-2]
    start = end - int(cd_size)
    if start < 0 or cd_size > _MAX_DIRECTORY_BYTES:
        raise CheckpointError(
            f"{where}: its zip directory claims {cd_size} bytes (the file has {size}; "
            f"{MAX_MEMBERS} entries take at most {_MAX_DIRECTORY_BYTES})"
        )
    f.seek(start)
    # Every entry starts with the signature, so this bounds what zipfile will parse.
    if f.read(cd_size).count(_CENTRAL_SIGNATURE) > MAX_MEMBERS:
        raise CheckpointError(f"{where}: holds more than {MAX_MEMBERS} entries")
    return start


@contextlib.contextmanager
def _open_checkpoint(path: str | os.PathLike[str]) -> Iterator[_Zip]:
    """The checkpoint at ``path``, open; what goes wrong reading it inside the block is a
    ``CheckpointError`` naming the file."""
    fs_path = os.fspath(path)
    where = f"checkpoint {fs_path!r}"
    if not os.path.isfile(fs_path):
        raise FileNotFoundError(f"{where}: no such file")
    with open(fs_path, "rb") as f:
        try:
            size = os.fstat(f.fileno()).st_size
            start = _directory(f, size, where)
            with zipfile.ZipFile(f) as zf:
                yield _Zip(zf, f, where, size, start)
        except CheckpointError:
            raise
        except _READ_ERRORS as err:
            raise CheckpointError(f"{where}: cannot be read as .npz ({_reason(err)})") from err


def _check_layout(z: _Zip, keys: Mapping[str, zipfile.ZipInfo]) -> None:
    """Refuse a member whose data is not really in the file (see the section comment)."""
    ordered = sorted(keys.items(), key=lambda item: item[1].header_offset)
    ends = [info.header_offset for _, info in ordered[1:]] + [z.directory_start]
    for (key, info), end in zip(ordered, ends, strict=True):
        z.file.seek(info.header_offset)
        local = z.file.read(_LOCAL.size)
        if len(local) < _LOCAL.size or local[:4] != b"PK\x03\x04":
            raise CheckpointError(f"{z.where}: entry {key!r} has no local header")
        name_len, extra_len = _LOCAL.unpack(local)[-2:]
        room = end - (info.header_offset + _LOCAL.size + name_len + extra_len)
        if info.compress_size > room:
            raise CheckpointError(
                f"{z.where}: entry {key!r} claims {info.compress_size} bytes, but "
                f"{max(room, 0)} lie between its header and the next entry (truncated or forged)"
            )
        _check_method(info, key, z.where)


def _check_method(info: zipfile.ZipInfo, key: str, where: str) -> None:
    """A stored member inflates to exactly its size, a deflated one to at most
    ``_DEFLATE_MAX_RATIO`` times it; other methods and encryption are refused."""
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{where}: entry {key!r} is encrypted")
    if info.compress_type == zipfile.ZIP_STORED:
        if info.file_size != info.compress_size:
            raise CheckpointError(
                f"{where}: entry {key!r} claims {info.file_size} bytes stored in "
                f"{info.compress_size} (forged sizes)"
            )
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        if info.file_size > _DEFLATE_MAX_RATIO * (info.compress_size + 1):
            raise CheckpointError(
                f"{where}: entry {key!r} claims {info.file_size} bytes inflated from "
                f"{info.compress_size}, more than deflate can produce (forged sizes)"
            )
    else:
        raise CheckpointError(
            f"{where}: entry {key!r} uses compression method {info.compress_type}; "
            "checkpoints are stored or deflated"
        )


def _read_exactly(fp: IO[bytes], nbytes: int, where: str, key: str) -> bytearray:
    """The next ``nbytes`` bytes of member ``key``, read in chunks and counted: memory grows
    with the bytes that arrive, never with what the member declares."""
    buf = bytearray()
    try:
        while len(buf) < nbytes:
            chunk = fp.read(min(_CHUNK, nbytes - len(buf)))
            if not chunk:
                break
            buf += chunk
        extra = fp.read(1)
    except EOFError:  # a deflate stream that stops early
        extra = b""
    if len(buf) < nbytes or extra:
        got = f"only {len(buf)}" if len(buf) < nbytes else "more than"
        raise CheckpointError(
            f"{where}: entry {key!r} holds {got} of the {nbytes} bytes its header declares"
        )
    return buf


# --- the members -------------------------------------------------------------------------


class _Member(NamedTuple):
    """A member as scanned: its zip entry, what its ``.npy`` header declares, how long that
    header is and whether the data is in Fortran order."""

    info: zipfile.ZipInfo
    declared: MemberInfo
    header_bytes: int
    fortran: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.declared.shape) * self.declared.dtype.itemsize


def _npy_header(fp: IO[bytes], where: str, key: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Read a ``.npy`` header from ``fp`` (left just before the data); never the data."""
    try:
        version = np.lib.format.read_magic(fp)
    except ValueError as err:
        raise CheckpointError(f"{where}: entry {key!r} is not a .npy array ({err})") from err
    if version == (1, 0):
        header = np.lib.format.read_array_header_1_0(fp, max_header_size=_MAX_NPY_HEADER)
    elif version == (2, 0):
        header = np.lib.format.read_array_header_2_0(fp, max_header_size=_MAX_NPY_HEADER)
    else:
        raise CheckpointError(f"{where}: entry {key!r} has unsupported .npy version {version}")
    shape, fortran, dtype = header
    if dtype.hasobject:
        raise CheckpointError(
            f"{where}: entry {key!r} is an object array, which cannot be read without unpickling"
        )
    if dtype.subdtype is not None:
        raise CheckpointError(f"{where}: entry {key!r} has a sub-array dtype {dtype}")
    return tuple(int(d) for d in shape), bool(fortran), dtype


@contextlib.contextmanager
def _open_entry(z: _Zip, key: str, info: zipfile.ZipInfo) -> Iterator[IO[bytes]]:
    """Member ``key`` open for reading; a corrupt one (a bad CRC, a broken deflate stream)
    is a ``CheckpointError`` naming it."""
    try:
        with z.zf.open(info) as fp:
            yield fp
    except CheckpointError:
        raise
    except _READ_ERRORS as err:
        raise CheckpointError(f"{z.where}: entry {key!r} is corrupt ({_reason(err)})") from err


def _member(z: _Zip, key: str, info: zipfile.ZipInfo) -> _Member:
    """``key``'s declared shape and dtype, refused unless they account for exactly its size."""
    with _open_entry(z, key, info) as fp:
        shape, fortran, dtype = _npy_header(fp, z.where, key)
        header_bytes = fp.tell()
    member = _Member(info, MemberInfo(shape, dtype, info.compress_size), header_bytes, fortran)
    if header_bytes + member.nbytes != info.file_size:
        raise CheckpointError(
            f"{z.where}: entry {key!r} declares {shape} {dtype} ({member.nbytes} bytes) "
            f"but holds {info.file_size - header_bytes} bytes"
        )
    return member


def _read_meta(z: _Zip, info: zipfile.ZipInfo) -> dict[str, Any]:
    """The parsed, validated ``__meta__``: at most ``MAX_META_BYTES`` bytes are read."""
    meta = _member(z, META_KEY, info)
    if meta.declared.dtype != np.uint8 or len(meta.declared.shape) != 1:
        raise CheckpointError(f"{z.where}: {META_KEY} is not a uint8 byte array")
    if meta.nbytes > MAX_META_BYTES:
        raise CheckpointError(
            f"{z.where}: {META_KEY} holds {meta.nbytes} bytes; the limit is {MAX_META_BYTES}"
        )
    with _open_entry(z, META_KEY, info) as fp:
        fp.read(meta.header_bytes)
        raw = _read_exactly(fp, meta.nbytes, z.where, META_KEY)
    return _parse_header(raw, z.where)


def _entries(z: _Zip) -> dict[str, zipfile.ZipInfo]:
    """The zip's entries by key (``.npy`` dropped): no duplicates, only known prefixes."""
    keys: dict[str, zipfile.ZipInfo] = {}
    for info in z.zf.infolist():
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if key in keys:
            raise CheckpointError(f"{z.where}: entry {key!r} appears twice")
        keys[key] = info
    if META_KEY not in keys:
        raise CheckpointError(f"{z.where}: no {META_KEY} entry; not an fcnn checkpoint")
    unknown = [
        k
        for k in keys
        if k != META_KEY and not any(k.startswith(p + SEP) and k != p + SEP for p in PREFIXES)
    ]
    if unknown:
        raise CheckpointError(
            f"{z.where}: unexpected entries {_few(sorted(unknown))}; "
            f"expected only {META_KEY} and keys under {[p + SEP for p in PREFIXES]}"
        )
    return keys


def _scan(z: _Zip) -> tuple[dict[str, Any], dict[str, _Member]]:
    """The parsed header and every other member's declared shape and dtype.

    In order, each step cheap and bounded by the one before: the entries' names; their
    places in the file; the header; the names the header promises; the ``.npy`` headers.
    No array data is read.
    """
    keys = _entries(z)
    _check_layout(z, keys)
    header = _read_meta(z, keys.pop(META_KEY))
    for prefix in PREFIXES:
        skeleton = header["trees"][prefix]
        promised = set() if skeleton is None else set(_skeleton_leaves(skeleton, prefix, z.where))
        present = {k for k in keys if k.startswith(prefix + SEP)}
        if promised != present:
            raise CheckpointError(
                f"{z.where}: {prefix} entries disagree with the recorded structure: "
                f"missing {_few(sorted(promised - present))}, "
                f"unexpected {_few(sorted(present - promised))}"
            )
    return header, {key: _member(z, key, info) for key, info in keys.items()}


def _read_array(z: _Zip, key: str, member: _Member) -> np.ndarray[Any, Any]:
    """Member ``key``'s array, from exactly the bytes its header declares."""
    with _open_entry(z, key, member.info) as fp:
        fp.read(member.header_bytes)
        buf = _read_exactly(fp, member.nbytes, z.where, key)
    shape, dtype = member.declared.shape, member.declared.dtype
    flat = np.frombuffer(buf, dtype=dtype, count=math.prod(shape))
    return flat.reshape(shape, order="F" if member.fortran else "C")


def read_checkpoint_header(path: str | os.PathLike[str]) -> CheckpointHeader:
    """A checkpoint's ``meta``, ``fcnn_version`` and every member's declared shape and
    dtype, without reading any array's data (see ``CheckpointHeader``).

    Raises what ``load_checkpoint`` raises for the file's structure and header, so a
    caller can build the model the meta describes and then load with ``expected=``.
    """
    with _open_checkpoint(path) as z:
        header, members = _scan(z)
    return CheckpointHeader(
        meta=header["meta"],
        fcnn_version=header["fcnn_version"],
        members={k: m.declared for k, m in members.items()},
    )


_TREE_NAMES = {"params": "params", "state": "state", "opt_state": "optimizer state"}


def _check_sizes(
    z: _Zip, header: dict[str, Any], members: Mapping[str, _Member], expected: Mapping[str, Any]
) -> None:
    """Compare the trees in ``expected`` with the members' declared shapes and dtypes, and
    bound what all the members inflate to by the file's size."""
    declared = {k: m.declared for k, m in members.items()}
    for prefix, tree in expected.items():
        skeleton = header["trees"][prefix]
        if skeleton is None:
            raise CheckpointError(f"{z.where}: has no {_TREE_NAMES[prefix]} saved")
        try:
            check_params_match(tree, _build(skeleton, prefix, declared), _TREE_NAMES[prefix])
        except CheckpointError as err:
            raise CheckpointError(f"{z.where}: {err}") from err
    # Even arrays the caller expects: ``expected`` may come from the file's own meta.
    total = sum(m.nbytes for m in members.values())
    if total > MAX_INFLATION * z.size:
        raise CheckpointError(
            f"{z.where}: its arrays would take {total} bytes, more than {MAX_INFLATION} times "
            f"the file's {z.size} (a decompression bomb?)"
        )


def load_checkpoint(
    path: str | os.PathLike[str], *, expected: Mapping[str, Any] | None = None
) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``.

    ``expected``: optional trees the file must match, by prefix (``{"params": P,
    "state": S, "opt_state": O}``, any subset), e.g. a freshly ``init``-ed model's;
    their leaves need only ``.shape`` and ``.dtype``. Each is compared with the shapes
    and dtypes the members declare (``check_params_match``) before any array data is
    decompressed, so a file that would inflate to more than the model needs is refused.
    All the arrays together may take at most ``MAX_INFLATION`` times the file's size.

    Raises ``FileNotFoundError`` when ``path`` is not a file and ``CheckpointError`` (a
    ``ValueError``) naming ``path`` when it is not a zip (``.npz``) file or holds more than
    ``MAX_MEMBERS`` entries, a member's data is not all in the file (truncated, or sizes
    that lie) or overlaps another's, it lacks ``__meta__``, has a header over
    ``MAX_META_BYTES`` bytes, ``MAX_META_ITEMS`` values or ``MAX_META_DEPTH`` levels or
    otherwise unparsable, the wrong format marker or an unsupported format version, holds
    object arrays, members outside ``params/``, ``state/``, ``opt_state/`` or members
    whose declared size is not their size, disagrees with its recorded tree structure, or
    with ``expected``. Nothing is unpickled.
    """
    unknown = sorted(set(expected or {}) - set(PREFIXES))
    if unknown:
        raise ValueError(f"load_checkpoint: expected has unknown trees {unknown}; use {PREFIXES}")
    with _open_checkpoint(path) as z:
        header, members = _scan(z)
        _check_sizes(z, header, members, expected or {})
        arrays = {key: _read_array(z, key, member) for key, member in members.items()}
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


def check_finite(trees: Mapping[str, Any], where: str) -> None:
    """``CheckpointError`` (``where: ...``) naming the first floating array of ``trees``
    (``{"params": ..., "state": ...}``, nested dicts of arrays; ``None`` skipped) that holds
    NaN or an infinity: a model with one predicts NaN, and training from it goes nowhere.
    ``load_trained`` and ``--resume`` call it on what ``load_checkpoint`` gave them."""
    for prefix, tree in trees.items():
        leaves: dict[str, np.ndarray[Any, Any]] = {}
        _flatten_tree(tree or {}, prefix, leaves)
        for path, a in sorted(leaves.items()):
            if a.dtype.kind not in "fc" or np.isfinite(a).all():
                continue
            bad = a.size - int(np.count_nonzero(np.isfinite(a)))
            raise CheckpointError(
                f"{where}: {path} holds {bad} NaN or infinite value"
                f"{'s' * (bad > 1)} (of {a.size}); the checkpoint cannot be used"
            )


def check_params_match(model_params_like: Any, loaded: Any, what: str = "params") -> None:
    """Raise ``CheckpointError`` unless ``loaded`` has exactly the structure, shapes and
    dtypes of ``model_params_like`` (e.g. freshly ``init``-ed params of the model in meta).

    The one-line message lists, by path, the keys missing from the file, the keys the
    model does not have, and every shape or dtype mismatch (five of each at most, then
    how many more), e.g. ``params do not match the model: conv1/w: shape (8, 1, 3, 3) in
    the model, (8, 1, 5, 5) in the file``.
    """
    missing: list[str] = []
    extra: list[str] = []
    wrong: list[str] = []
    _compare(model_params_like, loaded, "", missing, extra, wrong)
    problems: list[str] = []
    if missing:
        problems.append("missing in the file: " + _listed(missing))
    if extra:
        problems.append("not in the model: " + _listed(extra))
    if wrong:
        problems.append(_listed(wrong, "; "))
    if problems:
        raise CheckpointError(f"{what} do not match the model: " + "; ".join(problems))


def _listed(items: Sequence[str], sep: str = ", ", shown: int = 5) -> str:
    more = len(items) - shown
    return sep.join(items[:shown]) + (f"{sep}... and {more} more" if more > 0 else "")


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
