"""random_shift: a pure, seeded translation of each image by whole pixels."""

from __future__ import annotations

import numpy as np
import pytest

import fcnn
from fcnn.data.augment import random_shift


def _shifted(img: np.ndarray, dy: int, dx: int, fill: float) -> np.ndarray:
    """``img: (C, H, W)`` moved down ``dy`` and right ``dx`` pixels, ``fill`` shifted in."""
    _, h, w = img.shape
    out = np.full_like(img, fill)
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_each_image_is_translated_without_wrapping() -> None:
    # Distinct positive values everywhere, different in every image: each output must be
    # exactly its own input moved by one offset in [-2, 2]^2, with -1 (the fill) in the
    # rows and columns shifted in on whichever sides they enter, and nothing wrapped.
    x = np.arange(1, 50 * 2 * 9 * 8 + 1, dtype=np.float32).reshape(50, 2, 9, 8)
    x.flags.writeable = False
    out = random_shift(x, 2, np.random.default_rng(0), fill=-1.0)
    assert out.shape == x.shape and out.dtype == np.float32
    offsets = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    moves = []
    for src, img in zip(x, out, strict=True):
        matches = [o for o in offsets if np.array_equal(img, _shifted(src, *o, fill=-1.0))]
        assert len(matches) == 1, f"not one whole-pixel shift of its own input: {matches}"
        moves.append(matches[0])
    assert {dy for dy, _ in moves} == {dx for _, dx in moves} == set(range(-2, 3))
    assert len(set(moves)) > 10  # offsets really vary between images


def test_shifted_reference_moves_the_right_way() -> None:
    img = np.arange(1.0, 13.0).reshape(1, 3, 4)
    np.testing.assert_array_equal(
        _shifted(img, 1, -2, fill=0.0)[0],
        [[0, 0, 0, 0], [3, 4, 0, 0], [7, 8, 0, 0]],
    )
    np.testing.assert_array_equal(_shifted(img, 0, 0, fill=0.0), img)


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


# --- CIFAR-style augmentation: random crops of a padded image, horizontal flips (issue 23) --

from fcnn.data.augment import cifar_augment, compose, random_crop, random_flip  # noqa: E402


def _cifar_like(n: int, seed: int = 0) -> np.ndarray:
    """CIFAR-shaped float32 images (N, 3, 32, 32) whose values are all distinct."""
    x = np.random.default_rng(seed).permutation(n * 3 * 32 * 32).astype(np.float32)
    return x.reshape(n, 3, 32, 32) + 1.0


def test_random_crop_is_a_window_of_the_padded_image() -> None:
    x = _cifar_like(40)
    x.flags.writeable = False
    out = random_crop(x, 4, np.random.default_rng(0), fill=-1.0)
    assert out.shape == x.shape and out.dtype == np.float32
    corners = set()
    for src, img in zip(x, out, strict=True):
        padded = np.pad(src, ((0, 0), (4, 4), (4, 4)), constant_values=-1.0)
        found = [
            (i, j)
            for i in range(9)
            for j in range(9)
            if np.array_equal(padded[:, i : i + 32, j : j + 32], img)
        ]
        assert len(found) == 1, found
        corners.add(found[0])
    assert len(corners) > 20  # the window's place varies
    # the same draws as a shift by up to the padding: one formula, two names
    np.testing.assert_array_equal(out, random_shift(x, 4, np.random.default_rng(0), fill=-1.0))


@pytest.mark.parametrize(
    ("shape", "padding", "err", "match"),
    [
        ((3, 32, 32), 4, ValueError, r"random_crop: x must be \(N, C, H, W\)"),
        ((2, 3, 8, 8), 8, ValueError, r"random_crop: padding must be in \[0, 8\), got 8"),
        ((2, 3, 8, 8), -1, ValueError, "random_crop: padding must be in"),
        ((2, 3, 8, 8), 2.0, TypeError, "random_crop: padding must be an int"),
    ],
)
def test_random_crop_bad_input(
    shape: tuple[int, ...], padding: object, err: type, match: str
) -> None:
    with pytest.raises(err, match=match):
        random_crop(np.zeros(shape, np.float32), padding, np.random.default_rng(0))  # type: ignore[arg-type]


