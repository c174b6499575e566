"""fit -> export -> score on a real tiny ensemble, through real ONNX Runtime sessions."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stackscore.engine.pipeline import score_file
from stackscore.options import ScoreOptions
from stackscore.manifest import load_manifest


def write_input(path: Path, rows: list[dict]) -> None:
    name = path.name.removesuffix(".gz")
    opener = gzip.open if path.suffix == ".gz" else open
    if name.endswith(".jsonl"):
        with opener(path, "wb") as fh:
            fh.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    elif name.endswith((".csv", ".tsv")):
        with opener(path, "wt", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t" if name.endswith(".tsv") else ",")
            w.writeheader()
            w.writerows(rows)
    elif name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif name.endswith(".txt"):
        with opener(path, "wt") as fh:
            fh.write("".join(r["text"] + "\n" for r in rows))


def read_output(path: Path) -> list[dict]:
    name = path.name.removesuffix(".gz")
    if name.endswith(".jsonl"):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            return [orjson.loads(l) for l in fh if l.strip()]
    if name.endswith(".csv"):
        import pyarrow.csv as pacsv

        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"id": pa.string()})).to_pylist()
    if name.endswith(".parquet"):
        return pq.read_table(path).to_pylist()
    raise ValueError(name)


def test_fit_writes_report_contract_and_artifact(fitted):
    report = json.loads((fitted / "report.json").read_text())
    assert set(report["models"]) == {"bert", "roberta"}
    assert {"mean", "weighted", "vote", "stack"} <= set(report["fusions"])
    assert report["chosen"] == "stack"
    for table in (report["models"], report["fusions"]):
        for m in table.values():
            assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["macro_f1"] <= 1.0 and m["log_loss"] > 0
    # The engine reproduces the training-side fused probabilities on the test split.
    assert report["engine_vs_training"]["max_abs_diff"] < 1e-4
    assert report["engine_vs_training"]["label_agreement"] == 1.0
    m = load_manifest(fitted / "artifact")
    assert [s.name for s in m.models] == ["bert", "roberta"]
    assert m.labels == ["negative", "positive"] and m.fusion.method == "stack" and m.fusion.graph
    for s in m.models:
        assert s.parity["max_abs_diff"] <= 1e-4 and s.parity["label_agreement"] == 1.0
        assert "fp32" in s.graphs and set(s.graphs) <= {"fp32", "int8", "int8_static", "fp16"} and s.tokenizer in m.files
    assert m.fusion.parity["max_abs_diff_vs_training"] <= 1e-4
    assert all(len(v["sha256"]) == 64 for v in m.files.values())


@pytest.mark.parametrize("name", ["in.jsonl", "in.jsonl.gz", "in.csv", "in.csv.gz", "in.tsv", "in.parquet", "in.txt", "in.txt.gz"])
def test_every_input_format_scores_all_rows_in_order(artifact, corpus_rows, tmp_path, name):
    rows = corpus_rows[:300]
    src = tmp_path / name
    write_input(src, rows)
    out = tmp_path / "out.jsonl"
    stats = score_file(artifact, src, out, ScoreOptions.from_kwargs(chunk_rows=128, progress=False))
    got = read_output(out)
    assert stats.rows == len(got) == len(rows)
    expected_ids = [None] * len(rows) if name.startswith("in.txt") else [r["id"] for r in rows]  # text files have no ids
    assert [g["id"] for g in got] == expected_ids and [g["row"] for g in got] == list(range(len(rows)))
    probs = np.array([[g["prob_negative"], g["prob_positive"]] for g in got])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert all(g["label"] == ("positive" if p[1] > p[0] else "negative") for g, p in zip(got, probs))
    assert all(g["score"] == pytest.approx(p.max()) for g, p in zip(got, probs))
    # where the run's time went (what `stackscore bench` accounts a whole process by): the scorer
    # built here was timed, and every model's seconds on the scoring thread were added up
    assert stats.load_seconds > 0 and stats.load_started_at <= stats.finished_at
    assert set(stats.model_seconds) == {"bert", "roberta"} and all(v > 0 for v in stats.model_seconds.values())
    assert sum(stats.model_seconds.values()) < stats.seconds
    assert "time by model: " in stats.summary()


def test_formats_agree_and_outputs_round_trip(artifact, corpus_rows, tmp_path):
    rows = corpus_rows[:200]
    write_input(tmp_path / "in.jsonl", rows)
    results = {}
    for out_name in ["o.jsonl", "o.jsonl.gz", "o.csv", "o.parquet"]:
        score_file(artifact, tmp_path / "in.jsonl", tmp_path / out_name, ScoreOptions.from_kwargs(progress=False))
        results[out_name] = read_output(tmp_path / out_name)
    base = results["o.jsonl"]
    for name, got in results.items():
        assert [str(g["id"]) for g in got] == [r["id"] for r in rows], name
        assert [g["label"] for g in got] == [b["label"] for b in base], name
        np.testing.assert_allclose([g["prob_positive"] for g in got], [b["prob_positive"] for b in base], atol=1e-6)
        assert set(got[0]) >= {"id", "label", "score", "prob_negative", "prob_positive", "error"}


def test_token_budget_and_window_do_not_change_results(artifact, corpus_rows, tmp_path):
    write_input(tmp_path / "in.jsonl", corpus_rows)
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    score_file(artifact, tmp_path / "in.jsonl", a, ScoreOptions.from_kwargs(progress=False))
    opts = ScoreOptions.from_kwargs(progress=False, chunk_rows=97, token_budget=300, max_batch_rows=7, scale_batches=False)
    score_file(artifact, tmp_path / "in.jsonl", b, opts)
    ra, rb = read_output(a), read_output(b)
    assert [r["id"] for r in ra] == [r["id"] for r in rb]
    np.testing.assert_allclose([r["prob_positive"] for r in ra], [r["prob_positive"] for r in rb], atol=1e-5)


def test_engine_logits_match_pytorch_and_stack_matches_sklearn(fitted, corpus_rows, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from stackscore.fusion import StackFusion

    rows = corpus_rows[:64]
    write_input(tmp_path / "in.jsonl", rows)
    out = tmp_path / "o.jsonl"
    score_file(fitted / "artifact", tmp_path / "in.jsonl", out, ScoreOptions.from_kwargs(progress=False, with_model_outputs=True))
    got = read_output(out)
    texts = [r["text"] for r in rows]
    logits = {}
    for name in ("bert", "roberta"):
        model = AutoModelForSequenceClassification.from_pretrained(fitted / "models" / name).eval()
        tok = AutoTokenizer.from_pretrained(fitted / "models" / name)
        enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        with torch.inference_mode():
            ref = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.numpy()
        engine = np.array([[g[f"logit_{name}_negative"], g[f"logit_{name}_positive"]] for g in got])
        assert np.abs(engine - ref).max() <= 1e-4, name
        probs = np.array([[g[f"prob_{name}_negative"], g[f"prob_{name}_positive"]] for g in got])
        np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(ref), -1).numpy(), atol=1e-5)
        logits[name] = engine
    # Refit the scikit-learn meta-learner on the saved out-of-fold logits (deterministic) and
    # compare its probabilities with the engine's ONNX meta-learner on the same logits.
    oof = np.load(fitted / "oof.npz")
    sk = StackFusion().fit([oof["logits_bert"], oof["logits_roberta"]], oof["y"])
    expected = sk.predict_proba([logits["bert"], logits["roberta"]])
    engine_p = np.array([[g["prob_negative"], g["prob_positive"]] for g in got])
    np.testing.assert_allclose(engine_p, expected, atol=1e-5)
    assert (engine_p.argmax(1) == expected.argmax(1)).all()


def test_bad_rows_are_reported_not_dropped(artifact, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(
        b'{"id": "a", "text": "a great film"}\n'
        b'{"id": "b", "txt": "wrong field"}\n'
        b"{not json}\n"
        b'{"id": "d", "text": null}\n'
        b'{"id": "e", "text": "   "}\n'
        b'{"id": "f", "text": 42}\n'
        b'{"id": "g", "text": "awful and boring"}\n'
    )
    out = tmp_path / "o.jsonl"
    stats = score_file(artifact, src, out, ScoreOptions.from_kwargs(progress=False))
    got = read_output(out)
    assert len(got) == stats.rows == 7 and stats.scored == 2 and stats.errored == 5
    assert [g["id"] for g in got] == ["a", "b", None, "d", "e", "f", "g"]  # one id type: no row number for "{not json}"
    assert [g["row"] for g in got] == list(range(7))
    assert got[0]["error"] is None and got[0]["label"] in ("negative", "positive")
    assert "missing field 'text'" in got[1]["error"] and "line 2" in got[1]["error"]
    assert "invalid JSON" in got[2]["error"] and got[2]["label"] is None and got[2]["prob_positive"] is None
    assert "null" in got[3]["error"] and "empty" in got[4]["error"] and "int" in got[5]["error"]


def test_output_is_not_overwritten_without_flag(artifact, corpus_rows, tmp_path):
    from stackscore.errors import StackscoreError

    write_input(tmp_path / "in.jsonl", corpus_rows[:5])
    out = tmp_path / "o.jsonl"
    score_file(artifact, tmp_path / "in.jsonl", out, ScoreOptions.from_kwargs(progress=False))
    with pytest.raises(StackscoreError, match="--overwrite"):
        score_file(artifact, tmp_path / "in.jsonl", out, ScoreOptions.from_kwargs(progress=False))


SCORING_IMPORT_CHECK = """
import sys
from stackscore.api import Ensemble
from stackscore.engine import ScoreOptions, score_file
from stackscore.cli import app
e = Ensemble.load(sys.argv[1])
e.predict_proba(["a fine film", "not good"])
score_file(sys.argv[1], sys.argv[2], sys.argv[3], ScoreOptions.from_kwargs(progress=False))
from stackscore.engine.backends import have
if have("openvino"):
    Ensemble.load(sys.argv[1], backend="openvino").predict_proba(["a fine film"])
    assert "openvino" in sys.modules
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "sklearn", "scipy", "skl2onnx"))
# OpenVINO's model converter (~0.1 s of every cold start) is skipped; the engine reads ONNX
bad += [m for m in ("openvino.tools.ovc",) if m in sys.modules]
print("FORBIDDEN:" + ",".join(bad))
if "openvino" in sys.modules:  # ... and stays there for code that wants it
    import openvino
    assert callable(openvino.convert_model) and "openvino.tools.ovc" in sys.modules
