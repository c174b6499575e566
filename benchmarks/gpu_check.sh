#!/usr/bin/env bash
# On the device machine (one H200), from the repo root, after the parts of benchmarks/gpu_wheels.sh
# have arrived under .whl/: install onnxruntime-gpu and the small wheels into /tmp/site, then run
# benchmarks/gpu_check.py (BERT-base + RoBERTa-base stacked, 100k mixed-length rows end to end).
# Logs and gpu_check.json land in $OUT. Budget: under 8 minutes on one H200.
#   bash benchmarks/gpu_check.sh [extra gpu_check.py args]
set -uo pipefail
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
t0=$(date +%s)
SITE=/tmp/site
if [ ! -d "$SITE/onnxruntime" ] || ! grep -q gpu "$SITE"/onnxruntime*/METADATA 2>/dev/null; then
    mkdir -p "$SITE"
    if [ -f .whl/parts/SHA256SUMS ]; then
        (cd .whl/parts && sha256sum -c --quiet SHA256SUMS) || { echo "a part of onnxruntime-gpu is missing or damaged"; exit 3; }
        # Python's own tarfile/lzma: no dependence on the image having xz.
        cat .whl/parts/ort-gpu.tar.xz.* | python3 -c "import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode='r|xz').extractall(sys.argv[1], filter='data')" "$SITE" || exit 3
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || exit 3
fi
# /tmp/site first: its onnxruntime (the GPU build) shadows the image's CPU onnxruntime 1.30.
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
echo "install: $(( $(date +%s) - t0 ))s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import onnxruntime as o; o.preload_dlls(); print('onnxruntime', o.__version__, o.get_available_providers())" || exit 4
timeout 460 python3 benchmarks/gpu_check.py --out "$OUT" --work /tmp/gpu-work "$@"
rc=$?
echo "gpu_check.py exit $rc after $(( $(date +%s) - t0 ))s"
exit $rc
