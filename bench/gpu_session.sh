#!/usr/bin/env bash
# All GPU measurements in one device call (the lent machine is bare: diffusers travels as a wheel in .whl/, made
# by bench/gpu_prep.sh and named in the run's carry,
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
# The reference implementation's step side by side (issue 14, point 1): needs .refwhl/ and .reference/ from
# bench/reference_prep.sh (carried with the run); its packages go on its own path, not ours.
if [ -d .refwhl ] && [ -d .reference ]; then
  for wheel in .refwhl/*.whl; do
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/refsite "$wheel" || echo "skipped $wheel"
  done
  for size in 2048 4096; do
    python3 bench/reference_side_by_side.py --unet sdxl --device cuda --dtype float16 --freeu --steps 0 \
      --size "$size" --repeats 3 --rounds 2 --reference-dir .reference --python python3 \
      --reference-site /tmp/refsite --out "$OUT/reference_step_sdxl_fp16_$size.json"
  done
fi
