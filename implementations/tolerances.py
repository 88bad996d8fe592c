"""One tolerance table for every parity comparison (tests, the CLI's ``parity``, reports).

Keyed by (quantity, dtype). Each entry gives its reason. A comparison passes when
``max_abs <= atol + rtol * max(|expected|)``: absolute for values of order 1 (activations are
bounded), scaled by the tensor's magnitude for gradients, which are sums over B*T*S terms.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    reason: str

    def bound(self, expected: np.ndarray) -> float:
        scale = float(np.max(np.abs(expected))) if np.size(expected) else 0.0
        return self.atol + self.rtol * scale


TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("forward", "float64"): Tolerance(
        1e-10, 0.0, "float64 end to end; summation order differs between conv kernels (observed ~1e-15)"
    ),
    ("forward", "float32"): Tolerance(
        1e-5, 0.0, "float32 rounding (eps 6e-8) through a few convs of <= 100 terms and T <= 4 steps"
    ),
    ("grad_fd", "float64"): Tolerance(
        1e-7,
        1e-6,
        "directional central difference (eps 1e-5) of the float64 reference: truncation ~eps^2 f'' "
        "plus roundoff ~1e-16 |loss| / eps",
    ),
    ("grad", "float64"): Tolerance(0.0, 1e-10, "analytic float64 gradients of two frameworks, relative to the largest"),
    ("grad", "float32"): Tolerance(
        0.0, 1e-4, "float32 gradients accumulate B*T*S products in different orders; relative to the largest entry"
    ),
    ("grad", "bfloat16"): Tolerance(
        0.0,
        2**-7,
        "bfloat16 gradients of the same bfloat16 inputs by two summation orders (float32 accumulation), each rounded"
        " to 8 significand bits: up to one rounding step (2^-8 relative) apiece; relative to the largest entry",
    ),
    ("roundtrip", "float32"): Tolerance(0.0, 0.0, "weights are copied, never computed: bit-exact"),
    ("roundtrip", "float64"): Tolerance(0.0, 0.0, "weights are copied, never computed: bit-exact"),
}


def tolerance(quantity: str, dtype: str) -> Tolerance:
    try:
        return TOLERANCES[(quantity, dtype)]
    except KeyError:
        raise KeyError(f"no tolerance for ({quantity!r}, {dtype!r}); known: {sorted(TOLERANCES)}") from None


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The outcome of comparing one tensor: errors, the bound applied, and whether it passed."""

    tensor: str
    max_abs: float
    max_rel: float
    bound: float
    passed: bool

    def describe(self) -> str:
        verdict = "ok" if self.passed else "FAIL"
        return (
            f"{self.tensor}: max-abs {self.max_abs:.3e}, max-rel {self.max_rel:.3e}, "
            f"bound {self.bound:.3e} [{verdict}]"
        )


def compare(tensor: str, actual: np.ndarray, expected: np.ndarray, tol: Tolerance) -> Comparison:
    """Compare two arrays in float64. Shape mismatch or non-finite values fail with inf error."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return Comparison(f"{tensor} (shape {actual.shape} != {expected.shape})", np.inf, np.inf, 0.0, False)
    if actual.size == 0:
        return Comparison(tensor, 0.0, 0.0, 0.0, True)
    diff = np.abs(actual - expected)
    if not np.all(np.isfinite(actual)) or not np.all(np.isfinite(expected)):
        same_nonfinite = np.array_equal(np.isfinite(actual), np.isfinite(expected))
        diff = np.where(np.isfinite(actual) & np.isfinite(expected), diff, 0.0 if same_nonfinite else np.inf)
    max_abs = float(np.max(diff))
    max_rel = float(np.max(diff / np.maximum(np.abs(expected), 1e-30)))
    bound = tol.bound(expected)
    return Comparison(tensor, max_abs, max_rel, bound, max_abs <= bound)
