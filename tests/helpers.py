"""Helpers shared by several test modules (imported as ``from helpers import ...``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

import fcnn
from fcnn.data.mnist import MNIST_FILES
from fcnn.layers.base import Layer
from fcnn.models import build_model

Arr = np.ndarray[Any, Any]

# The real MNIST files kept next to the repository; tests that read them skip without them.
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
HAVE_SHARED_MNIST = all((SHARED_MNIST / f"{n}.gz").is_file() for n in MNIST_FILES)
needs_shared_mnist = pytest.mark.skipif(not HAVE_SHARED_MNIST, reason=f"{SHARED_MNIST} not present")


def read_only_view(a: Arr) -> Arr:
    """A non-contiguous, read-only view holding the values of ``a``."""
    wide = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), dtype=a.dtype)
    wide[..., ::2] = a
    view = wide[..., ::2]
    view.flags.writeable = False
    return view


def same_tree(a: Any, b: Any) -> bool:
    """Two trees with the same "/"-paths and bit-identical leaves."""
    la, lb = fcnn.flatten_dict(a), fcnn.flatten_dict(b)
    return la.keys() == lb.keys() and all(np.array_equal(la[k], lb[k]) for k in la)


def without_timing(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """train.py's per-epoch records without the wall-clock fields (which never repeat)."""
    drop = {"train_seconds", "samples_per_second"}
    return [{k: v for k, v in row.items() if k not in drop} for row in history]


class DigitsRun(NamedTuple):
    """A model briefly trained by :func:`train_on_digits`, and the statistics it was fed with."""

    model: Layer
    params: Any
    state: Any
    mean: Arr
    std: Arr


def train_on_digits(
    model_name: str,
    n: int,
    *,
    epochs: int,
    lr: float,
    seed: int,
    stats: tuple[Arr, Arr] | None = None,
) -> DigitsRun:
    """The registry's ``model_name`` after ``epochs`` Adam epochs on the first ``n`` embedded
    training digits, batches of 32.

    One generator seeded ``seed`` draws the initial weights, then every epoch's shuffle.
    The images are normalised with ``stats`` (mean, std), by default their own
    ``channel_stats``. Used where a test needs a model whose answers differ by input.
    """
    ds = fcnn.data.load_digits_sample()
    x, y = ds.x_train[:n], ds.y_train[:n]
    mean, std = fcnn.data.channel_stats(x) if stats is None else stats
    model = build_model(model_name, len(ds.classes))
    rng = np.random.default_rng(seed)
    params, state, _ = fcnn.init(model, rng, ds.input_shape)
    opt = fcnn.adam(lr)
    ts = fcnn.TrainState(params, state, opt.init(params))
    step = fcnn.make_step(model, opt)
    xn = fcnn.data.normalize(x, mean, std)
    for _ in range(epochs):
        ts, _loss = fcnn.train_epoch(step, ts, xn, y, 32, rng)
    return DigitsRun(model, ts.params, ts.state, mean, std)


def interrupt_at_epoch(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Make the n-th call of fcnn.train_epoch raise KeyboardInterrupt (as Ctrl-C would)."""
    real = fcnn.train_epoch
    calls: list[int] = []

    def train_epoch(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fcnn, "train_epoch", train_epoch)


def fake_cifar10(root: Path, monkeypatch: pytest.MonkeyPatch, records: int = 8) -> None:
    """Write a small CIFAR-10 binary folder under ``root`` and point the loader at it.

    The real batch files hold 10,000 records each; the loader's ``_records_per_batch``
    test hook makes ``load_dataset("cifar10", root)`` read ``records`` per file instead.
    """
    import fcnn.data.registry as registry
    from fcnn.data.cifar10 import TEST_BATCH, TRAIN_BATCHES, load_cifar10

    rng = np.random.default_rng(3)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir()
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        images = rng.integers(0, 256, size=(records, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=records, dtype=np.uint8)
        data = b"".join(bytes([int(y)]) + x.tobytes() for x, y in zip(images, labels, strict=True))
        (folder / name).write_bytes(data)
    monkeypatch.setattr(registry, "load_cifar10", partial(load_cifar10, _records_per_batch=records))


# --- local HTTP for download tests: 127.0.0.1 only, nothing else is contacted ----------------


@contextmanager
def serving(srv: ThreadingHTTPServer) -> Iterator[str]:
    """Run ``srv`` (bound to 127.0.0.1) in a daemon thread; yield its base URL.

    Request threads are daemons too, so a handler a test left waiting cannot hold up
    the exit; the server is shut down and closed when the block ends.
    """
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


class _QuietFileHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serving_folder(folder: Path) -> Iterator[str]:
    """A local http.server serving the files under ``folder``; yields its base URL."""
    handler = partial(_QuietFileHandler, directory=str(folder))
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as url:
        yield url


def closed_port_url(path: str) -> str:
    """A URL on 127.0.0.1 whose port nothing listens on (connection refused, at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path.lstrip('/')}"


def clear_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset the proxy variables, so requests to 127.0.0.1 go straight to the local server."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def run_without(module: str, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python ARGV`` from the repository root with ``module`` made unimportable (as when
    its extra is not installed), through a ``sitecustomize`` in ``tmp_path``."""
    (tmp_path / "sitecustomize.py").write_text(f"import sys\nsys.modules[{module!r}] = None\n")
    return subprocess.run(
        [sys.executable, *argv],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_in_session(
    cmd: list[str], timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in a session of its own; at ``timeout``, or if the test stops, kill the
    whole session (an ``mpiexec``, its proxies and every rank, not only the first process)."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
