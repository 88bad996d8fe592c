"""The common surface every implementation offers, and the checks done once at its boundary.

Each framework package (``torch_impl``, ``keras_impl``, ``jax_impl``: ``model.py`` the native model, ``loop.py`` the
fast time loop and its gradient, ``runner.py`` the runner and the framework's devices and precision) defines
``Runner``, a subclass of :class:`Runner` built from canonical :class:`~implementations.weights.Weights`:

* ``forward(x, initial_state=None, return_sequences=True, go_backwards=False) -> ForwardResult``
* ``value_and_grad(x, probe, initial_state=None, go_backwards=False) -> GradResult``: ``probe`` a
  :class:`LossProbe` or a NumPy array of the output sequence's shape (see :func:`check_probe`)
* ``export_weights() -> Weights``
* ``device``: ``"cpu"`` or ``"gpu:N"`` in every framework; ``versions()``

The checks of inputs, initial states and probes happen here, once; each framework implements only the hooks
(``_forward``, ``_value_and_grad``, ``device_candidate``, ``framework_versions``). To add a framework: copy one
package's three modules, implement those hooks, and add it to ``implementations.FRAMEWORKS``.

Data at the boundary is NumPy, channels-last: inputs ``(B, T, *S, C)``, outputs
``(B, T, *S', F)`` (or ``(B, *S', F)`` without ``return_sequences``), states ``(B, *S', F)``.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .spec import StackSpec
from .weights import Weights

DTYPES = ("float32", "float64")


class InputError(ValueError):
    """A runtime input (frames, initial state, dtype) does not fit the model."""


@dataclasses.dataclass
class ForwardResult:
    """``outputs``: last layer's h sequence (or last step). ``h[i]``, ``c[i]``: final states of layer i."""

    outputs: np.ndarray
    h: list[np.ndarray]
    c: list[np.ndarray]

    def tensors(self) -> dict[str, np.ndarray]:
        """Flat name -> array view, the names used in parity failure messages and CLI output."""
        out = {"outputs": self.outputs}
        out.update({f"h/{i}": v for i, v in enumerate(self.h)})
        out.update({f"c/{i}": v for i, v in enumerate(self.c)})
        return out


@dataclasses.dataclass
class LossProbe:
    """A fixed linear functional of the outputs, used as the scalar loss for gradient checks.

    ``loss = sum(outputs * gy) + sum_i sum(h[i] * gh[i]) + sum_i sum(c[i] * gc[i])`` over the full
    output sequence and every layer's final states, so every weight and every step is exercised.
    """

    gy: np.ndarray
    gh: list[np.ndarray]
    gc: list[np.ndarray]

    @classmethod
    def random(cls, spec: StackSpec, input_shape: Sequence[int], seed: int = 1234) -> LossProbe:
        rng = np.random.default_rng(seed)
        b, _t, *spatial, _c = input_shape
        states = spec.state_spatials(spatial)
        gy = rng.standard_normal(spec.output_shape(input_shape))
        gh = [rng.standard_normal((b, *s, layer.filters)) for s, layer in zip(states, spec.layers)]
        gc = [rng.standard_normal((b, *s, layer.filters)) for s, layer in zip(states, spec.layers)]
        return cls(gy, gh, gc)

    @classmethod
    def from_output_cotangent(cls, gy: np.ndarray, state_shapes: Sequence[tuple[int, ...]]) -> LossProbe:
        """The probe ``loss = sum(outputs * gy)``: zero cotangents for every final state.

        ``state_shapes``: the shape of each layer's final state, ``(B, *S'_i, F_i)``.
        """
        return cls(gy, [np.zeros(s, gy.dtype) for s in state_shapes], [np.zeros(s, gy.dtype) for s in state_shapes])

    def astype(self, dtype: Any) -> LossProbe:
        return LossProbe(
            self.gy.astype(dtype), [g.astype(dtype) for g in self.gh], [g.astype(dtype) for g in self.gc]
        )

    def value(self, result: ForwardResult) -> float:
        total = float(np.sum(result.outputs * self.gy))
        total += sum(float(np.sum(h * g)) for h, g in zip(result.h, self.gh))
        total += sum(float(np.sum(c * g)) for c, g in zip(result.c, self.gc))
        return total


#: What ``value_and_grad`` accepts as its probe: a :class:`LossProbe`, or a NumPy array of the output
#: sequence's shape (the output cotangent; final states get zero cotangents).
ProbeLike = LossProbe | np.ndarray


