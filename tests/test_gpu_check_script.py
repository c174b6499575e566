"""benchmarks/gpu_check.py is only run for real on a lent GPU; its --smoke mode runs every step
(fit, fp16 export, scoring from a file, batch-1 latency, the PyTorch baseline, the JSON) with tiny
models on the CPU, so the script cannot rot between GPU sessions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_end_to_end_on_cpu(tmp_path):
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--rows", "600", "--baseline-rows", "200",
         "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert result["device"] == "cpu" and result["rows"] == 600
    engine = result["runs"]["engine (auto)"]
    assert engine["rows"] == 600 and engine["scored"] == 600 and engine["rows_per_s"] > 0
    assert result["runs"]["engine fp32"]["rows"] == 200
    assert 0.98 <= result["agreement_auto_vs_fp32"] <= 1.0
    assert result["agreement_torch_vs_engine_fp32"] >= 0.98
    for name in ("bert", "roberta"):
        assert result["gates"][name]["fp16"]["passed"] in (True, False)
        assert result["batch1_latency_ms"][name]["p99_ms"] >= result["batch1_latency_ms"][name]["p50_ms"] > 0
    assert "| engine (auto) | 600 |" in res.stdout
