"""Hostile checkpoint files, and what each loader pays to refuse them (issue 24).

Usage::

    python benchmarks/checkpoint_probe.py                      # every file, every loader
    python benchmarks/checkpoint_probe.py --files deflate-bomb --loaders load_checkpoint
    python benchmarks/checkpoint_probe.py --as-limit-mb 1536   # as under `ulimit -v`
    python benchmarks/checkpoint_probe.py --keep DIR --json out.json

Builds each hostile file (``HOSTILE``) in a temporary folder (or ``--keep DIR``), then
runs each loader on it in a fresh subprocess and reports, per run: the outcome
(``ok``, ``refused`` with a ``CheckpointError``/``ValueError``, or ``crash`` for any
other exception or exit), the child's peak resident memory (``ru_maxrss`` from
``os.wait4``, the interpreter and fcnn included), the seconds the load took (the
whole process for the command-line tool) and the first line of the message with its
full length in characters. Loaders (``LOADERS``): ``read_checkpoint_header``,
``load_checkpoint`` (no ``expected=``), ``load_trained`` (what serve, export,
visualize and inference_example call) and the ``inference_example.py`` command line.

The builders are plain functions of a folder, so tests build the same files
(``tests/test_io_hostile.py``), smaller where a test must stay quick. Nothing is timed
in the tests; the numbers come from here. Exit code 0 unless a child timed out.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fcnn.io import save_checkpoint  # noqa: E402
from fcnn.model import init  # noqa: E402
from fcnn.models import build_model, describe_model  # noqa: E402

CLASSES = ("vertical", "horizontal")  # the `lines` dataset's, so a loaded file can run

# --- writing zip files by hand ------------------------------------------------------------


@dataclass
class Entry:
    """One zip member as written: ``data`` are the bytes in the file (compressed when
    ``method`` is 8); ``size``/``csize`` what the headers claim (default: the truth)."""

    name: str
    data: bytes
    method: int = zipfile.ZIP_STORED
    size: int | None = None
    csize: int | None = None
    crc: int | None = None
    plain: bytes = field(default=b"", repr=False)  # the uncompressed bytes, for the CRC


def stored(name: str, payload: bytes) -> Entry:
    return Entry(name, payload, plain=payload)


def deflated(name: str, chunks: Sequence[bytes] | Callable[[], Any]) -> Entry:
    """A deflated member from ``chunks`` (an iterable of bytes, streamed)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts, size, crc = [], 0, 0
    for chunk in chunks() if callable(chunks) else chunks:
        parts.append(comp.compress(chunk))
        size += len(chunk)
        crc = zlib.crc32(chunk, crc)
    parts.append(comp.flush())
    return Entry(name, b"".join(parts), zipfile.ZIP_DEFLATED, size=size, crc=crc)


def _local(e: Entry) -> bytes:
    """The local header of ``e`` (version 2.0, no flags, no extra field)."""
    name = e.name.encode()
    crc = zlib.crc32(e.plain) if e.crc is None else e.crc
    size = len(e.plain) if e.size is None else e.size
    csize = len(e.data) if e.csize is None else e.csize
    fields = (20, 0, e.method, 0, 0x21, crc, csize, size, len(name), 0)
    return struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields) + name


def zip_bytes(entries: Sequence[Entry]) -> bytes:
    """A zip of ``entries``, one after the other (no zip64)."""
    out, central = bytearray(), bytearray()
    for e in entries:
        offset = len(out)
        out += _local(e) + e.data
        central += _central(e, offset)
    return _finish(bytes(out), bytes(central), len(entries))


def _central(e: Entry, offset: int) -> bytes:
    """The central-directory record of ``e``, its local header at ``offset``."""
    crc, csize, size = struct.unpack("<3L", _local(e)[14:26])
    name = e.name.encode()
    fields = (20, 20, 0, e.method, 0, 0x21, crc, csize, size, len(name), 0, 0, 0, 0, 0, offset)
    return struct.pack("<4s6H3L5H2L", b"PK\x01\x02", *fields) + name


