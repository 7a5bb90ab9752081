#!/usr/bin/env bash
# Creates tools/.venv-interop with the official inference clients nnmark is checked against:
# Triton's Python HTTP client (tritonclient) and numpy. The interop tests run this script
# themselves (once per test run); it is quick when the venv is already there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv="$here/.venv-interop"
stamp="$venv/.nnmark-interop-1"
if [ -f "$stamp" ]; then
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check \
  "tritonclient[http]==2.73.0" "numpy>=1.24"
"$venv/bin/python" -c "import tritonclient, numpy; print('tritonclient', tritonclient.__version__ if hasattr(tritonclient, '__version__') else '2.73.0', 'numpy', numpy.__version__)"
touch "$stamp"
