"""Hostile clients against ``python -m fcnn.serve``, with legitimate clients beside them:
how many legitimate requests are served, how fast, and what the server's memory does.

Run by hand (each scenario is bounded in time; ``pytest -m slow tests/test_serve_guards.py``
runs four of the floods through ``run``)::

    python benchmarks/serve_probe.py slow-body --attackers 100 --seconds 60
    python benchmarks/serve_probe.py idle --attackers 300 --seconds 30
    python benchmarks/serve_probe.py json-flood --attackers 40 --seconds 30 --rounds 3
    python benchmarks/serve_probe.py png-flood --attackers 8 --seconds 30
    python benchmarks/serve_probe.py none --seconds 20          # legitimate clients alone
    python benchmarks/serve_probe.py requests                   # one of each hostile request

Scenarios (each attacker reconnects as soon as the server closes its connection):

- ``slow-body``: a ``POST /predict/array`` head declaring 100 kB, then one byte every 5 s;
- ``idle``: connect and send nothing;
- ``json-flood``: an 8 MB JSON body of 2M ``[0]`` to ``/predict/array``, as fast as answered;
- ``png-flood``: a 10 MB PNG of 870k empty chunks to ``/predict``, as fast as answered;
- ``image-flood``: a 4000 × 4000 PNG of a bar (16 megapixels, the default ``max_pixels``)
  to ``/predict``, as fast as answered: the most memory a legitimate request may take;
- ``requests``: no flood; each hostile request of ``hostile_requests`` once, on a fresh
  connection, with what came back (the status lines, whether sending failed) and the
  seconds it took (``--scale 1e30`` makes the model's logits overflow: its answers).

Legitimate clients (``--legit``, 4 by default) each send one request at a time on a
fresh connection, alternating a drawn digit as a PNG to ``/predict`` and as a 1-image
JSON array to ``/predict/array``, and count a request served when the answer is a 200.

The server runs in a child process on a free loopback port (a small model with random
weights unless ``--checkpoint`` is given); ``--server-pythonpath DIR`` runs the ``fcnn``
found in ``DIR`` instead (to measure an older version); ``--server-arg=--flag=value``
passes flags to it. Reported: legitimate requests attempted and served, their latency
(median and 95th percentile), what else they got (status codes, resets, timeouts), what
the attackers got, the server's peak RSS (VmHWM) and its RSS before and after each
round; ``--json FILE`` writes the same as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import multiprocessing
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SCENARIOS = ("slow-body", "idle", "json-flood", "png-flood", "image-flood", "none", "requests")
HOST = "127.0.0.1"


# --- the server ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _small_checkpoint(folder: Path, scale: float = 1.0) -> Path:
    import fcnn
    from fcnn.io import save_checkpoint
    from fcnn.models import build_model, describe_model

    params, state, _ = fcnn.init(build_model("small", 10), np.random.default_rng(0), (1, 28, 28))
    params = fcnn.tree_map(lambda p: p * np.float32(scale), params)
    meta = {
        "model": describe_model("small", 10),
        "input_shape": [1, 28, 28],
        "classes": [str(i) for i in range(10)],
        "normalization": {"mean": [0.13], "std": [0.31]},
    }
    path = folder / "probe.npz"
    save_checkpoint(path, params=params, state=state, meta=meta)
    return path


@contextlib.contextmanager
def running_server(
    checkpoint: Path, extra: list[str], pythonpath: str | None
) -> Iterator[tuple[int, int]]:
    """``(port, pid)`` of ``python -m fcnn.serve`` in a child process; always stopped."""
    port = _free_port()
    argv = [sys.executable, "-m", "fcnn.serve", "--checkpoint", str(checkpoint)]
    argv += ["--port", str(port), "--log-level", "critical", *extra]
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    # python -m puts the working directory first on sys.path: run from the chosen tree.
    cwd = pythonpath or None
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()  # one still running would never close its stderr
                _, err = proc.communicate(timeout=10)
                raise RuntimeError(f"the server did not start: {err!r}")
            time.sleep(0.1)
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of process ``pid`` in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


# --- requests ------------------------------------------------------------------------------


def request_bytes(path: str, body: bytes, ctype: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: probe\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def multipart(png: bytes) -> tuple[bytes, str]:
    b = "probeboundary"
    body = (
        (
            f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{b}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={b}"


def digit() -> np.ndarray:
    """A drawn '1': a bar, light on dark, (28, 28) in [0, 1]."""
    x = np.zeros((28, 28))
    x[5:23, 13:16] = 1.0
    return x


def png_bytes(gray: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(255 * (1 - gray)).astype(np.uint8), "L").save(buf, "PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def empty_chunk_png(n: int = 870_000) -> bytes:
    """A 56×56 PNG with ``n`` empty private chunks between its header and its data."""
    png = png_bytes(np.pad(digit(), 14))
    return png[:33] + _chunk(b"prVt", b"") * n + png[33:]


def big_png() -> bytes:
    """A 4000 × 4000 PNG of a dark bar on white (16 megapixels, a few kB)."""
    x = np.zeros((4000, 4000))
    x[800:3200, 1900:2100] = 1.0
    return png_bytes(x)


async def exchange(raw: bytes, port: int, timeout: float) -> tuple[str, float]:
    """Send one request on a fresh connection: (outcome, seconds); the outcome is the
    status code, or 'reset', 'closed' (no answer), 'timeout', 'refused'."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(HOST, port)
            try:
                writer.write(raw)
                await writer.drain()
                line = await reader.readline()
                if not line:
                    return "closed", time.monotonic() - start
                await reader.read()  # Connection: close: the rest until EOF
                return line.split()[1].decode(), time.monotonic() - start
            finally:
                writer.close()
    except TimeoutError:
        return "timeout", time.monotonic() - start
    except ConnectionRefusedError:
        return "refused", time.monotonic() - start
    except (ConnectionResetError, BrokenPipeError):
        return "reset", time.monotonic() - start
    except OSError as err:
        return type(err).__name__, time.monotonic() - start


