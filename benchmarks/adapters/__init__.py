"""Per-framework adapters: ``build(workload, variant, dtype, weights, x, target) -> benchmarks.model.Model``.

One module per framework family (``torch``: torch, torch-compile, torch-fused, torch-fused-compile; ``keras``: keras-tf,
keras-tf-xla, keras-jax, keras-torch, keras-builtin; ``jax``: jax, jax-scan, flax-linen, flax-linen-scan),
each with the same small surface: ``build(...)``, ``device_candidates(framework_module)`` (the devices the
framework offers, turned into a choice by :func:`implementations.api.choose_device`), a shared train-step
builder, and ``import_framework(variant)`` for the import-only memory baseline.

No module here imports a framework at import time (asv imports every module of the suite to discover
benchmarks); frameworks are imported inside the functions.
"""
