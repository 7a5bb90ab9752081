#!/usr/bin/env bash
# nnmark vs PyTorch with an nnmark-bench built elsewhere (a GPU machine without Rust): runs the
# binary on each device and PyTorch on the same work, and prints the ratio tables.
# Usage: bash bench/run-prebuilt.sh NNMARK_BENCH OUT_DIR [cuda] [tch-cpu] [cpu]
#   NNMARK_BENCH: built with `--features tch` against the machine's PyTorch (BENCHMARKS.md says
#   how); the machine's python3 must hold torch. OUT_DIR receives each side's JSON and tables.
set -u
bin=$1 out=$2
shift 2
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$torch_lib:${LD_LIBRARY_PATH:-}
mkdir -p "$out" target/bench-keys
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null; nproc
  grep -m1 'model name' /proc/cpuinfo; python3 -c 'import torch; print("torch", torch.__version__)'
  date -u; } > "$out/machine.txt"
cat "$out/machine.txt"
for device in "${@:-cuda}"; do
  torch_device=cpu
  [ "$device" = cuda ] && torch_device=cuda
  t0=$(date +%s)
  timeout 300 "$bin" --device "$device" --triggers-out target/bench-triggers.bin \
    --keys-out target/bench-keys > "$out/ours_$device.json" 2> "$out/ours_$device.err"
  echo "nnmark $device: rc $?, $(( $(date +%s) - t0 )) s"
  t0=$(date +%s)
  timeout 300 python3 bench/pytorch_bench.py "$torch_device" target/bench-triggers.bin \
    target/bench-keys > "$out/theirs_$device.json" 2> "$out/theirs_$device.err"
  echo "PyTorch $torch_device: rc $?, $(( $(date +%s) - t0 )) s"
  python3 bench/compare.py "$(cat "$out/ours_$device.json")" "$(cat "$out/theirs_$device.json")" \
    | tee "$out/compare_$device.txt"
done
