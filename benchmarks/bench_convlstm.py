"""The asv benchmarks: one class per concern, all over the grid of :mod:`benchmarks.grid`.

``params = [variant, workload, mode, dtype]`` (fixed, whatever is installed). Combinations outside the active
profile, unsupported by the variant, or whose framework is missing raise NotImplementedError in ``setup``
(asv: skipped / n/a). No framework is imported at module level. See benchmarks/README.md for units.
"""

from __future__ import annotations

import contextlib
import os

from implementations.workloads import get_workload

from . import contention, train_rss
from .cases import get_case
from .environment import record_timestep_usage
from .grid import (
    DTYPES,
    MODES,
    PARAM_NAMES,
    PARAMS,
    VARIANTS,
    WORKLOADS,
    active_profile,
    predicted_activation_bytes,
    skip_reason,
    spec_skip_reason,
    variant_skip_reason,
)
from .measure import cached_metrics
from .model import get_adapter

_PROFILE = active_profile()


def _skip_unless_in_profile(benchmark_class: str) -> None:
    if benchmark_class in _PROFILE.skip_benchmarks:
        raise NotImplementedError(f"{benchmark_class} is not run in the {_PROFILE.name!r} profile")


class _Grid:
    params = PARAMS
    param_names = PARAM_NAMES
    rounds = 1  # one process per combination and benchmark (asv < 0.5 called this `processes`)
    timeout = _PROFILE.timeout


# ---------------------------------------------------------------------------------------------
# Wall clock
# ---------------------------------------------------------------------------------------------


class TimeStep(_Grid):
    """Seconds per batch: one inference pass (mode ``forward``) or one training step (mode ``train``: forward,
    MSE against a fixed target, backward, SGD update) on the workload's whole batch, synchronised inside the
    timed call (CUDA synchronize / block_until_ready / host copy). Build, compile, verification against the
    float64 reference and warm-up happen in ``setup``.

    asv re-runs ``setup`` before every sample; :func:`benchmarks.cases.get_case` keeps the prepared case for the life of
    the process, so only the first ``setup`` is expensive and the model keeps training across samples.
    """

    version = "convlstm-bench-time-1"
    number = 1
    repeat = (_PROFILE.min_samples, _PROFILE.max_samples, _PROFILE.max_time)
    warmup_time = 0.0  # warmed up in setup

    def setup(self, variant: str, workload: str, mode: str, dtype: str) -> None:
        self.case = get_case((variant, workload, mode, dtype))
        # asv calls setup before every sample: the first call after preparing starts the contention reading
        if not hasattr(self, "_usage_start"):
            self._usage_start, self._samples = contention.snapshot(), 0
        self._samples += 1

    def time_step(self, variant: str, workload: str, mode: str, dtype: str) -> None:
        self.case.run()

    def teardown(self, variant: str, workload: str, mode: str, dtype: str) -> None:
        """Record how busy the machine was over the sampling (steal, other processes' CPU) in the environment."""
        start = getattr(self, "_usage_start", None)
        if start is not None:
            usage = contention.usage(start, contention.snapshot())
            with contextlib.suppress(OSError):
                record_timestep_usage((variant, workload, mode, dtype), usage, self._samples)


# ---------------------------------------------------------------------------------------------
# Derived metrics, measured once per combination and process (see measure.cached_metrics)
# ---------------------------------------------------------------------------------------------


def _run_directory(self: object) -> str:
    """setup_cache shared by Metrics and DeviceMemory (same function, same asv cache key): asv runs their
    benchmarks with this per-run temporary directory as working directory, where each combination's
    measurements are stored by the first benchmark that needs them."""
    return os.getcwd()


