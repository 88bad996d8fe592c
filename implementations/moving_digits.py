"""Moving digits: the Moving MNIST data set (Srivastava et al. 2015) for the encoder-forecaster of Shi et al. 2015.

What it makes
    Sequences of ``seq_len`` frames (default 20: 10 inputs, 10 to predict) of ``frame_size`` x ``frame_size``
    pixels (default 64) in which ``num_digits`` digits (default 2) of ``digit_size`` x ``digit_size`` pixels
    (default 28) move in straight lines and bounce off the borders. Overlapping digits are combined by the
    pixel-wise maximum. Arrays are channels-last, the project's layout:

    * :func:`make_sequences` -> ``(N, T, H, W, 1)`` float32, pixel values in [0, 1] (0 = black background);
    * :func:`split` -> ``inputs (N, t_in, H, W, 1)``, ``targets (N, T - t_in, H, W, 1)``;
    * :func:`batches` / :func:`batch` -> the same ``(inputs, targets)`` NumPy batches for every framework, batch
      ``k`` derived from ``(seed, k)`` alone;
    * :func:`read_mnist_test_seq` -> the canonical test set ``mnist_test_seq.npy`` (uint8, ``(20, 10000, 64,
      64)``, time first) as ``(N, 20, 64, 64, 1)`` float32 in [0, 1].

Digit sources (nothing is ever downloaded)
    * a real MNIST file the caller points at, in Keras' ``mnist.npz`` layout (keys ``x_train`` ``(N, 28, 28)``
      uint8, ``y_train`` ``(N,)``, ``x_test``, ``y_test``), scaled by 1/255 (:func:`load_mnist_digits`);
    * otherwise scikit-learn's ``load_digits`` (1797 digits of 8 x 8 pixels, grey levels 0-16, shipped inside the
      package), upscaled to ``digit_size`` by bilinear interpolation computed exactly in integers and scaled by
      1/16 (:func:`sklearn_digits`). scikit-learn is imported lazily, inside that function only;
    * or any array ``(N, digit_size, digit_size)`` of floats in [0, 1].

Motion rule (what :func:`sample_motion` implements, per digit and per axis, in pixels)
    ``limit = frame_size - digit_size`` is the largest top-left coordinate that keeps the digit inside the frame.
    A digit is drawn with its top-left corner at ``(floor(y), floor(x))`` where ``y, x`` are float64 pixel
    positions. Start: ``y0, x0`` uniform in ``[0, limit)``; velocity ``(vy, vx) = speed * (uy, ux)`` pixels per
    frame with ``speed`` uniform in ``speed_range`` (default ``(3.6, 3.6)``: the original script's step of 0.1 in
    unit coordinates times its canvas of 36 pixels) and ``(uy, ux)`` a uniformly random unit direction. Then, for
    each frame ``t = 0 .. T-1`` (the step comes first, as in the original script, so frame 0 is already one step
    from the start)::

        p = p + v
        if p <= 0:     p = 0;     v = -v
        if p >= limit: p = limit; v = -v
        frame t shows the digit at floor(p)

    That is the original script's bounce (Srivastava et al.'s ``moving_mnist.py``): the position is clamped to
    the border and the velocity component reversed, not mirrored about the border. The original works in unit
    coordinates and scales by the canvas at the end; here positions are pixels from the start, which is the
    same rule up to rounding.

Determinism
    Only ``np.random.default_rng`` (PCG64, bit-identical on every platform) draws numbers; the direction is drawn
    by rejection from the unit disc and normalised with ``sqrt`` (no ``sin``/``cos``, whose last bits depend on
    the C library); every other float operation is a single IEEE-754 ``+ - * /`` or ``sqrt``, correctly rounded
    everywhere; the sklearn upscaling is done in integers with one final division. So a seed gives the same bytes
    on every machine. Draws are made sequence by sequence, so the first ``k`` sequences of
    ``make_sequences(n, seed)`` are ``make_sequences(k, seed)``.
"""

