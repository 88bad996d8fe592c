"""convlstm-bench: one ConvLSTM spec, one weight format, implementations in several frameworks.

Importing this package imports no deep-learning framework. Implementations are resolved lazily
by name through :func:`get_runner`; a missing framework raises :class:`FrameworkUnavailable`
(a subclass of ImportError) with the reason, which tests turn into a skip and benchmarks into
asv's ``n/a``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

from .api import LossProbe
from .model_spec import MODEL_PRESETS, ModelSpec, get_model_preset
from .model_weights import ModelWeights, init_model_weights, load_model, save_model
from .spec import LayerSpec, SpecError, StackSpec, stack_from_dict
from .weights import WeightFileError, Weights, init_weights, load, random_weights, save

if TYPE_CHECKING:  # pragma: no cover
    from .api import Runner

__all__ = [
    "FRAMEWORKS",
    "FrameworkUnavailable",
    "LayerSpec",
    "LossProbe",
    "MODEL_PRESETS",
    "ModelSpec",
    "ModelWeights",
    "SpecError",
    "StackSpec",
    "WeightFileError",
    "Weights",
    "available_frameworks",
    "get_model_preset",
    "get_runner",
    "init_model_weights",
    "init_weights",
    "load",
    "load_model",
    "random_weights",
    "save",
    "save_model",
    "stack_from_dict",
]

#: Framework name -> (module implementing it, the packages it needs).
FRAMEWORKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "torch": ("implementations.torch_impl", ("torch",)),
    "keras": ("implementations.keras_impl", ("keras",)),
    "jax": ("implementations.jax_impl", ("jax", "flax")),
}


class FrameworkUnavailable(ImportError):
    """The framework an implementation needs is not installed or fails to import."""


def missing_packages(framework: str) -> list[str]:
    """Packages of ``framework`` that are not installed (cheap: imports nothing)."""
    if framework not in FRAMEWORKS:
        raise KeyError(f"unknown framework {framework!r}: expected one of {sorted(FRAMEWORKS)}")
    return [p for p in FRAMEWORKS[framework][1] if importlib.util.find_spec(p) is None]


def available_frameworks() -> list[str]:
    """Frameworks whose packages are installed (not imported; import errors surface in get_runner)."""
    return [name for name in FRAMEWORKS if not missing_packages(name)]


def get_runner(framework: str) -> type[Runner]:
    """The ``Runner`` class of ``framework``, importing the framework now."""
    missing = missing_packages(framework)
    if missing:
        raise FrameworkUnavailable(f"{framework}: package(s) {missing} not installed")
    module_name = FRAMEWORKS[framework][0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FrameworkUnavailable(f"{framework}: import failed: {exc}") from exc
    return module.Runner