@dataclasses.dataclass
class GradResult:
    """``loss``: the probe's value. ``grads``: canonical weight key -> gradient, plus ``"input"``."""

    loss: float
    grads: dict[str, np.ndarray]


def check_dtype(dtype: Any) -> str:
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise InputError(f"dtype: expected one of {DTYPES}, found {dtype!r}")
    return name


def check_input(
    weights: Weights, x: Any, dtype: str, *, check_finite: bool = False
) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Validate frames ``x`` (B, T, *S, C) against the model; return them as ``dtype`` and C-contiguous.

    Returns the array and the state spatial shape of every layer. NaN/Inf in the input propagate
    like any value unless ``check_finite`` is set, in which case they raise.
    """
    spec = weights.spec
    if not isinstance(x, np.ndarray):
        raise InputError(f"input: expected a NumPy array, found {type(x).__name__}")
    if isinstance(x, np.ma.MaskedArray):
        raise InputError("input: expected a plain NumPy array, found a masked array (its mask would be ignored)")
    want_rank = spec.rank + 3
    if x.ndim != want_rank:
        raise InputError(
            f"input: expected rank {want_rank} (B, T, {', '.join('S' * spec.rank)}, C), found shape {x.shape}"
        )
    if x.dtype.kind != "f":
        raise InputError(f"input: expected a floating dtype (float16/32/64), found {x.dtype}")
    if x.shape[-1] != spec.input_channels:
        raise InputError(f"input: expected {spec.input_channels} channels (last axis), found {x.shape[-1]}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise InputError(f"input: batch and time must be >= 1, found shape {x.shape}")
    try:
        states = spec.state_spatials(x.shape[2:-1])
    except ValueError as exc:
        raise InputError(f"input: {exc}") from None
    for i, fixed in enumerate(weights.state_spatials()):
        if fixed is not None and fixed != states[i]:
            raise InputError(
                f"input: layer {i} has 'full' peepholes for a {fixed} state, but frames of spatial shape "
                f"{tuple(x.shape[2:-1])} give a {states[i]} state"
            )
    if check_finite and not np.all(np.isfinite(x)):
        raise InputError("input: expected finite values, found NaN/Inf")
    return np.ascontiguousarray(x, dtype=dtype), states


def check_initial_state(
    weights: Weights, initial_state: Any, batch: int, states: list[tuple[int, ...]], dtype: str
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Validate ``initial_state``: one ``(h0, c0)`` pair per layer, each (B, *S'_i, F_i)."""
    if initial_state is None:
        return None
    spec = weights.spec
    if len(initial_state) != len(spec.layers):
        raise InputError(
            f"initial_state: expected one (h, c) pair per layer ({len(spec.layers)}), found {len(initial_state)}"
        )
    out = []
    for i, (pair, spatial, layer) in enumerate(zip(initial_state, states, spec.layers)):
        if len(pair) != 2:
            raise InputError(f"initial_state[{i}]: expected an (h, c) pair, found {len(pair)} items")
        want = (batch, *spatial, layer.filters)
        checked = []
        for name, arr in zip("hc", pair):
            arr = np.asarray(arr)
            if arr.shape != want:
                raise InputError(f"initial_state[{i}].{name}: expected shape {want}, found {arr.shape}")
            if arr.dtype.kind != "f":
                raise InputError(f"initial_state[{i}].{name}: expected a floating dtype, found {arr.dtype}")
            checked.append(np.ascontiguousarray(arr, dtype=dtype))
        out.append((checked[0], checked[1]))
    return out


