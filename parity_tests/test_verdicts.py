"""Verdicts that survive a noisy machine: paired interleaved rounds, intervals, contention, thread settings.

Pure-Python tests of :mod:`benchmarks.paired` and :mod:`benchmarks.contention` with an injected clock and injected
/proc readings, and subprocess tests of :mod:`benchmarks.threads` against each installed framework.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import common, contention, paired, threads

ROOT = Path(__file__).resolve().parent.parent


class FakeMachine:
    """A clock that advances by each step's cost times the machine's current slowness, and /proc readings."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slowness = 1.0
        self.busy_others = 0.0  # cores other processes use while the clock advances
        self.steal = 0.0
        self._busy = self._steal = self._own = 0.0

    def clock(self) -> float:
        return self.now

    def runner(self, cost: float):
        def run() -> None:
            dt = cost * self.slowness
            self.now += dt
            self._own += dt * 100  # clock ticks of this process (one core)
            self._busy += dt * 100 * (1 + self.busy_others)
            self._steal += dt * 100 * 2 * self.steal

        return run

    def sample(self) -> contention.Snapshot:
        return contention.Snapshot(self.now, int(self._busy), int(self._steal), int(self._own), 2)


def test_a_speed_change_halfway_does_not_flip_the_verdict():
    """The machine becomes 1.7x slower halfway through the run. Measured one variant after the other (as one process
    per variant does), the slower variant looks faster; in paired, interleaved rounds the verdict and the ratio
    stay those of the variants themselves."""
    m = FakeMachine()
    ours, peer = m.runner(0.010), m.runner(0.0125)  # ours is 1.25x faster
    rounds = 8

    def switch_halfway(runner, calls=[0]):  # noqa: B006 - a counter shared by both runners
        def run():
            calls[0] += 1
            if m.now >= 0.5 * rounds * 2 * 0.3:
                m.slowness = 1.7
            runner()
        return run

    blocks = paired.interleaved_rounds({"ours": switch_halfway(ours), "peer": switch_halfway(peer)}, rounds, 0.3,
                                       clock=m.clock, sample=m.sample)
    assert m.slowness == 1.7  # the change happened inside the run
    result = paired.compare(blocks, "ours", "peer")
    assert result["verdict"] == paired.FASTER
    assert result["ratio"] == pytest.approx(1.25, rel=0.05)
    assert result["low"] > 1 and result["rounds_dropped"] == 0

    # the same machine change, one variant after the other: the unpaired reading ranks them the wrong way round
    m2 = FakeMachine()
    first = paired.interleaved_rounds({"ours": m2.runner(0.010)}, rounds, 0.3, clock=m2.clock, sample=m2.sample)
    m2.slowness = 1.7
    second = paired.interleaved_rounds({"peer": m2.runner(0.0125)}, rounds, 0.3, clock=m2.clock, sample=m2.sample)
    unpaired = paired.summarize(second["peer"])["step_seconds"] / paired.summarize(first["ours"])["step_seconds"]
    assert unpaired > 2.0  # 2.1x instead of 1.25x: the machine, not the variants


def test_an_interval_containing_one_is_no_clear_difference():
    assert paired.verdict({"ratio": 1.02, "low": 0.97, "high": 1.07, "n": 8}) == paired.NO_CLEAR_DIFFERENCE
    assert paired.verdict({"ratio": 0.99, "low": 0.95, "high": 1.0001, "n": 8}) == paired.NO_CLEAR_DIFFERENCE
    assert paired.verdict({"ratio": 1.2, "low": 1.01, "high": 1.4, "n": 8}) == paired.FASTER
    assert paired.verdict({"ratio": 0.8, "low": 0.7, "high": 0.99, "n": 8}) == paired.SLOWER
    assert paired.verdict({"ratio": 1.5, "low": 1.4, "high": 1.6, "n": 2}) == paired.TOO_FEW_ROUNDS
    assert paired.verdict({"ratio": None, "low": None, "high": None, "n": 0}) == paired.TOO_FEW_ROUNDS
    # noisy rounds around 1: the interval computed from them contains 1
    interval = paired.ratio_interval([0.93, 1.08, 0.97, 1.05, 1.01, 0.96, 1.04, 0.99])
    assert interval["low"] < 1 < interval["high"]
    assert paired.verdict(interval) == paired.NO_CLEAR_DIFFERENCE