def _finish(body: bytes, central: bytes, count: int) -> bytes:
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(central), len(body), 0)
    return body + central + end


def npy(arr: np.ndarray[Any, Any]) -> bytes:
    """``arr`` as .npy bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """The .npy header of an array of ``shape`` and ``descr`` (no data)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


# --- the checkpoints the hostile files start from -------------------------------------------


def trained_meta(model: str, input_shape: Sequence[int]) -> dict[str, Any]:
    """The meta train.py writes that load_trained reads (the `lines` dataset's classes)."""
    return {
        "model": describe_model(model, len(CLASSES)),
        "input_shape": list(input_shape),
        "classes": list(CLASSES),
        "dataset": "lines",
        "normalization": {"mean": [0.04], "std": [0.27]},
    }


def members(
    model: str, input_shape: Sequence[int], folder: Path, opt: bool = True
) -> dict[str, bytes]:
    """The members (name -> .npy bytes) of a checkpoint of ``model`` initialised at
    28x28 whose meta says ``input_shape``; with an SGD-momentum optimizer state if ``opt``."""
    net = build_model(model, len(CLASSES))
    params, state, _ = init(net, np.random.default_rng(0), (1, 28, 28))
    velocity = {k: {n: np.zeros_like(a) for n, a in v.items()} for k, v in params.items()}
    opt_state = {"step": np.asarray(0), "velocity": velocity} if opt else None
    path = folder / f".base-{model}.npz"
    meta = trained_meta(model, input_shape)
    save_checkpoint(path, params=params, state=state, opt_state=opt_state, meta=meta)
    with zipfile.ZipFile(path) as z:
        out = {i.filename: z.read(i) for i in z.infolist()}
    path.unlink()
    return out


def with_meta(found: dict[str, bytes], meta_json: bytes) -> dict[str, bytes]:
    """``found`` with its ``__meta__`` replaced by these JSON bytes."""
    return {**found, "__meta__.npy": npy(np.frombuffer(meta_json, np.uint8))}


def meta_json(found: dict[str, bytes]) -> dict[str, Any]:
    """The header (``__meta__``) of ``found`` as a dict."""
    raw = np.lib.format.read_array(io.BytesIO(found["__meta__.npy"]), allow_pickle=False)
    header: dict[str, Any] = json.loads(raw.tobytes())
    return header


def write(path: Path, entries: Sequence[Entry]) -> Path:
    path.write_bytes(zip_bytes(entries))
    return path


def zeros_stream(nbytes: int, chunk: int = 1 << 24) -> Callable[[], Any]:
    """A generator function yielding ``nbytes`` zero bytes in chunks."""

    def gen() -> Any:
        left = nbytes
        block = bytes(chunk)
        while left > 0:
            yield block if left >= chunk else block[:left]
            left -= chunk

    return gen


# --- the hostile files ------------------------------------------------------------------------

HUGE_INPUT = (1, 1000, 1000)  # the default model's dense1/w is then (4000000, 128) float32


def sizes_claim_huge(folder: Path, claim_values: int = 4_000_000 * 128) -> Path:
    """The issue's 85 KB file: ``params/dense1/w`` declares (4000000, 128) float32 and the
    zip's headers claim its 2 GB, none of which is in the file; the meta's input_shape
    (1, 1000, 1000) makes the model need exactly that array."""
    found = members("default", HUGE_INPUT, folder, opt=False)
    rows = claim_values // 128
    head = npy_header((rows, 128))
    entries = []
    for name, data in found.items():
        if name == "params/dense1/w.npy":
            claim = len(head) + 4 * rows * 128
            entries.append(Entry(name, head, size=claim, csize=claim, crc=0))
        else:
            entries.append(stored(name, data))
    return write(folder / "sizes-claim-huge.npz", entries)


