#!/usr/bin/env bash
# Prepares a device run (bench/gpu_pending.sh, bench/gpu_session.sh) on this machine: the lent GPU machine
# has torch and transformers but no diffusers and no internet, so our diffusers travels as a wheel in .whl/
# (ignored by git; name it in the run's carry). Usage: bash bench/gpu_prep.sh
set -euo pipefail
version=$(python -c "import diffusers; print(diffusers.__version__)")
rm -rf .whl && mkdir -p .whl
python -m pip download -q --no-deps --only-binary=:all: -d .whl "diffusers==$version"
du -sh .whl && ls .whl
