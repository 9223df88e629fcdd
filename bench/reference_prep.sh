#!/usr/bin/env bash
# Prepares the reference side by side for a bare GPU machine (bench/gpu_pending.sh reference): the reference's
# packages as wheels in .refwhl/ (diffusers 0.20.2 is an sdist on PyPI: built here) and the reference's
# Python files in .reference/, both ignored by git. Usage: bash bench/reference_prep.sh ../reference/freescale_ref
set -euo pipefail
checkout=${1:?usage: bash bench/reference_prep.sh PATH_TO_A_CHECKOUT_OF_ali-vilab/FreeScale}
rm -rf .refwhl .reference && mkdir -p .refwhl .reference
python -m pip download -q --no-deps -d .refwhl diffusers==0.20.2 huggingface_hub==0.25.2 transformers==4.38.2 \
  "tokenizers>=0.14,<0.19" einops
python -m pip wheel -q --no-deps --no-build-isolation -w .refwhl .refwhl/diffusers-0.20.2.tar.gz
rm .refwhl/diffusers-0.20.2.tar.gz
cp "$checkout"/*.py .reference/
du -sh .refwhl .reference
