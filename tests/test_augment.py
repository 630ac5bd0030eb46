"""random_shift: a pure, seeded translation of each image by whole pixels."""

from __future__ import annotations

import numpy as np
import pytest

import fcnn
from fcnn.data.augment import random_shift


def test_each_image_is_translated_without_wrapping() -> None:
    x = np.zeros((50, 1, 9, 9), np.float32)
    x[:, 0, 4, 4] = 1.0  # one bright pixel in the centre
    x.flags.writeable = False
    out = random_shift(x, 2, np.random.default_rng(0), fill=-1.0)
    assert out.shape == x.shape and out.dtype == np.float32
    moves = set()
    for img in out[:, 0]:
        r, c = np.argwhere(img == 1.0)[0]
        moves.add((int(r) - 4, int(c) - 4))
        assert np.count_nonzero(img == 1.0) == 1
        # pixels that came from outside the frame hold the fill value
        dy, dx = int(r) - 4, int(c) - 4
        if dy > 0:
            assert np.all(img[:dy] == -1.0)
        if dx < 0:
            assert np.all(img[:, dx:] == -1.0)
    assert moves <= {(a, b) for a in range(-2, 3) for b in range(-2, 3)}
    assert len(moves) > 10  # offsets really vary between images


def test_seeded_and_pure() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 3, 6, 7)).astype(np.float64)
    keep = x.copy()
    a = random_shift(x, 1, np.random.default_rng(5), fill=np.array([1.0, 2.0, 3.0]))
    b = random_shift(x, 1, np.random.default_rng(5), fill=np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(x, keep)
    assert a.dtype == np.float64
    np.testing.assert_array_equal(random_shift(x, 0, np.random.default_rng(5)), x)


@pytest.mark.parametrize(
    ("shape", "shift", "fill", "err"),
    [
        ((2, 6, 6), 1, 0.0, ValueError),
        ((2, 1, 6, 6), 6, 0.0, ValueError),
        ((2, 1, 6, 6), -1, 0.0, ValueError),
        ((2, 1, 6, 6), 1.5, 0.0, TypeError),
        ((2, 2, 6, 6), 1, np.zeros(3), ValueError),
    ],
)
def test_bad_input(shape: tuple[int, ...], shift: object, fill: object, err: type) -> None:
    with pytest.raises(err, match="random_shift"):
        random_shift(np.zeros(shape), shift, np.random.default_rng(0), fill=fill)  # type: ignore[arg-type]


def test_train_epoch_applies_the_augmentation() -> None:
    rng = np.random.default_rng(0)
    model = fcnn.sequential(fcnn.Flatten(), fcnn.Dense(2))
    params, state, _ = fcnn.init(model, rng, (1, 4, 4))
    opt = fcnn.sgd(0.1)
    ts = fcnn.TrainState(params, state, opt.init(params))
    seen: list[np.ndarray] = []

    def augment(xb: np.ndarray, g: np.random.Generator) -> np.ndarray:
        seen.append(xb)
        return xb * 0.0

    x = rng.standard_normal((10, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 2, 10)
    ts2, _ = fcnn.train_epoch(fcnn.make_step(model, opt), ts, x, y, 4, rng, augment=augment)
    assert [len(b) for b in seen] == [4, 4, 2]
    # zero inputs: only the bias can have moved
    np.testing.assert_array_equal(ts2.params["dense1"]["w"], params["dense1"]["w"])
