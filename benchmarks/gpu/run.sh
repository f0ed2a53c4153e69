#!/usr/bin/env bash
# The CUDA backend on a machine with a GPU, in one go:
#   1. build (Release, in $BUILD_DIR, default build/), or, where
#      benchmarks/gpu/prepare-carry.sh left prebuilt programs in .gpu-carry/
#      (a GPU machine that cannot build), use those;
#   2. the GPU tests: every rule against the interpreter (1 and 50 tensors,
#      odd sizes, aligned and misaligned), determinism, graph replay, and the
#      golden cases via optdsl-golden --backend cuda, the NCCL engine's
#      division kernels and, where libnccl.so.2 is installed, one NCCL rank;
#   3. the benchmarks: adamw and ademamix at GPT-2 small (124M) and 1.3B
#      shapes against a device-to-device copy of the same bytes, and
#      torch.optim.AdamW(fused=True) on the same shapes, in the same run.
# Results land in benchmarks/gpu/results/<date>-<device>.md (the section for
# docs/benchmarks.md) with the raw JSON beside it. Stops at the first failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
cd "$root"

device=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
if [ -z "$device" ]; then
  echo "run.sh: no GPU (nvidia-smi finds none); nothing to measure" >&2
  exit 77
fi
echo "== device: $device"

if [ -d "$root/.gpu-carry/bin" ]; then
  echo "== prebuilt programs from .gpu-carry (benchmarks/gpu/prepare-carry.sh)"
  build="$root/.gpu-carry"
  libs=/tmp/optdsl-libs
  rm -rf "$libs" && mkdir -p "$libs"
  for deb in "$build"/debs/*.deb; do dpkg -x "$deb" "$libs"; done
  export LD_LIBRARY_PATH="$libs/usr/lib/x86_64-linux-gnu:$libs/usr/lib/llvm-19/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # The programs were built elsewhere: point them at this checkout's rules.
  export OPTDSL_DSL_DIR="$root/dsl"
  if ldd "$build/bin/optdsl-cuda-gpu-tests" | grep -q "not found"; then
    ldd "$build/bin/optdsl-cuda-gpu-tests" | grep "not found" >&2
    echo "run.sh: a carried program misses a library (above); add its package in prepare-carry.sh" >&2
    exit 1
  fi
else
  echo "== build"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" --target optdsl-cuda-gpu-tests optdsl-cuda-host-tests optdsl-golden optdsl-gpu-bench optc
fi

echo "== GPU tests"
log=$(mktemp)
"$build/bin/optdsl-cuda-gpu-tests" 2>&1 | tee "$log" | grep -E "^\[( +OK|  FAILED|  SKIPPED|  PASSED) " || true
if ! grep -q "^\[  PASSED  \]" "$log" || grep -q "FAILED" "$log"; then
  echo "run.sh: GPU tests failed (full log: $log)" >&2
  exit 1
fi
# Only the one-rank NCCL test may skip (a machine without libnccl.so.2).
skipped=$(grep -E "^\[  SKIPPED \] [A-Za-z]" "$log" | grep -v "listed below" | sort -u || true)
if [ -n "$(echo "$skipped" | grep -v -e '^$' -e NcclOneRank || true)" ]; then
  echo "run.sh: GPU tests were skipped although nvidia-smi sees a GPU:" >&2
  echo "$skipped" >&2
  exit 1
fi
[ -z "$skipped" ] || echo "run.sh: NCCL not installed here: its one-rank test skipped"
OPTDSL_LIBCUDA="$build/lib/liboptdsl-fake-cuda.so" "$build/bin/optdsl-cuda-host-tests" --gtest_brief=1

echo "== golden cases on the GPU"
"$build/bin/optdsl-golden" --backend cuda --dsl "$root/dsl" tests/golden/cases/*.json

echo "== benchmarks"
results=benchmarks/gpu/results
mkdir -p "$results"
stamp="$(date -u +%Y-%m-%d)-$(echo "$device" | cut -d, -f1 | tr -c 'A-Za-z0-9\n' '-')"
"$build/bin/optdsl-gpu-bench" --benchmark_out="$results/$stamp-bench.json" --benchmark_out_format=json
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  python3 benchmarks/gpu/torch_adamw_fused.py | tee "$results/$stamp-torch.jsonl"
else
  echo "run.sh: torch with CUDA not found: no peer column" >&2
fi
# bitsandbytes' 8-bit AdamW and AdEMAMix, where its wheel was carried
# (bnb_8bit.py says how); their rows join the torch ones.
if python3 -c "import bitsandbytes" 2>/dev/null; then
  (cd benchmarks/gpu && python3 bnb_8bit.py) | tee -a "$results/$stamp-torch.jsonl"
else
  echo "run.sh: bitsandbytes not importable: no 8-bit peer rows (benchmarks/gpu/bnb_8bit.py)" >&2
fi
python3 benchmarks/gpu/report.py "$results/$stamp-bench.json" "$results/$stamp-torch.jsonl" "$device" \
  | tee "$results/$stamp.md"
echo "== done: $results/$stamp.md (paste it into docs/benchmarks.md)"
