"""The README is the front door: its code runs as written, its links resolve, it stays short.

Every ```python block of README.md runs, in order, in one fresh directory and one namespace (so a later block may
use what an earlier one wrote), in a fresh interpreter with torch as the runner (the first framework the API
example names). A README that drifts from the code fails here, not in a user's hands.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: The README is for users: reference material lives in docs/.
MAX_LINES = 250


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def test_readme_python_blocks_run_as_written(tmp_path):
    pytest.importorskip("torch", reason="the README's API example runs torch")
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 2, "expected the weight-writing and the Python API examples"
    script = "\n".join(f"# --- block {i}\n{b}" for i, b in enumerate(blocks))
    script += "\nprint('README-OK', sorted(g.grads), float(g.loss))\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("README-OK"))
    assert "'input'" in line and "'layers/0/kernel'" in line


def test_readme_is_short_and_its_links_resolve():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_LINES, f"README.md has {len(text.splitlines())} lines (at most {MAX_LINES})"
    for target in re.findall(r"\]\(([^)#\s]+)\)", text):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
    assert "make test" in text and "make bench" in text
    assert "<!-- results:begin -->" in text and "<!-- results:end -->" in text
