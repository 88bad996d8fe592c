"""Live tensor memory of one training step per variant, against the spec's predicted activation memory.

    .venv/bin/python -m benchmarks.live_memory --workload radar --variants torch,torch-fused,jax,flax-linen

The asv ``Metrics`` report peak RSS, which on a CPU also holds allocator slack, thread pools and library
workspaces. This asks each framework what its tensors use instead:

* torch: the peak of the ``torch.profiler`` memory timeline over one step, minus its value at the step's start
  (gradients, saved activations, temporaries and outputs; not the weights, input and target);
* JAX / flax: ``memory_analysis().temp_size_in_bytes`` of the compiled step (XLA's temporaries; not its
  arguments or outputs);
* Keras: not available (TensorFlow reports allocator statistics on GPUs only), shown as n/a with the reason.

Each variant runs in this process after the usual build, verification and warm-up
(:func:`benchmarks.cases.prepare_case`).
The spec's figure (:meth:`StackSpec.activation_bytes`) counts what the backward pass keeps; a step also needs
working memory, e.g. the last layer's gate gradients while every activation is still held.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from implementations.fileio import write_json_atomic

from .cases import prepare_case
from .grid import WORKLOADS, active_profile, predicted_activation_bytes, variant_list


def measure(variant: str, workload: str, dtype: str = "float32") -> dict[str, Any]:
    """``{"variant", "workload", "dtype", "live_bytes", "method", "spec_bytes", "ratio"}``, or with ``"skip"``."""
    spec_bytes = predicted_activation_bytes(workload, dtype)
    out: dict[str, Any] = {"variant": variant, "workload": workload, "dtype": dtype, "spec_bytes": spec_bytes}
    profile = active_profile({"BENCH_PROFILE": "full", "BENCH_TIMING": "quick"})
    try:
        case = prepare_case(variant, workload, "train", dtype, profile=profile, warmup_seconds=0.0,
                                   record=False)
        live, method = case.model.live_train_bytes()
    except NotImplementedError as exc:
        return out | {"skip": str(exc)}
    return out | {"live_bytes": int(live), "method": method, "ratio": live / spec_bytes}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.live_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="torch,torch-fused,jax,flax-linen", help="comma-separated")
    parser.add_argument("--workload", default="radar", choices=WORKLOADS)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--json", type=Path, help="write the results here (atomically)")
    args = parser.parse_args(argv)
    variants = variant_list(args.variants, parser)
    spec_mb = predicted_activation_bytes(args.workload, args.dtype) / 1e6
    print(f"{args.workload} train {args.dtype}: live tensor memory of one step (MB); spec activations {spec_mb:.1f} MB")
    results = []
    for v in variants:
        r = measure(v, args.workload, args.dtype)
        results.append(r)
        if "skip" in r:
            print(f"{v:<20} n/a ({r['skip']})", flush=True)
        else:
            print(f"{v:<20} {r['live_bytes'] / 1e6:8.1f}  {r['ratio']:5.2f}x spec  ({r['method']})", flush=True)
    if args.json:
        write_json_atomic(args.json, {"workload": args.workload, "dtype": args.dtype, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