# --- clients -------------------------------------------------------------------------------


@dataclass
class Tally:
    legit: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    attack: Counter[str] = field(default_factory=Counter)


async def legit_client(port: int, until: float, tally: Tally, timeout: float) -> None:
    gray = digit()
    body, ctype = multipart(png_bytes(gray))
    requests = [
        request_bytes("/predict", body, ctype),
        request_bytes("/predict/array", json.dumps([[gray.tolist()]]).encode(), "application/json"),
    ]
    i = 0
    while time.monotonic() < until:
        outcome, took = await exchange(requests[i % 2], port, timeout)
        tally.legit[outcome] += 1
        if outcome == "200":
            tally.latencies.append(took)
        else:
            await asyncio.sleep(0.2)  # no tight loop on refusals
        i += 1


async def hold_open(port: int, until: float, tally: Tally, head: bytes, trickle: float) -> None:
    """Connect, send ``head``, then one byte every ``trickle`` s (0: nothing) until closed;
    then reconnect, until ``until``."""
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError as err:
            tally.attack[f"connect {type(err).__name__}"] += 1
            await asyncio.sleep(0.1)
            continue
        try:
            writer.write(head)
            while time.monotonic() < until:
                wait = trickle if trickle else until - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(wait, 0.01)):
                        got = await reader.read(4096)
                        tally.attack["closed by server" if not got else got[:12].decode()] += 1
                        break
                if trickle:
                    writer.write(b"0")
        except OSError as err:
            tally.attack[type(err).__name__] += 1
        finally:
            writer.close()


async def flood(port: int, until: float, tally: Tally, raw: bytes) -> None:
    while time.monotonic() < until:
        outcome, _ = await exchange(raw, port, 60)
        tally.attack[outcome] += 1
        if outcome not in ("200", "400", "413", "415", "422"):
            await asyncio.sleep(0.05)


