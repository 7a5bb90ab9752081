#!/usr/bin/env bash
# nnmark vs PyTorch on identical work, in one run; prints the ratios (nnmark time / PyTorch time).
# Usage: bash bench/run.sh [cpu|tch-cpu|cuda] [sweep|many]
#   many: only the rows of K = 8 LeNets and MLPs trained one after another and together
#   (nnmark's `train_many`) against PyTorch one after another and with torch.func's vmap.
#   cpu: nnmark's default flex backend; tch-cpu: nnmark with the `tch` feature on LibTorch's CPU
#   kernels; cuda: the `tch` feature on a GPU machine. PyTorch runs on the same device each time.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-cpu}
bash tools/setup-venv.sh >/dev/null
py=tools/.venv/bin/python
if [ "$target" = cuda ] || [ "$target" = tch-cpu ]; then
  export LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1
  export LD_LIBRARY_PATH="$($py -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))'):${LD_LIBRARY_PATH:-}"
  PATH="$(pwd)/tools/.venv/bin:$PATH" cargo build --release -q -p nnmark-bench --features tch
  torch_device=cpu
  [ "$target" = cuda ] && torch_device=cuda
  ours=$("${CARGO_TARGET_DIR:-target}"/release/nnmark-bench --device "$target" --triggers-out target/bench-triggers.bin --keys-out target/bench-keys)
  theirs=$($py bench/pytorch_bench.py "$torch_device" target/bench-triggers.bin target/bench-keys)
else
  cargo build --release -q -p nnmark-bench
  if [ "${2:-}" = many ]; then
    ours=$("${CARGO_TARGET_DIR:-target}"/release/nnmark-bench --device cpu --many 8)
    theirs=$($py bench/pytorch_many.py cpu 8)
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
    $py bench/compare.py --many "$ours" "$theirs"
    exit 0
  fi
  ours=$("${CARGO_TARGET_DIR:-target}"/release/nnmark-bench --device cpu --triggers-out target/bench-triggers.bin --keys-out target/bench-keys)
  theirs=$($py bench/pytorch_bench.py cpu target/bench-triggers.bin target/bench-keys)
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
$py bench/compare.py "$ours" "$theirs"
if [ "${2:-}" = sweep ]; then
  $py bench/compare.py --sweep "$("${CARGO_TARGET_DIR:-target}"/release/nnmark-bench --frontier-sweep)"
fi