from __future__ import annotations

import dataclasses
import operator
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

#: The standard Moving MNIST geometry (Srivastava et al. 2015).
FRAME_SIZE = 64
DIGIT_SIZE = 28
NUM_DIGITS = 2
SEQ_LEN = 20
T_IN = 10
#: Pixels per frame: the original script's step of 0.1 in unit coordinates times its canvas of 64 - 28 = 36 pixels.
SPEED_RANGE = (3.6, 3.6)

#: Keras' ``mnist.npz`` layout.
MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")
MNIST_SPLITS = ("train", "test")
MNIST_DIGIT_SIZE = 28
MNIST_MAX_LEVEL = 255
#: scikit-learn's ``load_digits``: 8 x 8 images with grey levels 0..16.
SKLEARN_DIGIT_SIZE = 8
SKLEARN_MAX_LEVEL = 16
#: The canonical test set ``mnist_test_seq.npy``: (time, sequence, height, width) uint8.
TEST_SEQ_RANK = 4
TEST_SEQ_MAX_LEVEL = 255

#: Direction candidates from the square [-1, 1)^2 are kept when their squared length lies in (MIN, 1].
_MIN_DIRECTION_SQ = 1e-12
#: First entropy word of the per-batch generators, so a batch's stream differs from ``make_sequences(seed)``'s.
BATCH_STREAM_TAG = 0x4D4D4E49  # "MMNI"


class DataError(ValueError):
    """A digit source, test-set file or geometry that is not what this module expects (the message names both)."""


# ---------------------------------------------------------------------------------------------------------------
# validation helpers