def test_random_flip_mirrors_some_images_left_to_right() -> None:
    x = _cifar_like(64)
    x.flags.writeable = False
    out = random_flip(x, np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    flipped = [bool(np.array_equal(o, s[:, :, ::-1])) for o, s in zip(out, x, strict=True)]
    kept = [bool(np.array_equal(o, s)) for o, s in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))  # exactly one of the two
    assert 16 < sum(flipped) < 48  # about half
    np.testing.assert_array_equal(out, random_flip(x, np.random.default_rng(1)))  # seeded
    np.testing.assert_array_equal(random_flip(x, np.random.default_rng(1), p=0.0), x)
    np.testing.assert_array_equal(random_flip(x, np.random.default_rng(1), p=1.0), x[..., ::-1])
    assert random_flip(x.astype(np.float64), np.random.default_rng(1)).dtype == np.float64
    for bad in (1.5, -0.1, True):
        with pytest.raises(ValueError, match="random_flip: p must be a probability"):
            random_flip(x, np.random.default_rng(0), p=bad)
    with pytest.raises(ValueError, match=r"random_flip: x must be \(N, C, H, W\)"):
        random_flip(x[0], np.random.default_rng(0))


def test_cifar_augment_crops_then_flips_with_one_generator() -> None:
    x = _cifar_like(16, seed=3)
    fill = np.array([-1.0, -2.0, -3.0], np.float32)
    out = cifar_augment(4, fill)(x, np.random.default_rng(7))
    g = np.random.default_rng(7)
    want = random_flip(random_crop(x, 4, g, fill), g)
    np.testing.assert_array_equal(out, want)
    assert out.dtype == np.float32 and out.shape == (16, 3, 32, 32)
    seen = []
    both = compose(lambda a, r: seen.append("a") or a + 1, lambda a, r: seen.append("b") or a * 2)
    np.testing.assert_array_equal(both(np.ones((1, 1, 2, 2)), g), np.full((1, 1, 2, 2), 4.0))
    assert seen == ["a", "b"]
    with pytest.raises(TypeError, match="compose: each augment must be a function"):
        compose(3)  # type: ignore[arg-type]


def test_train_py_augments_cifar10_with_crops_of_4_and_flips_by_default() -> None:
    """Issue 23: the cifar10 preset crops (--augment 4) and flips (--flip 0.5); a flag wins."""
    from fcnn.run import resolve_config

    config = resolve_config({"dataset": "cifar10"}, None)
    assert (config.augment, config.flip) == (4, 0.5)
    assert resolve_config({"dataset": "cifar10", "flip": 0.0}, None).flip == 0.0
    assert resolve_config({"dataset": "mnist"}, None).flip == 0.0  # a digit's mirror is none


def test_make_augment_crops_with_the_normalised_black_then_flips() -> None:
    """The border of a crop is a black pixel normalised like the images, by construction,
    and the flip mirrors the cropped image; one generator draws both."""
    from fcnn.data.augment import random_crop, random_flip
    from fcnn.run import RunConfig, make_augment

    rng = np.random.default_rng(5)
    x = rng.uniform(3.0, 4.0, (16, 3, 8, 8)).astype(np.float32)  # no pixel is the border
    mean, std = np.array([0.5, 0.4, 0.3], np.float32), np.array([0.2, 0.25, 0.5], np.float32)
    black = (0 - mean) / std
    augment = make_augment(RunConfig(dataset="cifar10", augment=4, flip=1.0), mean, std)
    assert augment is not None
    out = augment(x, np.random.default_rng(1))
    draws = np.random.default_rng(1)
    want = random_flip(random_crop(x, 4, draws, fill=black), draws, p=1.0)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(out == black[:, None, None], out < 3)  # border: black only
    assert (out < 3).any()  # some border came in
    assert make_augment(RunConfig(augment=0, flip=0.0), mean, std) is None