def test_ratio_interval_is_the_t_interval_of_the_log_ratios():
    ratios = [1.20, 1.25, 1.22, 1.30, 1.18]
    logs = [math.log(r) for r in ratios]
    mean = sum(logs) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / 4)
    got = paired.ratio_interval(ratios)
    assert got["ratio"] == pytest.approx(math.exp(mean))
    assert got["low"] == pytest.approx(math.exp(mean - 2.776 * sd / math.sqrt(5)))
    assert got["high"] == pytest.approx(math.exp(mean + 2.776 * sd / math.sqrt(5)))
    assert paired.t_quantile_95(1000) == 1.960 and paired.t_quantile_95(27) == 2.060
    with pytest.raises(ValueError, match="degrees of freedom"):
        paired.t_quantile_95(0)


def test_contaminated_rounds_are_flagged_and_dropped():
    """Rounds during which another process kept a core busy (or the hypervisor stole time) are flagged with the
    reason and left out of the ratio; a run where too few rounds are clean gives no verdict."""
    m = FakeMachine()
    calls = {"n": 0}

    def ours():
        calls["n"] += 1
        m.busy_others = 1.0 if 30 <= calls["n"] < 60 else 0.0  # a neighbour for a while
        m.runner(0.010)()

    blocks = paired.interleaved_rounds({"ours": ours, "peer": m.runner(0.0125)}, 6, 0.3, clock=m.clock,
                                       sample=m.sample)
    flagged = [f for v in ("ours", "peer") for f in paired.summarize(blocks[v])["contaminated_rounds"]]
    assert flagged and all("other processes used" in f["reason"] for f in flagged)
    dropped = {f["round"] for f in flagged}
    result = paired.compare(blocks, "ours", "peer")
    assert result["rounds_dropped"] == len(dropped) and result["rounds_used"] == 6 - len(dropped)
    assert result["ratio"] == pytest.approx(1.25, rel=1e-6)

    m.steal = 0.5
    busy = paired.interleaved_rounds({"ours": m.runner(0.01), "peer": m.runner(0.0125)}, 4, 0.3, clock=m.clock,
                                     sample=m.sample)
    assert all("steal" in b["usage"]["reason"] for b in busy["ours"])
    assert paired.compare(busy, "ours", "peer")["verdict"] == paired.TOO_FEW_ROUNDS
    assert paired.summarize(busy["ours"])["busy"] is True


def test_usage_reads_steal_and_other_processes_from_proc():
    start = contention.Snapshot(0.0, busy=1000, steal=10, own=500, cpus=2)
    end = contention.Snapshot(1.0, busy=1150, steal=40, own=590, cpus=2)
    tick = os.sysconf("SC_CLK_TCK")
    got = contention.usage(start, end)
    assert got["others_cores"] == pytest.approx((150 - 90) / tick)
    assert got["steal"] == pytest.approx(30 / tick / 2)
    assert got["own_cores"] == pytest.approx(90 / tick)
    real = contention.usage(contention.snapshot(), contention.snapshot())
    if Path("/proc/stat").exists():
        assert real["others_cores"] is not None and real["steal"] is not None
    off = contention.usage(contention.Snapshot(0, 0, 0, 0, 2, available=False), end)
    assert off["contaminated"] is False and off["steal"] is None


def test_quick_profile_samples_enough_and_leaves_out_the_extra_memory_processes():
    quick = common.PROFILES["quick"]
    assert quick.min_samples >= 5 and quick.rounds >= 6
    assert quick.block_seconds >= contention.MIN_BLOCK_SECONDS
    import re

    regexes = common.asv_regexes(quick)
    combo = "('torch', 'radar', 'train', 'float32')"
    assert any(re.search(r, f"bench_convlstm.TimeStep.time_step{combo}") for r in regexes)
    assert any(re.search(r, f"bench_convlstm.Metrics.track_sequences_per_second{combo}") for r in regexes)
    assert not any(re.search(r, f"bench_convlstm.PeakMemory.peakmem_step{combo}") for r in regexes)
    assert not any(re.search(r, "bench_convlstm.ImportBaseline.peakmem_import('torch')") for r in regexes)
    assert any(re.search(r, f"bench_convlstm.PeakMemory.peakmem_step{combo}")
               for r in common.asv_regexes(common.PROFILES["full"]))


