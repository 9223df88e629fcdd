#!/usr/bin/env bash
# All GPU measurements in one device call (the lent machine is bare: diffusers travels as a wheel in .whl/,
# and the package is laid out under /tmp/pkg as setuptools' package-dir would install it).
# Usage on the GPU machine: OUT=results-dir bash bench/gpu_session.sh
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
rm -rf /tmp/pkg && mkdir -p /tmp/pkg && cp -r freescale /tmp/pkg/ \
  && cp -r tiling /tmp/pkg/freescale/tiling && cp -r cluster /tmp/pkg/freescale/cluster \
  && cp -r configs /tmp/pkg/freescale/configs || exit 1
export PYTHONPATH=/tmp/pkg:/tmp/site
nvidia-smi -L
python3 -c "import torch, diffusers; print(torch.__version__, diffusers.__version__, torch.cuda.get_device_name())"
python3 bench/device_throughput.py | tee "$OUT/device_throughput.jsonl"
python3 bench/sdxl_step.py --device cuda --dtype float16 --sizes 2048:4,4096:3,8192:2 --out "$OUT/sdxl_step_fp16.jsonl"
python3 bench/gpu_render_check.py --steps 10 | tee "$OUT/gpu_render_check.jsonl"
python3 bench/sdxl_step.py --device cuda --dtype bfloat16 --sizes 2048:3 --out "$OUT/sdxl_step_bf16.jsonl"
