#!/usr/bin/env bash
# Fuzzes the front end (tests/fuzz/OptcFuzz.cpp) with libFuzzer for a bounded
# time, as ./dev.sh test does: builds build-fuzz/ with clang-19, replays every
# saved regression input, then fuzzes for $OPTDSL_FUZZ_SECONDS (default 60)
# seeded from the date (the same inputs all day, new ones the next), starting
# from the rule library and the lit tests' rules. An input that crashes,
# hangs or trips a sanitizer is saved in tests/fuzz/regressions/ (commit it
# with the fix) and the run fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
build=${FUZZ_BUILD_DIR:-build-fuzz}
seconds=${OPTDSL_FUZZ_SECONDS:-60}
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang-19 \
    -DCMAKE_CXX_COMPILER=clang++-19 -DOPTDSL_FUZZ=ON -DOPTDSL_BUILD_TESTS=OFF \
    -DOPTDSL_BUILD_BENCHMARKS=OFF -DOPTDSL_BUILD_EXAMPLES=OFF > "$build.configure.log" 2>&1 ||
    { cat "$build.configure.log"; exit 1; }
fi
cmake --build "$build" --target optc-fuzz
fuzzer=$build/bin/optc-fuzz
regressions=tests/fuzz/regressions
shopt -s nullglob
saved=("$regressions"/*)
if [ ${#saved[@]} -gt 0 ]; then
  echo "== replaying ${#saved[@]} saved fuzz inputs"
  "$fuzzer" "${saved[@]}"
fi
corpus=$build/corpus
mkdir -p "$corpus"
cp dsl/*.opt examples/charlm/rules/*.opt "$corpus"/
for rule in $(find tests/lit -name '*.opt'); do
  cp "$rule" "$corpus/lit-$(echo "$rule" | tr / _)"
done
seed=$(date -u +%Y%m%d)
echo "== fuzzing the front end for $seconds s (seed $seed)"
"$fuzzer" -seed="$seed" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
  -print_final_stats=1 -artifact_prefix="$regressions/" "$corpus" 2>&1 | tail -25
exit "${PIPESTATUS[0]}"
