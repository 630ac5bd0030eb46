"""The standard normal distribution's density and CDF, elementwise: what exact GELU needs.

NumPy has no ``erf``, so the CDF ``Phi(x) = P(Z <= x)`` is computed here from two
classical expansions of the upper tail ``Q(t) = 1 - Phi(t)`` at ``t = |x|``::

    phi(t) = exp(-t^2 / 2) / sqrt(2 pi)
    t <  3:  Q(t) = 1/2 - phi(t) * (t + t^3/3 + t^5/(3*5) + t^7/(3*5*7) + ...)    (series)
    t >= 3:  Q(t) = phi(t) / (t + 1/(t + 2/(t + 3/(t + ...))))          (continued fraction)

    Phi(x) = Q(|x|) for x < 0,   1 - Q(|x|) for x >= 0

The series has only positive terms (no cancellation) and converges for every ``t``, fast
where ``t`` is small; the continued fraction converges fast where ``t`` is large, and gives
the tail with a small relative error, where ``1/2 - ...`` would cancel. With
``_SERIES_TERMS`` and ``_FRACTION_DEPTH`` as below, both reach float64 rounding on their
side of the switch: compared with ``math.erfc`` (tests/test_activations.py), the absolute
error of ``Phi`` is below 1e-15 everywhere and the relative error of the lower tail below
1e-12 (what rounding ``t^2`` costs ``exp``). Every step is an elementwise array operation
in the input's library and dtype; on a device both expansions run on every element and
the right one is selected (indexing with a mask would wait for the device to count it).
"""

from __future__ import annotations

import math
from typing import Any

from numpy.typing import NDArray

from .xp import is_numpy, namespace

__all__ = ["normal_cdf", "normal_pdf"]

Array = NDArray[Any]

_SWITCH = 3.0  # series below, continued fraction from here on
_SERIES_TERMS = 30
_FRACTION_DEPTH = 40
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def normal_pdf(x: Array) -> Array:
    """phi(x) = exp(-x^2 / 2) / sqrt(2 pi), elementwise: any shape, x's dtype."""
    xp = namespace(x)
    out: Array = xp.exp(-0.5 * x * x) * _INV_SQRT_2PI
    return out


def _series(t: Array) -> Array:
    """t + t^3/3 + t^5/(3*5) + ... (``_SERIES_TERMS`` terms), t >= 0, by Horner's rule."""
    t2 = t * t
    acc = t2 / (2 * _SERIES_TERMS - 1) + 1  # the innermost bracket
    for k in range(_SERIES_TERMS - 2, 0, -1):
        acc *= t2 / (2 * k + 1)
        acc += 1
    acc *= t
    return acc


def _fraction(t: Array) -> Array:
    """t + 1/(t + 2/(t + 3/(...))), ``_FRACTION_DEPTH`` levels, t >= 3, from the inside out."""
    acc = t.copy()
    for k in range(_FRACTION_DEPTH, 0, -1):
        acc = t + k / acc
    return acc


def normal_cdf(x: Array) -> Array:
    """Phi(x) = P(Z <= x) = (1 + erf(x / sqrt(2))) / 2, elementwise: any shape, x's dtype.

    Phi(-inf) = 0, Phi(inf) = 1, NaN stays NaN. ``x`` is not written.
    """
    xp = namespace(x)
    t = xp.abs(x)
    near = t < _SWITCH  # False for NaN: NaN goes through the fraction and stays NaN
    if not is_numpy(xp):  # a mask's count would be read on the host: both sides everywhere
        pdf = normal_pdf(t)
        series = 0.5 - pdf * _series(xp.minimum(t, _SWITCH))
        tail = pdf / _fraction(xp.maximum(t, _SWITCH))  # maximum keeps NaN
        upper = xp.where(near, series, tail)
        return xp.where(x < 0, upper, 1 - upper)  # type: ignore[no-any-return]
    far = ~near
    upper = xp.empty_like(t)  # Q(t)
    tn, tf = t[near], t[far]
    upper[near] = 0.5 - normal_pdf(tn) * _series(tn)
    upper[far] = normal_pdf(tf) / _fraction(tf)
    cdf: Array = xp.where(x < 0, upper, 1 - upper)
    return cdf
