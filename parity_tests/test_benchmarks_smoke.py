"""Smoke tests of the asv suite (benchmarks/): discovery, profiles, device choice, skips, one real run per framework.

Nothing here is timed or compared with a timing: the real runs call ``setup`` and the benchmark methods directly,
each framework in its own fresh interpreter (as asv runs them), on the ``tiny`` workload.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import statistics
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import cases, common, grid  # noqa: E402
from benchmarks.adapters import jax as jax_adapter  # noqa: E402
from benchmarks.adapters import keras as keras_adapter  # noqa: E402
from benchmarks.adapters import torch as torch_adapter  # noqa: E402
from implementations import api  # noqa: E402

FRAMEWORK_MODULES = ("torch", "tensorflow", "jax", "keras", "flax", "optax")
EXPECTED_BENCHMARKS = {
    "TimeStep.time_step",
    "Metrics.track_first_call_seconds",
    "Metrics.track_sequences_per_second",
    "Metrics.track_frames_per_second",
    "Metrics.track_achieved_gflops",
    "Metrics.track_peak_matmul_gflops",
    "Metrics.track_peak_conv_gflops",
    "Metrics.track_fraction_of_matmul_peak",
    "Metrics.track_fraction_of_conv_peak",
    "DeviceMemory.track_device_peak_bytes",
    "PageFaults.track_minor_faults_per_step",
    "PeakMemory.peakmem_step",
    "TrainMemory.track_train_rss_increase_bytes",
    "TrainMemory.track_train_rss_warm_step_bytes",
    "TrainMemory.track_train_rss_held_bytes",
    "ImportBaseline.peakmem_import",
    "SpecActivation.track_predicted_activation_bytes",
    "SpecFlops.track_spec_gflop",
}


def _python(code: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_") and k != "KERAS_BACKEND"}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------

DISCOVER = """
    import importlib, inspect, json, pkgutil, re, sys
    BLOCK = {block!r}
    for name in BLOCK:
        sys.modules[name] = None  # any import of it now raises ImportError
    import benchmarks
    found, modules = {{}}, []
    def walk(name):
        module = importlib.import_module(name)
        modules.append(name)
        for _, sub, _ in pkgutil.iter_modules(getattr(module, "__path__", []), name + "."):
            walk(sub)
        for cname, cls in vars(module).items():
            if inspect.isclass(cls) and cls.__module__ == module.__name__:
                for mname in dir(cls):
                    if re.match(r"(time|track|peakmem|mem|timeraw)_", mname):
                        method = getattr(cls, mname)
                        found[cname + "." + mname] = dict(
                            params=getattr(cls, "params", None), names=getattr(cls, "param_names", None),
                            version=getattr(cls, "version", None), unit=getattr(method, "unit", None))
    walk("benchmarks")
    loaded = sorted(m for m in {frameworks!r} if sys.modules.get(m) is not None)
    print(json.dumps(dict(found=found, modules=modules, loaded=loaded)))