def _count(name: str, value: Any) -> int:
    """``value`` as a positive int, else :class:`DataError`."""
    if isinstance(value, bool):
        raise DataError(f"{name}: expected a positive integer, found {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise DataError(f"{name}: expected a positive integer, found {value!r}") from None
    if number <= 0:
        raise DataError(f"{name}: expected a positive integer, found {number}")
    return number


def _seed(name: str, value: Any) -> int:
    """``value`` as a non-negative int (what ``np.random.default_rng`` accepts), else :class:`DataError`."""
    if isinstance(value, bool):
        raise DataError(f"{name}: expected a non-negative integer, found {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise DataError(f"{name}: expected a non-negative integer, found {value!r}") from None
    if number < 0:
        raise DataError(f"{name}: expected a non-negative integer, found {number}")
    return number


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Validated geometry of a moving-digits data set (all sizes in pixels, speeds in pixels per frame)."""

    frame_size: int = FRAME_SIZE
    digit_size: int = DIGIT_SIZE
    num_digits: int = NUM_DIGITS
    seq_len: int = SEQ_LEN
    speed_range: tuple[float, float] = SPEED_RANGE

    def __post_init__(self) -> None:
        for name in ("frame_size", "digit_size", "num_digits", "seq_len"):
            object.__setattr__(self, name, _count(name, getattr(self, name)))
        if self.frame_size < self.digit_size:
            raise DataError(
                f"frame_size: expected at least digit_size = {self.digit_size} pixels, found {self.frame_size}"
            )
        try:
            low, high = (float(s) for s in self.speed_range)
        except (TypeError, ValueError):
            raise DataError(
                f"speed_range: expected two numbers (low, high) in pixels per frame, found {self.speed_range!r}"
            ) from None
        if not (np.isfinite(low) and np.isfinite(high) and 0.0 <= low <= high):
            raise DataError(f"speed_range: expected finite 0 <= low <= high pixels per frame, found {(low, high)}")
        object.__setattr__(self, "speed_range", (low, high))

    @property
    def limit(self) -> int:
        """Largest top-left coordinate (pixels) that keeps a digit inside the frame."""
        return self.frame_size - self.digit_size

    def check_patch_size(self, patch_size: int | None) -> None:
        """Raise :class:`DataError` unless ``frame_size`` is divisible by ``patch_size`` (None: no check)."""
        if patch_size is None:
            return
        patch = _count("patch_size", patch_size)
        if self.frame_size % patch:
            raise DataError(
                f"patch_size: expected a divisor of frame_size = {self.frame_size} (the model cuts frames into "
                f"{patch}x{patch} patches), found {patch} (remainder {self.frame_size % patch})"
            )


# ---------------------------------------------------------------------------------------------------------------
# digit sources


def load_mnist_digits(path: str | os.PathLike[str], split: str = "train") -> np.ndarray:
    """The digits of a Keras-layout ``mnist.npz`` as ``(N, 28, 28)`` float32 in [0, 1] (uint8 levels / 255).

    The file must hold ``x_train`` / ``x_test`` ``(N, 28, 28)`` uint8 and ``y_train`` / ``y_test`` ``(N,)``
    integer labels; anything else is a :class:`DataError` naming what was expected and what was found.
    """
    if split not in MNIST_SPLITS:
        raise DataError(f"split: expected one of {MNIST_SPLITS}, found {split!r}")
    where = os.fspath(path)
    try:
        archive = np.load(where, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"{where}: expected a Keras mnist.npz archive, found an unreadable file ({error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{where}: expected a Keras mnist.npz archive with keys {list(MNIST_KEYS)}, found a single array "
            f"{getattr(archive, 'shape', '?')} {getattr(archive, 'dtype', '?')}"
        )
    with archive:
        missing = [key for key in MNIST_KEYS if key not in archive.files]
        if missing:
            raise DataError(
                f"{where}: expected keys {list(MNIST_KEYS)} (Keras mnist.npz layout), found {sorted(archive.files)} "
                f"(missing {missing})"
            )
        try:
            images = archive[f"x_{split}"]
            labels = archive[f"y_{split}"]
        except ValueError as error:
            raise DataError(f"{where}: expected plain NumPy arrays, found an unreadable member ({error})") from None
    if images.dtype != np.uint8:
        raise DataError(f"{where}: x_{split}: expected dtype uint8, found {images.dtype}")
    expected = f"(N, {MNIST_DIGIT_SIZE}, {MNIST_DIGIT_SIZE}) with N >= 1"
    if images.ndim != 3 or images.shape[1:] != (MNIST_DIGIT_SIZE, MNIST_DIGIT_SIZE) or images.shape[0] == 0:
        raise DataError(f"{where}: x_{split}: expected shape {expected}, found {images.shape}")
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{where}: y_{split}: expected integer labels of shape ({images.shape[0]},), "
            f"found {labels.dtype} {labels.shape}"
        )
    return images.astype(np.float32) / np.float32(MNIST_MAX_LEVEL)


def upscale_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of integer images ``(N, s, s)`` to ``(N, size, size)``, exactly, in integer arithmetic.

    Pixel centres are aligned as in ``cv2.resize`` / ``torch`` ``align_corners=False``: output pixel ``o`` samples
    the input at ``(o + 0.5) * s / size - 0.5``, clamped to ``[0, s - 1]``. That coordinate is the fraction
    ``((2o + 1) * s - size) / (2 * size)``, so the weights are integers over ``2 * size`` and the result is an
    integer over ``(2 * size) ** 2``, returned as int64 numerators (divide by ``(2 * size) ** 2``).
    """
    s = images.shape[-1]
    den = 2 * size
    numerator = np.clip((2 * np.arange(size, dtype=np.int64) + 1) * s - size, 0, (s - 1) * den)
    lower = numerator // den
    upper = np.minimum(lower + 1, s - 1)
    frac = numerator - lower * den  # weight of `upper`, over den
    x = images.astype(np.int64)
    rows = x[:, lower, :] * (den - frac)[None, :, None] + x[:, upper, :] * frac[None, :, None]
    return rows[:, :, lower] * (den - frac)[None, None, :] + rows[:, :, upper] * frac[None, None, :]


def sklearn_digits(digit_size: int = DIGIT_SIZE) -> np.ndarray:
    """scikit-learn's 1797 ``load_digits`` images as ``(1797, digit_size, digit_size)`` float32 in [0, 1].

    The 8 x 8 images (grey levels 0..16) are upscaled by exact bilinear interpolation (:func:`upscale_bilinear`)
    and divided by 16, one correctly rounded division per pixel. Nothing is downloaded: the data ship inside
    scikit-learn, which is imported here only.
    """
    size = _count("digit_size", digit_size)
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "the built-in digit source needs scikit-learn (pip install scikit-learn), or pass digits= a Keras "
            f"mnist.npz path or an array: {error}"
        ) from error
    levels = load_digits().images
    if levels.shape[1:] != (SKLEARN_DIGIT_SIZE, SKLEARN_DIGIT_SIZE) or not np.array_equal(levels, np.round(levels)):
        raise DataError(
            f"sklearn load_digits: expected integer grey levels of shape (N, {SKLEARN_DIGIT_SIZE}, "
            f"{SKLEARN_DIGIT_SIZE}), found {levels.dtype} {levels.shape}"
        )
    numerators = upscale_bilinear(levels.astype(np.int64), size)
    scale = (2 * size) ** 2 * SKLEARN_MAX_LEVEL
    # exact integers, one IEEE float64 division, one rounding to float32: the same bytes everywhere
    return (numerators / np.float64(scale)).astype(np.float32)


def resolve_digits(
    digits: np.ndarray | str | os.PathLike[str] | None = None,
    digit_size: int = DIGIT_SIZE,
    *,
    mnist_split: str = "train",
) -> np.ndarray:
    """The digit images ``(N, digit_size, digit_size)`` float32 in [0, 1] from any accepted source.

    ``None``: :func:`sklearn_digits`; a path: :func:`load_mnist_digits` (then ``digit_size`` must be 28); an
    array: checked for shape, finiteness and range.
    """
    size = _count("digit_size", digit_size)
    if digits is None:
        return sklearn_digits(size)
    if isinstance(digits, (str, os.PathLike)):
        images = load_mnist_digits(digits, mnist_split)
        if size != MNIST_DIGIT_SIZE:
            raise DataError(f"digit_size: expected {MNIST_DIGIT_SIZE} for an MNIST file, found {size}")
        return images
    array = np.asarray(digits)
    if array.ndim != 3 or array.shape[1:] != (size, size) or array.shape[0] == 0:
        raise DataError(f"digits: expected shape (N, {size}, {size}) with N >= 1, found {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise DataError(f"digits: expected a real-valued array, found dtype {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise DataError(f"digits: expected finite values in [0, 1], found range [{array.min()}, {array.max()}]")
    return array


# ---------------------------------------------------------------------------------------------------------------
# motion and rendering


@dataclasses.dataclass(frozen=True)
class Motion:
    """The drawn randomness of ``n`` sequences and the resulting trajectories (see the module's motion rule).

    ``indices``: ``(n, D)`` int64 rows of the digit source. ``start``: ``(n, D, 2)`` float64 starting (y, x)
    pixels. ``velocity``: ``(n, D, 2)`` float64 starting (vy, vx) pixels per frame. ``positions``: ``(n, T, D, 2)``
    int64 top-left (row, column) pixel of each digit in each frame, in ``[0, frame_size - digit_size]``.
    """

    indices: np.ndarray
    start: np.ndarray
    velocity: np.ndarray
    positions: np.ndarray


def _unit_direction(rng: np.random.Generator) -> tuple[float, float]:
    """A uniformly random unit vector (uy, ux), by rejection from the unit disc (no trigonometry)."""
    while True:
        uy, ux = 2.0 * rng.random(2) - 1.0
        r2 = uy * uy + ux * ux
        if _MIN_DIRECTION_SQ < r2 <= 1.0:
            r = np.sqrt(r2)
            return float(uy / r), float(ux / r)


def _draw_motion(rng: np.random.Generator, n: int, n_source: int, geometry: Geometry) -> Motion:
    """Draw, sequence by sequence and digit by digit, index, start, speed and direction; then run the motion rule."""
    d = geometry.num_digits
    limit = float(geometry.limit)
    low, high = geometry.speed_range
    indices = np.empty((n, d), dtype=np.int64)
    start = np.empty((n, d, 2), dtype=np.float64)
    velocity = np.empty((n, d, 2), dtype=np.float64)
    for i in range(n):
        for j in range(d):
            indices[i, j] = rng.integers(0, n_source)
            start[i, j] = rng.random(2) * limit
            speed = low + (high - low) * rng.random()
            uy, ux = _unit_direction(rng)
            velocity[i, j] = (speed * uy, speed * ux)
    position = start.copy()
    v = velocity.copy()
    positions = np.empty((n, geometry.seq_len, d, 2), dtype=np.int64)
    for t in range(geometry.seq_len):
        position += v
        below = position <= 0.0
        position[below] = 0.0
        v[below] = -v[below]
        above = position >= limit
        position[above] = limit
        v[above] = -v[above]
        positions[:, t] = np.floor(position).astype(np.int64)
    return Motion(indices, start, velocity, positions)


def sample_motion(
    n: int,
    seed: int,
    n_source: int,
    *,
    frame_size: int = FRAME_SIZE,
    digit_size: int = DIGIT_SIZE,
    num_digits: int = NUM_DIGITS,
    seq_len: int = SEQ_LEN,
    speed_range: tuple[float, float] = SPEED_RANGE,
) -> Motion:
    """The :class:`Motion` of ``n`` sequences drawn from ``np.random.default_rng(seed)`` over ``n_source`` digits."""
    geometry = Geometry(frame_size, digit_size, num_digits, seq_len, speed_range)
    rng = np.random.default_rng(_seed("seed", seed))
    return _draw_motion(rng, _count("n", n), _count("n_source", n_source), geometry)


def render(motion: Motion, digits: np.ndarray, frame_size: int = FRAME_SIZE) -> np.ndarray:
    """Draw ``motion`` with ``digits`` ``(N, s, s)`` float32: ``(n, T, frame_size, frame_size, 1)`` float32.

    Each frame starts black (0) and each digit is combined with it by the pixel-wise maximum.
    """
    n, seq_len, num_digits, _ = motion.positions.shape
    size = digits.shape[-1]
    out = np.zeros((n, seq_len, frame_size, frame_size), dtype=np.float32)
    sequence = np.arange(n)[:, None, None]
    offsets = np.arange(size)
    for t in range(seq_len):
        for j in range(num_digits):
            rows = (motion.positions[:, t, j, 0][:, None] + offsets)[:, :, None]
            cols = (motion.positions[:, t, j, 1][:, None] + offsets)[:, None, :]
            frames = out[:, t]
            frames[sequence, rows, cols] = np.maximum(frames[sequence, rows, cols], digits[motion.indices[:, j]])
    return out[..., None]


def _sequences(rng: np.random.Generator, n: int, images: np.ndarray, geometry: Geometry) -> np.ndarray:
    return render(_draw_motion(rng, n, images.shape[0], geometry), images, geometry.frame_size)


def make_sequences(
    n: int,
    seed: int,
    *,
    digits: np.ndarray | str | os.PathLike[str] | None = None,
    frame_size: int = FRAME_SIZE,
    digit_size: int = DIGIT_SIZE,
    num_digits: int = NUM_DIGITS,
    seq_len: int = SEQ_LEN,
    speed_range: tuple[float, float] = SPEED_RANGE,
    patch_size: int | None = None,
    mnist_split: str = "train",
) -> np.ndarray:
    """``n`` moving-digit sequences, ``(n, seq_len, frame_size, frame_size, 1)`` float32 in [0, 1].

    ``digits``: ``None`` (scikit-learn's digits, upscaled), a Keras ``mnist.npz`` path (``mnist_split`` chooses
    ``x_train`` or ``x_test``) or an array ``(N, digit_size, digit_size)`` in [0, 1]. ``speed_range`` is in pixels
    per frame. ``patch_size``: when given, ``frame_size`` must be divisible by it (the model cuts frames into
    ``patch_size`` x ``patch_size`` patches). Same ``seed``, same bytes on every machine.
    """
    geometry = Geometry(frame_size, digit_size, num_digits, seq_len, speed_range)
    geometry.check_patch_size(patch_size)
    count = _count("n", n)
    rng = np.random.default_rng(_seed("seed", seed))
    images = resolve_digits(digits, geometry.digit_size, mnist_split=mnist_split)
    return _sequences(rng, count, images, geometry)


def split(sequences: np.ndarray, t_in: int = T_IN) -> tuple[np.ndarray, np.ndarray]:
    """``(N, T, H, W, C)`` -> inputs ``(N, t_in, H, W, C)`` and targets ``(N, T - t_in, H, W, C)`` (views)."""
    if sequences.ndim != 5:
        raise DataError(f"sequences: expected rank 5 (N, T, H, W, C), found shape {sequences.shape}")
    steps = sequences.shape[1]
    count = _count("t_in", t_in)
    if count >= steps:
        raise DataError(f"t_in: expected 1 <= t_in < T = {steps} (at least one target frame), found {count}")
    return sequences[:, :count], sequences[:, count:]


# ---------------------------------------------------------------------------------------------------------------
# batches shared by every framework


def batch(
    index: int,
    batch_size: int,
    seed: int,
    *,
    digits: np.ndarray | str | os.PathLike[str] | None = None,
    t_in: int = T_IN,
    frame_size: int = FRAME_SIZE,
    digit_size: int = DIGIT_SIZE,
    num_digits: int = NUM_DIGITS,
    seq_len: int = SEQ_LEN,
    speed_range: tuple[float, float] = SPEED_RANGE,
    patch_size: int | None = None,
    mnist_split: str = "train",
) -> tuple[np.ndarray, np.ndarray]:
    """Batch number ``index``: ``(inputs, targets)``, shapes ``(batch_size, t_in, H, W, 1)`` and
    ``(batch_size, T - t_in, H, W, 1)`` float32, drawn from ``np.random.default_rng([BATCH_STREAM_TAG, seed,
    index])``: a function of ``(seed, index)`` only."""
    return next(
        batches(
            1,
            batch_size,
            seed,
            start=index,
            digits=digits,
            t_in=t_in,
            frame_size=frame_size,
            digit_size=digit_size,
            num_digits=num_digits,
            seq_len=seq_len,
            speed_range=speed_range,
            patch_size=patch_size,
            mnist_split=mnist_split,
        )
    )


def batches(
    n_batches: int,
    batch_size: int,
    seed: int,
    *,
    start: int = 0,
    digits: np.ndarray | str | os.PathLike[str] | None = None,
    t_in: int = T_IN,
    frame_size: int = FRAME_SIZE,
    digit_size: int = DIGIT_SIZE,
    num_digits: int = NUM_DIGITS,
    seq_len: int = SEQ_LEN,
    speed_range: tuple[float, float] = SPEED_RANGE,
    patch_size: int | None = None,
    mnist_split: str = "train",
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield batches ``start .. start + n_batches - 1`` as :func:`batch` gives them (the digit source is read once).

    Batch ``k`` depends only on ``(seed, k)`` and the geometry, never on how many batches were drawn before, so
    every framework (and a resumed run, via ``start``) sees the same NumPy arrays. Arguments are checked before the
    first batch is drawn.
    """
    geometry = Geometry(frame_size, digit_size, num_digits, seq_len, speed_range)
    geometry.check_patch_size(patch_size)
    count = _count("n_batches", n_batches)
    size = _count("batch_size", batch_size)
    base = _seed("seed", seed)
    first = _seed("start", start)
    steps_in = _count("t_in", t_in)
    if steps_in >= geometry.seq_len:
        raise DataError(f"t_in: expected 1 <= t_in < seq_len = {geometry.seq_len}, found {steps_in}")
    images = resolve_digits(digits, geometry.digit_size, mnist_split=mnist_split)

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for index in range(first, first + count):
            rng = np.random.default_rng([BATCH_STREAM_TAG, base, index])
            yield split(_sequences(rng, size, images, geometry), steps_in)

    return generate()


# ---------------------------------------------------------------------------------------------------------------
# the canonical test set


def read_mnist_test_seq(
    path: str | os.PathLike[str],
    *,
    limit: int | None = None,
    seq_len: int = SEQ_LEN,
    frame_size: int = FRAME_SIZE,
) -> np.ndarray:
    """Read ``mnist_test_seq.npy`` (uint8 ``(seq_len, N, frame_size, frame_size)``, time first) as
    ``(N, seq_len, frame_size, frame_size, 1)`` float32 in [0, 1] (levels / 255), sequence first.

    The file is memory-mapped, so ``limit`` (read only the first ``limit`` sequences) reads only those bytes.
    A wrong dtype, rank, frame count or frame size is a :class:`DataError` naming what was expected and found.
    """
    where = os.fspath(path)
    steps = _count("seq_len", seq_len)
    size = _count("frame_size", frame_size)
    try:
        array = np.load(where, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as error:
        raise DataError(
            f"{where}: expected a .npy array (mnist_test_seq.npy), found an unreadable file ({error})"
        ) from None
    if not isinstance(array, np.ndarray):
        raise DataError(f"{where}: expected a single .npy array (mnist_test_seq.npy), found an .npz archive")
    if array.dtype != np.uint8:
        raise DataError(f"{where}: expected dtype uint8, found {array.dtype}")
    if array.ndim != TEST_SEQ_RANK:
        raise DataError(
            f"{where}: expected rank {TEST_SEQ_RANK} (time, sequence, height, width), found rank {array.ndim} "
            f"shape {array.shape}"
        )
    if array.shape[0] != steps:
        raise DataError(
            f"{where}: expected {steps} frames on the first (time) axis, found {array.shape[0]} (shape {array.shape})"
        )
    if array.shape[2:] != (size, size):
        raise DataError(f"{where}: expected {size}x{size} frames, found {array.shape[2]}x{array.shape[3]}")
    available = array.shape[1]
    if available == 0:
        raise DataError(f"{where}: expected at least one sequence, found shape {array.shape}")
    n = available
    if limit is not None:
        n = _count("limit", limit)
        if n > available:
            raise DataError(f"limit: expected at most the {available} sequences of {where}, found {n}")
    out = np.empty((n, steps, size, size, 1), dtype=np.float32)
    for t in range(steps):
        out[:, t, :, :, 0] = array[t, :n]
    np.divide(out, np.float32(TEST_SEQ_MAX_LEVEL), out=out)
    return out


__all__ = [
    "BATCH_STREAM_TAG",
    "DIGIT_SIZE",
    "FRAME_SIZE",
    "NUM_DIGITS",
    "SEQ_LEN",
    "SPEED_RANGE",
    "T_IN",
    "DataError",
    "Geometry",
    "Motion",
    "batch",
    "batches",
    "load_mnist_digits",
    "make_sequences",
    "read_mnist_test_seq",
    "render",
    "resolve_digits",
    "sample_motion",
    "sklearn_digits",
    "split",
    "upscale_bilinear",
]
