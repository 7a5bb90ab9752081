#!/usr/bin/env bash
# Sets up LibTorch 2.9 for nnmark's `tch` cargo feature from the PyPI wheel (no separate
# libtorch download): creates tools/.venv with PyTorch 2.9.0 (tools/setup-venv.sh) and writes
# tools/libtorch.env, which exports what tch-rs's build script and the loader need.
#
#   bash tools/setup-libtorch.sh
#   source tools/libtorch.env
#   cargo build --release -p nnmark-cli --features nnmark/tch
#   nnmark --device tch-cpu ...        # or --device cuda:0 with the CUDA wheel
#
# For CUDA, install the CUDA wheel into the venv instead (e.g. TORCH_INDEX=https://download.pytorch.org/whl/cu128).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/setup-venv.sh"
venv="$here/.venv"
if [ -n "${TORCH_INDEX:-}" ]; then
  "$venv/bin/pip" install -q --disable-pip-version-check --index-url "$TORCH_INDEX" "torch==2.9.0"
fi
torch_lib=$("$venv/bin/python" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
[ -d "$torch_lib" ] || { echo "error: no torch/lib under the venv ($torch_lib)" >&2; exit 1; }
cat > "$here/libtorch.env" <<ENV
# Written by tools/setup-libtorch.sh: source it before building or running with --features tch.
export PATH="$venv/bin:\$PATH"
export LIBTORCH_USE_PYTORCH=1
export LIBTORCH_BYPASS_VERSION_CHECK=1
export LD_LIBRARY_PATH="$torch_lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
echo "wrote $here/libtorch.env (torch/lib: $torch_lib); now: source tools/libtorch.env"