"""


@pytest.mark.parametrize("block", [(), FRAMEWORK_MODULES], ids=["installed", "all-frameworks-blocked"])
def test_discovery_imports_no_framework(block):
    """asv imports every module of the suite; none may import a framework (or need one to be importable)."""
    proc = _python(DISCOVER.format(block=block, frameworks=FRAMEWORK_MODULES))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["loaded"] == []
    assert {"benchmarks.common", "benchmarks.bench_convlstm", "benchmarks.run_profile"} <= set(data["modules"])
    found = data["found"]
    assert EXPECTED_BENCHMARKS <= set(found), sorted(EXPECTED_BENCHMARKS - set(found))
    for name, info in found.items():
        assert info["version"], f"{name} has no explicit version"
        if name.split(".")[0] in ("TimeStep", "Metrics", "PageFaults", "DeviceMemory", "PeakMemory"):
            assert info["params"] == common.PARAMS and info["names"] == common.PARAM_NAMES, name
        if ".track_" in name:
            assert info["unit"], f"{name} has no unit"


def test_asv_check_discovers_the_suite():
    """``asv check`` with the existing environment: discovery and benchmark signatures."""
    conf = str(ROOT / "asv.conf.json")
    proc = subprocess.run(
        [sys.executable, "-m", "asv", "check", "--config", conf, "-E", f"existing:{sys.executable}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_asv_conf():
    conf = json.loads((ROOT / "asv.conf.json").read_text())
    assert conf["environment_type"] == "existing" and conf["branches"] == ["main"] and conf["repo"] == "."
    assert conf["benchmark_dir"] == "benchmarks" and conf["launch_method"] == "spawn"
    assert conf["results_dir"] == "reports/asv/results" and conf["html_dir"] == "reports/asv/html"
    venv = json.loads((ROOT / "asv.virtualenv.conf.json").read_text())
    assert venv["environment_type"] == "virtualenv" and len(venv["matrix"]["req"]["torch"]) == 2


# ---------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------


def test_quick_and_full_profiles():
    quick = common.active_profile({"BENCH_PROFILE": "quick"})
    full = common.active_profile({"BENCH_PROFILE": "full"})
    assert common.active_profile({}) == quick
    assert {c[1] for c in quick.combos} == {"tiny", "radar"}
    assert {c[2] for c in quick.combos} == {"forward", "train"}
    assert {c[3] for c in quick.combos} == {"float32"}
    roles = {common.VARIANT_TABLE[c[0]].role for c in quick.combos}
    assert {"ours", "peer"} <= roles
    assert quick.combos <= full.combos
    assert {c[1] for c in full.combos} == set(common.WORKLOADS)
    assert {c[0] for c in full.combos} == set(common.VARIANTS)
    assert ("torch", "moving_mnist", "train", "bfloat16") in full.combos
    assert not any(c[3] != "float32" and common.VARIANT_TABLE[c[0]].role == "peer" for c in full.combos)
    with pytest.raises(ValueError, match="BENCH_PROFILE"):
        common.active_profile({"BENCH_PROFILE": "fast"})


def test_profile_filters_and_skip_reasons():
    env = {"BENCH_PROFILE": "full", "BENCH_WORKLOADS": "moving_mnist", "BENCH_VARIANTS": "torch,jax"}
    narrowed = common.active_profile(env)
    assert narrowed.combos and all(c[1] == "moving_mnist" and c[0] in ("torch", "jax") for c in narrowed.combos)
    with pytest.raises(ValueError, match="BENCH_VARIANTS"):
        common.active_profile({"BENCH_VARIANTS": "torch,tensorflow"})
    borrowed = common.active_profile({"BENCH_PROFILE": "full", "BENCH_TIMING": "quick"})
    assert borrowed.combos == common.PROFILES["full"].combos
    quick_ = common.PROFILES["quick"]
    assert (borrowed.min_samples, borrowed.max_time) == (quick_.min_samples, quick_.max_time)
    quick = common.active_profile({"BENCH_PROFILE": "quick"})
    assert "not in the 'quick' profile" in common.skip_reason(("torch", "moving_mnist", "train", "float32"), quick)
    assert "float32 only" in common.skip_reason(("torch-fused", "tiny", "forward", "bfloat16"), quick)
    assert common.skip_reason(("torch", "tiny", "forward", "float32"), quick) is None
    # The benchmarks' setup turns a reason into NotImplementedError, before importing anything.
    with pytest.raises(NotImplementedError, match="profile"):
        common.prepare_case("torch", "moving_mnist", "train", "float32", profile=quick)


def _asv_name(bench: str, params: tuple[str, ...]) -> str:
    """The name asv matches ``--bench`` against for one parameter combination (asv.benchmarks.Benchmarks)."""
    return f"{bench}({', '.join(repr(p) for p in params)})"


@pytest.mark.parametrize("name", ["quick", "full"])
def test_asv_regexes_select_exactly_the_profile(name):
    profile = common.active_profile({"BENCH_PROFILE": name})
    regexes = common.asv_regexes(profile)

    def selected(full_name: str) -> bool:
        return any(re.search(r, full_name) for r in regexes)

    for combo in itertools.product(*common.PARAMS):
        for bench in ("bench_convlstm.TimeStep.time_step", "bench_convlstm.Metrics.track_frames_per_second",
                      "bench_convlstm.TrainMemory.track_train_rss_increase_bytes"):
            assert selected(_asv_name(bench, combo)) == (combo in profile.combos), combo
    variants = {c[0] for c in profile.combos}
    baseline = "ImportBaseline" not in profile.skip_benchmarks
    for v in common.VARIANTS:
        assert selected(_asv_name("bench_convlstm.ImportBaseline.peakmem_import", (v,))) == (baseline and v in variants)
    for combo in sorted(profile.combos)[:3]:
        assert selected(_asv_name("bench_convlstm.PeakMemory.peakmem_step", combo)) == (
            "PeakMemory" not in profile.skip_benchmarks)
    pairs = {(c[1], c[3]) for c in profile.combos}
    for w, d in itertools.product(common.WORKLOADS, common.DTYPES):
        name_ = _asv_name("bench_convlstm.SpecActivation.track_predicted_activation_bytes", (w, d))
        assert selected(name_) == ((w, d) in pairs)
    only = common.asv_regexes(profile, "TimeStep")
    combo = sorted(profile.combos)[0]
    assert any(re.search(r, _asv_name("bench_convlstm.TimeStep.time_step", combo)) for r in only)
    assert not any(re.search(r, _asv_name("bench_convlstm.Metrics.track_frames_per_second", combo)) for r in only)
    assert not any(re.search(r, _asv_name("bench_convlstm.ImportBaseline.peakmem_import", combo[:1])) for r in only)


# ---------------------------------------------------------------------------------------------
# Device selection, with fake frameworks (no GPU here)
# ---------------------------------------------------------------------------------------------


def test_choose_device():
    """One device choice for the implementations and the benchmarks (``implementations.api.choose_device``): the first
    GPU the framework offers wherever it lists it, else the CPU; ``cpu``/``gpu``/``gpu:N`` (``cuda`` too) forced;
    one device-name format (``cpu``, ``gpu:N``) whatever the framework calls it."""
    cpu = api.DeviceCandidate("cpu", 0, "Some CPU")
    gpu0 = api.DeviceCandidate("gpu", 0, "Fake H100")
    gpu1 = api.DeviceCandidate("gpu", 1, "Fake H100")
    assert api.choose_device([cpu]) is cpu
    assert api.choose_device([gpu0, gpu1, cpu]) is gpu0
    assert api.choose_device([cpu, gpu1]) is gpu1  # a GPU wins wherever the framework lists it
    assert api.choose_device([gpu0, cpu], "cpu") is cpu
    assert api.choose_device([gpu0, cpu], "GPU") is gpu0
    assert api.choose_device([gpu0, gpu1, cpu], "cuda:1") is gpu1
    assert (cpu.id, gpu1.id) == ("cpu", "gpu:1")
    with pytest.raises(NotImplementedError, match="no GPU"):
        api.choose_device([cpu], "gpu")
    with pytest.raises(NotImplementedError, match="gpu:3"):
        api.choose_device([gpu0, cpu], "gpu:3")
    with pytest.raises(ValueError, match="expected 'cpu', 'gpu' or 'gpu:N'"):
        api.choose_device([cpu], "tpu7")


def _fake_torch(n_gpus: int) -> types.SimpleNamespace:
    cuda = types.SimpleNamespace(
        is_available=lambda: n_gpus > 0, device_count=lambda: n_gpus, get_device_name=lambda i: f"Fake GPU {i}"
    )
    def device(kind: str, index: int | None = None) -> str:
        return kind if index is None else f"{kind}:{index}"

    return types.SimpleNamespace(cuda=cuda, device=device)


class _FakeJaxDevice:
    def __init__(self, platform: str, id: int, kind: str) -> None:
        self.platform, self.id, self.device_kind = platform, id, kind


def _fake_jax(gpus: int) -> types.SimpleNamespace:
    cpu = [_FakeJaxDevice("cpu", 0, "cpu")]
    accel = [_FakeJaxDevice("gpu", i, "Fake H100") for i in range(gpus)]

    def devices(backend=None):
        return cpu if backend == "cpu" else (accel or cpu)

    return types.SimpleNamespace(devices=devices)


def _fake_tf(gpus: int) -> types.SimpleNamespace:
    physical = [f"/physical_device:GPU:{i}" for i in range(gpus)]
    experimental = types.SimpleNamespace(get_device_details=lambda d: {"device_name": "Fake A100"})
    config = types.SimpleNamespace(
        list_physical_devices=lambda kind: physical if kind == "GPU" else [],
        list_logical_devices=lambda kind: [f"/device:GPU:{i}" for i in range(gpus)] if kind == "GPU" else [],
        experimental=experimental,
    )
    return types.SimpleNamespace(config=config)


@pytest.mark.parametrize("gpus", [0, 2])
def test_adapters_pick_the_gpu_when_present(gpus):
    picks = {
        "torch": api.choose_device(torch_adapter.device_candidates(_fake_torch(gpus))),
        "jax": api.choose_device(jax_adapter.device_candidates(_fake_jax(gpus))),
        "keras-tf": api.choose_device(keras_adapter.device_candidates("tensorflow", _fake_tf(gpus))),
        "keras-jax": api.choose_device(keras_adapter.device_candidates("jax", _fake_jax(gpus))),
        "keras-torch": api.choose_device(keras_adapter.device_candidates("torch", _fake_torch(gpus))),
    }
    name = {"torch": "Fake GPU 0", "jax": "Fake H100", "keras-tf": "Fake A100", "keras-jax": "Fake H100",
            "keras-torch": "Fake GPU 0"}
    for key, choice in picks.items():
        # one name format for every framework: gpu:N or cpu
        assert (choice.id, choice.name) == (("gpu:0", name[key]) if gpus else ("cpu", api.cpu_name())), key
        assert choice.kind == ("gpu" if gpus else "cpu")
    # the handle is what the framework itself takes; not "cpu:0" for Keras on torch (non-leaf variables)
    assert picks["keras-torch"].handle == ("cuda:0" if gpus else "cpu")


@pytest.mark.parametrize("gpus", [0, 1])
def test_torch_gpu_settings_are_benchmark_only(gpus, monkeypatch):
    """On a CUDA device the benchmarks autotune cuDNN and compile with CUDA graphs; on the CPU neither. The
    implementation module itself never touches these switches (the parity tests run with PyTorch's defaults)."""
    monkeypatch.delenv("BENCH_DEVICE", raising=False)
    fake = _fake_torch(gpus)
    fake.backends = types.SimpleNamespace(
        cudnn=types.SimpleNamespace(benchmark=False, allow_tf32=True),
        cuda=types.SimpleNamespace(matmul=types.SimpleNamespace(allow_tf32=True)),
    )
    choice = torch_adapter.choose(fake)
    assert choice.kind == ("gpu" if gpus else "cpu")
    assert fake.backends.cudnn.benchmark is bool(gpus)
    # full fp32 comes from the implementation's precision() context around each call, not process-wide flags
    assert fake.backends.cudnn.allow_tf32 is True and fake.backends.cuda.matmul.allow_tf32 is True
    assert torch_adapter.compile_mode("cuda") == "reduce-overhead"
    assert torch_adapter.compile_mode("cpu") is None
    source = "".join(p.read_text() for p in (ROOT / "implementations" / "torch_impl").glob("*.py"))
    assert "cudnn.benchmark" not in source and "reduce-overhead" not in source


def test_keras_refuses_a_process_running_another_backend(monkeypatch):
    fake = types.SimpleNamespace(backend=types.SimpleNamespace(backend=lambda: "jax"))
    monkeypatch.setitem(sys.modules, "keras", fake)
    assert keras_adapter.import_keras("jax") is fake
    with pytest.raises(RuntimeError, match="fresh process|own process"):
        keras_adapter.import_keras("tensorflow")


# ---------------------------------------------------------------------------------------------
# Missing frameworks -> NotImplementedError (asv: skipped), the rest of the suite unaffected
# ---------------------------------------------------------------------------------------------

MISSING = """
    import json, sys
    sys.modules["torch"] = None          # torch "not installed" (find_spec and import both fail)
    from benchmarks import bench_convlstm as b
    out = {{}}
    for cls, args in [(b.TimeStep, ("torch", "tiny", "forward", "float32")),
                      (b.PeakMemory, ("torch-fused", "tiny", "train", "float32")),
                      (b.ImportBaseline, ("torch",))]:
        try:
            cls().setup(*args)
            out[cls.__name__] = "ran"
        except NotImplementedError as exc:
            out[cls.__name__] = str(exc)
    try:
        b.Metrics().setup({run_dir!r}, "torch", "tiny", "train", "float32")
    except NotImplementedError as exc:
        out["Metrics"] = str(exc)
    out["loaded"] = sorted(m for m in ("tensorflow", "jax", "keras") if m in sys.modules)
    print(json.dumps(out))
"""


def test_missing_framework_skips(tmp_path):
    proc = _python(MISSING.format(run_dir=str(tmp_path)), {"BENCH_PROFILE": "full", "BENCH_TIMING": "quick"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("TimeStep", "PeakMemory", "ImportBaseline", "Metrics"):
        assert "not installed" in out[name], (name, out[name])
    assert out["loaded"] == []


def test_import_failure_at_build_is_a_skip(monkeypatch):
    """A framework that is installed but fails to import also skips (not an error)."""

    class Broken:
        @staticmethod
        def build(*args, **kwargs):
            raise ImportError("libcudart.so.12: cannot open shared object file")

    monkeypatch.setattr(cases, "get_adapter", lambda variant: Broken)
    quick = common.active_profile({"BENCH_PROFILE": "quick"})
    with pytest.raises(NotImplementedError, match="import failed"):
        common.prepare_case("torch", "tiny", "forward", "float32", profile=quick, record=False)


# ---------------------------------------------------------------------------------------------
# One real run per framework, ours and its peer, on tiny (fresh interpreter each, like asv)
# ---------------------------------------------------------------------------------------------

REAL_RUN = """
    import json, math, os, sys
    from benchmarks import bench_convlstm as b, common
    ours, peer, run_dir = {ours!r}, {peer!r}, {run_dir!r}
    out = {{}}
    for variant in (ours, peer):
        for mode in ("forward", "train"):
            combo = (variant, "tiny", mode, "float32")
            t = b.TimeStep(); t.setup(*combo); t.setup(*combo)   # asv re-runs setup before each sample
            t.time_step(*combo); t.teardown(*combo)
            out["/".join(combo)] = dict(verify=t.case.verify, first=t.case.first_call_seconds)
    combo = (ours, "tiny", "train", "float32")
    m = b.Metrics(); m.setup(run_dir, *combo)
    tracks = {{name: getattr(m, name)(run_dir, *combo) for name in dir(m) if name.startswith("track_")}}
    f = b.PageFaults(); f.setup(run_dir, *combo)
    faults = f.track_minor_faults_per_step(run_dir, *combo)
    d = b.DeviceMemory()
    try:
        d.setup(run_dir, *combo); device_bytes = d.track_device_peak_bytes(run_dir, *combo)
    except NotImplementedError as exc:
        device_bytes = "skip: " + str(exc)
    p = b.PeakMemory(); p.setup(peer, "tiny", "train", "float32"); p.peakmem_step(peer, "tiny", "train", "float32")
    i = b.ImportBaseline(); i.setup(ours); i.peakmem_import(ours)
    env = json.load(open(os.environ["BENCH_ENV_FILE"]))
    print(json.dumps(dict(cases=out, tracks=tracks, faults=faults, device_bytes=device_bytes,
                          stored=json.load(open(common.metrics_path(run_dir, combo)))["ok"]["minor_faults_per_step"],
                          paired=json.load(open(common.metrics_path(run_dir, combo)))["ok"]["paired"],
                          peer_stored=os.path.exists(common.metrics_path(run_dir, (peer, *combo[1:]))),
                          comparisons=env.get("comparisons", {{}}),
                          env_cases=sorted(env["cases"]), timestep_usage=env["cases"]["/".join(combo)].get(
                              "timestep_usage"),
                          env_variant=env["variants"][ours])))
"""

FAMILIES = [("torch", "torch-fused", "torch"), ("keras-tf-xla", "keras-builtin", "keras"), ("jax", "flax-linen", "jax")]


@pytest.mark.parametrize(("ours", "peer", "framework"), FAMILIES, ids=[f[2] for f in FAMILIES])
def test_real_run_on_tiny(tmp_path, ours, peer, framework):
    missing = common.missing_packages(ours) + common.missing_packages(peer)
    if missing:
        pytest.skip(f"{framework}: {missing} not installed")
    env_file = tmp_path / "environment.json"
    # the full profile narrowed to the pair (the quick profile leaves out PeakMemory and ImportBaseline)
    env = {"BENCH_PROFILE": "full", "BENCH_TIMING": "quick", "BENCH_WORKLOADS": "tiny", "BENCH_DTYPES": "float32",
           "BENCH_VARIANTS": f"{ours},{peer}", "BENCH_ENV_FILE": str(env_file), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = _python(REAL_RUN.format(ours=ours, peer=peer, run_dir=str(tmp_path)), env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(data["cases"]) == 4
    for key, case in data["cases"].items():
        assert case["verify"]["max_abs_err"] <= case["verify"]["atol"], key
        assert case["first"] > 0
        if key.endswith("/train/float32"):
            assert case["verify"]["loss_rel_err"] <= common.LOSS_RTOL["float32"]
            assert case["verify"]["loss_after_warmup"] <= case["verify"]["loss"] * (1 + common.LOSS_RTOL["float32"])
    tracks = data["tracks"]
    assert set(tracks) == {n.split(".")[1] for n in EXPECTED_BENCHMARKS if n.startswith("Metrics.")}
    assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in tracks.values()), tracks
    wl = common.get_workload("tiny")
    assert tracks["track_frames_per_second"] == pytest.approx(tracks["track_sequences_per_second"] * wl.steps)
    assert tracks["track_fraction_of_conv_peak"] == pytest.approx(
        tracks["track_achieved_gflops"] / tracks["track_peak_conv_gflops"]
    )
    assert str(data["device_bytes"]).startswith("skip:") or data["device_bytes"] > 0
    # Linux counts minor faults: a non-negative per-step figure, the one the Metrics process stored.
    assert isinstance(data["faults"], float) and data["faults"] >= 0 and data["faults"] == data["stored"]
    assert f"{ours}/tiny/forward/float32" in data["env_cases"] and f"{peer}/tiny/train/float32" in data["env_cases"]
    assert data["env_variant"]["device"] and data["env_variant"]["versions"]
    assert data["env_variant"]["threads"]["compute_threads"] >= 1
    # the Metrics process measured ours and the peer in paired rounds and stored both
    p = data["paired"]
    assert p["group"] == sorted([ours, peer]) and data["peer_stored"]
    assert len(p["round_seconds"]) == common.PROFILES["quick"].rounds
    vs = p["vs_best_peer"]
    assert vs["peer"] == peer and vs["verdict"] in ("faster", "slower", "no clear difference", "too few clean rounds")
    assert vs["rounds_used"] + vs["rounds_dropped"] == common.PROFILES["quick"].rounds
    (entry,) = [e for e in data["comparisons"].values() if e["mode"] == "train"]
    assert sorted(entry["variants"]) == sorted([ours, peer]) and entry["ours"][ours]["vs_best_peer"] == vs
    assert data["timestep_usage"]["samples"] == 2 and "contaminated" in data["timestep_usage"]



def test_live_memory_tool_on_tiny(tmp_path):
    """``python -m benchmarks.live_memory``: a figure per torch/JAX variant that holds at least half the spec's
    activations (a step keeps them for its backward pass), Keras an n/a with the reason, the JSON written."""
    variants = ["torch", "jax", "flax-linen", "keras-tf"]
    out = tmp_path / "live.json"
    code = f"from benchmarks import live_memory; live_memory.main(['--workload', 'tiny', '--variants', "\
           f"{','.join(variants)!r}, '--json', {str(out)!r}])"
    proc = _python(code, {"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert sorted(results) == sorted(variants)
    spec = common.predicted_activation_bytes("tiny", "float32")
    for v, r in results.items():
        missing = common.missing_packages(v)
        if missing or v == "keras-tf":
            assert r["skip"], r
            continue
        assert r["spec_bytes"] == spec
        assert 0.5 * spec <= r["live_bytes"] <= 20 * spec, r
        assert r["ratio"] == pytest.approx(r["live_bytes"] / spec)
        assert r["method"], r


def test_train_rss_tool_on_tiny(tmp_path):
    """``python -m benchmarks.train_rss``: one fresh process per variant; RSS marks in order, the increase is the
    peak over the build, a verified model, the JSON written; a variant without its framework is a skip."""
    variants = ["torch", "jax"]
    out = tmp_path / "rss.json"
    code = f"from benchmarks import train_rss; train_rss.main(['--workload', 'tiny', '--variants', "\
           f"{','.join(variants)!r}, '--json', {str(out)!r}])"
    proc = _python(code, {"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-4000:]
    data = json.loads(out.read_text())
    assert data["spec_bytes"] == common.predicted_activation_bytes("tiny", "float32")
    results = {r["variant"]: r for r in data["results"]}
    assert sorted(results) == sorted(variants)
    for v, r in results.items():
        if common.missing_packages(v):
            assert r["skip"], r
            continue
        assert "error" not in r and "skip" not in r, r
        assert r["import"] > 0 and r["build"] >= r["import"] * 0.9, r
        assert r["peak"] >= r["build"] and r["increase"] == r["peak"] - r["build"], r
        assert r["verify"]["max_abs_err"] <= r["verify"]["atol"], r
        if sys.platform.startswith("linux"):
            assert r["hwm_reset"] and r["warm_step"] >= 0 and r["warm_step_over_build"] is not None, r
        if r["held_after_trim"] is not None:  # glibc
            assert r["held_after_trim"] <= r["warm_step_over_build"], r


TRAIN_MEMORY_RUN = """
    import json
    from benchmarks import bench_convlstm as b
    run_dir = {run_dir!r}
    out = {{}}
    for combo in (("torch", "tiny", "forward", "float32"), ("torch", "tiny", "train", "float32"),
                  ("torch", "moving_mnist", "train", "float32")):
        m = b.TrainMemory()
        try:
            m.setup(run_dir, *combo)
        except NotImplementedError as exc:
            out["/".join(combo)] = "skip: " + str(exc)
            continue
        out["/".join(combo)] = {{n: getattr(m, n)(run_dir, *combo) for n in dir(m) if n.startswith("track_")}}
    print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the RSS marks are read from Linux /proc")
def test_train_memory_benchmark_on_tiny(tmp_path):
    """asv's ``TrainMemory``: mode forward and combinations outside the profile are skips; a train combination is
    measured in a fresh child process (one per combination, the result stored for the other tracks of the run),
    and each track is the figure of benchmarks.train_rss, in bytes."""
    if common.missing_packages("torch"):
        pytest.skip("torch not installed")
    proc = _python(TRAIN_MEMORY_RUN.format(run_dir=str(tmp_path)), {"BENCH_PROFILE": "quick"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch/tiny/forward/float32"] == "skip: training memory is measured in mode 'train' only"
    assert out["torch/moving_mnist/train/float32"].startswith("skip: not in the 'quick' profile")
    tracks = out["torch/tiny/train/float32"]
    assert set(tracks) == {n.split(".")[1] for n in EXPECTED_BENCHMARKS if n.startswith("TrainMemory.")}
    stored = json.loads(common.metrics_path(tmp_path, ("torch", "tiny", "train", "float32"), "train_rss").read_text())
    r = stored["ok"]
    assert tracks["track_train_rss_increase_bytes"] == r["increase"] == r["peak"] - r["build"] > 0
    assert tracks["track_train_rss_warm_step_bytes"] == r["warm_step_over_build"]
    assert tracks["track_train_rss_held_bytes"] == r["held_after_trim"] <= r["warm_step_over_build"]
    assert r["verify"]["max_abs_err"] <= r["verify"]["atol"]


def test_train_memory_benchmark_reports_a_failed_child(tmp_path, monkeypatch):
    """A child that fails is an error naming the failure (stored, so the other tracks do not start it again)."""
    from benchmarks import bench_convlstm, train_rss

    calls = []

    def failing(variant, workload, dtype="float32", timeout=0.0, profile=None):
        calls.append(variant)
        return {"variant": variant, "error": "exit status 1: VerificationError: outputs differ"}

    monkeypatch.setattr(train_rss, "measure", failing)
    monkeypatch.setattr(grid, "missing_packages", lambda variant: [])
    for _ in range(2):
        with pytest.raises(RuntimeError, match="VerificationError: outputs differ"):
            bench_convlstm.TrainMemory().setup(str(tmp_path), "torch", "tiny", "train", "float32")
    assert calls == ["torch"]


def test_run_profile_summary_lists_the_training_memory():
    """``make bench``'s closing text table: one row per timed combination, the TrainMemory increase in MiB for
    training rows and n/a for forward ones (TrainMemory skips them)."""
    from benchmarks import run_profile

    key_f, key_t = ("torch", "radar", "forward", "float32"), ("torch", "radar", "train", "float32")
    results = {
        "bench_convlstm.TimeStep.time_step": {key_f: 0.1, key_t: 0.3},
        "bench_convlstm.TrainMemory.track_train_rss_increase_bytes": {key_f: math.nan, key_t: 252 * 2**20},
        "bench_convlstm.PageFaults.track_minor_faults_per_step": {key_f: 0.0, key_t: 3642.9},
    }
    lines = run_profile.summary_table(results).splitlines()
    head = [c.strip() for c in lines[0].split("|")]
    col = head.index("train RSS increase MiB")
    rows = {tuple(c.strip() for c in line.split("|"))[1]: [c.strip() for c in line.split("|")]
            for line in lines[2:4]}
    assert rows["train"][col] == "252" and rows["forward"][col] == "n/a"
    assert rows["train"][head.index("ms/step")] == "300.00"
    faults = head.index("page faults/step")
    assert rows["train"][faults] == "3643" and rows["forward"][faults] == "0"


def test_page_faults_benchmark_skips_without_a_count(tmp_path):
    """Metrics stored without a page-fault count (no getrusage, or an older run) make PageFaults a skip, not a
    failure; with one it reports the stored figure."""
    from benchmarks import bench_convlstm as b

    combo = ("torch", "tiny", "train", "float32")
    base = {"combo": list(combo), "step_seconds": 0.003}
    for stored, expected in ((None, None), (12.5, 12.5)):
        common.write_json_atomic(common.metrics_path(tmp_path, combo), {"ok": base | {"minor_faults_per_step": stored}})
        bench = b.PageFaults()
        if expected is None:
            with pytest.raises(NotImplementedError, match="page-fault count"):
                bench.setup(str(tmp_path), *combo)
        else:
            bench.setup(str(tmp_path), *combo)
            assert bench.track_minor_faults_per_step(str(tmp_path), *combo) == expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM / clear_refs are Linux /proc features")
def test_train_rss_high_water_mark_reset():
    """The warm-step figure relies on resetting VmHWM: a freed 200 MiB array must stop counting after a reset."""
    from benchmarks import train_rss

    code = """
        import numpy as np
        from benchmarks import train_rss as t
        a = np.ones(200 * 2**20 // 8); del a
        before = t.read_status_bytes("VmHWM") - t.read_status_bytes("VmRSS")
        ok = t.reset_high_water_mark()
        after = t.read_status_bytes("VmHWM") - t.read_status_bytes("VmRSS")
        print(before, ok, after)
    """
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, ok, after = proc.stdout.split()
    assert int(before) >= 150 * 2**20, proc.stdout
    if ok == "True":
        assert int(after) < 20 * 2**20, proc.stdout
    else:
        pytest.skip("/proc/self/clear_refs is not writable here")
    assert train_rss.read_status_bytes("NoSuchField") is None


def test_ab_in_process_on_tiny(tmp_path):
    """``python -m benchmarks.ab --in-process``: every variant built and verified in one process, timed in
    interleaved rounds; per-round medians, the paired ratio to the first variant, the JSON written."""
    variants = ["torch", "torch-fused"]
    if common.missing_packages("torch"):
        pytest.skip("torch is not installed")
    out = tmp_path / "ab.json"
    code = f"from benchmarks import ab; ab.main(['--workload', 'tiny', '--mode', 'train', '--variants', "\
           f"{','.join(variants)!r}, '--in-process', '--rounds', '3', '--steps', '2', '--json', {str(out)!r}])"
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-4000:]
    assert "torch time / this [95% CI]" in proc.stdout, proc.stdout
    data = json.loads(out.read_text())
    assert data["in_process"] and (data["rounds"], data["steps"]) == (3, 2), data
    results = data["results"]
    assert list(results) == variants
    first = results["torch"]["round_seconds"]
    for r in results.values():
        assert len(r["step_samples"]) == 3 and all(len(s) == 2 and min(s) > 0 for s in r["step_samples"]), r
        assert r["round_seconds"] == [statistics.median(s) for s in r["step_samples"]], r
        vs = r["vs_first"]
        dropped = {x["round"] for v in (r, results["torch"]) for x in v["contaminated_rounds"]}
        ratios = [f / m for i, (m, f) in enumerate(zip(r["round_seconds"], first)) if i not in dropped]
        assert vs["round_ratios"] == pytest.approx(ratios) and vs["rounds_used"] == len(ratios), r
        if len(ratios) >= 2:
            assert vs["ratio"] == pytest.approx(statistics.geometric_mean(ratios)), r
        assert r["fraction_of_conv_peak"] > 0 and r["verify"]["max_abs_err"] <= r["verify"]["atol"], r
    assert all(x == pytest.approx(1.0) for x in results["torch"]["vs_first"]["round_ratios"])


@pytest.mark.parametrize("variants", [["torch", "jax"], ["keras-tf", "keras-jax"], ["keras-tf", "torch-fused"]])
def test_ab_in_process_refuses_mixed_frameworks(variants, capsys):
    """Variants of different frameworks (or Keras backends) would share one process's cores and thread pools:
    refused before anything is built, naming what was found."""
    from benchmarks import ab

    with pytest.raises(ValueError, match="one framework") as info:
        ab.compare_in_process(variants, "tiny", "train", "float32", rounds=1, steps=1)
    for v in variants:
        assert v in str(info.value)
    with pytest.raises(SystemExit) as exit_info:
        ab.main(["--workload", "tiny", "--variants", ",".join(variants), "--in-process"])
    assert exit_info.value.code == 2 and "one framework" in capsys.readouterr().err


def test_ab_in_process_rejects_empty_rounds_and_repeated_variants():
    from benchmarks import ab

    with pytest.raises(ValueError, match="rounds and steps"):
        ab.compare_in_process(["torch", "torch-fused"], "tiny", "train", "float32", rounds=0, steps=1)
    with pytest.raises(ValueError, match="distinct variants"):
        ab.compare_in_process(["jax", "jax"], "tiny", "train", "float32", rounds=1, steps=1)