def test_groups_pair_the_variants_of_one_framework():
    quick = common.PROFILES["quick"]
    group = common.group_of(("torch", "radar", "train", "float32"), quick)
    assert [c[0] for c in group] == ["torch", "torch-fused"]
    group = common.group_of(("keras-builtin", "tiny", "forward", "float32"), quick)
    assert [c[0] for c in group] == ["keras-tf-xla", "keras-builtin"]
    group = common.group_of(("keras-jax", "tiny", "forward", "float32"), common.PROFILES["full"])
    assert [c[0] for c in group] == ["keras-jax"]  # another Keras backend is another process


# --- thread settings ---------------------------------------------------------------------------------------------


def test_a_benchmark_refuses_to_run_with_unset_thread_settings(monkeypatch):
    monkeypatch.delenv(threads.APPLIED_ENV, raising=False)
    with pytest.raises(threads.ThreadSettingsError, match="not applied"):
        threads.require_applied()
    profile = common.active_profile({"BENCH_PROFILE": "quick"})
    with pytest.raises(threads.ThreadSettingsError):
        common.prepare_case("torch", "tiny", "forward", "float32", profile=profile, record=False)
    monkeypatch.setenv(threads.APPLIED_ENV, "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    with pytest.raises(threads.ThreadSettingsError, match="changed"):
        threads.require_applied()


def test_compute_threads_override():
    assert threads.compute_threads({"BENCH_THREADS": "1"}) == 1
    assert threads.compute_threads({}) == threads.available_cpus()
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match="BENCH_THREADS"):
            threads.compute_threads({"BENCH_THREADS": bad})


_PROBE = """
import json, sys
import benchmarks  # applies the settings, as in every asv benchmark process
from benchmarks import threads
fw = sys.argv[1]
if fw == "torch":
    import torch
    threads.configure_torch(torch)
elif fw == "tensorflow":
    import tensorflow as tf
    threads.configure_tensorflow(tf)
elif fw == "jax":
    import jax
    jax.numpy.ones(3).block_until_ready()
import numpy
print("THREADS " + json.dumps(threads.settings()))
"""


@pytest.mark.parametrize("framework", ["torch", "tensorflow", "jax"])
@pytest.mark.parametrize("n", [1, None])
def test_the_thread_setting_reaches_each_framework(framework, n):
    """A fresh process that imports the suite gets the same rule in every framework: N compute threads (the
    available CPUs, or $BENCH_THREADS), NumPy's BLAS one thread; recorded as settings() says."""
    pytest.importorskip(framework, reason=f"{framework} is not installed")
    env = {k: v for k, v in os.environ.items() if k not in (threads.APPLIED_ENV, threads.THREADS_ENV)}
    if n is not None:
        env[threads.THREADS_ENV] = str(n)
    done = subprocess.run([sys.executable, "-c", _PROBE, framework], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    line = next((x for x in done.stdout.splitlines() if x.startswith("THREADS ")), None)
    assert line, done.stderr[-2000:]
    got = json.loads(line[len("THREADS "):])
    want = n or threads.available_cpus()
    assert got["compute_threads"] == want
    assert got["env"]["OMP_NUM_THREADS"] == str(want) and got["env"]["OPENBLAS_NUM_THREADS"] == "1"
    seen = got["observed"]
    assert seen["affinity_cpus"] == want
    if framework == "torch":
        assert seen["torch_intra_op"] == want and seen["torch_inter_op"] == want
    if framework == "tensorflow":
        assert seen["tensorflow_intra_op"] == want and seen["tensorflow_inter_op"] == want
    if "blas" in seen:
        assert seen["blas"] and all(b.endswith(": 1") for b in seen["blas"]), seen["blas"]
