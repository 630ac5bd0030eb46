"""Shape arithmetic shared by convolution and pooling: the only place these formulas live.

Output size along one axis, for input size ``n``, kernel ``k``, stride ``s`` and
padding ``lo`` before / ``hi`` after::

    out = (n + lo + hi - k) // s + 1          (requires n + lo + hi >= k)

When ``s`` does not divide ``n + lo + hi - k``, the last rows of the padded
input are touched by no window (they get zero gradient).
"""

from __future__ import annotations

import operator

__all__ = [
    "Pad2d",
    "conv_out_size",
    "inside_input",
    "normalize_padding",
    "out_hw",
    "pair",
    "positive_pair",
]

Pad2d = tuple[tuple[int, int], tuple[int, int]]


def _as_int(v: object, name: str) -> int:
    if isinstance(v, bool):
        raise TypeError(f"{name} must be an int, got {v!r}")
    try:
        return operator.index(v)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}") from None


def pair(v: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(2, 1) -> (2, 1)``. Raises naming ``name`` on anything else."""
    if isinstance(v, tuple | list):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        return (_as_int(v[0], name), _as_int(v[1], name))
    i = _as_int(v, name)
    return (i, i)


def positive_pair(v: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """``pair`` that also requires both entries to be >= 1 (strides, windows, kernels)."""
    p = pair(v, name)
    if p[0] < 1 or p[1] < 1:
        raise ValueError(f"{name} must be >= 1, got {v!r}")
    return p


def normalize_padding(v: object, name: str = "padding") -> Pad2d:
    """Canonical padding ``((top, bottom), (left, right))``.

    Accepts an int (all sides), a pair ``(ph, pw)`` (symmetric per axis) or
    ``((top, bottom), (left, right))``. Negative values raise.
    """
    if isinstance(v, tuple | list) and len(v) == 2 and all(isinstance(e, tuple | list) for e in v):
        hv, wv = v
        out = (pair(hv, name), pair(wv, name))
    elif isinstance(v, tuple | list) and any(isinstance(e, tuple | list) for e in v):
        raise ValueError(
            f"{name} must be an int, (ph, pw) or ((top, bottom), (left, right)), got {v!r}"
        )
    else:
        ph, pw = pair(v, name)  # type: ignore[arg-type]
        out = ((ph, ph), (pw, pw))
    if min(out[0] + out[1]) < 0:
        raise ValueError(f"{name} must be >= 0, got {v!r}")
    return out


def conv_out_size(n: int, k: int, stride: int, lo: int, hi: int, axis: str = "H") -> int:
    """Windows along one axis: ``(n + lo + hi - k) // stride + 1``.

    Raises ``ValueError`` with the numbers when the kernel is larger than the
    padded input (no window fits).
    """
    padded = n + lo + hi
    if padded < k:
        raise ValueError(
            f"kernel {axis}={k} is larger than the padded input {axis}={padded} "
            f"(input {n} + padding {lo}+{hi})"
        )
    return (padded - k) // stride + 1


def out_hw(
    h: int, w: int, kh: int, kw: int, stride: tuple[int, int], padding: Pad2d
) -> tuple[int, int]:
    """``(OH, OW)`` of (KH, KW) windows over an (H, W) map: ``conv_out_size`` per axis."""
    (top, bottom), (left, right) = padding
    return (
        conv_out_size(h, kh, stride[0], top, bottom, "H"),
        conv_out_size(w, kw, stride[1], left, right, "W"),
    )


def inside_input(offset: int, stride: int, lo: int, n: int, out: int) -> tuple[slice, slice]:
    """The windows at kernel ``offset`` that read the input itself, not its padding.

    Along one axis, window ``o`` (``0 <= o < out``) reads input row
    ``offset + stride * o - lo``. Returns ``(windows, rows)``: the slice of ``o`` for
    which that row is in ``[0, n)``, and the slice of those rows (step ``stride``).
    Both are empty when every window at this offset reads padding.
    """
    first = max(0, -((offset - lo) // stride))  # ceil((lo - offset) / stride)
    last = min(out, (n - 1 + lo - offset) // stride + 1)
    if last <= first:
        return slice(0, 0), slice(0, 0)
    start = offset + stride * first - lo
    return slice(first, last), slice(start, start + stride * (last - first), stride)
