"""asv benchmark suite of convlstm-bench (see benchmarks/README.md).

Nothing in this package imports a deep-learning framework at module level: asv imports every module of
the package to discover the benchmarks, and one missing framework would otherwise stop the discovery of the
whole suite. Frameworks are imported in ``setup`` (through :mod:`benchmarks.adapters`).

Importing the package sets the thread pools of the process (:mod:`benchmarks.threads`) before NumPy or a framework
is loaded, so every asv benchmark process and every child the suite starts follows the same rule.
"""

from . import threads as _threads

_threads.apply()