"""


def test_scoring_path_imports_no_training_stack(artifact, corpus_rows, tmp_path):
    write_input(tmp_path / "in.jsonl", corpus_rows[:20])
    res = subprocess.run(
        [sys.executable, "-c", SCORING_IMPORT_CHECK, str(artifact), str(tmp_path / "in.jsonl"), str(tmp_path / "o.jsonl")],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "FORBIDDEN:\n" in res.stdout or res.stdout.strip().endswith("FORBIDDEN:"), res.stdout


def run_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stackscore", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_score_exits_without_teardown_with_everything_written(artifact, corpus_rows, tmp_path):
    """`score` ends the process with os._exit once its files are closed (cli._exit_now): the
    output, the stats file and the summary on stderr must all be complete, the exit status 0."""
    write_input(tmp_path / "in.jsonl", corpus_rows[:30])
    out, stats = tmp_path / "o.jsonl", tmp_path / "s.json"
    res = run_cli("score", str(artifact), str(tmp_path / "in.jsonl"), "-o", str(out), "--stats-json", str(stats), "--quiet")
    assert res.returncode == 0, res.stderr
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [r["id"] for r in corpus_rows[:30]]
    assert json.loads(stats.read_text())["rows"] == 30
    assert "rows 30" in res.stderr and res.stderr.rstrip().splitlines()[-1].startswith("backends: ")
    assert not list(tmp_path.glob("o.jsonl.parts*"))


def test_cli_score_leaves_its_models_to_the_process_end(artifact, corpus_rows, tmp_path):
    """Freeing the compiled models when ``score_file`` returned took 0.12-0.14 s of a whole
    process after its output was complete; `score` keeps its scorer (``cli._KEPT``) for
    ``_exit_now``. One command's scorer at most, still usable: nothing was torn down."""
    from typer.testing import CliRunner

    from stackscore import cli
    from stackscore.engine.scorer import Scorer

    write_input(tmp_path / "in.jsonl", corpus_rows[:12])
    for n in (1, 2):
        res = CliRunner().invoke(cli.app, ["score", str(artifact), str(tmp_path / "in.jsonl"), "-o", str(tmp_path / f"o{n}.jsonl"), "--quiet", "--no-cache"])
        assert res.exit_code == 0, res.output
        assert len(cli._KEPT) == 1 and isinstance(cli._KEPT[0], Scorer) and cli._KEPT[0].artifact_dir == Path(artifact)
    kept = cli._KEPT.pop()
    scored = kept.score_texts([r["text"] for r in corpus_rows[:12]])
    lines = [json.loads(line) for line in (tmp_path / "o2.jsonl").read_text().splitlines()]
    assert np.allclose(scored.proba.max(axis=1), [line["score"] for line in lines], atol=1e-5)


