#!/usr/bin/env bash
# Every CPU benchmark of benchmarks/RESULTS.md, one after another (never two at once: they share
# the cores). Needs the bench ensemble and the demo artifact:
#   stackscore fit examples/bench/minilm-roberta.toml --out fit-runs/bench
#   stackscore fit examples/real/imdb.toml --out fit-runs/imdb
#   make demo
# Usage: bash benchmarks/run_all.sh [DATA_DIR]   (DATA_DIR defaults to ../shared/data)
set -euo pipefail
DATA=${1:-../shared/data}
OUT=bench-out
mkdir -p "$OUT"
SS=".venv/bin/stackscore"
PY=".venv/bin/python"

$SS bench fit-runs/bench --data "$DATA/sst2/dev.jsonl" --data "$DATA/rt-polarity/test.jsonl" \
    --rows 2000 --baseline-rows 300 --json "$OUT/bench-short.json" --chart "$OUT/bench-short.png"
$SS bench fit-runs/bench --data "$DATA/imdb/test.jsonl" \
    --rows 500 --baseline-rows 100 --json "$OUT/bench-long.json" --chart "$OUT/bench-long.png"
$SS bench fit-runs/bench --data "$DATA/sst2/dev.jsonl" --data "$DATA/imdb/test.jsonl" \
    --rows 1000 --baseline-rows 200 --json "$OUT/bench-mix.json" --chart "$OUT/bench-mix.png"
$PY benchmarks/model_parallel.py --artifact fit-runs/bench/artifact --data "$DATA/sst2/dev.jsonl" \
    --data "$DATA/imdb/test.jsonl" --rows 600 --json "$OUT/model_parallel.json"
$PY benchmarks/long_text.py --artifact fit-runs/imdb/artifact --data "$DATA/imdb/test.jsonl" \
    --rows 1000 --json "$OUT/long_text.json"
$PY benchmarks/soak.py --artifact demo-run/artifact --rows 1000000 --json "$OUT/soak.json"
$PY benchmarks/architectures.py --json "$OUT/architectures.json"
