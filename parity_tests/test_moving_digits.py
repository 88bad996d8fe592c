"""The moving-digits (Moving MNIST) data set: shapes, determinism, the motion rule, the digit sources, the
canonical test-set reader, every DataError, and batches that do not depend on drawing order.

The tests that use scikit-learn's digits skip when scikit-learn is missing; the rest need NumPy only.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from implementations import moving_digits as md

#: SHA-256 of ``make_sequences(PIN_N, PIN_SEED).tobytes()`` with scikit-learn's digits (computed once, pinned).
PIN_N = 4
PIN_SEED = 2015
PIN_SHA256 = "a70578eb2903b9f39c2839d121d108fc2cfd96b14dca5d2750d3c92b20d34b0c"
SKLEARN_SOURCE_SIZE = 1797
LONG_RUN = 200
LIMIT = md.FRAME_SIZE - md.DIGIT_SIZE


def needs_sklearn() -> None:
    pytest.importorskip("sklearn", reason="scikit-learn provides the built-in digits (load_digits)")


def square_digits(count: int = 3, size: int = md.DIGIT_SIZE) -> np.ndarray:
    """Digits that are solid squares of distinct grey levels (1/count .. 1): their pixels say which digit is where."""
    levels = np.arange(1, count + 1, dtype=np.float32) / np.float32(count)
    return np.broadcast_to(levels[:, None, None], (count, size, size)).copy()


def canvas(positions: np.ndarray, images: list[np.ndarray], frame_size: int = md.FRAME_SIZE) -> np.ndarray:
    """Reference drawing of one frame: ``positions`` (D, 2) top-left pixels, combined by max on a black frame."""
    frame = np.zeros((frame_size, frame_size), dtype=np.float32)
    for (y, x), image in zip(positions, images):
        s = image.shape[0]
        frame[y : y + s, x : x + s] = np.maximum(frame[y : y + s, x : x + s], image)
    return frame


def write_mnist(path: Path, x_train: np.ndarray, **override: np.ndarray | None) -> Path:
    """A Keras-layout mnist.npz; ``override`` replaces (or, with None, removes) members."""
    members = {
        "x_train": x_train,
        "y_train": np.arange(len(x_train), dtype=np.uint8) % 10,
        "x_test": x_train[::-1].copy(),
        "y_test": np.arange(len(x_train), dtype=np.uint8)[::-1] % 10,
    }
    members.update(override)
    np.savez(path, **{key: value for key, value in members.items() if value is not None})
    return path


def assert_data_error(match: str, call, *args, **kwargs) -> str:
    with pytest.raises(md.DataError, match=match) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "expected" in message and "found" in message, message
    return message


# --- shapes, determinism --------------------------------------------------------------------------------------


def test_shapes_dtype_range_and_split() -> None:
    needs_sklearn()
    x = md.make_sequences(3, 0)
    assert x.shape == (3, md.SEQ_LEN, md.FRAME_SIZE, md.FRAME_SIZE, 1) and x.dtype == np.float32
    assert x.flags.c_contiguous
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
    inputs, targets = md.split(x)
    assert inputs.shape == (3, 10, 64, 64, 1) and targets.shape == (3, 10, 64, 64, 1)
    np.testing.assert_array_equal(np.concatenate([inputs, targets], axis=1), x)
    inputs, targets = md.split(x, t_in=4)
    assert inputs.shape[1] == 4 and targets.shape[1] == 16


def test_sklearn_digits_source() -> None:
    needs_sklearn()
    from sklearn.datasets import load_digits

    digits = md.sklearn_digits()
    assert digits.shape == (SKLEARN_SOURCE_SIZE, 28, 28) and digits.dtype == np.float32
    assert digits.min() == 0.0 and digits.max() == 1.0
    levels = load_digits().images
    # the exact bilinear upscale of the constant parts is the constant; its mean is close to the 8x8 mean
    np.testing.assert_allclose(digits.mean(axis=(1, 2)), levels.mean(axis=(1, 2)) / 16, atol=0.02)


def test_upscale_bilinear_exact() -> None:
    constant = np.full((1, 8, 8), 5, dtype=np.int64)
    np.testing.assert_array_equal(md.upscale_bilinear(constant, 28), np.full((1, 28, 28), 5 * 56 * 56))
    ramp = np.broadcast_to(np.arange(8, dtype=np.int64), (1, 8, 8))
    out = md.upscale_bilinear(ramp, 28) / (56 * 56)
    # output column o samples the input at clamp((o + 0.5) * 8 / 28 - 0.5, 0, 7); a ramp returns that coordinate
    expected = np.clip((np.arange(28) + 0.5) * 8 / 28 - 0.5, 0, 7)
    np.testing.assert_allclose(out[0, 0], expected, rtol=0, atol=1e-12)
    identity = np.random.default_rng(0).integers(0, 17, (2, 8, 8))
    np.testing.assert_array_equal(md.upscale_bilinear(identity, 8), identity * 16 * 16)


def test_same_seed_same_bytes_and_sha256_pin() -> None:
    needs_sklearn()
    a = md.make_sequences(PIN_N, PIN_SEED)
    b = md.make_sequences(PIN_N, PIN_SEED)
    assert a.tobytes() == b.tobytes()
    assert hashlib.sha256(a.tobytes()).hexdigest() == PIN_SHA256
    assert md.make_sequences(PIN_N, PIN_SEED + 1).tobytes() != a.tobytes()
    # draws are made sequence by sequence: a shorter run is a prefix of a longer one
    np.testing.assert_array_equal(md.make_sequences(2, PIN_SEED), a[:2])


def test_array_source_determinism_without_sklearn() -> None:
    digits = square_digits()
    a = md.make_sequences(3, 7, digits=digits)
    assert a.tobytes() == md.make_sequences(3, 7, digits=digits).tobytes()
    assert a.tobytes() != md.make_sequences(3, 8, digits=digits).tobytes()


# --- the motion rule ------------------------------------------------------------------------------------------


def replay(start: float, velocity: float, steps: int, limit: float) -> list[int]:
    """The documented rule in plain Python floats: step, clamp at a border and reverse, record floor."""
    p, v, out = start, velocity, []
    for _ in range(steps):
        p += v
        if p <= 0:
            p, v = 0.0, -v
        if p >= limit:
            p, v = limit, -v
        out.append(math.floor(p))
    return out


def test_motion_follows_the_documented_rule_over_200_frames() -> None:
    n = 40
    motion = md.sample_motion(n, 3, n_source=10, seq_len=LONG_RUN)
    assert motion.positions.shape == (n, LONG_RUN, 2, 2) and motion.positions.dtype == np.int64
    assert motion.positions.min() == 0 and motion.positions.max() == LIMIT  # both borders are reached
    assert ((motion.start >= 0) & (motion.start < LIMIT)).all()
    speed = np.linalg.norm(motion.velocity, axis=-1)
    np.testing.assert_allclose(speed, md.SPEED_RANGE[0], rtol=1e-12)
    assert ((motion.indices >= 0) & (motion.indices < 10)).all()
    for i in range(n):
        for j in range(2):
            for axis in range(2):
                expected = replay(motion.start[i, j, axis], motion.velocity[i, j, axis], LONG_RUN, float(LIMIT))
                assert motion.positions[i, :, j, axis].tolist() == expected, (i, j, axis)
    steps = np.abs(np.diff(motion.positions, axis=1))
    assert steps.max() <= math.ceil(md.SPEED_RANGE[0])  # one frame moves at most the speed (rounded up)


def test_bounce_keeps_every_digit_whole_inside_the_frame() -> None:
    digits = square_digits(2)
    frames = md.make_sequences(6, 11, digits=digits, seq_len=LONG_RUN)[..., 0]
    motion = md.sample_motion(6, 11, n_source=2, seq_len=LONG_RUN)
    for i in range(6):
        images = [digits[k] for k in motion.indices[i]]
        for t in range(LONG_RUN):
            np.testing.assert_array_equal(frames[i, t], canvas(motion.positions[i, t], images))
    # every digit is whole in every frame: its grey level covers at least a full 28x28 square (the brighter one
    # always; the darker one unless the brighter covers it), and nothing lies outside the two squares
    area = md.DIGIT_SIZE**2
    assert ((frames > 0).sum(axis=(2, 3)) >= area).all()
    assert ((frames > 0).sum(axis=(2, 3)) <= 2 * area).all()


def test_speed_range_and_geometry_arguments() -> None:
    motion = md.sample_motion(50, 5, 4, frame_size=40, digit_size=10, num_digits=3, seq_len=30, speed_range=(1, 5))
    assert motion.positions.shape == (50, 30, 3, 2)
    assert motion.positions.min() >= 0 and motion.positions.max() <= 30
    speed = np.linalg.norm(motion.velocity, axis=-1)
    assert speed.min() >= 1 and speed.max() <= 5 and speed.max() - speed.min() > 2
    x = md.make_sequences(2, 5, digits=square_digits(4, 10), frame_size=40, digit_size=10, num_digits=3, seq_len=30)
    assert x.shape == (2, 30, 40, 40, 1)
    still = md.sample_motion(3, 0, 5, speed_range=(0, 0), seq_len=5)
    assert (still.positions == still.positions[:, :1]).all()


def test_two_digits_present() -> None:
    needs_sklearn()
    digits = md.sklearn_digits()
    n = 8
    x = md.make_sequences(n, 21)[..., 0]
    motion = md.sample_motion(n, 21, SKLEARN_SOURCE_SIZE)
    np.testing.assert_array_equal(md.render(motion, digits)[..., 0], x)  # same draws, same pictures
    mass = digits[motion.indices].sum(axis=(2, 3))  # (n, 2)
    frame_mass = x.sum(axis=(2, 3))  # (n, T)
    # max-combination: at least the heavier digit, at most both (equal when they do not overlap)
    assert (frame_mass >= mass.max(axis=1)[:, None] - 1e-3).all()
    assert (frame_mass <= mass.sum(axis=1)[:, None] + 1e-3).all()
    assert np.median(frame_mass / mass.sum(axis=1)[:, None]) > 0.9  # mostly apart: roughly two digits' mass


# --- the mnist.npz source -------------------------------------------------------------------------------------


def test_mnist_npz_pixels_are_what_appears(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_train = rng.integers(1, 256, (5, 28, 28), dtype=np.uint8)  # no zero pixel: every digit pixel is visible
    path = write_mnist(tmp_path / "mnist.npz", x_train)
    loaded = md.load_mnist_digits(path)
    np.testing.assert_array_equal(loaded, x_train.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(md.load_mnist_digits(path, "test"), loaded[::-1])

    one = md.make_sequences(4, 1, digits=path, num_digits=1)[..., 0]
    motion = md.sample_motion(4, 1, 5, num_digits=1)
    for i in range(4):
        for t in range(md.SEQ_LEN):
            y, x = motion.positions[i, t, 0]
            np.testing.assert_array_equal(one[i, t, y : y + 28, x : x + 28], loaded[motion.indices[i, 0]])
            assert one[i, t].sum() == pytest.approx(loaded[motion.indices[i, 0]].sum(), rel=1e-6)

    two = md.make_sequences(3, 2, digits=str(path))[..., 0]
    motion = md.sample_motion(3, 2, 5)
    for i in range(3):
        images = [loaded[k] for k in motion.indices[i]]
        for t in range(md.SEQ_LEN):
            np.testing.assert_array_equal(two[i, t], canvas(motion.positions[i, t], images))
    test_split = md.make_sequences(3, 2, digits=path, mnist_split="test")
    assert test_split.tobytes() != two.tobytes()


def test_mnist_npz_errors(tmp_path: Path) -> None:
    good = np.zeros((5, 28, 28), dtype=np.uint8)
    message = assert_data_error("missing", md.load_mnist_digits, write_mnist(tmp_path / "a.npz", good, y_test=None))
    assert "y_test" in message and "x_train" in message
    message = assert_data_error(
        "x_train", md.load_mnist_digits, write_mnist(tmp_path / "b.npz", good.astype(np.float32))
    )
    assert "uint8" in message and "float32" in message
    message = assert_data_error(
        "x_train", md.load_mnist_digits, write_mnist(tmp_path / "c.npz", np.zeros((5, 32, 32), np.uint8))
    )
    assert "(N, 28, 28)" in message and "(5, 32, 32)" in message
    assert_data_error("x_train", md.load_mnist_digits, write_mnist(tmp_path / "d.npz", np.zeros((28, 28), np.uint8)))
    assert_data_error("x_train", md.load_mnist_digits, write_mnist(tmp_path / "e.npz", np.zeros((0, 28, 28), np.uint8)))
    message = assert_data_error(
        "y_train", md.load_mnist_digits, write_mnist(tmp_path / "f.npz", good, y_train=np.zeros(4, np.uint8))
    )
    assert "(5,)" in message and "(4,)" in message
    npy = tmp_path / "g.npy"
    np.save(npy, good)
    assert_data_error("single array", md.load_mnist_digits, npy)
    junk = tmp_path / "h.npz"
    junk.write_bytes(b"not an archive at all")
    assert_data_error("unreadable", md.load_mnist_digits, junk)
    assert_data_error("split", md.load_mnist_digits, write_mnist(tmp_path / "i.npz", good), "validation")
    assert_data_error("digit_size", md.make_sequences, 1, 0, digits=tmp_path / "i.npz", digit_size=20)


def test_array_source_errors() -> None:
    assert_data_error(r"\(N, 28, 28\)", md.make_sequences, 1, 0, digits=np.zeros((3, 20, 20)))
    assert_data_error(r"\(N, 28, 28\)", md.make_sequences, 1, 0, digits=np.zeros((0, 28, 28)))
    assert_data_error(r"\[0, 1\]", md.make_sequences, 1, 0, digits=np.full((2, 28, 28), 2.0))
    assert_data_error(r"\[0, 1\]", md.make_sequences, 1, 0, digits=np.full((2, 28, 28), np.nan))
    assert_data_error("dtype", md.make_sequences, 1, 0, digits=np.full((2, 28, 28), "a"))


# --- the canonical test set -----------------------------------------------------------------------------------


def test_read_mnist_test_seq_transposes(tmp_path: Path) -> None:
    raw = np.random.default_rng(1).integers(0, 256, (20, 3, 64, 64), dtype=np.uint8)
    path = tmp_path / "mnist_test_seq.npy"
    np.save(path, raw)
    out = md.read_mnist_test_seq(path)
    assert out.shape == (3, 20, 64, 64, 1) and out.dtype == np.float32
    assert out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out[..., 0], raw.transpose(1, 0, 2, 3).astype(np.float32) / np.float32(255))
    assert out[1, 7, 5, 9, 0] == np.float32(raw[7, 1, 5, 9]) / np.float32(255)
    np.testing.assert_array_equal(md.read_mnist_test_seq(str(path), limit=2), out[:2])
    assert out.min() >= 0 and out.max() <= 1


def test_read_mnist_test_seq_errors(tmp_path: Path) -> None:
    def saved(name: str, array: np.ndarray) -> Path:
        path = tmp_path / name
        np.save(path, array)
        return path

    message = assert_data_error("dtype", md.read_mnist_test_seq, saved("a.npy", np.zeros((20, 2, 64, 64), np.float32)))
    assert "uint8" in message and "float32" in message
    message = assert_data_error("rank", md.read_mnist_test_seq, saved("b.npy", np.zeros((20, 64, 64), np.uint8)))
    assert "rank 4" in message and "rank 3" in message
    message = assert_data_error("frames", md.read_mnist_test_seq, saved("c.npy", np.zeros((19, 2, 64, 64), np.uint8)))
    assert "20" in message and "19" in message
    message = assert_data_error("64x64", md.read_mnist_test_seq, saved("d.npy", np.zeros((20, 2, 32, 32), np.uint8)))
    assert "32x32" in message
    assert_data_error("at least one", md.read_mnist_test_seq, saved("e.npy", np.zeros((20, 0, 64, 64), np.uint8)))
    good = saved("f.npy", np.zeros((20, 2, 64, 64), np.uint8))
    message = assert_data_error("limit", md.read_mnist_test_seq, good, limit=3)
    assert "2" in message and "3" in message
    assert_data_error("limit", md.read_mnist_test_seq, good, limit=0)
    junk = tmp_path / "g.npy"
    junk.write_bytes(b"\x93NUMPY garbage")
    assert_data_error("unreadable", md.read_mnist_test_seq, junk)
    archive = tmp_path / "h.npz"
    np.savez(archive, x=np.zeros((20, 2, 64, 64), np.uint8))
    assert_data_error("archive", md.read_mnist_test_seq, archive)
    objects = tmp_path / "i.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_data_error("unreadable", md.read_mnist_test_seq, objects)


# --- geometry and count errors ---------------------------------------------------------------------------------


def test_frame_smaller_than_digit() -> None:
    message = assert_data_error("frame_size", md.make_sequences, 1, 0, digits=square_digits(), frame_size=20)
    assert "28" in message and "20" in message
    # equal sizes are allowed: the digit cannot move
    x = md.make_sequences(1, 0, digits=square_digits(), frame_size=28, seq_len=3)
    assert (x == x[:, :1]).all()


def test_patch_size_divisibility() -> None:
    digits = square_digits()
    message = assert_data_error("patch_size", md.make_sequences, 1, 0, digits=digits, patch_size=5)
    assert "64" in message and "5" in message
    assert_data_error("patch_size", md.make_sequences, 1, 0, digits=digits, frame_size=66, patch_size=4)
    assert_data_error("patch_size", md.batches, 1, 1, 0, digits=digits, patch_size=3)
    assert_data_error("patch_size", md.make_sequences, 1, 0, digits=digits, patch_size=0)
    for patch in (1, 2, 4, 8, 16, 64):
        assert md.make_sequences(1, 0, digits=digits, patch_size=patch, seq_len=2).shape == (1, 2, 64, 64, 1)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("n", {"n": 0}),
        ("seq_len", {"seq_len": 0}),
        ("num_digits", {"num_digits": -1}),
        ("frame_size", {"frame_size": 0}),
        ("digit_size", {"digit_size": 0}),
        ("n", {"n": 1.5}),
        ("n", {"n": True}),
        ("seed", {"seed": -1}),
        ("speed_range", {"speed_range": (3, 1)}),
        ("speed_range", {"speed_range": (-1, 1)}),
        ("speed_range", {"speed_range": (1, float("inf"))}),
        ("speed_range", {"speed_range": 3}),
    ],
)
def test_non_positive_counts_and_bad_arguments(name: str, kwargs: dict) -> None:
    arguments = {"n": 1, "seed": 0, "digits": square_digits(), **kwargs}
    n, seed = arguments.pop("n"), arguments.pop("seed")
    assert_data_error(name, md.make_sequences, n, seed, **arguments)


def test_batch_and_split_count_errors() -> None:
    digits = square_digits()
    assert_data_error("n_batches", md.batches, 0, 2, 0, digits=digits)
    assert_data_error("batch_size", md.batches, 1, 0, 0, digits=digits)
    assert_data_error("start", md.batches, 1, 1, 0, start=-1, digits=digits)
    assert_data_error("t_in", md.batches, 1, 1, 0, t_in=20, digits=digits)
    assert_data_error("t_in", md.batches, 1, 1, 0, t_in=0, digits=digits)
    x = np.zeros((1, 5, 8, 8, 1), np.float32)
    assert_data_error("t_in", md.split, x, 5)
    assert_data_error("rank 5", md.split, x[0])
    assert_data_error("n_source", md.sample_motion, 1, 0, 0)


# --- batches --------------------------------------------------------------------------------------------------


def test_batches_depend_only_on_seed_and_index() -> None:
    digits = square_digits()
    options = {"digits": digits, "seq_len": 6, "t_in": 2}
    drawn = list(md.batches(4, 3, 9, **options))
    assert len(drawn) == 4
    for inputs, targets in drawn:
        assert inputs.shape == (3, 2, 64, 64, 1) and targets.shape == (3, 4, 64, 64, 1)
        assert inputs.dtype == targets.dtype == np.float32
    for k in reversed(range(4)):  # drawn alone, out of order, or resumed from `start`: the same arrays
        alone = md.batch(k, 3, 9, **options)
        resumed = next(md.batches(1, 3, 9, start=k, **options))
        for a, b, c in zip(drawn[k], alone, resumed):
            assert a.tobytes() == b.tobytes() == c.tobytes()
    tail = list(md.batches(2, 3, 9, start=2, **options))
    assert all(a.tobytes() == b.tobytes() for x, y in zip(drawn[2:], tail) for a, b in zip(x, y))
    keys = {drawn[k][0].tobytes() for k in range(4)}
    assert len(keys) == 4  # distinct batches
    assert md.batch(0, 3, 10, **options)[0].tobytes() != drawn[0][0].tobytes()  # the seed matters
    # a batch's stream is not make_sequences(seed)'s
    assert md.make_sequences(3, 9, digits=digits, seq_len=6)[:, :2].tobytes() != drawn[0][0].tobytes()


def test_batches_with_sklearn_digits() -> None:
    needs_sklearn()
    inputs, targets = md.batch(1, 2, 0)
    assert inputs.shape == (2, 10, 64, 64, 1) and targets.shape == (2, 10, 64, 64, 1)
    assert inputs.max() > 0.5
