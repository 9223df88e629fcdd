#!/usr/bin/env bash
# The GPU measurements of the first sessions in one device call (committed as bench/results/h200_*); needs .whl/
# from bench/gpu_prep.sh, named in the run's carry.
# Usage on the GPU machine: OUT=results-dir bash bench/gpu_session.sh
set -u
OUT=${OUT:-bench/results}
source bench/gpu_env.sh
nvidia-smi -L
python3 bench/device_throughput.py | tee "$OUT/device_throughput.jsonl"
python3 bench/sdxl_step.py --device cuda --dtype float16 --sizes 2048:4,4096:3,8192:2 --out "$OUT/sdxl_step_fp16.jsonl"
python3 bench/gpu_render_check.py --steps 10 | tee "$OUT/gpu_render_check.jsonl"
python3 bench/sdxl_step.py --device cuda --dtype bfloat16 --sizes 2048:3 --out "$OUT/sdxl_step_bf16.jsonl"
# The reference side by side and the other measurements still pending: bench/gpu_pending.sh.
