"""The ``convlstm-bench`` console script.

    convlstm-bench init (--config SPEC.json | --preset NAME) --seed N -o W.npz [--dtype float32]
    convlstm-bench run --framework {torch,keras,jax} --weights W.npz --input X.npy -o OUT.npz [--dtype ...]
    convlstm-bench parity --weights W.npz --input X.npy
    convlstm-bench convert SRC -o DST [--from FMT] [--to FMT] [--input-spatial N ...] [--flax-use-bias BOOL]
    convlstm-bench report [--results DIR] [--parity DIR] [--environment FILE] [--machine NAME] [-o OUT.html]

Errors in the user's files or arguments print one ``error:`` line and exit with status 2; a parity
failure exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from implementations import FRAMEWORKS, FrameworkUnavailable, get_runner
from implementations import reference as ref
from implementations.api import DTYPES, ForwardResult, InputError
from implementations.fileio import atomic_write
from implementations.interop import FORMATS, convert
from implementations.spec import SpecError, stack_from_dict
from implementations.tolerances import compare, tolerance
from implementations.weights import WeightFileError, init_weights, load, save
from implementations.workloads import WORKLOADS
from reports import build as report_build

USER_ERRORS = (WeightFileError, InputError, SpecError, FileNotFoundError, KeyError)


class CliError(Exception):
    """A problem with the command line or its files, reported as one line."""


def load_input(path: str | Path) -> np.ndarray:
    """Read a ``.npy`` input without pickle; errors name the file."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise CliError(f"{path}: expected a .npy array (B, T, *S, C), found an unreadable file ({exc})") from None


def save_result(path: str | Path, result: ForwardResult) -> Path:
    """Write ``outputs``, ``h/{i}``, ``c/{i}`` to an ``.npz`` atomically."""
    tensors = result.tensors()
    return atomic_write(path, lambda fh: np.savez(fh, **tensors))


def cmd_init(args: argparse.Namespace) -> int:
    if args.preset:
        spec = WORKLOADS[args.preset].spec
    else:
        try:
            config = json.loads(Path(args.config).read_text())
        except FileNotFoundError:
            raise CliError(f"{args.config}: no such file") from None
        except json.JSONDecodeError as exc:
            raise CliError(f"{args.config}: expected a JSON spec, found unparsable text ({exc})") from None
        spec = stack_from_dict(config)
    spatial = tuple(args.input_spatial) if args.input_spatial else None
    weights = init_weights(spec, seed=args.seed, dtype=args.dtype, input_spatial=spatial)
    save(args.output, weights)
    print(f"wrote {args.output}: {len(spec.layers)} layer(s), {sum(a.size for a in weights.arrays.values())} "
          f"parameters, {args.dtype}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    weights = load(args.weights)
    x = load_input(args.input)
    dtype = args.dtype or weights.dtype.name
    runner = get_runner(args.framework)(weights, dtype=dtype)
    result = runner.forward(x, go_backwards=args.go_backwards)
    save_result(args.output, result)
    shape, dtype = result.outputs.shape, result.outputs.dtype
    print(f"wrote {args.output}: outputs {shape} {dtype} ({args.framework}, {runner.device})")
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    weights = load(args.weights)
    x = load_input(args.input)
    expected = ref.forward(weights, x, go_backwards=args.go_backwards).tensors()
    dtypes = [args.dtype] if args.dtype else list(DTYPES)
    print(f"{'framework':<22} {'dtype':<8} {'max-abs':>10} {'max-rel':>10} {'bound':>10}  worst tensor")
    failed = False
    for framework in args.frameworks or list(FRAMEWORKS):
        try:
            runner_cls = get_runner(framework)
        except FrameworkUnavailable as exc:
            print(f"{framework:<22} n/a      ({exc})")
            continue
        for dtype in dtypes:
            actual = runner_cls(weights, dtype=dtype).forward(x, go_backwards=args.go_backwards).tensors()
            tol = tolerance("forward", dtype)
            comps = [compare(name, actual[name], expected[name], tol) for name in expected]
            worst = max(comps, key=lambda c: c.max_abs - c.bound)
            ok = all(c.passed for c in comps)
            failed |= not ok
            label = framework
            if framework == "keras":
                import keras  # only reached when keras imported fine above

                label = f"keras[{keras.backend.backend()}]"
            print(
                f"{label:<22} {dtype:<8} {worst.max_abs:>10.2e} {worst.max_rel:>10.2e} {worst.bound:>10.1e}  "
                f"{worst.tensor}{'' if ok else '  BEYOND TOLERANCE'}"
            )
    return 1 if failed else 0


def cmd_convert(args: argparse.Namespace) -> int:
    weights, src_fmt, dst_fmt = convert(
        args.src,
        args.output,
        src_format=args.from_format,
        dst_format=args.to_format,
        input_spatial=tuple(args.input_spatial) if args.input_spatial else None,
        flax_use_bias=None if args.flax_use_bias is None else args.flax_use_bias == "true",
    )
    print(f"wrote {args.output} ({dst_fmt}) from {args.src} ({src_fmt}): {len(weights.spec.layers)} layer(s), "
          f"{weights.dtype}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    out = report_build.build_report(args.results, args.parity, args.output, env_file=args.environment,
                             machine=args.machine)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB): open it in a browser (self-contained, works offline)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convlstm-bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="write seeded initial weights (Keras' default initialisers)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="a JSON spec: {input_channels, layers: [...]} (optional layer_defaults)")
    src.add_argument("--preset", choices=sorted(WORKLOADS), help="the spec of a named workload")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--input-spatial", type=int, nargs="+", help="frame size, needed for 'full' peepholes")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("run", help="run one framework on an input and save outputs and final states")
    p.add_argument("--framework", choices=sorted(FRAMEWORKS), required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--input", required=True, help=".npy of shape (B, T, *S, C)")
    p.add_argument("--dtype", choices=DTYPES, help="compute dtype (default: the weights' dtype)")
    p.add_argument("--go-backwards", action="store_true")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("parity", help="compare every available framework with the float64 reference")
    p.add_argument("--weights", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--dtype", choices=DTYPES, help="only this dtype (default: both)")
    p.add_argument("--frameworks", nargs="+", choices=sorted(FRAMEWORKS))
    p.add_argument("--go-backwards", action="store_true")
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser("convert", help="convert weights between ours (npz), Keras, tf.keras .h5, flax and PyTorch")
    p.add_argument("src", help="the file to read")
    p.add_argument("-o", "--output", required=True, help="the file to write (atomically)")
    p.add_argument("--from", dest="from_format", choices=sorted(FORMATS), help="source format (default: extension)")
    p.add_argument("--to", dest="to_format", choices=sorted(FORMATS), help="target format (default: extension)")
    p.add_argument("--input-spatial", type=int, nargs="+", help="frame size, required by --to keras (static shapes)")
    p.add_argument("--flax-use-bias", choices=("true", "false"), help="--to flax: cells with/without bias "
                   "(default: as the weights' use_bias)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("report", help="build the self-contained HTML report from asv results and parity records")
    report_build.add_arguments(p)
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FrameworkUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (CliError, *USER_ERRORS) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
