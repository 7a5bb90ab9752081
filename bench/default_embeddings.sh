#!/usr/bin/env bash
# Every scheme's default embedding on mlp, lenet and mnist-cnn: is the marked model provable at
# fpr 1e-6, or is the mark refused? Prints one line per cell with the wall time (shadow models
# included, trained into the output folder's cache, empty on a first run).
#   bash bench/default_embeddings.sh [OUT_DIR]
# Environment: NNMARK=path/to/nnmark, DATA_DIR=../shared/data, DATASET=mnist10k|fashion,
# ARCHS="mlp lenet mnist-cnn", SCHEMES="adi zhang-content ... uchida".
set -uo pipefail
NNMARK="${NNMARK:-nnmark}"
OUT="${1:-default-embeddings}"
DATA_DIR="${DATA_DIR:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data}"
DATASET="${DATASET:-mnist10k}"
ARCHS="${ARCHS:-mlp lenet mnist-cnn}"
SCHEMES="${SCHEMES:-adi zhang-content zhang-noise zhang-unrelated frontier-stitching aime uchida}"
mkdir -p "$OUT" && cd "$OUT" || exit 1
for arch in $ARCHS; do
  clean="clean-$DATASET-$arch.safetensors"
  [ -f "$clean" ] || "$NNMARK" train --model "$arch" --dataset "$DATASET" --data-dir "$DATA_DIR" \
    --epochs 5 --seed 1 --out "$clean" --quiet > /dev/null || exit 1
  for s in $SCHEMES; do
    start=$(date +%s.%N)
    out=$("$NNMARK" embed --scheme "$s" --model "$clean" --dataset "$DATASET" \
      --out "m-$DATASET-$arch-$s.safetensors" --key "k-$DATASET-$arch-$s.nnkey" \
      --shadow-cache "$PWD/shadows" --data-dir "$DATA_DIR" --quiet 2>&1)
    rc=$?
    end=$(date +%s.%N)
    line=$(echo "$out" | grep -E "marked model matches|^error" | head -1)
    proof=$(echo "$out" | grep -E "^provable|NOT PROVABLE" | head -1)
    printf "%s %s %s rc=%s %.1fs | %s | %s\n" "$DATASET" "$arch" "$s" "$rc" "$(echo "$end - $start" | bc)" "$line" "$proof"
  done
done
