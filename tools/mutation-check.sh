#!/usr/bin/env bash
# Do the tests of quantisation, pruning and training determinism fail when the code they test
# is broken? Two parts:
#
#   mutants      cargo-mutants on attack/quantize.rs and attack/prune.rs, each mutant tested
#                by the quantisation and pruning tests (the library's unit tests and
#                tests/attacks.rs); results under target/mutation-check/mutants.out.
#   determinism  hand-made determinism bugs (cargo-mutants cannot write them), each applied in
#                turn and tested by the training determinism tests, which must fail.
#
# Usage: tools/mutation-check.sh [mutants|determinism|all]   (default all)
# Run it in a clean clone: it edits sources in place and restores them with `git checkout`.
# It builds with the dev profile: the test profile's opt-level 3 makes every mutant a build of
# several minutes, the dev profile's incremental opt-level 1 about ten seconds.
# Results measured with it are in BENCHMARKS.md ("Mutation checks").
set -euo pipefail
cd "$(dirname "$0")/.."
part=${1:-all}
if ! git diff --quiet; then
    echo "uncommitted changes here: run this in a clean clone" >&2
    exit 2
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
out=$CARGO_TARGET_DIR/mutation-check
mkdir -p "$out"

if [[ $part == all || $part == mutants ]]; then
    command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants
    # Param::... replacements of the module mappers cannot compile (burn's Param has no such
    # constructors); they are left out rather than spent on failed builds.
    cargo mutants --in-place --no-shuffle --profile dev \
        -f crates/nnmark/src/attack/quantize.rs -f crates/nnmark/src/attack/prune.rs \
        --exclude-re 'with Param::' \
        --test-package nnmark --output "$out" \
        -- --lib --test attacks -- quantiz prun ||
        echo "cargo mutants reported missed or unviable mutants: see $out/mutants.out" >&2
fi

# Replaces the literal text FROM with TO in FILE, failing if FROM is not there exactly once.
mutate() {
    python3 - "$1" "$2" "$3" <<'EOF'
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
if text.count(old) != 1:
    sys.exit(f"{path}: expected the text once: {old!r}")
open(path, "w").write(text.replace(old, new))
EOF
}

if [[ $part == all || $part == determinism ]]; then
    clock='std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as u64)'
    names=(
        "data order drawn from the clock"
        "weight gradient split by the thread count"
        "training RNG (dropout) seeded from the clock"
    )
    files=(
        crates/nnmark/src/data/dataset.rs
        crates/nnmark-kernels/src/conv2d.rs
        crates/nnmark/src/train/mod.rs
    )
    froms=(
        "idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));"
        "let chunk = g.batch.div_ceil(WEIGHT_GRAD_PARTS);"
        "    device.seed(cfg.seed);"
    )
    tos=(
        "idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ $clock));"
        "let chunk = g.batch.div_ceil(WEIGHT_GRAD_PARTS.min(rayon::current_num_threads()));"
        "    device.seed(cfg.seed ^ $clock);"
    )
    : >"$out/determinism.out"
    missed=0
    for i in "${!names[@]}"; do
        mutate "${files[$i]}" "${froms[$i]}" "${tos[$i]}"
        # A mutant that does not build would "fail" the tests for the wrong reason.
        if ! cargo test --profile dev -p nnmark --test training --no-run >"$out/determinism-$i.log" 2>&1; then
            git checkout -- "${files[$i]}"
            echo "mutation '${names[$i]}' does not build: $out/determinism-$i.log" >&2
            exit 2
        fi
        if cargo test --profile dev -p nnmark --test training -- \
            identical_across_runs_and_thread_counts \
            >"$out/determinism-$i.log" 2>&1; then
            echo "MISSED: ${names[$i]} (the determinism tests passed)" | tee -a "$out/determinism.out"
            missed=$((missed + 1))
        else
            failed=$(grep -E '^test .* FAILED$' "$out/determinism-$i.log" | tr '\n' ' ')
            echo "caught: ${names[$i]}: $failed" | tee -a "$out/determinism.out"
        fi
        git checkout -- "${files[$i]}"
    done
    [[ $missed == 0 ]] || exit 1
fi