def _probe_array(name: str, value: Any, want: tuple[int, ...], dtype: str) -> np.ndarray:
    """One probe cotangent as a C-contiguous ``dtype`` array of shape ``want`` (InputError otherwise)."""
    arr = np.asarray(value)
    if arr.shape != want:
        raise InputError(f"{name}: expected shape {want}, found {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{name}: expected real numbers, found dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _probe_list(name: str, values: Any, wants: list[tuple[int, ...]], dtype: str) -> list[np.ndarray]:
    """One cotangent per layer's final state, each checked by :func:`_probe_array`."""
    if isinstance(values, np.ndarray) or not isinstance(values, Sequence):
        raise TypeError(f"{name}: expected a list of arrays (one per layer), found {type(values).__name__}")
    if len(values) != len(wants):
        raise InputError(f"{name}: expected {len(wants)} arrays (one per layer), found {len(values)}")
    return [_probe_array(f"{name}[{i}]", v, want, dtype) for i, (v, want) in enumerate(zip(values, wants))]


def check_probe(spec: StackSpec, probe: Any, input_shape: Sequence[int], dtype: str) -> LossProbe:
    """Normalise the ``probe`` given to ``value_and_grad`` to a checked :class:`LossProbe` in ``dtype``.

    Done here once so that every runner accepts the same probes and rejects the rest with the same errors:

    * a :class:`LossProbe`: its ``gy`` must have the output sequence's shape ``(B, T, *S', F)`` and its
      ``gh``/``gc`` one array per layer of that layer's final-state shape ``(B, *S'_i, F_i)``;
    * a plain NumPy array of the output sequence's shape: the output cotangent, i.e. the probe whose loss
      is ``sum(outputs * probe)``, with zero cotangents for the final states.

    Anything else raises ``TypeError``; a wrong shape (or non-real dtype) raises :class:`InputError`
    naming what was expected and what was found. ``input_shape`` must already have passed
    :func:`check_input`.
    """
    want_y = spec.output_shape(input_shape)
    b = input_shape[0]
    want_states = [(b, *s, layer.filters) for s, layer in zip(spec.state_spatials(input_shape[2:-1]), spec.layers)]
    if isinstance(probe, LossProbe):
        return LossProbe(
            _probe_array("probe.gy", probe.gy, want_y, dtype),
            _probe_list("probe.gh", probe.gh, want_states, dtype),
            _probe_list("probe.gc", probe.gc, want_states, dtype),
        )
    if isinstance(probe, np.ndarray) and not isinstance(probe, np.ma.MaskedArray):  # a mask would be ignored
        gy = _probe_array("probe (the output cotangent)", probe, want_y, dtype)
        return LossProbe.from_output_cotangent(gy, want_states)
    raise TypeError(
        f"probe: expected a LossProbe or a plain NumPy array of the output sequence's shape {want_y}, "
        f"found {type(probe).__name__}"
    )


def select_output(sequence: np.ndarray, return_sequences: bool) -> np.ndarray:
    """The last layer's output: the whole sequence, or its last step (in processing order)."""
    return sequence if return_sequences else sequence[:, -1]


def probe_loss(outputs: Any, hs: Sequence[Any], cs: Sequence[Any], gy: Any, gh: Sequence[Any], gc: Sequence[Any],
               reduce_sum: Callable[[Any], Any]) -> Any:
    """The probe's scalar loss in any array library: ``sum(outputs * gy) + sum_i sum(h_i * gh_i) + sum_i sum(c_i *
    gc_i)``; ``reduce_sum`` is that library's full reduction (``torch.sum``, ``jnp.sum``, ``keras.ops.sum``,
    ``np.sum``), so each framework differentiates the same expression."""
    loss = reduce_sum(outputs * gy)
    for value, cotangent in zip(hs, gh):
        loss = loss + reduce_sum(value * cotangent)
    for value, cotangent in zip(cs, gc):
        loss = loss + reduce_sum(value * cotangent)
    return loss


# ---------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DeviceCandidate:
    """A device a framework offers: ``kind`` ``cpu`` or ``gpu``, its ``index`` among devices of that kind, a human
    ``name`` (CPU model or GPU name) and the framework's own ``handle`` (a torch device, a jax Device, a TF device
    string)."""

    kind: str
    index: int
    name: str
    handle: Any = None

    @property
    def id(self) -> str:
        """The one device-name format of the project: ``cpu`` or ``gpu:N``, whatever the framework calls it."""
        return "cpu" if self.kind == "cpu" else f"gpu:{self.index}"


#: Environment variable forcing the device choice of :func:`choose_device`: ``cpu`` or ``gpu``.
DEVICE_ENV = "BENCH_DEVICE"


def choose_device(candidates: Sequence[DeviceCandidate], requested: str | None = None) -> DeviceCandidate:
    """The device to run on: the first GPU the framework offers, else its first CPU.

    ``requested``: ``None`` (that default), ``"cpu"``, ``"gpu"``/``"cuda"`` (the first GPU; NotImplementedError
    without one, so a benchmark is skipped rather than silently run on the CPU), or ``"gpu:N"``/``"cuda:N"``
    (that GPU). ValueError for anything else."""
    req = (requested or "").strip().lower() or None
    gpus = [c for c in candidates if c.kind == "gpu"]
    cpus = [c for c in candidates if c.kind == "cpu"]
    if req is None:
        if gpus or cpus:
            return (gpus or cpus)[0]
        raise NotImplementedError("the framework offers no device")
    kind, _, index = req.replace("cuda", "gpu").partition(":")
    if kind not in ("cpu", "gpu") or (index and not index.isdigit()):
        raise ValueError(f"device {requested!r}: expected 'cpu', 'gpu' or 'gpu:N'")
    pool = cpus if kind == "cpu" else gpus
    if not pool:
        raise NotImplementedError(f"device {requested!r} requested but the framework offers no {kind.upper()}")
    if index:
        found = [c for c in pool if c.index == int(index)]
        if not found:
            raise NotImplementedError(f"device {requested!r}: the framework offers {[c.id for c in pool]}")
        return found[0]
    return pool[0]


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux), else ``platform.processor()``."""
    import contextlib
    import platform
    from pathlib import Path

    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


# ---------------------------------------------------------------------------------------------
# The runner: checks and conversions here, the computation in each framework's subclass
# ---------------------------------------------------------------------------------------------


class Runner(abc.ABC):
    """Base class of the per-framework runners.

    The public methods check their inputs here, once for every framework (:func:`check_input`,
    :func:`check_initial_state`, :func:`check_probe`), then call the framework's hooks with checked NumPy arrays in
    the runner's dtype:

    * ``_forward(x, init, go_backwards) -> (sequence (B, T, *S', F), [h_i], [c_i])`` as NumPy;
    * ``_value_and_grad(x, init, probe, go_backwards) -> (loss, {canonical key: gradient, "input": ...})``, the
      loss being :func:`probe_loss` of the framework's own tensors;
    * ``export_weights()``, ``device_candidate`` (the device in use), ``framework_versions()``.
    """

    framework: str = "?"

    def __init__(self, weights: Weights, *, dtype: str = "float32", device: str | None = None) -> None:
        self.weights = weights
        self.dtype = check_dtype(dtype)
        self.requested_device = device

    # --- the framework's part -----------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def device_candidate(self) -> DeviceCandidate:
        """The device this runner computes on."""

    @abc.abstractmethod
    def _forward(
        self, x: np.ndarray, init: list[tuple[np.ndarray, np.ndarray]] | None, go_backwards: bool
    ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """The whole output sequence and every layer's final (h, c), NumPy in the runner's dtype."""

    @abc.abstractmethod
    def _value_and_grad(
        self, x: np.ndarray, init: list[tuple[np.ndarray, np.ndarray]] | None, probe: LossProbe, go_backwards: bool
    ) -> tuple[float, dict[str, np.ndarray]]:
        """The probe's loss and its gradient with respect to every canonical weight and ``"input"``."""

    @abc.abstractmethod
    def export_weights(self) -> Weights:
        """The runner's weights as canonical :class:`Weights` (same dtype)."""

    @classmethod
    @abc.abstractmethod
    def framework_versions(cls) -> dict[str, str]:
        """Versions of the framework's packages (no device query)."""

    # --- common to every framework ------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """``cpu`` or ``gpu:N``, the same format for every framework."""
        return self.device_candidate.id

    def versions(self) -> dict[str, str]:
        """Package versions, the device in use and its name (what parity records and the CLI print)."""
        return {"numpy": np.__version__, **self.framework_versions(), "device": self.device,
                "device_name": self.device_candidate.name}

    def forward(
        self,
        x: np.ndarray,
        *,
        initial_state: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
        return_sequences: bool = True,
        go_backwards: bool = False,
    ) -> ForwardResult:
        """``x``: ``(B, T, *S, C)``. Outputs ``(B, T, *S', F)`` (``(B, *S', F)`` without ``return_sequences``) and
        final states ``(B, *S'_i, F_i)``, NumPy in the runner dtype."""
        x, states = check_input(self.weights, x, self.dtype)
        init = check_initial_state(self.weights, initial_state, x.shape[0], states, self.dtype)
        seq, hs, cs = self._forward(x, init, go_backwards)
        return ForwardResult(select_output(seq, return_sequences), list(hs), list(cs))

    def value_and_grad(
        self,
        x: np.ndarray,
        probe: ProbeLike,
        *,
        initial_state: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
        go_backwards: bool = False,
    ) -> GradResult:
        """The probe's loss (:class:`LossProbe` or an output-cotangent array, :func:`check_probe`) and its gradients
        with respect to every canonical weight and the input (key ``"input"``)."""
        x, states = check_input(self.weights, x, self.dtype)
        init = check_initial_state(self.weights, initial_state, x.shape[0], states, self.dtype)
        checked = check_probe(self.weights.spec, probe, x.shape, self.dtype)
        loss, grads = self._value_and_grad(x, init, checked, go_backwards)
        return GradResult(float(loss), grads)
