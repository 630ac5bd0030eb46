"""The convolution grids' rows as records, and the checks that tests/test_conv.py,
tests/test_conv_groups_dilation.py, tests/test_conv_transpose.py and tests/test_im2col.py
run on them with the same formula (imported as ``from conv_cases import ...``).

A :class:`ConvCase` or :class:`TransposeCase` is one layer call: the shapes, the settings
and a ``cfg(impl)``; ``make`` draws w, b and then x from the generator (in that order, so a
seed gives the same arrays as it always did) and ``run`` runs forward and backward with a
random dy drawn from a fixed seed, never ``ones_like``. A :class:`Window` is one im2col
geometry without filters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fcnn.gradcheck import check_pair
from fcnn.layers.conv import Conv2dCfg, conv2d_bwd, conv2d_fwd
from fcnn.layers.conv_transpose import (
    ConvTranspose2dCfg,
    conv_transpose2d_bwd,
    conv_transpose2d_fwd,
)
from fcnn.ops.im2col import col2im, im2col
from fcnn.ops.shapes import Pad2d, conv_out_size

Arr = NDArray[Any]
Params = dict[str, Arr]
OUTPUTS = ("y", "dx", "dw", "db")  # what ``run`` returns, in order


def _short(value: Any) -> str:
    """1 -> "1", (2, 3) -> "2,3", ((1, 0), (2, 1)) -> "1,0,2,1", "same" -> "same"."""
    if isinstance(value, tuple):
        return ",".join(_short(v) for v in value)
    return str(value)


def _unless(prefix: str, value: Any, default: Any) -> str:
    """The id part of a setting left out where it is the default."""
    return "" if value == default else prefix + _short(value)


def _label(case: Any, *extra: str) -> str:
    """A record's pytest id: NxCxHxW-kKHxKW-sSTRIDE-pPAD, then the non-empty extra parts."""
    base = f"{case.n}x{case.c}x{case.h}x{case.w}-k{case.kh}x{case.kw}"
    parts = [base, "s" + _short(case.stride), "p" + _short(case.pad), *extra]
    return "-".join(part for part in parts if part)


@dataclass(frozen=True)
class _PairCase(ABC):
    """x (N, C, H, W) and F filters of (KH, KW) taps; stride and padding as the cfg takes them."""

    n: int
    c: int
    f: int
    h: int
    w: int
    kh: int
    kw: int
    stride: Any = 1
    pad: Any = 0

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w)

    @property
    @abstractmethod
    def w_shape(self) -> tuple[int, int, int, int]:
        """The filters' shape (each layer lays them out its own way)."""

    @abstractmethod
    def cfg(self, impl: str) -> Any:
        """The layer's cfg for this case with kernel ``impl``."""

    @abstractmethod
    def fwd(self, params: dict[str, Any], x: Arr, cfg: Any) -> tuple[Arr, Any]:
        """The layer's forward."""

    @abstractmethod
    def bwd(self, cache: Any, dy: Arr) -> tuple[Arr, dict[str, Arr]]:
        """The layer's backward."""

    def make(self, rng: np.random.Generator, dtype: Any = np.float64) -> tuple[Params, Arr]:
        """Standard-normal w, b and x, drawn in that order."""
        params = {
            "w": rng.standard_normal(self.w_shape).astype(dtype),
            "b": rng.standard_normal(self.f).astype(dtype),
        }
        return params, rng.standard_normal(self.x_shape).astype(dtype)

    def run(self, params: dict[str, Any], x: Arr, impl: str, dy_seed: int = 7) -> tuple[Arr, ...]:
        """y, dx, dw, db with a random dy drawn from a fixed seed."""
        y, cache = self.fwd(params, x, self.cfg(impl))
        dy = np.random.default_rng(dy_seed).standard_normal(y.shape).astype(y.dtype)
        dx, grads = self.bwd(cache, dy)
        return y, dx, grads["w"], grads["b"]


@dataclass(frozen=True)
class ConvCase(_PairCase):
    """A Conv2d call: w is (F, C / groups, KH, KW)."""

    dil: Any = 1
    groups: int = 1

    def __str__(self) -> str:
        return _label(self, f"f{self.f}", _unless("d", self.dil, 1), _unless("g", self.groups, 1))

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        return (self.f, self.c // self.groups, self.kh, self.kw)

    def cfg(self, impl: str) -> Conv2dCfg:
        return Conv2dCfg(self.stride, self.pad, impl, self.dil, self.groups)

    def fwd(self, params: dict[str, Any], x: Arr, cfg: Any) -> tuple[Arr, Any]:
        return conv2d_fwd(params, x, cfg)

    def bwd(self, cache: Any, dy: Arr) -> tuple[Arr, dict[str, Arr]]:
        return conv2d_bwd(cache, dy)


@dataclass(frozen=True)
class TransposeCase(_PairCase):
    """A ConvTranspose2d call: w is (C, F, KH, KW), the matching convolution's filters."""

    out_pad: Any = 0

    def __str__(self) -> str:
        return _label(self, f"f{self.f}", _unless("op", self.out_pad, 0))

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        return (self.c, self.f, self.kh, self.kw)

    def cfg(self, impl: str) -> ConvTranspose2dCfg:
        return ConvTranspose2dCfg(self.stride, self.pad, self.out_pad, impl)

    def fwd(self, params: dict[str, Any], x: Arr, cfg: Any) -> tuple[Arr, Any]:
        return conv_transpose2d_fwd(params, x, cfg)

    def bwd(self, cache: Any, dy: Arr) -> tuple[Arr, dict[str, Arr]]:
        return conv_transpose2d_bwd(cache, dy)


# --- checks on a case -------------------------------------------------------------------


def assert_gradcheck(case: _PairCase, rng: np.random.Generator, impl: str) -> None:
    """Finite differences for x, w and b to 1e-6."""
    params, x = case.make(rng)
    report = check_pair(case.fwd, case.bwd, params, x, case.cfg(impl), rng=rng)
    assert set(report.errors) == {"x", "w", "b"}
    assert report.ok(1e-6), report


def assert_impls_agree(
    case: _PairCase, rng: np.random.Generator, impls: Sequence[str], dy_seed: int = 7
) -> None:
    """y, dx, dw and db of every impl after the first equal the first's, shapes included."""
    params, x = case.make(rng)
    ref = case.run(params, x, impls[0], dy_seed)
    for impl in impls[1:]:
        got = case.run(params, x, impl, dy_seed)
        for name, a, b in zip(OUTPUTS, got, ref, strict=True):
            assert a.shape == b.shape, f"{impl} {name}"
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=f"{impl} {name}")


