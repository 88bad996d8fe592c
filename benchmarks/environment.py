"""The side file ``reports/asv/environment.json`` (``$BENCH_ENV_FILE`` overrides the path): what ran where.

Written atomically (temporary file + rename, under a lock) by every benchmark process that prepared a case
(:func:`record_case`), measured a family in paired rounds (:func:`record_comparison`) or sampled ``TimeStep``
(:func:`record_timestep_usage`), and by :mod:`benchmarks.run_profile` (the ``run`` section). A file of another
schema or version is started afresh. Schema (version 1)::

    {
      "schema": "convlstm-bench/asv-environment", "schema_version": 1,
      "updated_at": "<ISO 8601 UTC>",
      "host": {"hostname", "platform", "python", "cpu", "cpu_count", "memory_bytes"},
      "run": {"profile", "commit", "machine", "started_at", "finished_at", "wall_seconds",
              "asv_command", "returncode"},                      # written by run_profile only
      "variants": {"<variant>": {"framework", "role", "description", "versions": {package: version},
                                 "device", "device_kind", "device_name", "options": {...},
                                 "threads", "updated_at"}},
      "cases": {"<variant>/<workload>/<mode>/<dtype>": {
                 "variant", "workload", "mode", "dtype", "device", "device_name",
                 "input_shape", "verify": {"max_abs_err", "atol", "batch", "steps",
                                           "loss", "loss_expected", "loss_rel_err"},
                 "first_call_seconds", "timestep_usage", "updated_at"}},
      "comparisons": {"<variant>+<variant>.../<workload>/<mode>/<dtype>": {
                 "workload", "mode", "dtype", "rounds", "block_seconds", "thresholds",
                 "variants", "best_peer", "ours", "threads", "updated_at"}}
    }

``device`` is the framework's id (``cpu``, ``cuda:0``, ``gpu:0``); ``device_kind`` ``cpu`` or ``gpu``;
``device_name`` a human name (CPU model from /proc/cpuinfo, or the GPU's name).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import socket
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from implementations.api import cpu_name
from implementations.fileio import write_json_atomic

from . import contention, threads
from .grid import VARIANT_TABLE, Combo, Profile

if TYPE_CHECKING:
    from .cases import Case

ENV_SCHEMA = "convlstm-bench/asv-environment"
ENV_SCHEMA_VERSION = 1


def repo_root() -> Path:
    """The directory of asv.conf.json: ``$ASV_CONF_DIR`` under asv, else the parent of this package."""
    conf_dir = os.environ.get("ASV_CONF_DIR")
    if conf_dir and (Path(conf_dir) / "asv.conf.json").is_file():
        return Path(conf_dir)
    return Path(__file__).resolve().parent.parent


def environment_file() -> Path:
    override = os.environ.get("BENCH_ENV_FILE")
    return Path(override) if override else repo_root() / "reports" / "asv" / "environment.json"


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def host_info() -> dict[str, Any]:
    memory = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": memory,
    }


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not POSIX
            pass
        yield


def update_environment_file(update: Callable[[dict[str, Any]], None], path: Path | None = None) -> Path:
    """Read-modify-write the environment file under a lock, atomically replaced."""
    path = environment_file() if path is None else path
    with _locked(path):
        data: dict[str, Any] = {}
        if path.is_file():
            with contextlib.suppress(ValueError, OSError):
                data = json.loads(path.read_text())
        if data.get("schema") != ENV_SCHEMA or data.get("schema_version") != ENV_SCHEMA_VERSION:
            data = {}
        data.setdefault("schema", ENV_SCHEMA)
        data.setdefault("schema_version", ENV_SCHEMA_VERSION)
        data.setdefault("variants", {})
        data.setdefault("cases", {})
        data["host"] = host_info()
        update(data)
        data["updated_at"] = utc_now()
        return write_json_atomic(path, data)


def comparison_key(variants: Sequence[str], combo: Combo) -> str:
    """``<variant>+<variant>.../<workload>/<mode>/<dtype>``: the key of a group's paired comparison in the
    environment file."""
    return "/".join(("+".join(variants), *combo[1:]))


def record_comparison(
    combo: Combo,
    summaries: Mapping[str, dict[str, Any]],
    comparisons: Mapping[str, dict[str, Any]],
    best_peer: str | None,
    profile: Profile,
    path: Path | None = None,
) -> Path:
    """Store a family's paired rounds (per variant) and verdicts (per one of ours) in the environment file."""
    now = utc_now()

    def update(data: dict[str, Any]) -> None:
        data.setdefault("comparisons", {})[comparison_key(list(summaries), combo)] = {
            "workload": combo[1], "mode": combo[2], "dtype": combo[3],
            "rounds": profile.rounds, "block_seconds": profile.block_seconds,
            "thresholds": {"max_steal": contention.MAX_STEAL, "max_others_cores": contention.MAX_OTHERS_CORES},
            "variants": dict(summaries), "best_peer": best_peer, "ours": dict(comparisons),
            "threads": threads.settings(), "updated_at": now,
        }

    return update_environment_file(update, path)


def record_timestep_usage(combo: Combo, usage: dict[str, Any], samples: int, path: Path | None = None) -> Path:
    """Store how busy the machine was during asv's TimeStep sampling of ``combo`` (one reading for the whole
    sampling: single steps are shorter than the clock tick of /proc)."""

    def update(data: dict[str, Any]) -> None:
        case = data["cases"].setdefault("/".join(combo), {})
        case["timestep_usage"] = {**usage, "samples": samples, "updated_at": utc_now()}

    return update_environment_file(update, path)


def record_case(case: Case, path: Path | None = None) -> Path:
    """Store the variant's versions/device/options and the case's verification in the environment file."""
    model = case.model
    variant = VARIANT_TABLE[case.variant]
    now = utc_now()

    def update(data: dict[str, Any]) -> None:
        data["variants"][case.variant] = {
            "framework": model.framework,
            "role": variant.role,
            "description": variant.description,
            "versions": model.versions(),
            "device": model.device,
            "device_kind": model.device_kind,
            "device_name": model.device_name,
            "options": model.options(),
            "threads": threads.settings(),
            "updated_at": now,
        }
        kept = {k: v for k, v in data["cases"].get("/".join(case.combo), {}).items() if k == "timestep_usage"}
        data["cases"]["/".join(case.combo)] = kept | {
            "variant": case.combo[0],
            "workload": case.combo[1],
            "mode": case.combo[2],
            "dtype": case.combo[3],
            "device": model.device,
            "device_name": model.device_name,
            "input_shape": list(case.workload.input_shape),
            "verify": case.verify,
            "first_call_seconds": case.first_call_seconds,
            "updated_at": now,
        }

    return update_environment_file(update, path)
