"""Thread pools of every benchmark process, set one documented way for every framework.

Each framework brings its own pool: torch's intra-op OpenMP pool (oneDNN runs in it), TensorFlow's intra- and
inter-op pools, XLA's Eigen pool (JAX and Keras-on-JAX), and NumPy's OpenBLAS pool. Left alone, each sizes
itself from the CPUs it sees, and two pools that both spin on the same cores can stall each other: a pool whose
threads meet at a barrier after every small operation waits a whole scheduler time slice whenever one of its
threads has been preempted. The rule here:

* **compute threads** ``N`` = ``$BENCH_THREADS`` if set, else the number of CPUs this process may run on
  (``os.sched_getaffinity``). With ``N`` below that, the process is pinned to its first ``N`` CPUs, which is how
  XLA's pool (sized from the affinity mask, no other knob) gets ``N`` too;
* torch: ``OMP_NUM_THREADS=N``, ``torch.set_num_threads(N)``, inter-op pool ``N``;
* TensorFlow: ``tf.config.threading`` intra-op ``N`` and inter-op ``N`` (its default on this machine, made explicit);
* XLA (JAX): ``N`` by the affinity mask;
* NumPy/OpenBLAS: **one** thread (``OPENBLAS_NUM_THREADS=1``, also MKL/BLIS): NumPy only computes the float64
  reference check outside the timed region, and a second multi-threaded pool must not spin beside the framework's.

:func:`apply` runs when the ``benchmarks`` package is imported, i.e. in every asv benchmark process and in every
child the suite starts, before NumPy or any framework is loaded; :func:`configure_torch` and
:func:`configure_tensorflow` run when an adapter imports its framework; :func:`require_applied` refuses to
prepare a benchmark in a process where the settings are missing. :func:`settings` is what the environment file
records.
"""

from __future__ import annotations

import os
import sys
from typing import Any

#: Environment variable that overrides the number of compute threads.
THREADS_ENV = "BENCH_THREADS"
#: Set by :func:`apply` to the thread count it applied; checked by :func:`require_applied`.
APPLIED_ENV = "BENCH_THREADS_APPLIED"
#: Variables every OpenMP/BLAS runtime reads at load time, and the value each gets ("N": the compute threads).
POOL_ENV = {
    "OMP_NUM_THREADS": "N",
    "MKL_NUM_THREADS": "N",
    "OPENBLAS_NUM_THREADS": "1",
    "BLIS_NUM_THREADS": "1",
}


class ThreadSettingsError(RuntimeError):
    """A benchmark process whose thread pools were not set by :func:`apply`."""


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def compute_threads(env: dict[str, str] | None = None) -> int:
    """``N``: ``$BENCH_THREADS`` (an integer >= 1) or the available CPUs. ValueError for a malformed override."""
    env = os.environ if env is None else env
    raw = env.get(THREADS_ENV, "").strip()
    if not raw:
        return available_cpus()
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{THREADS_ENV}={raw!r}: expected an integer >= 1")
    return value


def expected_env(n: int) -> dict[str, str]:
    """The pool variables for ``n`` compute threads."""
    return {key: (str(n) if value == "N" else value) for key, value in POOL_ENV.items()}


def apply() -> int:
    """Set the pool variables (and the affinity when ``N`` is below the available CPUs); return ``N``.

    Overrides whatever the variables held: the rule is the same for every process of the suite. When NumPy was
    imported before (its OpenBLAS pool then exists already), that pool is cut to one thread at run time."""
    n = compute_threads()
    os.environ.update(expected_env(n))
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if n < len(cpus):
            os.sched_setaffinity(0, cpus[:n])
    if "numpy" in sys.modules:
        _limit_blas(1)
    os.environ[APPLIED_ENV] = str(n)
    return n


def _limit_blas(n: int) -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the variables still reach the BLAS of any library loaded from now on
        return
    threadpool_limits(limits=n, user_api="blas")


def require_applied() -> int:
    """``N`` when :func:`apply` ran in this process and its variables still hold; :class:`ThreadSettingsError`
    naming what differs otherwise (a benchmark must not run with unset or changed thread settings)."""
    applied = os.environ.get(APPLIED_ENV)
    if not applied:
        raise ThreadSettingsError(
            f"thread settings not applied in this process ({APPLIED_ENV} unset): import benchmarks (which calls "
            "benchmarks.threads.apply()) before numpy or any framework"
        )
    n = int(applied)
    wrong = {k: os.environ.get(k) for k, v in expected_env(n).items() if os.environ.get(k) != v}
    if wrong:
        raise ThreadSettingsError(f"thread settings changed after apply(): expected {expected_env(n)}, found {wrong}")
    return n


def configure_torch(torch: Any) -> None:
    """torch's intra-op pool to ``N`` threads; its inter-op pool too, unless torch already started it."""
    n = require_applied()
    torch.set_num_threads(n)
    if torch.get_num_interop_threads() != n:
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # only possible before the first inter-op work; then it keeps its size (recorded)
            pass


def configure_tensorflow(tf: Any) -> None:
    """TensorFlow's intra- and inter-op pools to ``N``; must run before TensorFlow executes its first op."""
    n = require_applied()
    threading = tf.config.threading
    for get, put in ((threading.get_intra_op_parallelism_threads, threading.set_intra_op_parallelism_threads),
                     (threading.get_inter_op_parallelism_threads, threading.set_inter_op_parallelism_threads)):
        if get() != n:
            try:
                put(n)
            except RuntimeError as exc:  # TF was initialised by someone else first
                raise ThreadSettingsError(
                    f"TensorFlow's thread pools are already initialised with {get()} threads, expected {n}: "
                    "configure_tensorflow must run before its first op"
                ) from exc


def observed() -> dict[str, Any]:
    """The pool sizes each already-imported library reports (nothing is imported here)."""
    out: dict[str, Any] = {"affinity_cpus": available_cpus()}
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        out["torch_intra_op"] = torch.get_num_threads()
        out["torch_inter_op"] = torch.get_num_interop_threads()
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "config"):
        out["tensorflow_intra_op"] = tf.config.threading.get_intra_op_parallelism_threads()
        out["tensorflow_inter_op"] = tf.config.threading.get_inter_op_parallelism_threads()
    if "jax" in sys.modules:
        out["xla_cpu_pool"] = f"sized from the affinity mask: {available_cpus()}"
    if "numpy" in sys.modules:
        try:
            from threadpoolctl import threadpool_info
        except ImportError:
            pass
        else:
            blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
            out["blas"] = [f"{p.get('internal_api')}: {p.get('num_threads')}" for p in blas]
    return out


def settings() -> dict[str, Any]:
    """What the environment file records: the rule, ``N``, the variables, and what the libraries report."""
    n = int(os.environ.get(APPLIED_ENV) or compute_threads())
    return {
        "compute_threads": n,
        "source": f"${THREADS_ENV}" if os.environ.get(THREADS_ENV, "").strip() else "affinity mask",
        "env": {k: os.environ.get(k) for k in POOL_ENV},
        "observed": observed(),
    }
