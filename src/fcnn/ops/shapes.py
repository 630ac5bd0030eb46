"""Shape arithmetic shared by convolution and pooling: the only place these formulas live.

Output size along one axis, for input size ``n``, kernel ``k``, stride ``s``,
dilation ``d`` and padding ``lo`` before / ``hi`` after::

    span = d * (k - 1) + 1                    (the dilated kernel's extent; k when d == 1)
    out = (n + lo + hi - span) // s + 1       (requires n + lo + hi >= span)

When ``s`` does not divide ``n + lo + hi - span``, the last rows of the padded
input are touched by no window (they get zero gradient).

A transposed convolution maps ``n`` back to the ``out`` of the convolution it is
the gradient of; ``output_padding`` (``0 <= op < s``) picks one of the ``s`` sizes
that all convolve to ``n``::

    out_t = (n - 1) * s - lo - hi + span + op

``padding="same"`` (stride 1, odd ``k``) pads ``d * (k - 1) // 2`` on both sides,
so that ``out == n``.
"""

from __future__ import annotations

import operator

__all__ = [
    "Pad2d",
    "conv_out_size",
    "conv_transpose_out_size",
    "dilated_span",
    "inside_input",
    "normalize_padding",
    "out_hw",
    "pair",
    "positive_pair",
    "same_padding",
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


def dilated_span(k: int, dilation: int) -> int:
    """Rows a kernel of ``k`` taps spaced ``dilation`` apart covers: ``dilation * (k - 1) + 1``."""
    return dilation * (k - 1) + 1


def conv_out_size(
    n: int, k: int, stride: int, lo: int, hi: int, axis: str = "H", dilation: int = 1
) -> int:
    """Windows along one axis: ``(n + lo + hi - span) // stride + 1``, ``span =
    dilated_span(k, dilation)`` (``k`` without dilation).

    Raises ``ValueError`` with the numbers when the (dilated) kernel is larger than
    the padded input (no window fits).
    """
    padded = n + lo + hi
    span = dilated_span(k, dilation)
    if padded < span:
        kernel = f"kernel {axis}={k}"
        if dilation != 1:
            kernel = f"dilated kernel {axis}={span} ({k} taps, dilation {dilation})"
        raise ValueError(
            f"{kernel} is larger than the padded input {axis}={padded} "
            f"(input {n} + padding {lo}+{hi})"
        )
    return (padded - span) // stride + 1


def out_hw(
    h: int,
    w: int,
    kh: int,
    kw: int,
    stride: tuple[int, int],
    padding: Pad2d,
    dilation: tuple[int, int] = (1, 1),
) -> tuple[int, int]:
    """``(OH, OW)`` of (KH, KW) windows over an (H, W) map: ``conv_out_size`` per axis."""
    (top, bottom), (left, right) = padding
    return (
        conv_out_size(h, kh, stride[0], top, bottom, "H", dilation[0]),
        conv_out_size(w, kw, stride[1], left, right, "W", dilation[1]),
    )


def conv_transpose_out_size(
    n: int, k: int, stride: int, lo: int, hi: int, output_padding: int = 0, axis: str = "H"
) -> int:
    """A transposed convolution's output along one axis: ``(n - 1) * stride - lo - hi + k +
    output_padding``, the input size of the convolution it is the gradient of.

    Raises ``ValueError`` with the numbers when that is less than 1.
    """
    out = (n - 1) * stride - lo - hi + k + output_padding
    if out < 1:
        raise ValueError(
            f"output {axis} = ({n} - 1) * {stride} - {lo} - {hi} + {k} + {output_padding} = "
            f"{out} is less than 1 (the padding crops more than the kernel adds)"
        )
    return out


def same_padding(kh: int, kw: int, dilation: tuple[int, int] = (1, 1)) -> Pad2d:
    """``padding="same"`` at stride 1: ``((p, p), (q, q))`` with ``p = dilation_h * (KH - 1) // 2``,
    so the output keeps the input's size. Raises ``ValueError`` for an even kernel size
    (the two sides would differ)."""
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"padding='same' needs an odd kernel size, got ({kh}, {kw})")
    p, q = dilation[0] * (kh - 1) // 2, dilation[1] * (kw - 1) // 2
    return ((p, p), (q, q))


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