@pytest.mark.parametrize("cmd", [[], ["demo"], ["fit"], ["export"], ["score"], ["inspect"]])
def test_help(cmd):
    res = run_cli(*cmd, "--help")
    assert res.returncode == 0, res.stderr
    assert "Usage" in res.stdout


def test_cli_score_and_inspect(artifact, corpus_rows, tmp_path):
    write_input(tmp_path / "in.csv", corpus_rows[:50])
    out = tmp_path / "o.parquet"
    res = run_cli("score", str(artifact), str(tmp_path / "in.csv"), "-o", str(out), "--label-field", "label", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "rows 50" in res.stderr and "accuracy" in res.stderr
    assert pq.read_table(out).num_rows == 50
    res = run_cli("inspect", str(artifact))
    assert res.returncode == 0 and "checksums: OK" in res.stdout and "fusion stack" in res.stdout
    from stackscore.engine.backends import int8_kernels

    assert f"measured with {int8_kernels()} int8 kernels" in res.stdout  # the kind of CPU behind each int8 gate
    from stackscore.engine.backends import cpu_has_bf16

    notes = [ln for ln in res.stdout.splitlines() if "not used on this CPU" in ln]
    assert all("no bf16 instructions" in ln for ln in notes)  # exported here: every gate holds here
    assert bool(notes) == (not cpu_has_bf16() and "gate bf16: passed" in res.stdout)  # bf16 also needs the instructions


def test_cli_errors_are_one_line_without_traceback(artifact, tmp_path):
    res = run_cli("score", str(artifact), str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.jsonl"))
    assert res.returncode == 2
    assert "missing.jsonl: input file does not exist" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "in.csv").write_text("id,body\n1,hello\n")
    res = run_cli("score", str(artifact), str(tmp_path / "in.csv"), "-o", str(tmp_path / "o.jsonl"))
    assert res.returncode == 2 and "no column 'text' (columns: id, body)" in res.stderr and "Traceback" not in res.stderr


def test_demo_command_runs_with_a_relative_workdir(tmp_path):
    """The README's first command, shrunk: relative --workdir, every stage, predictions written."""
    res = subprocess.run(
        [sys.executable, "-m", "stackscore", "demo", "--workdir", "run", "--rows", "300", "--train-rows", "150", "--folds", "2", "--epochs", "1"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "models" / "bert" / "config.json").is_file() and (run / "models" / "roberta" / "config.json").is_file()
    assert (run / "artifact" / "manifest.json").is_file()
    assert sum(1 for _ in open(run / "predictions.jsonl", "rb")) == 300
    assert "rows/s" in res.stderr and "padding efficiency" in res.stderr and "accuracy" in res.stderr


def test_cli_asks_how_a_tsv_is_quoted_when_it_matters(artifact, tmp_path):
    src = tmp_path / "in.tsv"
    src.write_text('text\n"a great film,\nreally"\nplain and dull\n')  # quoted as pandas writes a newline
    res = run_cli("score", str(artifact), str(src), "-o", str(tmp_path / "o.jsonl"), "--quiet")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].endswith("field 'text' starts with a double quote, so this TSV reads differently quoted "
                                                         "(as pandas and Python's csv write it) or not (as GLUE's files are): pass --tsv-quotes csv or --tsv-quotes none (fit: tsv_quotes in [data])")
    res = run_cli("score", str(artifact), str(src), "-o", str(tmp_path / "o.jsonl"), "--quiet", "--tsv-quotes", "csv")
    assert res.returncode == 0, res.stderr
    assert [orjson.loads(l)["error"] for l in (tmp_path / "o.jsonl").read_bytes().splitlines()] == [None, None]  # two rows, not three
