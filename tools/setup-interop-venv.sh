#!/usr/bin/env bash
# Creates the Python environments nnmark's interop tests use, from PyPI:
#   clients (default): tools/.venv-interop with the official clients, Triton's (tritonclient)
#     and KServe's (the kserve package, whose model server the server tests also run), numpy
#     and onnxruntime;
#   servers: the above, and tools/.venv-mlserver with MLServer and onnxruntime (MLServer pins
#     other FastAPI versions than kserve, so it has its own venv).
# The tests run this script themselves; it returns at once when the venvs are there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
what="${1:-clients}"

make_venv() { # folder, stamp, packages...
  local venv="$1" stamp="$1/.nnmark-$2"; shift 2
  [ -f "$stamp" ] && return 0
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "$@"
  touch "$stamp"
}

make_venv "$here/.venv-interop" clients-2 \
  "tritonclient[http]==2.73.0" "kserve==0.21.0" "onnxruntime==1.32.0" "numpy>=1.24"
if [ "$what" = servers ]; then
  make_venv "$here/.venv-mlserver" servers-1 \
    "mlserver==1.7.1" "onnxruntime==1.32.0" "numpy>=1.24"
fi