def attacker(scenario: str, port: int) -> Callable[[float, Tally], Awaitable[None]]:
    """One attacker of ``scenario``: an async function of (until, tally)."""
    if scenario == "slow-body":
        head = b"POST /predict/array HTTP/1.1\r\nHost: probe\r\nContent-Type: application/json\r\n"
        head += b"Content-Length: 100000\r\n\r\n["
        return lambda until, t: hold_open(port, until, t, head, 5.0)
    if scenario == "idle":
        return lambda until, t: hold_open(port, until, t, b"", 0.0)
    if scenario == "json-flood":
        raw = request_bytes(
            "/predict/array", b"[" + b"[0]," * 1_999_999 + b"[0]]", "application/json"
        )
        return lambda until, t: flood(port, until, t, raw)
    if scenario in ("png-flood", "image-flood"):
        body, ctype = multipart(empty_chunk_png() if scenario == "png-flood" else big_png())
        raw = request_bytes("/predict", body, ctype)
        return lambda until, t: flood(port, until, t, raw)
    raise ValueError(scenario)


# --- single hostile requests -----------------------------------------------------------------


def truncated_jpeg() -> bytes:
    """A 4000 × 4000 JPEG of noise cut after 2 kB and closed with an end-of-image marker."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (4000, 4000), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=50)
    return buf.getvalue()[:2000] + b"\xff\xd9"


def hostile_requests() -> list[tuple[str, bytes]]:
    j = "application/json"
    smuggle = (
        b"POST /predict/array HTTP/1.1\r\nHost: probe\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        b"GET /health HTTP/1.1\r\nHost: probe\r\n\r\n"
    )
    nested = [b"[" * d + b"0.5" + b"]" * d for d in (33, 64)]
    return [
        (
            "a drawn digit, JSON",
            request_bytes("/predict/array", json.dumps([[digit().tolist()]]).encode(), j),
        ),
        (
            "JSON: 2M [0], 8 MB",
            request_bytes("/predict/array", b"[" + b"[0]," * 1_999_999 + b"[0]]", j),
        ),
        ("JSON nested 33 levels", request_bytes("/predict/array", nested[0], j)),
        ("JSON nested 64 levels", request_bytes("/predict/array", nested[1], j)),
        (
            "PNG of 870k empty chunks, 10 MB",
            request_bytes("/predict", *multipart(empty_chunk_png())),
        ),
        ("JPEG 4000x4000 cut at 2 kB", request_bytes("/predict", *multipart(truncated_jpeg()))),
        ("Content-Length + chunked, then GET /health", smuggle),
        (
            "20 MB to /predict/array, read after sending",
            request_bytes("/predict/array", b"[" + b"0," * 10_000_000 + b"0]", j),
        ),
    ]


async def one_request(port: int, raw: bytes) -> dict[str, Any]:
    """Send ``raw`` whole, then read until the server closes or is quiet for 5 s."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(HOST, port)
    sent, got = "sent", b""
    try:
        writer.write(raw)
        await writer.drain()
    except OSError as err:
        sent = f"sending failed: {type(err).__name__}"
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 5):
            got += chunk
    except (OSError, TimeoutError) as err:
        got += f" [{type(err).__name__}]".encode()
    writer.close()
    answers = [m.decode() for m in re.findall(rb"HTTP/1.1 (\d{3})", got)]
    detail = re.search(rb'"detail":\s*"([^"]{0,80})', got)
    return {
        "sent": sent,
        "answers": answers,
        "detail": detail.group(1).decode() if detail else None,
        "seconds": round(time.monotonic() - start, 2),
    }


async def single_requests(port: int) -> dict[str, Any]:
    return {name: await one_request(port, raw) for name, raw in hostile_requests()}


# --- a run ---------------------------------------------------------------------------------


async def _attack_all(scenario: str, port: int, n: int, until: float) -> dict[str, int]:
    tally = Tally()
    attack = attacker(scenario, port)
    tasks = [asyncio.ensure_future(attack(until, tally)) for _ in range(n)]
    await asyncio.wait(tasks, timeout=until - time.monotonic() + 1)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return dict(tally.attack.most_common(8))


