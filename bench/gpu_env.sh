# Sourced by bench/gpu_session.sh and bench/gpu_pending.sh on the lent GPU machine, which is bare: installs
# our diffusers from .whl/ (bench/gpu_prep.sh) and lays the package out under /tmp/pkg as setuptools'
# package-dir would install it; stops the script when either fails.
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
rm -rf /tmp/pkg && mkdir -p /tmp/pkg && cp -r freescale /tmp/pkg/ \
  && cp -r tiling /tmp/pkg/freescale/tiling && cp -r cluster /tmp/pkg/freescale/cluster \
  && cp -r configs /tmp/pkg/freescale/configs || exit 1
export PYTHONPATH=/tmp/pkg:/tmp/site
python3 -c "import torch, diffusers; print(torch.__version__, diffusers.__version__, torch.cuda.get_device_name())" \
  || exit 1
