"""Artifacts are verified before use: checksums, paths, versions."""

from __future__ import annotations


import pytest

from stackscore.errors import ArtifactError
from stackscore.manifest import load_manifest


from conftest import edit_manifest as edit  # noqa: E402


def test_loads_clean(copy):
    assert load_manifest(copy).fusion.method == "stack"


def test_checksum_mismatch_is_refused(copy):
    with open(copy / "models" / "bert" / "tokenizer.json", "a") as fh:
        fh.write(" ")
    with pytest.raises(ArtifactError, match="size|checksum"):
        load_manifest(copy)


def test_missing_file_is_refused(copy):
    (copy / "fusion" / "meta.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_manifest(copy)


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside.onnx", "models/../../x"])
def test_paths_cannot_leave_the_artifact(copy, bad):
    def f(raw):
        raw["files"][bad] = {"sha256": "0" * 64, "size": 1}

    edit(copy, f)
    with pytest.raises(ArtifactError, match="outside|absolute"):
        load_manifest(copy)


def test_unknown_major_version_is_refused(copy):
    edit(copy, lambda raw: raw.update(format_version="5.0"))
    with pytest.raises(ArtifactError, match="format_version 5.0"):
        load_manifest(copy)


def test_unlisted_referenced_file_is_refused(copy):
    def f(raw):
        del raw["files"][raw["fusion"]["graph"]]

    edit(copy, f)
    with pytest.raises(ArtifactError, match="no checksum"):
        load_manifest(copy)


def test_label_count_mismatch_is_caught_at_load(copy):
    from stackscore.engine.scorer import Scorer

    edit(copy, lambda raw: raw.update(labels=["a", "b", "c"]))
    with pytest.raises(ArtifactError, match="classes"):
        Scorer(copy)


def test_tokenizer_larger_than_embedding_is_refused(copy):
    def f(raw):
        raw["models"][0]["parity"]["vocab_size"] = 10

    edit(copy, f)
    from stackscore.engine.scorer import Scorer

    with pytest.raises(ArtifactError, match=r"tokenizer has .* tokens with ids up to .*, the model.s embedding has 10 rows"):
        Scorer(copy)


def test_inspect_reports_failed_checksums(copy):
    import subprocess
    import sys

    with open(copy / "fusion" / "meta.onnx", "ab") as fh:
        fh.write(b"x")
    res = subprocess.run([sys.executable, "-m", "stackscore", "inspect", str(copy)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "checksums: FAILED" in res.stdout and "fusion/meta.onnx" in res.stdout


def test_symlink_pointing_out_of_the_artifact_is_refused(copy, tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    tok = copy / "models" / "bert" / "tokenizer.json"
    tok.unlink()
    tok.symlink_to(outside)
    with pytest.raises(ArtifactError, match="outside the artifact"):
        load_manifest(copy)