class Metrics(_Grid):
    """Compile time, throughput and efficiency of one combination, all measured in one process.

    The first of these benchmarks to run for a combination prepares it (build, first call timed, verify,
    warm up) and measures it in ``setup``; the others of the same asv run read the stored numbers.
    """

    version = "convlstm-bench-metrics-1"
    setup_cache = _run_directory

    def setup(self, run_dir: str, variant: str, workload: str, mode: str, dtype: str) -> None:
        self.m = cached_metrics(run_dir, (variant, workload, mode, dtype))

    def track_first_call_seconds(self, run_dir: str, variant: str, workload: str, mode: str, dtype: str) -> float:
        """Seconds of the very first call on the benchmark input: tracing + compilation + one execution."""
        return self.m["first_call_seconds"]

    track_first_call_seconds.unit = "seconds"

    def track_sequences_per_second(self, run_dir: str, variant: str, workload: str, mode: str, dtype: str) -> float:
        """Sequences (batch elements) per second: B / median step time."""
        return self.m["sequences_per_second"]

    track_sequences_per_second.unit = "sequences/s"

    def track_frames_per_second(self, run_dir: str, variant: str, workload: str, mode: str, dtype: str) -> float:
        """Frames per second: B * T / median step time."""
        return self.m["frames_per_second"]

    track_frames_per_second.unit = "frames/s"

    def track_achieved_gflops(self, run_dir: str, variant: str, workload: str, mode: str, dtype: str) -> float:
        """GFLOP/s achieved: spec.flops(input_shape, mode) / median step time / 1e9."""
        return self.m["achieved_gflops"]

    track_achieved_gflops.unit = "GFLOP/s"

    def track_peak_matmul_gflops(self, run_dir: str, variant: str, workload: str, mode: str, dtype: str) -> float:
        """The framework's own n x n matmul in the same process, device and dtype (best of a few), GFLOP/s."""
        return self.m["peak_matmul_gflops"]

    track_peak_matmul_gflops.unit = "GFLOP/s"

    def track_peak_conv_gflops(self, run_dir: str, variant: str, workload: str, mode: str, dtype: str) -> float:
        """The framework's own bare gate-sized convolution (B*T, S', C_in+F) -> 4F, kernel k, GFLOP/s."""
        return self.m["peak_conv_gflops"]

    track_peak_conv_gflops.unit = "GFLOP/s"

    def track_fraction_of_matmul_peak(
        self, run_dir: str, variant: str, workload: str, mode: str, dtype: str
    ) -> float:
        """Achieved GFLOP/s / matmul peak (same process)."""
        return self.m["fraction_of_matmul_peak"]

    track_fraction_of_matmul_peak.unit = "fraction"

    def track_fraction_of_conv_peak(self, run_dir: str, variant: str, workload: str, mode: str, dtype: str) -> float:
        """Achieved GFLOP/s / gate-conv peak (same process)."""
        return self.m["fraction_of_conv_peak"]

    track_fraction_of_conv_peak.unit = "fraction"


class PageFaults(_Grid):
    """Minor page faults per timed step, from the Metrics process of the combination (``getrusage``).

    A fault is a first touch of a page the process got from the kernel: on a CPU, mostly memory that glibc's
    allocator returned to the kernel when its heap shrank at the end of a step and has to map (zeroed) again in the
    next. Each costs about a microsecond, and how many a step takes depends on the order and size of its large
    allocations, not only on how much memory it needs: thousands per step explain a row that is slower than its
    FLOPs and memory suggest, or slower in one process than in another. Skipped where the platform has no count."""

    version = "convlstm-bench-page-faults-1"
    setup_cache = _run_directory

    def setup(self, run_dir: str, variant: str, workload: str, mode: str, dtype: str) -> None:
        self.m = cached_metrics(run_dir, (variant, workload, mode, dtype))
        if self.m.get("minor_faults_per_step") is None:
            raise NotImplementedError("no minor page-fault count (getrusage) on this platform")

    def track_minor_faults_per_step(self, run_dir: str, variant: str, workload: str, mode: str, dtype: str) -> float:
        return float(self.m["minor_faults_per_step"])

    track_minor_faults_per_step.unit = "faults/step"


class DeviceMemory(_Grid):
    """Peak bytes of the framework's device allocator after the measured steps (torch.cuda.max_memory_allocated,
    jax ``memory_stats()['peak_bytes_in_use']``, tf ``get_memory_info('GPU:0')['peak']``); skipped on a CPU."""

    version = "convlstm-bench-device-memory-1"
    setup_cache = _run_directory

    def setup(self, run_dir: str, variant: str, workload: str, mode: str, dtype: str) -> None:
        self.m = cached_metrics(run_dir, (variant, workload, mode, dtype))
        if self.m["device_peak_bytes"] is None:
            raise NotImplementedError(f"no device allocator to read: {variant} runs on {self.m['device']}")

    def track_device_peak_bytes(self, run_dir: str, variant: str, workload: str, mode: str, dtype: str) -> int:
        return int(self.m["device_peak_bytes"])

    track_device_peak_bytes.unit = "bytes"


# ---------------------------------------------------------------------------------------------
# Host memory
# ---------------------------------------------------------------------------------------------


class PeakMemory(_Grid):
    """Peak resident set size (bytes) of the benchmark process after one more step: framework import, model,
    compilation, verification and the step. Subtract ``ImportBaseline.peakmem_import`` of the same variant to
    get what the model and its execution add."""

    version = "convlstm-bench-peakmem-1"

    def setup(self, variant: str, workload: str, mode: str, dtype: str) -> None:
        _skip_unless_in_profile(type(self).__name__)
        # No warm-up: memory, not speed, is measured (the loss-decrease check of training runs in the
        # TimeStep and Metrics processes of the same combination).
        self.case = get_case((variant, workload, mode, dtype), warmup_calls=0)

    def peakmem_step(self, variant: str, workload: str, mode: str, dtype: str) -> None:
        self.case.run()


