"""Compatibility surface of the asv suite: every name the adapters, tools and tests use as ``common.X``,
re-exported from the module that holds it. New code imports from those modules directly:

- :mod:`benchmarks.grid`: the variant table (:class:`Variant`, ``VARIANT_TABLE``), the parameters (``VARIANTS``,
  ``WORKLOADS``, ``MODES``, ``DTYPES``, ``PARAMS``, ``PARAM_NAMES``, ``Combo``, ``LEARNING_RATE``), families and
  groups (:func:`family`, :func:`group_of`), the profiles (:class:`Profile`, ``PROFILES``,
  :func:`active_profile`), skip reasons, :func:`missing_packages`, :func:`asv_regexes`, :func:`variant_list`,
  :func:`combo_label`, :func:`predicted_activation_bytes`;
- :mod:`benchmarks.model`: the adapters' :class:`Model` surface, :func:`get_adapter`, and the peak probes
  (:func:`matmul_size`, :class:`ConvProbe`, :func:`conv_probe`, :func:`best_rate`);
- :mod:`benchmarks.cases`: building, first-calling, verifying and warming up a combination (:class:`Case`,
  :func:`prepare_case`, :func:`get_case`, :func:`verify_case`, :class:`VerificationError`, the tolerances);
- :mod:`benchmarks.measure`: sampling, paired group measurement, page faults and the per-run metrics cache
  (:func:`measure_case`, :func:`measure_group`, :func:`cached_metrics`, :func:`metrics_path`);
- :mod:`benchmarks.environment`: the environment file ``reports/asv/environment.json`` (schema there) and its
  writers (:func:`record_case`, :func:`record_comparison`, :func:`record_timestep_usage`), :func:`repo_root`,
  :func:`utc_now`;
- devices: :func:`implementations.api.choose_device` and each implementation's ``runner.devices``.
"""

from __future__ import annotations

from implementations.fileio import atomic_open, write_json_atomic
from implementations.weights import Weights, init_weights
from implementations.workloads import Workload, get_workload

from .cases import (
    LOSS_RTOL,
    SEED,
    VERIFY_ATOL,
    VERIFY_BATCH,
    VERIFY_STEPS,
    Case,
    VerificationError,
    case_data,
    case_weights,
    first_call,
    get_case,
    prepare_case,
    reference_outputs,
    verify_case,
)
from .environment import (
    ENV_SCHEMA,
    ENV_SCHEMA_VERSION,
    comparison_key,
    environment_file,
    host_info,
    record_case,
    record_comparison,
    record_timestep_usage,
    repo_root,
    update_environment_file,
    utc_now,
)
from .grid import (
    DTYPES,
    ITEMSIZE,
    LEARNING_RATE,
    MODES,
    PARAM_NAMES,
    PARAMS,
    PROFILES,
    QUICK_VARIANTS,
    VARIANT_TABLE,
    VARIANTS,
    WORKLOADS,
    Combo,
    Profile,
    Variant,
    active_profile,
    asv_regexes,
    combo_label,
    family,
    group_of,
    missing_packages,
    predicted_activation_bytes,
    skip_reason,
    spec_skip_reason,
    support_reason,
    variant_list,
    variant_skip_reason,
)
from .measure import cached_metrics, measure_case, measure_group, metrics_path, minor_page_faults, sample_seconds
from .model import ConvProbe, Model, best_rate, conv_probe, get_adapter, matmul_size

__all__ = [
    "DTYPES", "ENV_SCHEMA", "ENV_SCHEMA_VERSION", "ITEMSIZE", "LEARNING_RATE", "LOSS_RTOL", "MODES", "PARAMS",
    "PARAM_NAMES", "PROFILES", "QUICK_VARIANTS", "SEED", "VARIANTS", "VARIANT_TABLE", "VERIFY_ATOL", "VERIFY_BATCH",
    "VERIFY_STEPS", "WORKLOADS", "Case", "Combo", "ConvProbe", "Model", "Profile", "Variant",
    "VerificationError", "Weights", "Workload", "active_profile", "asv_regexes", "atomic_open", "best_rate",
    "cached_metrics", "case_data", "case_weights", "combo_label", "comparison_key", "conv_probe",
    "environment_file", "family", "first_call", "get_adapter", "get_case",
    "get_workload", "group_of", "host_info", "init_weights", "matmul_size", "measure_case", "measure_group",
    "metrics_path", "minor_page_faults", "missing_packages", "predicted_activation_bytes", "prepare_case",
    "record_case", "record_comparison", "record_timestep_usage", "reference_outputs", "repo_root",
    "sample_seconds", "skip_reason", "spec_skip_reason", "support_reason", "update_environment_file", "utc_now",
    "variant_list", "variant_skip_reason", "verify_case", "write_json_atomic",
]
