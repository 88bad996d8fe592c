"""The project's layering, stated once and checked on every import statement (lazy ones inside functions too):

    core (spec, weights, reference, api, ...) <- framework packages <- interop <- benchmarks <- reports <- drivers

A module may import its own layer or a lower one, never a higher one; the framework packages (``torch_impl``,
``keras_impl``, ``jax_impl``) never import each other. The drivers are the command-line entry points at the top:
the ``convlstm-bench`` CLI (``convlstm_bench``) and ``benchmarks.run_profile`` (``make bench``: runs asv, then the
report).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("implementations", "benchmarks", "reports", "convlstm_bench")
FRAMEWORK_PACKAGES = ("implementations.torch_impl", "implementations.keras_impl", "implementations.jax_impl")
#: (layer, name): the first rule whose prefix matches a module decides its layer.
LAYERS = [
    (5, "convlstm_bench"),
    (5, "benchmarks.run_profile"),
    (4, "reports"),
    (3, "benchmarks"),
    (2, "implementations.interop"),
    *((1, p) for p in FRAMEWORK_PACKAGES),
    (0, "implementations"),
]
LAYER_NAMES = {0: "core", 1: "framework packages", 2: "interop", 3: "benchmarks", 4: "reports", 5: "drivers"}


def layer_of(module: str) -> tuple[int, str] | None:
    for layer, prefix in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer, prefix
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, name: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file of module ``name``, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
    return out


def project_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in (ROOT / pkg).rglob("*.py"))


def test_every_project_module_has_a_layer():
    files = project_files()
    assert len(files) > 30
    assert all(layer_of(module_name(p)) is not None for p in files)


def upward_imports(path: Path, me: str) -> list[str]:
    """The imports of module ``me`` (file ``path``) that break the layering, each with its line and why."""
    mine, my_prefix = layer_of(me)
    bad = []
    for line, target in imports(path, me):
        found = layer_of(target)
        if found is None:
            continue  # a third-party or standard-library module
        theirs, their_prefix = found
        if theirs > mine:
            bad.append(f"line {line}: {target} ({LAYER_NAMES[theirs]}) from {LAYER_NAMES[mine]}")
        elif theirs == mine == 1 and their_prefix != my_prefix:
            bad.append(f"line {line}: {target} (another framework package)")
    return bad


@pytest.mark.parametrize("path", project_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_higher_layer(path):
    me = module_name(path)
    bad = upward_imports(path, me)
    assert not bad, f"{me} imports upward: " + "; ".join(bad)


def test_the_checker_sees_upward_relative_and_lazy_imports(tmp_path):
    """The rule fires on an upward import inside a function, resolves relative imports, and separates the
    framework packages."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from reports import build\n    from .interop import convert\n"
                     "    from ..keras_impl import model\n")
    bad = upward_imports(probe, "implementations.spec")
    assert "line 2: reports.build (reports) from core" in bad
    assert "line 3: implementations.interop.convert (interop) from core" in bad
    targets = {t for _, t in imports(probe, "implementations.torch_impl.runner")}
    assert {"implementations.torch_impl.interop.convert", "implementations.keras_impl.model"} <= targets
    assert any("another framework package" in b
               for b in upward_imports(probe, "implementations.torch_impl.runner"))
