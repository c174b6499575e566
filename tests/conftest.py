"""Shared fixtures: one tiny real ensemble, fitted and exported once per test session.

Everything is generated here (corpus, tokenizers, models): no network, no ../shared.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One Ray auth mode for every cluster the test process (and its subprocesses) starts: Ray keeps
# the first cluster's token state process-wide, and a later cluster started in the other mode
# never gets its workers registered (its actors never start).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# No test writes to the user's cache dir: `score` runs without one unless a test names one
# (tests of the default cache set XDG_CACHE_HOME and drop STACKSCORE_NO_CACHE themselves).
os.environ["STACKSCORE_NO_CACHE"] = "1"
os.environ.pop("STACKSCORE_CACHE_DIR", None)


def pytest_configure(config):
    config.addinivalue_line("markers", "ray_cluster: starts a multi-node local Ray cluster (deselect with -m 'not ray_cluster')")

TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "vocab_size": 600, "epochs": 2, "batch_size": 32}


def tiny_config(data_dir: Path, method: str = "stack", labels=None, folds: int = 2, **fusion) -> dict:
    return {
        "labels": labels,
        "seed": 0,
        "parity_rows": 32,
        "gate_min_rows": 16,  # tiny test splits: the gates' minimum lowered knowingly, so the artifact has every variant
        # Tiny models' static int8 is no faster than bf16, and timing 32 rows is noise: the
        # agreement gate alone decides, so the artifact always has the same graphs.
        "static_int8_min_speedup": 0,
        # Likewise bf16's attention: the fused kernel stays the default (a dedicated test sets it).
        "plain_attention_min_speedup": 1e9,
        "data": {"train": str(data_dir / "train.jsonl"), "test": str(data_dir / "test.jsonl")},
        "fusion": {"method": method, "folds": folds, **fusion},
        "models": [
            {"name": "bert", "source": "scratch:bert", "max_length": 64, **TINY},
            {"name": "roberta", "source": "scratch:roberta", "max_length": 64, "seed": 1, **TINY},
        ],
    }


def fit_generated(root: Path, config: dict, train: tuple[int, int], test: tuple[int, int, int]) -> Path:
    """Write a generated corpus under ``root/data`` (``train`` = (rows, seed), ``test`` = (rows,
    seed, first id)), fit ``config`` (its data paths point there) and return the work directory."""
    from stackscore.train.config import config_from_dict
    from stackscore.train.corpus import generate, write_jsonl
    from stackscore.train.fit import fit

    data = root / "data"
    data.mkdir(exist_ok=True)
    write_jsonl(data / "train.jsonl", generate(train[0], seed=train[1]))
    write_jsonl(data / "test.jsonl", generate(test[0], seed=test[1], start=test[2]))
    fit(config_from_dict(config, root), root / "work", log=lambda *_: None)
    return root / "work"


@pytest.fixture(scope="session")
def fitted(tmp_path_factory) -> Path:
    """A fit work directory (models/, artifact/, report.json) of a 2-model stacked ensemble."""
    root = tmp_path_factory.mktemp("fit")
    return fit_generated(root, tiny_config(root / "data", labels=["negative", "positive"]), (400, 1), (120, 2, 1000))


@pytest.fixture(scope="session")
def artifact(fitted) -> Path:
    return fitted / "artifact"


@pytest.fixture(scope="session")
def corpus_rows():
    from stackscore.train.corpus import generate

    return [{"id": e.id, "text": e.text, "label": e.label} for e in generate(700, seed=7, start=5000)]


@pytest.fixture
def copy(artifact, tmp_path) -> Path:
    """A private copy of the session's artifact, to tamper with."""
    import shutil

    dst = tmp_path / "a"
    shutil.copytree(artifact, dst)
    return dst


def edit_manifest(copy: Path, fn) -> None:
    """Change a copied artifact's manifest.json in place (its checksums are not updated)."""
    import json

    p = copy / "manifest.json"
    raw = json.loads(p.read_text())
    fn(raw)
    p.write_text(json.dumps(raw))