def sizes_claim_small(folder: Path, inflated: int = 1 << 30) -> Path:
    """``params/w`` (2 float32) whose deflate stream goes on to 1 GiB of zeros, the
    headers claiming only the 2 values."""
    header = {"format": "fcnn-checkpoint", "format_version": 1, "fcnn_version": "0.2.0"}
    header |= {"trees": {"params": {"w": None}, "state": {}, "opt_state": None}, "meta": {}}
    good = npy(np.zeros(2, np.float32))
    bomb = deflated("params/w.npy", lambda: itertools.chain([good], zeros_stream(inflated)()))
    bomb.size, bomb.crc = len(good), zlib.crc32(good)
    meta = stored("__meta__.npy", npy(np.frombuffer(json.dumps(header).encode(), np.uint8)))
    return write(folder / "sizes-claim-small.npz", [bomb, meta])


def deflate_bomb(folder: Path, nbytes: int = 4_000_000 * 128 * 4) -> Path:
    """Honest headers: ``params/dense1/w`` really holds (N, 128) float32 zeros (2 GB by
    default), deflated about a thousandfold; the meta's input_shape makes the model
    need exactly that array."""
    found = members("default", HUGE_INPUT, folder, opt=False)
    rows = nbytes // (128 * 4)
    head = npy_header((rows, 128))
    entries = [
        deflated(n, lambda: itertools.chain([head], zeros_stream(rows * 128 * 4)()))
        if n == "params/dense1/w.npy"
        else stored(n, d)
        for n, d in found.items()
    ]
    return write(folder / "deflate-bomb.npz", entries)