def assert_float32_in_float32_out(case: _PairCase, rng: np.random.Generator, impl: str) -> None:
    """float32 in, float32 out everywhere, and within 1e-4 of the same call in float64."""
    params, x = case.make(rng, dtype=np.float32)
    out = case.run(params, x, impl)
    for a in out:
        assert a.dtype == np.float32
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    for a, b in zip(out, case.run(p64, x.astype(np.float64), impl), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def assert_read_only_inputs_survive(
    case: _PairCase, rng: np.random.Generator, impl: str, params: Params, x: Arr
) -> None:
    """Forward and twice backward on read-only x, w, b and dy: none of them changes."""
    originals = {"x": x.copy(), "w": params["w"].copy(), "b": params["b"].copy()}
    for a in (x, params["w"], params["b"]):
        a.setflags(write=False)
    y, cache = case.fwd(params, x, case.cfg(impl))
    dy = rng.standard_normal(y.shape)
    dy.setflags(write=False)
    dy_copy = dy.copy()
    first = case.bwd(cache, dy)
    second = case.bwd(cache, dy)  # backward twice from one cache: nothing was consumed
    np.testing.assert_array_equal(first[0], second[0])
    for key, value in originals.items():
        np.testing.assert_array_equal({"x": x, **params}[key], value)
    np.testing.assert_array_equal(dy, dy_copy)


def assert_matches_torch(
    torch: Any,
    ours: Sequence[Arr],
    params: Params,
    x: Arr,
    forward: Callable[[Any, Any, Any], Any],
    rtol: float,
    atol: float,
) -> None:
    """``ours`` (y, dx, dw, db from ``run``) against PyTorch's ``forward(tx, tw, tb)`` and its
    backward from the same dy (seed 7)."""
    dy = np.random.default_rng(7).standard_normal(ours[0].shape)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(params["w"], requires_grad=True)
    tb = torch.tensor(params["b"], requires_grad=True)
    ty = forward(tx, tw, tb)
    ty.backward(torch.tensor(dy))
    theirs = (ty.detach(), tx.grad, tw.grad, tb.grad)
    for name, a, t in zip(OUTPUTS, ours, theirs, strict=True):
        np.testing.assert_allclose(a, t.numpy(), rtol=rtol, atol=atol, err_msg=name)


# --- im2col geometries ------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """x (N, C, H, W) read by (KH, KW) windows at a stride, with padding and dilation."""

    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    stride: tuple[int, int]
    pad: Pad2d
    dil: tuple[int, int] = (1, 1)

    def __str__(self) -> str:
        return _label(self, _unless("d", self.dil, (1, 1)))

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w)

    @property
    def cols_shape(self) -> tuple[int, int]:
        oh, ow = self.out()
        return (self.c * self.kh * self.kw, oh * ow * self.n)

    def out(self) -> tuple[int, int]:
        """(OH, OW)."""
        return (
            conv_out_size(self.h, self.kh, self.stride[0], *self.pad[0], "H", self.dil[0]),
            conv_out_size(self.w, self.kw, self.stride[1], *self.pad[1], "W", self.dil[1]),
        )

    def im2col(self, x: Arr) -> Arr:
        return im2col(x, self.kh, self.kw, self.stride, self.pad, dilation=self.dil)

    def col2im(self, cols: Arr) -> Arr:
        return col2im(cols, self.x_shape, self.kh, self.kw, self.stride, self.pad, self.dil)


def assert_columns_match_windows(win: Window, x: Arr, cols: Arr) -> None:
    """Each column of ``cols`` is the (dilated) window of the padded ``x`` it names."""
    oh, ow = win.out()
    assert cols.shape == win.cols_shape
    (sh, sw), (dh, dw) = win.stride, win.dil
    xpad = np.pad(x, ((0, 0), (0, 0), win.pad[0], win.pad[1]))
    c6 = cols.reshape(win.c, win.kh, win.kw, oh, ow, win.n)  # columns (oh, ow, n): batch last
    for r in range(oh):
        for s in range(ow):
            rows = slice(r * sh, r * sh + dh * (win.kh - 1) + 1, dh)
            cs = slice(s * sw, s * sw + dw * (win.kw - 1) + 1, dw)
            np.testing.assert_array_equal(
                c6[:, :, :, r, s, :], xpad[:, :, rows, cs].transpose(1, 2, 3, 0)
            )


def assert_col2im_is_the_adjoint(win: Window, x: Arr, cols: Arr) -> None:
    """<im2col(x), cols> == <x, col2im(cols)> to 1e-12, and col2im has the shape of x."""
    lhs = float(np.vdot(win.im2col(x), cols))
    back = win.col2im(cols)
    assert back.shape == x.shape
    np.testing.assert_allclose(lhs, float(np.vdot(x, back)), rtol=1e-12)
