#!/usr/bin/env bash
# Every scheme's default embedding on mlp, lenet and mnist-cnn (embedded MNIST sample): is the
# marked model provable at fpr 1e-6, or is the mark refused? Prints one line per cell with the
# wall time (shadow models included, trained into an empty cache).
#   bash bench/default_embeddings.sh [OUT_DIR]      (NNMARK=path/to/nnmark, DATA_DIR=../shared/data)
set -uo pipefail
NNMARK="${NNMARK:-nnmark}"
OUT="${1:-default-embeddings}"
DATA_DIR="${DATA_DIR:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data}"
mkdir -p "$OUT" && cd "$OUT" || exit 1
for arch in mlp lenet mnist-cnn; do
  "$NNMARK" train --model "$arch" --epochs 5 --seed 1 --out "clean-$arch.safetensors" --quiet > /dev/null || exit 1
  for s in adi zhang-content zhang-noise zhang-unrelated frontier-stitching aime uchida; do
    start=$(date +%s.%N)
    out=$("$NNMARK" embed --scheme "$s" --model "clean-$arch.safetensors" \
      --out "m-$arch-$s.safetensors" --key "k-$arch-$s.nnkey" \
      --shadow-cache "$PWD/shadows" --data-dir "$DATA_DIR" --quiet 2>&1)
    rc=$?
    end=$(date +%s.%N)
    line=$(echo "$out" | grep -E "marked model matches|^error" | head -1)
    proof=$(echo "$out" | grep -E "^provable|NOT PROVABLE" | head -1)
    printf "%s %s rc=%s %.1fs | %s | %s\n" "$arch" "$s" "$rc" "$(echo "$end - $start" | bc)" "$line" "$proof"
  done
done
