#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 20), starting from its
# committed corpus in fuzz/corpus/<target>/, and fails on the first crash: the
# short fuzzing run of CI (docs/testing.md#fuzzing).
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (installed here if missing) and RUSTC_BOOTSTRAP=1, with which
# the stable toolchain accepts the nightly flags cargo-fuzz passes. Inputs found
# during the run go to a scratch directory, never into the committed corpus; a
# crash is written to fuzz/artifacts/<target>/ and printed.
# KINDE_METER_FUZZ_TARGET_DIR overrides where the build goes.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(usage_record meter_value timestamp catalog bearer spool)
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz (about 2 minutes)"
  cargo install --locked cargo-fuzz@0.13.2
fi
export RUSTC_BOOTSTRAP=1
# The flags every run of these targets uses (docs/testing.md#fuzzing): overflow
# checks and debug assertions on, 16 codegen units for a build that fits CI.
# The build (~2 GB) is kept outside the clone, so that CI on the same machine
# rebuilds only the workspace's crates; nothing depends on it being there.
target_dir="${KINDE_METER_FUZZ_TARGET_DIR:-$HOME/.cache/kinde-meter/fuzz-target}"
build_flags=(--debug-assertions --codegen-units 16 --target-dir "$target_dir")

# Not --locked (cargo fuzz has no such flag): when a workspace crate gains a
# dependency, cargo adds it to fuzz/Cargo.lock and keeps every other version.
cargo fuzz build "${build_flags[@]}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=0
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target"
  dirs=("corpus/$target")
  if [ -d "regressions/$target" ]; then dirs+=("regressions/$target"); fi
  echo "-- $target: ${seconds} s from $(find "${dirs[@]}" -type f | wc -l) files (${dirs[*]})"
  if ! cargo fuzz run "${build_flags[@]}" "$target" "$scratch/$target" "${dirs[@]}" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$scratch/$target.log" 2>&1; then
    failed=$((failed + 1))
    tail -n 60 "$scratch/$target.log"
    echo "!! $target crashed; the input is in fuzz/artifacts/$target/"
  else
    grep -E "^stat::number_of_executed_units|^Done" "$scratch/$target.log" || true
  fi
done
passed=$(( ${#targets[@]} - failed ))
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