class TrainMemory(_Grid):
    """Host memory of training, in bytes, from :mod:`benchmarks.train_rss`: the combination
    runs in a fresh interpreter of its own (RSS is a property of a whole process; the asv process that starts it
    has imported numpy and asv only), which builds the model, then trains: a first (compiling) step and two more,
    then one more warmed-up step. Mode ``train`` only; ``forward`` is n/a. Compare with the dashed spec line
    (``SpecActivation``): what a training step must keep for its backward pass.

    On a GPU these are host figures; the device allocator's peak is ``DeviceMemory``.
    """

    version = "convlstm-bench-train-rss-1"
    setup_cache = _run_directory

    def setup(self, run_dir: str, variant: str, workload: str, mode: str, dtype: str) -> None:
        if mode != "train":
            raise NotImplementedError("training memory is measured in mode 'train' only")
        combo = (variant, workload, mode, dtype)
        reason = skip_reason(combo, _PROFILE)  # before starting a process for nothing
        if reason:
            raise NotImplementedError(reason)
        timeout = max(60.0, 0.9 * _PROFILE.timeout)  # the child must finish inside asv's timeout of this setup

        def measure() -> dict:
            return train_rss.measure_or_raise(variant, workload, dtype, timeout, _PROFILE)

        self.m = cached_metrics(run_dir, combo, measure=measure, kind="train_rss")

    def track_train_rss_increase_bytes(self, run_dir: str, variant: str, workload: str, mode: str, dtype: str) -> int:
        """Peak RSS over the first three training steps (compilation included) minus RSS after the build."""
        return int(self.m["increase"])

    track_train_rss_increase_bytes.unit = "bytes"

    def track_train_rss_warm_step_bytes(self, run_dir: str, variant: str, workload: str, mode: str, dtype: str) -> int:
        """Peak RSS of one warmed-up step minus RSS after the build: steady-state training without what only the
        first call costs (compiler, lazily loaded kernels)."""
        return int(self.m["warm_step_over_build"])

    track_train_rss_warm_step_bytes.unit = "bytes"

    def track_train_rss_held_bytes(self, run_dir: str, variant: str, workload: str, mode: str, dtype: str) -> int:
        """RSS after that step and ``malloc_trim(0)`` minus RSS after the build: what stays held between steps."""
        return int(self.m["held_after_trim"])

    track_train_rss_held_bytes.unit = "bytes"


class ImportBaseline:
    """Peak RSS of a process that imports the variant's framework(s) and selects the device, and does
    nothing else: the baseline to subtract from ``PeakMemory.peakmem_step``."""

    version = "convlstm-bench-import-baseline-1"
    params = [list(VARIANTS)]
    param_names = ["variant"]
    rounds = 1
    timeout = 300.0

    def setup(self, variant: str) -> None:
        _skip_unless_in_profile(type(self).__name__)
        reason = variant_skip_reason(variant)
        if reason:
            raise NotImplementedError(reason)
        get_adapter(variant).import_framework(variant)

    def peakmem_import(self, variant: str) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# What the spec predicts (no framework involved)
# ---------------------------------------------------------------------------------------------


class SpecActivation:
    """Activation bytes a training step keeps for the backward pass, predicted by
    ``StackSpec.activation_bytes(input_shape, itemsize)``: the yardstick for the device peak bytes."""

    version = "convlstm-bench-spec-activation-1"
    params = [list(WORKLOADS), list(DTYPES)]
    param_names = ["workload", "dtype"]
    rounds = 1

    def setup(self, workload: str, dtype: str) -> None:
        reason = spec_skip_reason(workload=workload, dtype=dtype)
        if reason:
            raise NotImplementedError(reason)

    def track_predicted_activation_bytes(self, workload: str, dtype: str) -> int:
        return predicted_activation_bytes(workload, dtype)

    track_predicted_activation_bytes.unit = "bytes"


class SpecFlops:
    """FLOPs of one step by the spec's convention (``StackSpec.flops``; train = 3x forward), in GFLOP."""

    version = "convlstm-bench-spec-flops-1"
    params = [list(WORKLOADS), list(MODES)]
    param_names = ["workload", "mode"]
    rounds = 1

    def setup(self, workload: str, mode: str) -> None:
        reason = spec_skip_reason(workload=workload, mode=mode)
        if reason:
            raise NotImplementedError(reason)

    def track_spec_gflop(self, workload: str, mode: str) -> float:
        wl = get_workload(workload)
        return wl.spec.flops(wl.input_shape, mode) / 1e9

    track_spec_gflop.unit = "GFLOP"