def _attack_process(scenario: str, port: int, n: int, until: float, out: Any) -> None:
    """The attackers, in a process of their own (as they would be on another machine)."""
    out.send(asyncio.run(_attack_all(scenario, port, n, until)))


async def _legit_all(args: argparse.Namespace, port: int, pid: int, until: float) -> Tally:
    tally = Tally()
    peak = [0.0]

    async def watch() -> None:
        while time.monotonic() < until:
            peak[0] = max(peak[0], memory_mib(pid)[0])
            await asyncio.sleep(0.2)

    tasks = [asyncio.ensure_future(watch())]
    tasks += [
        asyncio.ensure_future(legit_client(port, until, tally, args.timeout))
        for _ in range(args.legit)
    ]
    await asyncio.wait(tasks, timeout=until - time.monotonic() + 1)
    for t in tasks:  # requests still in flight at the end are not counted
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    tally.attack["rss peak sampled (MiB)"] = round(peak[0])
    return tally


def one_round(args: argparse.Namespace, port: int, pid: int) -> dict[str, Any]:
    """Attackers (in a child process) and legitimate clients for ``args.seconds``."""
    until = time.monotonic() + 0.5 + args.seconds
    receiver, sender = multiprocessing.Pipe(duplex=False)
    child = None
    if args.scenario != "none":
        child = multiprocessing.Process(
            target=_attack_process, args=(args.scenario, port, args.attackers, until, sender)
        )
        child.start()
    sender.close()  # the child's copy alone: its end, or its death, ends receiver.poll
    time.sleep(0.5)  # the attackers first
    tally = asyncio.run(_legit_all(args, port, pid, until))
    attack = {}
    if child:
        with contextlib.suppress(EOFError):  # an attacker process that died sends nothing
            if receiver.poll(until - time.monotonic() + 30):
                attack = receiver.recv()
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
            child.join()
    receiver.close()
    lat = sorted(tally.latencies)
    return {
        "seconds": args.seconds,
        "legit_attempted": sum(tally.legit.values()),
        "legit_served": tally.legit["200"],
        "legit_outcomes": dict(tally.legit),
        "legit_p50_s": round(lat[len(lat) // 2], 3) if lat else None,
        "legit_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 3) if lat else None,
        "attack_outcomes": attack,
        "rss_peak_sampled_mib": tally.attack["rss peak sampled (MiB)"],
    }


def run(args: argparse.Namespace, checkpoint: Path) -> dict[str, Any]:
    with running_server(checkpoint, args.server_arg, args.server_pythonpath) as (port, pid):
        time.sleep(1)
        if args.scenario == "requests":
            return {
                "requests": asyncio.run(single_requests(port)),
                "vm_hwm_mib": round(memory_mib(pid)[1]),
            }
        rounds = [{"rss_idle_before_mib": round(memory_mib(pid)[0])}]
        for _ in range(args.rounds):
            result = one_round(args, port, pid)
            time.sleep(args.idle_seconds)  # let the last connections end
            result["rss_idle_after_mib"] = round(memory_mib(pid)[0])
            rounds.append(result)
        return {"rounds": rounds, "vm_hwm_mib": round(memory_mib(pid)[1])}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", choices=SCENARIOS)
    p.add_argument("--attackers", type=int, default=100)
    p.add_argument("--legit", type=int, default=4, help="legitimate clients (default 4)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of a round")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--idle-seconds", type=float, default=3.0, help="pause after a round")
    p.add_argument("--timeout", type=float, default=30.0, help="a legitimate request's limit")
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--scale", type=float, default=1.0, help="multiply the probe model's weights")
    p.add_argument("--server-pythonpath")
    p.add_argument("--server-arg", action="append", default=[])
    p.add_argument("--json", type=Path, help="also write the result here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or _small_checkpoint(Path(tmp), args.scale)
        result = {
            "scenario": args.scenario,
            "attackers": args.attackers,
            "legit": args.legit,
            "server_args": args.server_arg,
            "server_pythonpath": args.server_pythonpath,
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "load_average": [round(v, 2) for v in os.getloadavg()],
            **run(args, checkpoint),
        }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
