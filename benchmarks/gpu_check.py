"""The GPU check: a BERT-base + RoBERTa-base stacked ensemble, end to end on one GPU.

Run by ``benchmarks/gpu_check.sh`` on the device machine (which installs onnxruntime-gpu first);
``--smoke`` runs the same steps with tiny models on the CPU, so the script itself is tested
where no GPU is lent. Steps, each timed and logged:

1. generate a corpus (train / test / 100k rows to score, 10 % of them 3-12 reviews long);
2. ``stackscore fit``: two base-sized models from configs (BertConfig/RobertaConfig, 12 x 768,
   tokenizers trained on the corpus), fine-tuned briefly on the GPU, stacking; export writes the
   fp32 and the fused fp16 graphs with their gates;
3. score the 100k rows from a file to a file: fp16 on CUDA (IOBinding, length buckets), then
   TensorRT when its provider loads; a slice again in fp32 on CUDA for agreement;
4. batch-1 latency per model (p50 / p99 over 200 single rows);
5. the baseline: PyTorch fp16 eager on the same GPU, batches of 64 in input order, both models
   plus the same fusion.

Prints one table and writes ``gpu_check.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import traceback
from pathlib import Path

import numpy as np

BASE = {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072, "vocab_size": 30522}
TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "vocab_size": 600}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_corpus(work: Path, rows: int, train_rows: int = 2000, seed: int = 0) -> tuple[Path, Path, Path]:
    from stackscore.train.corpus import generate, write_jsonl

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_jsonl(data / "train.jsonl", generate(train_rows, seed=1))
    write_jsonl(data / "test.jsonl", generate(512, seed=2, start=10_000))
    rng = random.Random(seed)
    pool = [e.text for e in generate(20_000, seed=3, start=20_000)]
    score = data / "score.jsonl"
    with open(score, "w") as fh:
        for i in range(rows):
            text = pool[rng.randrange(len(pool))]
            if rng.random() < 0.1:  # the long tail: multi-review rows, up to max length
                text = " ".join(pool[rng.randrange(len(pool))] for _ in range(rng.randint(3, 12)))
            fh.write(json.dumps({"id": i, "text": text}) + "\n")
    return data / "train.jsonl", data / "test.jsonl", score


def fit_ensemble(work: Path, train: Path, test: Path, size: dict, max_length: int) -> Path:
    from stackscore.train.config import config_from_dict
    from stackscore.train.fit import fit

    common = {"max_length": max_length, "epochs": 1, "batch_size": 32, "learning_rate": 5e-5, **size}
    raw = {
        "seed": 0, "parity_rows": 512, "int8": False, "static_int8": False, "fp16": True,
        "labels": ["negative", "positive"],
        "data": {"train": str(train), "test": str(test)},
        "fusion": {"method": "stack", "folds": 2},
        "models": [
            {"name": "bert", "source": "scratch:bert", **common},
            {"name": "roberta", "source": "scratch:roberta", "seed": 1, **common},
        ],
    }
    fit(config_from_dict(raw, work), work / "fit", log=log)
    return work / "fit"


def score_run(artifact: Path, src: Path, out: Path, device: str, precision: str, token_budget: int, limit_note: str = "") -> dict:
    from stackscore.engine.backends.gpu import providers_for_device
    from stackscore.engine.pipeline import score_file
    from stackscore.engine.scorer import Scorer
    from stackscore.options import GpuOptions, RunOptions, ScoreOptions

    gpu = GpuOptions(trt_cache_dir=out.with_name(out.name + ".trt-cache"))
    opts = RunOptions(providers=tuple(providers_for_device(device)), precision=precision, gpu=gpu, token_budget=token_budget, max_batch_rows=512)
    t0 = time.perf_counter()
    scorer = Scorer(artifact, opts)
    load_s = time.perf_counter() - t0
    stats = score_file(scorer, src, out, ScoreOptions.from_kwargs(run=opts, chunk_rows=16384, queue_depth=4, overwrite=True, progress=False))
    d = stats.to_dict()
    d.update(load_seconds=round(load_s, 2), backends=scorer.describe(), device=device, precision=precision, note=limit_note)
    d["providers"] = {n: getattr(b, "providers", None) for n, r in scorer.runners.items() for b in getattr(r, "backends", [])[:1]}
    return {"stats": d, "scorer": scorer}


def labels_of(path: Path) -> np.ndarray:
    with open(path) as fh:
        return np.asarray([json.loads(line)["label"] for line in fh])


def batch1_latency(scorer, texts: list[str], n: int = 200) -> dict:
    """Per model: one row at a time through its session (tokenized beforehand)."""
    out = {}
    for name, runner in scorer.runners.items():
        if runner.tokenizer_key is None:  # string-input models have no session to time alone
            continue
        backend = runner.backends[0]
        enc = runner.encode(texts[:n])
        times = []
        for i in range(len(enc.lengths)):
            ids = enc.flat[enc.offsets[i] : enc.offsets[i] + enc.lengths[i]][None, :]
            mask = np.ones_like(ids)
            t0 = time.perf_counter()
            backend.run(ids, mask)
            times.append((time.perf_counter() - t0) * 1e3)
        times = np.asarray(times[10:])  # first calls build kernels / arenas
        out[name] = {"p50_ms": round(float(np.percentile(times, 50)), 3), "p99_ms": round(float(np.percentile(times, 99)), 3)}
    return out


def torch_baseline(work: Path, scorer, texts: list[str], device: str, max_length: int, batch: int = 64) -> dict:
    """PyTorch eager, fp16 on the GPU (fp32 on the CPU), batches in input order, both models + fusion."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from stackscore.hf import load_tokenizer

    dev = "cuda" if device != "cpu" else "cpu"
    dtype = torch.float16 if dev == "cuda" else torch.float32
    models = []
    for name in scorer.model_names:
        d = work / "fit" / "models" / name
        m = AutoModelForSequenceClassification.from_pretrained(str(d), local_files_only=True, dtype=dtype).to(dev).eval()
        models.append((m, load_tokenizer(d)))
    logits = [np.zeros((len(texts), 2), np.float32) for _ in models]
    with torch.inference_mode():
        for m, tok in models:  # warm-up
            m(**tok(texts[:batch], padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(dev))
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(0, len(texts), batch):
            part = texts[s : s + batch]
            for j, (m, tok) in enumerate(models):
                enc = tok(part, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
                enc.pop("token_type_ids", None)
                logits[j][s : s + len(part)] = m(**enc.to(dev)).logits.float().cpu().numpy()
        proba = scorer.fusion(logits)
        seconds = time.perf_counter() - t0
    return {"rows": len(texts), "seconds": round(seconds, 2), "rows_per_s": round(len(texts) / seconds, 1), "dtype": str(dtype), "batch": batch, "proba": proba}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("OUT", "bench-out")) / "gpu-work")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-out")))
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--baseline-rows", type=int, default=20_000)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--token-budget", type=int, default=32768)
    ap.add_argument("--smoke", action="store_true", help="tiny models on the CPU: tests this script without a GPU")
    args = ap.parse_args()
    device = "cpu" if args.smoke else "cuda"
    size = TINY if args.smoke else BASE
    if args.smoke:
        args.rows, args.baseline_rows, args.token_budget = min(args.rows, 2000), min(args.baseline_rows, 500), 4096
        args.max_length = min(args.max_length, 64)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"device": device, "rows": args.rows, "max_length": args.max_length, "model_size": size}
    if device == "cuda":
        import onnxruntime as ort

        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # CUDA 13 / cuDNN 9 from the nvidia-* wheels torch brought
        result["ort"] = {"version": ort.__version__, "providers": ort.get_available_providers()}
        import torch

        result["gpu"] = torch.cuda.get_device_name(0)
        log(f"onnxruntime {ort.__version__}, providers {ort.get_available_providers()}, GPU {result['gpu']}")

    t0 = time.perf_counter()
    train, test, src = make_corpus(args.work, args.rows, train_rows=400 if args.smoke else 2000)
    log(f"corpus: {args.rows:,} rows to score ({time.perf_counter() - t0:.0f}s)")
    t0 = time.perf_counter()
    fitted = fit_ensemble(args.work, train, test, size, args.max_length)
    artifact = fitted / "artifact"
    result["fit_seconds"] = round(time.perf_counter() - t0, 1)
    manifest = json.loads((artifact / "manifest.json").read_text())
    result["gates"] = {m["name"]: {k: {kk: v.get(kk) for kk in ("label_agreement", "max_prob_error", "passed", "device")} for k, v in m["parity"]["gates"].items()} for m in manifest["models"]}
    log(f"fit + export: {result['fit_seconds']}s; gates {result['gates']}")

    runs = {}
    main_run = score_run(artifact, src, args.work / "scored-fp16.jsonl", device, "auto", args.token_budget)
    runs["engine (auto)"] = main_run["stats"]
    log(f"engine auto: {main_run['stats']['rows_per_s']:,.0f} rows/s on {main_run['stats']['backends']}")
    texts = [json.loads(line)["text"] for line in open(src)]
    result["batch1_latency_ms"] = batch1_latency(main_run["scorer"], texts)
    log(f"batch-1 latency: {result['batch1_latency_ms']}")

    sub = args.work / "slice.jsonl"
    with open(src) as fi, open(sub, "w") as fo:
        for i, line in enumerate(fi):
            if i >= args.baseline_rows:
                break
            fo.write(line)
    exact = score_run(artifact, sub, args.work / "scored-fp32.jsonl", device, "fp32", args.token_budget)
    runs["engine fp32"] = exact["stats"]
    ref = labels_of(args.work / "scored-fp32.jsonl")
    got = labels_of(args.work / "scored-fp16.jsonl")[: len(ref)]
    result["agreement_auto_vs_fp32"] = float(np.mean(got == ref))

    if device == "cuda":
        import onnxruntime as ort

        if "TensorrtExecutionProvider" in ort.get_available_providers():
            try:
                trt = score_run(artifact, sub, args.work / "scored-trt.jsonl", "tensorrt", "fp16", args.token_budget, "fp32 graph, TensorRT fp16")
                runs["engine TensorRT"] = trt["stats"]
                result["agreement_trt_vs_fp32"] = float(np.mean(labels_of(args.work / "scored-trt.jsonl") == ref))
            except Exception as exc:  # noqa: BLE001 - TensorRT libraries are optional on the image
                runs["engine TensorRT"] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        else:
            runs["engine TensorRT"] = {"error": "TensorrtExecutionProvider not available (no TensorRT libraries on this image)"}

    base = torch_baseline(args.work, main_run["scorer"], texts[: args.baseline_rows], device, args.max_length)
    base_labels = np.asarray(main_run["scorer"].labels)[base.pop("proba").argmax(1)]
    result["agreement_torch_vs_engine_fp32"] = float(np.mean(base_labels == ref))
    runs["pytorch eager (fp16 on GPU)" if device == "cuda" else "pytorch eager (fp32 on CPU)"] = base
    result["runs"] = runs
    engine_rps = runs["engine (auto)"]["rows_per_s"]
    result["ratio_vs_torch"] = round(engine_rps / base["rows_per_s"], 2)
    result["goal_rows_per_s"] = 10_000
    result["goal_met"] = bool(device == "cuda" and engine_rps >= 10_000)

    print("\n| method | rows | rows/s | backends | note |\n|---|---:|---:|---|---|")
    for name, r in runs.items():
        if "error" in r:
            print(f"| {name} | | | | {r['error']} |")
        else:
            print(f"| {name} | {r['rows']:,} | {r['rows_per_s']:,.1f} | {r.get('backends', r.get('dtype', ''))} | {r.get('note', '')} |")
    print(f"\nengine / PyTorch eager: {result['ratio_vs_torch']}x; agreement auto vs fp32 {result['agreement_auto_vs_fp32']:.4f}; "
          f"PyTorch vs engine fp32 {result['agreement_torch_vs_engine_fp32']:.4f}")
    for name, lat in result["batch1_latency_ms"].items():
        print(f"batch-1 latency {name}: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms")
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    log(f"wrote {args.out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.exit(1)
