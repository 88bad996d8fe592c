"""The report's data layer and HTML: asv results -> tidy rows, parity records -> matrices, a self-contained page.

The asv fixtures are written by asv's own ``Results.add_result``/``save`` (``reports.sample``), so the compact
``result_columns`` format, NaN (skipped) and null (failed) entries and the timing statistics are asv's; the
direct JSON parser is checked against asv's loader on them, and asv's own ``--bench`` selection against ours.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import types
from pathlib import Path

import pytest

from convlstm_bench import cli
from reports import asv_data, build, parity_data, render, sample

asv = pytest.importorskip("asv", reason="asv is not installed (the bench extra)")


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report-sample")
    sample.write_sample(root)
    return root


@pytest.fixture(scope="module")
def environment(fixture_root) -> dict:
    return json.loads((fixture_root / "asv" / "environment.json").read_text())


@pytest.fixture(scope="module")
def data(fixture_root, environment) -> asv_data.AsvData:
    return asv_data.load(fixture_root / "asv" / "results", environment=environment)


def rows_of(data, short, commit=None, **params):
    commit = commit or data.files[-1]["commit_hash"]
    return [r for r in data.rows if r["short_name"] == short and r["commit"] == commit
            and all(r["params"].get(k) == v for k, v in params.items())]


# --- asv results ------------------------------------------------------------------------------------------------


def test_files_are_asv_compact_format(fixture_root):
    files = sorted((fixture_root / "asv" / "results" / sample.MACHINE).glob("*-existing-*.json"))
    assert len(files) == 3
    raw = json.loads(files[0].read_text())
    assert raw["version"] == 2 and raw["result_columns"] == asv_data.RESULT_COLUMNS
    assert raw["results"]["bench_convlstm.Broken.time_broken"][0] is None  # failed as a whole: null result


def test_json_parser_agrees_with_asv_loader(fixture_root, environment):
    ours = asv_data.load(fixture_root / "asv" / "results", environment=environment, loader="json")
    theirs = asv_data.load(fixture_root / "asv" / "results", environment=environment, loader="asv")
    assert not ours.warnings and not theirs.warnings
    assert len(ours.rows) == len(theirs.rows) > 0
    assert ours.rows == theirs.rows


def test_compact_writer_without_asv_reads_the_same(tmp_path, data):
    sample.write_sample(tmp_path, use_asv=False)
    env = json.loads((tmp_path / "asv" / "environment.json").read_text())
    other = asv_data.load(tmp_path / "asv" / "results", environment=env)
    key = lambda r: (r["commit"], r["benchmark"], tuple(r["params"].items()))  # noqa: E731
    mine = {key(r): (r["status"], r["value"]) for r in other.rows}
    assert mine == {key(r): (r["status"], r["value"]) for r in data.rows}


def test_tidy_rows_carry_params_units_and_stats(data):
    (row,) = rows_of(data, "time_step", variant="torch", workload="radar", mode="train", dtype="float32")
    assert row["status"] == "ok" and row["unit"] == "seconds" and row["kind"] == "time"
    assert row["param_names"] == ["variant", "workload", "mode", "dtype"]
    assert row["repeat"] == 7 and row["number"] == 1 and len(row["samples"]) == 7
    assert row["q_25"] <= row["value"] <= row["q_75"]
    assert row["ci_99_a"] <= row["value"] <= row["ci_99_b"]
    (tp,) = rows_of(data, "track_sequences_per_second", variant="torch", workload="radar", mode="train",
                    dtype="float32")
    assert tp["unit"] == "sequences/s" and tp["value"] > 0 and tp["q_25"] is None  # tracks have no stats
    (imp,) = rows_of(data, "peakmem_import", variant="jax")
    assert imp["kind"] == "peakmemory" and imp["param_names"] == ["variant"] and imp["value"] > 1e8


def test_missing_framework_failed_and_skipped_have_reasons(data):
    flax = rows_of(data, "track_sequences_per_second", variant="flax-linen", dtype="float32")
    assert flax and all(r["status"] == "skipped" and r["value"] is None for r in flax)
    assert all("flax-linen" in r["reason"] and "never got ready" in r["reason"] for r in flax)
    (failed,) = rows_of(data, "track_sequences_per_second", variant="keras-builtin", workload="radar", mode="train",
                        dtype="float32")
    assert failed["status"] == "failed" and failed["value"] is None and "failed" in failed["reason"]
    (broken,) = rows_of(data, "time_broken")
    assert broken["status"] == "failed" and broken["params"] == {}
    device = rows_of(data, "track_device_peak_bytes", variant="torch", dtype="float32")
    assert device and all(r["status"] == "skipped" and "CPU" in r["reason"] for r in device)
    outside = rows_of(data, "time_step", variant="torch-fused", dtype="bfloat16")
    assert outside and all(r["reason"] == asv_data.REASON_NOT_SELECTED for r in outside)
    older = rows_of(data, "time_step", commit=data.files[0]["commit_hash"], variant="torch-fused", dtype="bfloat16")
    assert all(r["reason"] == asv_data.REASON_SKIPPED_UNKNOWN for r in older)  # no selection known for old runs


def test_selection_matches_asvs_own_regex_filter(environment):
    from asv.benchmarks import Benchmarks

    regexes = asv_data.bench_regexes(environment["run"]["asv_command"])
    assert regexes and all(isinstance(r, str) for r in regexes)
    benches = [dict(b) for b in sample.BENCHMARKS.values()]
    selection = Benchmarks(types.SimpleNamespace(benchmark_dir="benchmarks"), benches, regex=regexes)
    for b in benches:
        combos = list(itertools.product(*b["params"])) if b["params"] else [()]
        ours = [i for i, c in enumerate(combos) if asv_data.is_selected(b["name"], c, regexes)]
        theirs = selection.benchmark_selection[b["name"]]
        if theirs is None:  # an unparameterised benchmark: asv selects it by name
            assert ours == ([0] if b["name"] in selection else [])
        else:
            assert ours == theirs, b["name"]
    assert asv_data.is_selected("x.time_a", ["'a'"], None) is None
    assert asv_data.bench_regexes(["asv", "run", "--bench=foo", "-b", "bar"]) == ["foo", "bar"]


def test_history_and_latest(data):
    commits = data.commits(sample.MACHINE)
    assert [c["commit"][:1] for c in commits] == ["1", "2", "3"]
    assert asv_data.latest(data) == (sample.MACHINE, "3" * 40)
    values = [rows_of(data, "track_sequences_per_second", commit=c["commit"], variant="jax", workload="tiny",
                      mode="forward", dtype="float32")[0]["value"] for c in commits]
    assert values == sorted(values)  # the sample gets faster with every commit


def test_empty_missing_and_corrupt_results(tmp_path):
    missing = asv_data.load(tmp_path / "nope")
    assert missing.empty and missing.warnings
    (tmp_path / "empty").mkdir()
    empty = asv_data.load(tmp_path / "empty")
    assert empty.empty and asv_data.latest(empty) == (None, None)
    bad = tmp_path / "bad" / "box"
    bad.mkdir(parents=True)
    (bad / "machine.json").write_text('{"machine": "box", "version": 1}')
    (bad / "deadbeef-existing-py.json").write_text("{not json")
    (bad / "cafebabe-existing-py.json").write_text(json.dumps({"results": {}, "version": 1}))
    loaded = asv_data.load(tmp_path / "bad")
    assert loaded.empty and len(loaded.warnings) >= 3  # no benchmarks.json, unreadable file, old API version


def test_parse_helpers():
    assert asv_data.parse_param("'torch'") == "torch"
    assert asv_data.parse_param("3") == "3"
    assert asv_data.parse_param("not a repr") == "not a repr"
    assert asv_data.benchmark_kind("a.B.peakmem_x") == "peakmemory"
    parsed = asv_data.parse_result_file({"results": {"a.time_x": [None, []]}, "version": 2})
    assert parsed["benchmarks"]["a.time_x"]["result"] == [None]


def test_dataframe(data):
    pd = pytest.importorskip("pandas")
    df = asv_data.to_dataframe(data.rows)
    assert isinstance(df, pd.DataFrame) and len(df) == len(data.rows)
    assert {"param.variant", "value", "status", "q_25"} <= set(df.columns)


# --- parity records -----------------------------------------------------------------------------------------


def test_parity_matrix_and_details(tmp_path):
    recs = sample.parity_records()
    sample.write_parity(tmp_path, recs, backend="tensorflow")
    # a Keras-backend rerun repeats torch-vs-jax with a smaller error: the worst one is kept
    again = [dict(r, max_abs=r["max_abs"] / 10) for r in recs
             if r["kind"] == "cross" and "keras" not in r["a"] + r["b"]]
    sample.write_parity(tmp_path, again, backend="jax")
    (tmp_path / "properties-tensorflow.json").write_text(json.dumps({"tried": {"torch": 3}}))
    (tmp_path / "parity-torch.json").write_text("{broken")
    data = parity_data.load(tmp_path, frameworks=["torch", "keras", "jax", "mxnet"])
    assert len(data.records) == len(recs) and len(data.notes) == 1 and data.warnings
    assert {r["duplicates"] for r in data.records if r["kind"] == "cross" and "keras" not in r["a"] + r["b"]} == {2}
    assert "keras[jax]" in data.expected_labels and "mxnet" in data.expected_labels

    mats = {(m.group, m.dtype): m for m in parity_data.matrices(data)}
    fwd = mats[("forward", "float32")]
    assert fwd.rows == ["torch", "keras[jax]", "keras[tensorflow]", "jax", "mxnet"]
    assert fwd.cols == fwd.rows + ["reference"]
    assert len(fwd.cells) == len(fwd.rows) * len(fwd.cols)  # one cell per pair
    assert fwd.cells[("torch", "jax")] is fwd.cells[("jax", "torch")]  # a vs b is b vs a
    assert fwd.cells[("mxnet", "reference")] is None and "mxnet" in fwd.missing
    worst = fwd.cells[("torch", "reference")]
    assert worst["passed"] is False and worst["ratio"] > 1 and worst["tensor"] == "h/0"
    assert fwd.n_cases[("torch", "reference")] == len(sample.PARITY_CASES)
    assert mats[("forward", "float64")].cols == ["reference"]  # no framework-vs-framework in float64
    assert ("gradients", "float64") in mats and ("interop", "float32") in mats
    cases, pairs, cells = parity_data.case_table(data, "forward", "float32")
    assert cases == sorted(sample.PARITY_CASES) and "torch vs reference" in pairs
    assert all(r["id"] for r in data.records) and len({r["id"] for r in data.records}) == len(data.records)


def test_parity_ratio_edge_cases():
    assert parity_data.ratio({"max_abs": 0.0, "bound": 0.0, "passed": True}) == 0.0
    assert parity_data.ratio({"max_abs": 1.0, "bound": 0.0, "passed": False}) == math.inf
    assert parity_data.ratio({"max_abs": None, "bound": 1.0, "passed": None}) is None
    assert render.ratio_color(2.0)[0] == render.ratio_color(math.inf)[0] != render.ratio_color(0.5)[0]
    # an exact match (error 0) is coloured as the widest margin, not as "at the tolerance"
    assert render.ratio_color(0.0)[0] == render.ratio_color(1e-9)[0] != render.ratio_color(1.0)[0]


def test_real_parity_files_load_if_present():
    root = Path(__file__).resolve().parent.parent / "reports" / "parity"
    if not any(root.glob("parity-*.json")):
        pytest.skip("no reports/parity/parity-*.json yet (make test writes them)")
    data = parity_data.load(root)
    assert data.records and all(set(parity_data.FIELDS) <= set(r) for r in data.records)
    parity_data.matrices(data)


# --- the page ---------------------------------------------------------------------------------------------------

EXTERNAL = [
    re.compile(r"""<script[^>]*\bsrc\s*=""", re.I),
    re.compile(r"""<link\b[^>]*\bhref\s*=""", re.I),
    re.compile(r"""\b(?:src|href|xlink:href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""", re.I),
    re.compile(r"""url\(\s*["']?\s*(?:https?:)?//""", re.I),
    re.compile(r"""@import""", re.I),
    re.compile(r"""<(?:iframe|img|object|embed|video|audio)\b""", re.I),
]


def assert_self_contained(text: str) -> None:
    for pattern in EXTERNAL:
        m = pattern.search(text)
        assert m is None, f"external resource: {text[max(0, m.start() - 80):m.end() + 80]!r}"


@pytest.fixture(scope="module")
def page(fixture_root, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report-html") / "html" / "index.html"
    build.build_report(fixture_root / "asv" / "results", fixture_root / "parity", out)
    return out, out.read_text(encoding="utf-8")


def test_html_is_self_contained_and_complete(page):
    path, text = page
    assert_self_contained(text)
    assert text.startswith("<!DOCTYPE html>") and text.count("<script") == 2  # the data and the CSV code
    assert len(text) < 2_000_000
    for section in ("overview", "environment", "parity", "throughput", "efficiency", "memory", "compile", "history",
                    "results"):
        assert f'<section id="{section}">' in text
    assert "make bench" in text and "make test" in text and "How to read this page" in text
    assert "Sample CPU @ 2.0GHz" in text and "keras 3.15.1" in text  # environment: CPU, library versions
    assert "never got ready" in text  # the missing framework, with its reason
    assert "failed: the benchmark raised" in text
    assert [p.name for p in path.parent.iterdir()] == ["index.html"]  # atomic write left no temporary file


def test_embedded_csv_tables(page):
    _, text = page
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    tables = json.loads(m.group(1))["tables"]
    buttons = re.findall(r'class="csv" data-table="([^"]+)"', text)
    assert buttons and sorted(buttons) == sorted(tables)
    for tid, t in tables.items():
        assert t["filename"].endswith(".csv") and all(len(r) == len(t["columns"]) for r in t["rows"]), tid
    tp = tables["throughput"]
    assert "sequences/s" in tp["columns"] and len(tp["rows"]) > 10
    assert len(tables["history"]["rows"]) > len(tables["throughput"]["rows"])  # every commit


def test_memory_table_has_training_memory_and_its_ratio_to_the_spec(page):
    """The TrainMemory figures (mode train) sit in the memory section beside the spec prediction; the ratio column
    is the training increase over the spec, computed from the same row; forward rows are n/a."""
    _, text = page
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    t = json.loads(m.group(1))["tables"]["memory"]
    cols = t["columns"]
    for name in ("training increase over build", "warm step over build", "held between steps"):
        assert name in cols
    assert cols.index("training increase over build") < cols.index("warm step over build") < cols.index(
        "held between steps")
    inc, spec, ratio = (cols.index(c) for c in ("training increase over build", "spec_prediction_bytes",
                                                  "training_increase_over_spec"))
    mode = cols.index("mode")
    train_rows = [r for r in t["rows"] if r[mode] == "train" and r[inc] not in ("", None)]
    assert len(train_rows) >= 6
    for r in train_rows:
        assert float(r[ratio]) == pytest.approx(float(r[inc]) / float(r[spec]))
    assert all(r[inc] in ("", None) for r in t["rows"] if r[mode] == "forward")
    assert "increase / spec" in text and "held between steps" in text
    # ours against the lowest peer of the same framework, in the same facet (keras-tf-xla vs keras-builtin)
    vs = cols.index("training_increase_over_lowest_same_framework_peer")
    key = [cols.index(c) for c in ("workload", "mode", "dtype")]
    by = {(r[0], *(r[i] for i in key)): r for r in train_rows}
    for (variant, *facet), r in by.items():
        peer = {"torch": "torch-fused", "keras-tf-xla": "keras-builtin", "jax": "flax-linen"}.get(variant)
        if peer and (peer, *facet) in by:
            assert float(r[vs]) == pytest.approx(float(r[inc]) / float(by[(peer, *facet)][inc])), (variant, facet)
        else:
            assert r[vs] in ("", None), (variant, facet)


def _table(text: str, name: str) -> dict:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    return json.loads(m.group(1))["tables"][name]


def test_throughput_of_ours_against_the_best_peer_of_its_framework(page, environment):
    """Each of our rows carries its throughput over the fastest peer of its framework from the paired rounds of
    environment.json: the geometric mean of the per-round ratios over the clean rounds, its 95 % interval and the
    verdict the interval allows; peers, traps and ours without a peer there are empty."""
    _, text = page
    t = _table(text, "throughput")
    cols = t["columns"]
    at = {c: cols.index(c) for c in ("ours_over_best_same_framework_peer", "ci95_low", "ci95_high", "verdict",
                                      "best_peer", "paired_rounds_used", "paired_rounds_dropped", "workload",
                                      "mode", "dtype")}
    groups = environment["comparisons"].values()
    checked = 0
    for r in t["rows"]:
        variant, w, m, d = r[0], r[at["workload"]], r[at["mode"]], r[at["dtype"]]
        group = next((g for g in groups if variant in g["variants"] and (g["workload"], g["mode"], g["dtype"]) ==
                      (w, m, d)), None)
        if group is None or variant not in group["ours"]:
            assert r[at["ours_over_best_same_framework_peer"]] in ("", None), (variant, w, m, d)
            continue
        peer = group["best_peer"]
        rounds = {"ours": group["variants"][variant]["round_seconds"], "peer": group["variants"][peer]["round_seconds"]}
        dropped = {x["round"] for v in (variant, peer) for x in group["variants"][v]["contaminated_rounds"]}
        ratios = [p / o for i, (o, p) in enumerate(zip(rounds["ours"], rounds["peer"])) if i not in dropped]
        assert float(r[at["ours_over_best_same_framework_peer"]]) == pytest.approx(
            math.exp(sum(map(math.log, ratios)) / len(ratios))), (variant, w, m, d)
        low, high = float(r[at["ci95_low"]]), float(r[at["ci95_high"]])
        assert low < float(r[at["ours_over_best_same_framework_peer"]]) < high
        want = "faster" if low > 1 else "slower" if high < 1 else "no clear difference"
        assert r[at["verdict"]] == want and r[at["best_peer"]] == peer
        assert int(r[at["paired_rounds_used"]]) == len(ratios)
        assert int(r[at["paired_rounds_dropped"]]) == len(rounds["ours"]) - len(ratios)
        checked += 1
    assert checked >= 6
    assert re.search(r"ours ÷ best peer, same framework \(paired, 95 % CI\): [^<]*keras-tf-xla 1\.4\d+× \[", text)


def test_an_interval_containing_one_is_no_clear_difference(page):
    """The sample's torch-fused runs as fast as torch on tiny forward with noisy rounds: the interval contains 1,
    so the row, the chart subtitle and the overview say "no clear difference", never faster or slower; the
    overview ranks nothing across frameworks."""
    _, text = page
    t = _table(text, "throughput")
    cols = t["columns"]
    row = next(r for r in t["rows"] if r[0] == "torch" and r[cols.index("workload")] == "tiny"
               and r[cols.index("mode")] == "forward" and r[cols.index("dtype")] == "float32")
    assert float(row[cols.index("ci95_low")]) < 1 < float(row[cols.index("ci95_high")])
    assert row[cols.index("verdict")] == "no clear difference"
    assert re.search(r"torch no clear difference \(1\.\d+× \[0\.9\d+–1\.\d+\]\)", text)
    assert "most often fastest" not in text
    assert "ours vs best peer, same framework (paired, 95 % CI)" in text and "no clear difference" in text


def test_dropped_rounds_and_disagreeing_processes_are_explained(page):
    """Contaminated rounds are counted in the overview and left out of the ratio; where asv's TimeStep and the
    paired rounds differ by more than 10 % the row says which one the bar and the ratio use, and why."""
    _, text = page
    assert "rounds dropped for contention" in text
    t = _table(text, "throughput")
    cols = t["columns"]
    radar = next(r for r in t["rows"] if r[0] == "torch" and r[cols.index("workload")] == "radar"
                 and r[cols.index("mode")] == "train" and r[cols.index("dtype")] == "float32")
    assert int(radar[cols.index("paired_rounds_dropped")]) == 2
    fused = next(r for r in t["rows"] if r[0] == "torch-fused" and r[cols.index("workload")] == "tiny"
                 and r[cols.index("mode")] == "forward" and r[cols.index("dtype")] == "float32")
    note = fused[cols.index("reason_or_note")]
    assert note.startswith("TimeStep ") and "the bar and the ratio use the paired rounds" in note


def test_element_ids_are_unique(page):
    _, text = page
    ids = re.findall(r'\sid="([^"]+)"', text)
    assert ids and len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_throughput_table_lists_page_faults_per_step(page, data):
    """The PageFaults figure of each combination sits in the throughput table (and its CSV) beside the timing, equal
    to the asv result of the same combination."""
    _, text = page
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    t = json.loads(m.group(1))["tables"]["throughput"]
    cols = t["columns"]
    faults = cols.index("minor_page_faults_per_step")
    grid = [cols.index(c) for c in ("workload", "mode", "dtype")]
    checked = 0
    for r in t["rows"]:
        want = rows_of(data, "track_minor_faults_per_step", variant=r[0],
                       **{name: r[i] for name, i in zip(("workload", "mode", "dtype"), grid)})
        if want and want[0]["status"] == "ok":
            assert float(r[faults]) == pytest.approx(want[0]["value"]), r[:4]
            checked += 1
        else:
            assert r[faults] in ("", None), r[:4]
    assert checked >= 12
    assert "page faults / step" in text


def test_empty_inputs_render_na(tmp_path):
    out = build.build_report(tmp_path / "none" / "results", tmp_path / "none" / "parity", tmp_path / "r.html")
    text = out.read_text()
    assert_self_contained(text)
    assert "no parity records" in text and "run make bench" in text


def test_multiple_environments_become_series(tmp_path):
    sample.write_sample(tmp_path, commits=1, with_parity=False)
    results = tmp_path / "asv" / "results" / sample.MACHINE
    (src,) = results.glob("*-existing-*.json")
    raw = json.loads(src.read_text())
    raw["requirements"] = {"torch": "2.13.0"}
    src.write_text(json.dumps(raw))
    raw["env_name"], raw["requirements"] = "virtualenv-py3.11-torch2.12.1", {"torch": "2.12.1"}
    (results / "11111111-virtualenv-py3.11-torch2.12.1.json").write_text(json.dumps(raw))
    text = build.render_report(tmp_path / "asv" / "results", tmp_path / "parity")
    assert "torch · torch==2.12.1" in text and "torch · torch==2.13.0" in text


def test_cli_report(tmp_path, fixture_root, capsys):
    out = tmp_path / "out" / "index.html"
    rc = cli.main(["report", "--results", str(fixture_root / "asv" / "results"), "--parity",
                   str(fixture_root / "parity"), "-o", str(out)])
    assert rc == 0 and out.is_file() and "wrote" in capsys.readouterr().out
    assert_self_contained(out.read_text())


def _declared(parser) -> list[tuple]:
    """(option strings, dest, default, help, required) of every option but --help."""
    return [(tuple(a.option_strings), a.dest, a.default, a.help, a.required) for a in parser._actions
            if not isinstance(a, argparse._HelpAction)]


def test_add_arguments_declares_the_cli_report_options(tmp_path, fixture_root, capsys):
    parser = argparse.ArgumentParser()
    build.add_arguments(parser)
    declared = _declared(parser)
    assert [(d[0], d[2]) for d in declared] == [
        (("--results",), "reports/asv/results"), (("--parity",), "reports/parity"), (("--environment",), None),
        (("--machine",), None), (("-o", "--output"), "reports/html/index.html")]
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert declared == _declared(sub.choices["report"])
    out = tmp_path / "index.html"
    args = parser.parse_args(["--results", str(fixture_root / "asv" / "results"), "--parity",
                              str(fixture_root / "parity"), "-o", str(out)])
    assert build.run(args) == 0 and out.is_file() and "wrote" in capsys.readouterr().out


def test_readme_results_table_from_the_paired_comparisons(environment, tmp_path):
    """``python -m reports.results_table``: one row per one of ours with a peer, caption with machine, date and
    commit, written between the README's markers (and nowhere else); a README without markers is refused."""
    from reports import results_table

    body = results_table.table(environment)
    ours_rows = sum(len(e["ours"]) for e in environment["comparisons"].values())
    assert body.count("\n| ") == ours_rows + 1  # the header, then one row each
    assert "Sample CPU @ 2.0GHz, 2 CPUs" in body and environment["run"]["finished_at"][:10] in body
    assert "no clear difference" in body
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{results_table.BEGIN}\nold table\n{results_table.END}\nafter\n")
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps(environment))
    assert results_table.main(["--env", str(env_file), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old table" not in text and body in text and text.startswith("# x\n\nbefore\n") and text.endswith("after\n")
    assert results_table.main(["--env", str(env_file), "--readme", str(readme)]) == 0
    assert readme.read_text() == text  # idempotent
    readme.write_text("no markers\n")
    assert results_table.main(["--env", str(env_file), "--readme", str(readme)]) == 2
    assert readme.read_text() == "no markers\n"
    assert results_table.table({}).startswith("_No paired comparison")
