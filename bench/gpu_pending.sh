#!/usr/bin/env bash
# The GPU measurements the open issues still wait for, each under its own time limit, so that one device
# call runs them all or a session runs them part by part (and commits each part's JSON at once):
#   OUT=results-dir bash bench/gpu_pending.sh [PARTS]     PARTS: a comma list of video, step, bands,
#                                                          sharded, reference (default: all five, in order)
#   video      issue 11 point 10 and issue 14 point 5: a 16-frame motion-UNet step, SD1.5 size at 1024^2
#              and SDXL size at 2048^2, FreeScale / fast / temporal windows against direct, peak memory
#   step       issue 14 point 2: the SDXL step at 2048^2, 4096^2 and 8192^2 against direct, after local
#              windows went back by indexed accumulation and fast mode's sub-grids shared one call
#              (bench/step_counts.py: 4.5x fewer operator calls at 4096^2, 10.6x at 8192^2)
#   bands      issue 14 point 3: each of 8 ranks' bands of an 8192^2 SDXL step timed alone (the plan's
#              measured band compute: bench/calibrate_cost_model.py reads the file)
#   sharded    issue 14 point 3: a whole fp16 render on 1, 2 and 4 ranks sharing the GPU (host-staged gloo)
#   reference  issue 14 point 1: the reference implementation side by side, a step and a whole cascade at
#              2048^2 and 4096^2 (SDXL-size pipeline, random weights), with peak memory
# Needs .whl/ (bench/gpu_prep.sh: our diffusers as a wheel; the lent machine is bare) carried with the run;
# the reference part also .refwhl/ and .reference/ (bench/reference_prep.sh). The parts' limits add up to
# more than one device call may last (600 s): one call each for `video,step` (issue 11's last point and
# issue 14's step; about 3 + 2 minutes), `reference` (about 6) and `bands,sharded` (about 4),
# estimated from the H200's measured SDXL steps.
set -u
OUT=${OUT:-bench/results}
PARTS=${1:-video,step,bands,sharded,reference}
mkdir -p "$OUT"
source bench/gpu_env.sh
part() { [[ ",$PARTS," == *",$1,"* ]]; }
run() {  # LIMIT_SECONDS COMMAND...: one measurement; a failure or a timeout is reported and the rest go on
  local limit=$1; shift
  echo "== $*"
  timeout "$limit" "$@" || echo "== FAILED ($?): $*"
}
if part video; then
  run 200 python3 bench/video_step.py --unet sd15 --device cuda --dtype float16 --sizes 1024:3 --frames 16 \
    --modes direct,freescale,fast,windows --out "$OUT/h200_video_step_sd15_fp16.jsonl"
  run 200 python3 bench/video_step.py --unet sdxl --device cuda --dtype float16 --sizes 2048:2 --frames 16 \
    --modes direct,freescale,fast,windows --out "$OUT/h200_video_step_sdxl_fp16.jsonl"
fi
if part step; then
  run 150 python3 bench/sdxl_step.py --device cuda --dtype float16 --sizes 2048:5,4096:3,8192:2 \
    --out "$OUT/h200_sdxl_step_fp16_indexed_windows.jsonl"
fi
if part bands; then
  run 60 python3 bench/group_norm_stats.py --device cuda --out "$OUT/h200_group_norm_stats.jsonl"
  run 150 python3 bench/band_compute.py --unet sdxl --device cuda --dtype float16 --size 8192 --world 8 \
    --repeats 2 --out "$OUT/h200_sdxl_band_compute_fp16.jsonl"
fi
if part sharded; then
  run 60 python3 bench/sharded_ops_dtype.py --device cuda --dtype float16 --out "$OUT/h200_sharded_ops_dtype.jsonl"
  run 150 python3 bench/sharded_render.py --device cuda --dtype fp16 --ranks 1,2,4 --steps 10 \
    --out "$OUT/h200_sharded_render_fp16.jsonl"
fi
if part reference && [ -d .refwhl ] && [ -d .reference ]; then
  for wheel in .refwhl/*.whl; do
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/refsite "$wheel" || echo "skipped $wheel"
  done
  # The step and a whole cascade at 2048^2 (2 stages) and 4096^2 (3 stages), FreeU on in both; one SDXL-size
  # pipeline (5 GB in fp16) saved once for both sizes and both sides.
  run 200 python3 bench/reference_side_by_side.py --unet sdxl --device cuda --dtype float16 --freeu --size 2048 \
    --stages 1024,2048 --steps 4 --repeats 3 --rounds 2 --model-cache /tmp/sdxl_size --reference-dir .reference \
    --python python3 --reference-site /tmp/refsite --out "$OUT/h200_reference_sdxl_fp16_2048.json"
  run 240 python3 bench/reference_side_by_side.py --unet sdxl --device cuda --dtype float16 --freeu --size 4096 \
    --stages 1024,2048,4096 --steps 3 --repeats 2 --rounds 1 --model-cache /tmp/sdxl_size \
    --reference-dir .reference --python python3 --reference-site /tmp/refsite \
    --out "$OUT/h200_reference_sdxl_fp16_4096.json"
fi
ls -la "$OUT"
