#!/usr/bin/env bash
# Builds the `nnmark` Python package (crates/nnmark-py) into a venv and prints the venv's
# Python:
#   (default) tools/.venv-py, created here with maturin, numpy, onnxruntime and pytest from PyPI;
#   torch:    tools/.venv, the PyTorch 2.9 venv of tools/setup-venv.sh, with maturin added
#             (for the PyTorch example, crates/nnmark-py/examples).
# The build is cargo's dev profile (incremental, CARGO_TARGET_DIR honoured; the dependencies are
# optimised and shared with the test suite's build). For a wheel to install elsewhere:
# `maturin build --release -m crates/nnmark-py/Cargo.toml`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "${1:-}" = torch ]; then
  bash "$here/setup-venv.sh" >&2
  venv="$here/.venv"
  stamp="$venv/.nnmark-py-torch-2"
  packages=("maturin==1.16.0" "onnxruntime==1.32.0" "onnx==1.19.1")
else
  venv="$here/.venv-py"
  stamp="$venv/.nnmark-py-1"
  packages=("maturin==1.16.0" "numpy>=1.24" "onnxruntime==1.32.0" "pytest>=7")
fi
if [ ! -f "$stamp" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${packages[@]}"
  touch "$stamp"
fi
# maturin develop installs into the venv it finds in VIRTUAL_ENV.
VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" \
  "$venv/bin/maturin" develop --quiet -m "$here/../crates/nnmark-py/Cargo.toml" >&2
echo "$venv/bin/python"
