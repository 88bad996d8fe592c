"""The environment section: machine facts, variants and library versions, asv result files, parity sessions."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from .. import asv_data
from .. import render as R
from ..columns import Column, column, render_table
from ..context import ROLE_RANK, Ctx, never_run
from ..render import esc, na

ROOT = Path(__file__).resolve().parent.parent.parent


def _machine_facts(ctx: Ctx) -> list[tuple[str, str]]:
    mj = ctx.asv.machines.get(ctx.machine or "", {})
    host = ctx.env.get("host") or {}
    fparams = next((f["params"] for f in ctx.asv.files if f["machine"] == ctx.machine and
                    f["commit_hash"] == ctx.commit), {})
    gpus = sorted({str(v.get("device_name")) for v in ctx.variants().values()
                   if str(v.get("device_kind", "")).lower() == "gpu" and v.get("device_name")})
    ram = mj.get("ram") or fparams.get("ram") or host.get("memory_bytes")
    try:
        ram_s = R.fmt_bytes(float(ram)) if ram else None
    except (TypeError, ValueError):
        ram_s = str(ram)
    run = ctx.env.get("run") or {}
    facts = [
        ("asv machine", ctx.machine),
        ("CPU", host.get("cpu") or mj.get("cpu") or fparams.get("cpu")),
        ("cores", host.get("cpu_count") or mj.get("num_cpu") or fparams.get("num_cpu")),
        ("memory", ram_s),
        ("GPU", ", ".join(gpus) if gpus else ("none used (CPU only)" if ctx.variants() else None)),
        ("OS / platform", host.get("platform") or mj.get("os") or fparams.get("os")),
        ("arch", mj.get("arch") or fparams.get("arch")),
        ("Python", host.get("python") or fparams.get("python")),
        ("benchmarked commit", ctx.commit),
        ("benchmark profile", run.get("profile")),
        ("run", " → ".join(str(x) for x in (run.get("started_at"), run.get("finished_at")) if x) or None),
        ("run wall time", R.fmt_seconds(run["wall_seconds"]) if isinstance(run.get("wall_seconds"), int | float)
         else None),
    ]
    return [(k, str(v)) for k, v in facts if v not in (None, "", [])]


def _installed_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("numpy", "torch", "keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "flax", "optax", "asv"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _git_head() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def section_environment(ctx: Ctx, generated: str) -> str:
    """The machine, the variants and their library versions, the asv result files and the parity sessions."""
    facts = _machine_facts(ctx)
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    parts = ['<section id="environment"><h2>Environment</h2>']
    if not facts:
        parts.append(f'<p>{na("no asv results and no reports/asv/environment.json: run make bench")}</p>')
    else:
        parts.append(f'<dl class="kv">{dl}</dl>')
    parts.append(_variants_table(ctx) if ctx.variants() else _versions_table(ctx))
    if ctx.asv.files:
        parts.append("<h3>asv result files</h3>")
        parts.append(_result_files_table(ctx))
    if ctx.parity.files or ctx.parity.notes:
        parts.append("<h3>Parity test sessions</h3>")
        parts.append(_parity_files_table(ctx))
    run = ctx.env.get("run") or {}
    if run.get("asv_command"):
        parts.append(f"<details><summary>asv command of the run</summary><pre class=\"cmd\">"
                     f"{esc(' '.join(map(str, run['asv_command'])))}</pre></details>")
    head = _git_head()
    parts.append(f'<p class="muted">Report generated {esc(generated)}'
                 f'{" from working tree at commit " + esc(head[:12]) if head else ""}.</p></section>')
    return "".join(parts)


def _text(name: str, key: str, wrap: str = "") -> Column:
    """A text column of a dict row: escaped (inside ``<wrap>`` if given) in the page, raw in the CSV."""
    def html(row: dict[str, Any]) -> str:
        return f"<{wrap}>{esc(row.get(key))}</{wrap}>" if wrap else esc(row.get(key))

    return column(name, name, html, lambda row: row.get(key))


def _variants_table(ctx: Ctx) -> str:
    """Every variant of environment.json: role, framework, library versions, device, options, what runs."""
    variants = ctx.variants()
    rows = []
    for name, v in sorted(variants.items(), key=lambda kv: (ROLE_RANK.get(kv[1].get("role"), 3), kv[0])):
        rows.append({
            "variant": name, "role": v.get("role"), "framework": v.get("framework"),
            "versions": ", ".join(f"{k} {val}" for k, val in sorted((v.get("versions") or {}).items())),
            "device": f'{v.get("device", "")} ({v.get("device_name", "")})',
            "options": ", ".join(f"{k}={val}" for k, val in sorted((v.get("options") or {}).items())),
            "what runs": v.get("description")})
    cols = [column("variant", "variant", lambda r: f"<b>{esc(r['variant'])}</b>", lambda r: r["variant"]),
            _text("role", "role"), _text("framework", "framework"), _text("versions", "versions"),
            _text("device", "device"), _text("options", "options", "small"), _text("what runs", "what runs", "small")]
    out = "<h3>Variants and library versions</h3>" + render_table(
        ctx.page, "variants", cols, rows,
        caption="from reports/asv/environment.json (written by the benchmark processes)")
    missing = [v for v in never_run(ctx) if v not in variants]
    if missing:
        out += (f'<p class="muted">Variants of the benchmark grid not in this run: {esc(", ".join(missing))} '
                f"(outside the profile, or their framework is not installed).</p>")
    return out


def _versions_table(ctx: Ctx) -> str:
    """Without environment.json: the versions installed where the report is built."""
    rows = [{"package": k, "version": v} for k, v in _installed_versions().items()]
    return "<h3>Library versions</h3>" + render_table(
        ctx.page, "versions", [_text("package", "package"), _text("version", "version")], rows,
        caption="no environment.json: the packages installed where this report was built")


def _result_files_table(ctx: Ctx) -> str:
    """One row per asv result file: machine, commit, environment, requirements and its number of results."""
    rows = []
    for f in sorted(ctx.asv.files, key=lambda f: (f["machine"], f["date"] or 0)):
        nb = sum(1 for r in ctx.asv.rows if r["commit"] == f["commit_hash"] and r["env_name"] == f["env_name"]
                 and r["machine"] == f["machine"] and r["status"] == "ok")
        reqs = ", ".join(f"{k}=={v}" if v else k for k, v in sorted((f.get("requirements") or {}).items()))
        rows.append({"machine": f["machine"], "commit": f["commit_hash"], "commit date": asv_data._iso(f["date"]),
                     "environment": f["env_name"], "requirements": reqs, "results": nb})
    cols = [_text("machine", "machine"),
            column("commit", "commit", lambda r: f"<code>{esc((r['commit'] or '')[:8])}</code>", lambda r: r["commit"]),
            _text("commit date", "commit date"), _text("environment", "environment"),
            column("requirements", "requirements", lambda r: esc(r["requirements"] or "—"),
                   lambda r: r["requirements"]),
            column("results", "results", lambda r: f'<span class="num">{r["results"]}</span>', lambda r: r["results"],
                   "num")]
    return render_table(ctx.page, "result-files", cols, rows)


def _parity_files_table(ctx: Ctx) -> str:
    """One row per parity session file, and one per note about a file that could not be used."""
    rows = [{"file": f["name"], "Keras backend": f["keras_backend"], "created": f["created"], "Python": f["python"],
             "machine": f["machine"], "records": f["n_records"],
             "records_html": f'<span class="num">{f["n_records"]}</span>'} for f in ctx.parity.files]
    for n in ctx.parity.notes:
        extra = {k: v for k, v in n.items() if k not in ("path", "name", "created", "keras_backend", "machine")}
        rows.append({"file": n["name"], "Keras backend": n.get("keras_backend"), "created": n.get("created"),
                     "Python": "", "machine": n.get("machine"), "records": json.dumps(extra),
                     "records_html": f"<small>{esc(json.dumps(extra)[:200])}</small>"})
    cols = [_text("file", "file"), _text("Keras backend", "Keras backend"), _text("created", "created"),
            _text("Python", "Python"), _text("machine", "machine"),
            column("records", "records", lambda r: r["records_html"], lambda r: r["records"], "num")]
    return render_table(ctx.page, "parity-files", cols, rows)