def deflate_bomb_in_opt_state(folder: Path, nbytes: int = 1 << 31) -> Path:
    """A real 28x28 `small` checkpoint whose optimizer state (which load_trained does not
    compare with the model) holds a deflated 2 GiB of zeros."""
    found = members("small", (1, 28, 28), folder)
    head = npy_header((nbytes // 4,))
    entries = [
        deflated(n, lambda: itertools.chain([head], zeros_stream(nbytes)()))
        if n == "opt_state/velocity/dense1/w.npy"
        else stored(n, d)
        for n, d in found.items()
    ]
    return write(folder / "deflate-bomb-in-opt-state.npz", entries)


def overlapping_members(folder: Path, count: int = 256, payload: int = 4 << 20) -> Path:
    """A real `small` checkpoint plus ``count`` optimizer-state members nested in one
    another: each is a uint8 array whose bytes hold the local headers and data of all
    the members after it, ending in ``payload`` zero bytes. Read member by member, the
    4 MiB file yields ``count * payload`` bytes (1 GiB) without any compression."""
    found = members("small", (1, 28, 28), folder)
    header = meta_json(found)
    header["trees"]["opt_state"] |= {f"o{i}": None for i in range(count)}
    found = with_meta(found, json.dumps(header).encode())
    body, central = bytearray(), bytearray()
    for name, data in found.items():
        central += _central(stored(name, data), len(body))
        body += _local(stored(name, data)) + data
    inner, nested = bytes(payload), []
    for i in reversed(range(count)):  # innermost first: member i holds members i+1, ...
        region = npy_header((len(inner),), "|u1") + inner
        e = Entry(f"opt_state/o{i}.npy", b"", crc=zlib.crc32(region), size=len(region))
        e.csize = e.size
        nested.append((e, len(region) - len(inner)))
        inner = _local(e) + region
    at = len(body)
    body += inner
    for e, head_len in reversed(nested):
        central += _central(e, at)
        at += len(_local(e)) + head_len
    path = folder / "overlapping-members.npz"
    path.write_bytes(_finish(bytes(body), bytes(central), len(found) + count))
    return path


def many_members(folder: Path, count: int = 100_000) -> Path:
    """A real `small` checkpoint plus ``count`` one-value members under ``params/`` that
    its recorded structure does not list."""
    found = members("small", (1, 28, 28), folder)
    path = folder / "many-members.npz"
    one = npy(np.zeros(1, np.float32))
    with zipfile.ZipFile(path, "w") as z:
        for name, data in found.items():
            z.writestr(name, data)
        for i in range(count):
            z.writestr(f"params/x{i}.npy", one)
    return path


def header_of_empty_lists(folder: Path, nbytes: int = 8 * 2**20) -> Path:
    """A real `small` checkpoint whose meta also holds ``"junk": [[],[],...]``, the
    whole header just under ``nbytes`` (2.7 million empty lists for 8 MiB)."""
    found = members("small", (1, 28, 28), folder)
    text = json.dumps(meta_json(found), separators=(",", ":")).encode()
    room = nbytes - len(text) - len(',"junk":[]}') - 1
    lists = b"[]," * (room // 3)
    junk = b',"junk":[' + lists.rstrip(b",") + b"]}"
    entries = [stored(n, d) for n, d in with_meta(found, text[:-1] + junk).items()]
    return write(folder / "header-of-empty-lists.npz", entries)


def header_nested_deep(folder: Path, depth: int = 4 * 2**20) -> Path:
    """A header that is ``depth`` nested lists."""
    found = members("small", (1, 28, 28), folder)
    entries = [stored(n, d) for n, d in with_meta(found, b"[" * depth + b"]" * depth).items()]
    return write(folder / "header-nested-deep.npz", entries)


def truncated_in_half(folder: Path) -> Path:
    """A real `small` checkpoint, its second half cut off."""
    found = members("small", (1, 28, 28), folder)
    data = zip_bytes([stored(n, d) for n, d in found.items()])
    path = folder / "truncated-in-half.npz"
    path.write_bytes(data[: len(data) // 2])
    return path


def truncated_member(folder: Path) -> Path:
    """A real `small` checkpoint, deflated, whose ``params/dense1/w`` stream is cut in
    half (the headers claim the cut length compressed, the full length inflated)."""
    found = members("small", (1, 28, 28), folder)
    entries = []
    for name, data in found.items():
        e = deflated(name, [data])
        if name == "params/dense1/w.npy":
            e.data = e.data[: len(e.data) // 2]
        entries.append(e)
    return write(folder / "truncated-member.npz", entries)


def duplicate_names(folder: Path) -> Path:
    """A real `small` checkpoint with a second ``params/conv1/w.npy`` (zeros of another
    shape) after the first."""
    found = members("small", (1, 28, 28), folder)
    entries = [stored(n, d) for n, d in found.items()]
    entries.append(stored("params/conv1/w.npy", npy(np.zeros((8, 1, 5, 5), np.float32))))
    return write(folder / "duplicate-names.npz", entries)


HOSTILE: dict[str, Callable[[Path], Path]] = {
    "sizes-claim-huge": sizes_claim_huge,
    "sizes-claim-small": sizes_claim_small,
    "deflate-bomb": deflate_bomb,
    "deflate-bomb-in-opt-state": deflate_bomb_in_opt_state,
    "overlapping-members": overlapping_members,
    "many-members": many_members,
    "header-of-empty-lists": header_of_empty_lists,
    "header-nested-deep": header_nested_deep,
    "truncated-in-half": truncated_in_half,
    "truncated-member": truncated_member,
    "duplicate-names": duplicate_names,
}


# --- running the loaders ----------------------------------------------------------------------

_CHILD = """
import json, os, resource, sys, time
kind, path, report = sys.argv[1], sys.argv[2], int(sys.argv[3])
from fcnn.io import load_checkpoint, read_checkpoint_header
from fcnn.models import load_trained
def tool(p):
    sys.path.insert(0, os.getcwd())
    import inference_example
    if inference_example.main(["--checkpoint", p, "--samples", "1"]) != 0:
        raise SystemExit(1)
load = {"read_checkpoint_header": read_checkpoint_header, "load_checkpoint": load_checkpoint,
        "load_trained": load_trained, "inference_example": tool}[kind]
start = time.perf_counter()
try:
    load(path)
    outcome, message = "ok", ""
except SystemExit:
    outcome, message = "refused", ""
except (ValueError, OSError) as err:
    outcome, message = "refused", f"{type(err).__name__}: {err}"
except BaseException as err:
    outcome, message = "crash", f"{type(err).__name__}: {err}"
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
os.write(report, json.dumps([outcome, seconds, peak, message]).encode())
"""

LOADERS = ("read_checkpoint_header", "load_checkpoint", "load_trained", "inference_example")


def _limit(as_limit_mb: int | None) -> Callable[[], None] | None:
    if as_limit_mb is None:
        return None
    cap = as_limit_mb * 2**20

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    return apply


def run_one(loader: str, path: Path, timeout: float, as_limit_mb: int | None) -> dict[str, Any]:
    """Run ``loader`` on ``path`` in a fresh process; outcome, peak MiB, seconds, message
    (its first line) and the message's length in characters."""
    status, report, stderr = _spawn([loader, str(path)], timeout, as_limit_mb)
    row: dict[str, Any] = {"loader": loader, "peak_mib": None, "seconds": timeout}
    if status is None or not report:  # killed: by the timeout, or for memory
        last = stderr.splitlines()[-1:] or [f"exit {status}"]
        outcome = "timeout" if status is None else "crash"
        return {**row, "outcome": outcome, "message": last[0], "chars": len(stderr)}
    outcome, seconds, peak, message = json.loads(report)
    if loader == "inference_example":  # its own error line, or the traceback it would print
        message = (
            stderr if outcome != "crash" else f"Traceback (most recent call last): ... {message}"
        )
    first = message.splitlines()[0] if message else ""
    row |= {"outcome": outcome, "seconds": seconds, "peak_mib": peak}
    return {**row, "message": first, "chars": len(message)}


def _spawn(args: list[str], timeout: float, as_limit_mb: int | None) -> tuple[int | None, str, str]:
    """(exit status or None after a timeout, the child's report, its stderr).

    The child is started by a shell that forks it, so its peak resident memory starts
    from the shell's, not from this process's (a child's ``ru_maxrss`` counts the memory
    of the process it was forked from). It writes its own peak and the load's seconds to
    a file whose descriptor it is given."""
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as report:
        fd = report.fileno()
        shell = ["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-c", _CHILD]
        proc = subprocess.Popen(
            [*shell, *args, str(fd)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=ROOT,
            pass_fds=(fd,),
            preexec_fn=_limit(as_limit_mb),
            start_new_session=True,  # a timeout kills the shell and the child
        )
        status = _wait(proc, timeout)
        report.seek(0)
        err.seek(0)
        return status, report.read().decode(), err.read().decode(errors="replace").strip()


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """``proc``'s exit status; None when it was killed at ``timeout``."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def _short(text: str, width: int = 110) -> str:
    text = text.replace("|", "\\|")
    return text if len(text) <= width else text[: width - 3] + "..."


def table(results: Sequence[dict[str, Any]]) -> str:
    head = "| file | size | loader | outcome | peak MiB | s | message (first line) | chars |"
    rows = [head, "|---|---:|---|---|---:|---:|---|---:|"]
    for r in results:
        peak = "" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        rows.append(
            f"| {r['file']} | {r['size']} | {r['loader']} | {r['outcome']} | {peak} | "
            f"{r['seconds']:.2f} | {_short(r['message'])} | {r['chars']} |"
        )
    return "\n".join(rows)


def _human(n: int) -> str:
    """``n`` bytes as B, KB, MB or GB (powers of 1000)."""
    if n < 1000:
        return f"{n} B"
    exp = min(3, (len(str(n)) - 1) // 3)
    return f"{n / 1000**exp:.1f} {'BKMG'[exp]}B"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", nargs="+", choices=sorted(HOSTILE), default=list(HOSTILE))
    p.add_argument("--loaders", nargs="+", choices=LOADERS, default=list(LOADERS))
    p.add_argument("--keep", metavar="DIR", help="build the files here and keep them")
    p.add_argument("--as-limit-mb", type=int, help="RLIMIT_AS of each child (as ulimit -v)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per child (120)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        results = []
        for name in args.files:
            path = HOSTILE[name](folder)
            size = _human(path.stat().st_size)
            for loader in args.loaders:
                row = run_one(loader, path, args.timeout, args.as_limit_mb)
                results.append({"file": name, "size": size, **row})
                print(table(results[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 1 if any(r["outcome"] == "timeout" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
