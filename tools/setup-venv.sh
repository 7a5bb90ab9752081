#!/usr/bin/env bash
# Creates tools/.venv with PyTorch 2.9 (the libtorch version burn 0.22's `tch` backend needs),
# numpy and safetensors. Used by the benchmarks, the interop fixture script and the `tch` build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check "torch==2.9.0" numpy safetensors
"$venv/bin/python" -c "import torch; print('torch', torch.__version__)"
