#!/usr/bin/env bash
# Here (a machine with pip access): fetch the wheels the GPU check needs and cut the big one into
# parts that fit the device tool's 64 MiB-per-call transfer limit. The device image has torch 2.11
# with the CUDA 13 / cuDNN 9 libraries and the CPU onnxruntime 1.30, but no onnxruntime-gpu,
# orjson or skl2onnx, and it reaches no registry.
#
#   bash benchmarks/gpu_wheels.sh          # -> .whl/*.whl (small wheels) and .whl/parts/ort-gpu.tar.xz.NN
#
# Then four device calls, back to back (the machine stays warm 30 s after each; parts already
# sent stay there as ignored files, and each call carries at most 64 MiB):
#   1. carry [".whl/parts/ort-gpu.tar.xz.00"]                          command: true
#   2. carry [".whl/parts/ort-gpu.tar.xz.01"]                          command: true
#   3. carry [".whl/parts/ort-gpu.tar.xz.02"]                          command: true
#   4. carry [".whl/parts/ort-gpu.tar.xz.03", ".whl/parts/SHA256SUMS",
#             ".whl/orjson-3.13.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
#             ".whl/skl2onnx-1.20.0-py3-none-any.whl"]
#      command: bash benchmarks/gpu_check.sh          (timeout_s 560; logs + gpu_check.json in $OUT)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl/parts
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT -d .whl \
    onnxruntime-gpu==1.31.1 orjson==3.13.0 skl2onnx==1.20.0
# A wheel is a zip of site-packages; unpacked and re-packed with xz it travels in fewer parts
# (measured: the 255.6 MB wheel becomes 202.8 MB: three parts of 61 MiB and one of 10.4 MiB,
# the last small enough to travel with the call that runs the check).
tmp=$(mktemp -d)
unzip -q .whl/onnxruntime_gpu-1.31.1-*.whl -d "$tmp"
tar -C "$tmp" -cf - . | xz -9e -T0 > .whl/ort-gpu.tar.xz
rm -rf "$tmp" .whl/parts/ort-gpu.tar.xz.*
split -b 61M -d .whl/ort-gpu.tar.xz .whl/parts/ort-gpu.tar.xz.
rm .whl/ort-gpu.tar.xz .whl/onnxruntime_gpu-1.31.1-*.whl
(cd .whl/parts && sha256sum ort-gpu.tar.xz.* > SHA256SUMS)
ls -la .whl .whl/parts
