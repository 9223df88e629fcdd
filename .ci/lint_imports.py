"""Run `lint-imports` (the layer contracts in pyproject.toml) on the installed layout.

`freescale.cluster` and `freescale.tiling` live in top-level folders mapped by setuptools' package-dir,
which grimp cannot see: it walks the `freescale/` folder only. So the check runs on a view of the tree
made of symlinks, `freescale/` with `cluster/`, `tiling/` and `configs/` linked inside it.
"""

import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAPPED = {"cluster": "cluster", "tiling": "tiling", "configs": "configs"}

with tempfile.TemporaryDirectory() as view:
    package = os.path.join(view, "freescale")
    os.mkdir(package)
    for name in os.listdir(os.path.join(ROOT, "freescale")):
        os.symlink(os.path.join(ROOT, "freescale", name), os.path.join(package, name))
    for inside, folder in MAPPED.items():
        os.symlink(os.path.join(ROOT, folder), os.path.join(package, inside))
    env = {**os.environ, "PYTHONPATH": view + os.pathsep + os.environ.get("PYTHONPATH", "")}
    config = os.path.join(ROOT, "pyproject.toml")
    sys.exit(subprocess.call(["lint-imports", config, "--no-cache"], env=env, cwd=view))
