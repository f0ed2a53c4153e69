#!/usr/bin/env bash
# OptDSL developer entry point. On a fresh Debian 12 machine:
#   ./dev.sh demo    install what is missing, build, run the demo
#   ./dev.sh test    install what is missing, build, run every test
#   ./dev.sh build   install what is missing, build only
#   ./dev.sh bench   build and run the benchmarks
#   ./dev.sh docs    the API reference (Doxygen) in build/docs/api/html
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

BUILD_DIR=${BUILD_DIR:-build}
# ccache keys on paths relative to the checkout, so a fresh clone (CI) reuses
# what another clone on this machine compiled.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
LLVM_BIN=/usr/lib/llvm-19/bin
LIT=/usr/lib/llvm-19/build/utils/lit/lit.py
PACKAGES=(cmake ninja-build g++ ccache python3 libmlir-19-dev mlir-19-tools llvm-19-dev llvm-19-tools
          libboost-dev libxxhash-dev nlohmann-json3-dev libgtest-dev libbenchmark-dev
          clang-19 libclang-rt-19-dev doxygen
          fortunes gnuplot-nox # the demo's text and its plots
          libopenmpi-dev openmpi-bin) # sharding across ranks (ZeRO-1) and its multi-rank tests

install_deps() {
  local missing=()
  for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "dev.sh: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends "${missing[@]}" ||
    { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends "${missing[@]}"; }
}

build() {
  install_deps
  if [ ! -f "$BUILD_DIR/build.ninja" ]; then
    cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
  fi
  cmake --build "$BUILD_DIR"
}

# The unit, runtime, layout and CPU tests once more under AddressSanitizer
# and UndefinedBehaviorSanitizer: what they exercise must be free of memory
# errors and undefined behaviour, not only give the right numbers.
SANITIZED_TESTS=(optdsl-unit-tests optrt-tests optdsl-layout-tests optdsl-cpu-tests)
run_sanitized_tests() {
  local dir=${ASAN_BUILD_DIR:-build-asan}
  if [ ! -f "$dir/build.ninja" ]; then
    cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DOPTDSL_SANITIZE=ON \
      -DOPTDSL_BUILD_BENCHMARKS=OFF -DOPTDSL_BUILD_EXAMPLES=OFF
  fi
  cmake --build "$dir" --target "${SANITIZED_TESTS[@]}"
  # Leak checking stays on: JIT engines kept for the process's lifetime are
  # reachable from statics, so only real leaks are reported.
  export ASAN_OPTIONS=abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  for test in "${SANITIZED_TESTS[@]}"; do
    echo "   $test"
    "$dir/bin/$test" --gtest_brief=1 || return 1
  done
  # The CUDA optimizer's host side against the fake driver (tables, step
  # records, checkpoints moved between the CPU and the device's memory).
  echo "   optdsl-cuda-host-tests (fake libcuda)"
  cmake --build "$dir" --target optdsl-cuda-host-tests optdsl-fake-cuda
  OPTDSL_LIBCUDA="$(cd "$dir" && pwd)/lib/liboptdsl-fake-cuda.so" "$dir/bin/optdsl-cuda-host-tests" --gtest_brief=1 || return 1
  # The sharded CudaOptimizer's GPU tests (3 ranks as threads, every library
  # rule) against the fake driver: no kernel runs, so their comparisons are
  # trivially equal here; what this checks is the host side under the
  # sanitizers (staging, gathers, agreement, threads: no memory error, race
  # on the fake's state or hang). On a GPU they check the bits.
  echo "   optdsl-cuda-gpu-tests CudaSharded* (fake libcuda: memory errors only)"
  cmake --build "$dir" --target optdsl-cuda-gpu-tests
  OPTDSL_LIBCUDA="$(cd "$dir" && pwd)/lib/liboptdsl-fake-cuda.so" \
    "$dir/bin/optdsl-cuda-gpu-tests" --gtest_filter='*CudaSharded*' --gtest_brief=1 || return 1
  # The sharded optimizer and both engines (NCCL's over the fake libnccl
  # and libcuda) under mpirun, 3 ranks (uneven parts, empty ones).
  # Leak checking is off for it alone: OpenMPI keeps buffers until exit.
  if grep -q "optdsl-mpi-tests" "$dir/build.ninja"; then
    echo "   optdsl-mpi-tests (mpirun -np 3)"
    cmake --build "$dir" --target optdsl-mpi-tests
    local libs
    libs="$(cd "$dir" && pwd)/lib"
    ASAN_OPTIONS=abort_on_error=1:detect_leaks=0 OPTDSL_LIBNCCL="$libs/liboptdsl-fake-nccl.so" \
      OPTDSL_LIBCUDA="$libs/liboptdsl-fake-cuda.so" mpirun -np 3 --allow-run-as-root --oversubscribe \
      -x ASAN_OPTIONS -x UBSAN_OPTIONS -x OPTDSL_LIBNCCL -x OPTDSL_LIBCUDA "$dir/bin/optdsl-mpi-tests" \
      --gtest_brief=1 || return 1
  fi
}

# The API reference of the public headers; an undocumented declaration is an
# error (docs/api/Doxyfile).
api_docs() {
  install_deps
  mkdir -p "$BUILD_DIR/docs/api"
  OPTDSL_DOCS_OUT="$BUILD_DIR/docs/api" doxygen docs/api/Doxyfile
  echo "API reference: $BUILD_DIR/docs/api/html/index.html"
}

run_tests() {
  build
  echo "== unit and golden tests (ctest)"
  ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$(nproc)"
  echo "== compiler output tests (lit)"
  python3 "$LIT" -sv "$BUILD_DIR/tests/lit"
  echo "== unit, runtime, layout and CPU tests with ASan and UBSan"
  run_sanitized_tests
  echo "== fuzzing the front end (libFuzzer)"
  tests/fuzz/run.sh
  echo "== API reference (every public declaration documented)"
  api_docs
}

demo() {
  build
  echo "== checking the rule library"
  for rule in dsl/*.opt; do
    "$BUILD_DIR/bin/optc" "$rule" || return 1
  done
  echo "   $(ls dsl/*.opt | wc -l) rules ok"
  echo
  echo "== rosenbrock: the AdEMAMix paper's toy, Adam against AdEMAMix"
  "$BUILD_DIR/bin/rosenbrock" --plot "$BUILD_DIR/rosenbrock"
  echo
  echo "== charlm: a character-level language model trained with AdamW and with AdEMAMix"
  echo "   in f32, in bf16 with an f32 master, and with 8-bit states too; same data,"
  echo "   initialisation and schedule (how to read it: examples/README.md)"
  "$BUILD_DIR/bin/charlm" --layout f32 --layout param=bf16,grad=bf16,master=f32 \
    --layout param=bf16,grad=bf16,master=f32,state=q8 \
    --plot "$BUILD_DIR/charlm-loss" --csv "$BUILD_DIR/charlm-loss.csv"
  echo
  echo "== charlm data-parallel: 2 MPI ranks, each half of every batch, the optimizer state sharded"
  echo "   across them (ZeRO-1, docs/sharding.md); a short run"
  local root=""
  [ "$(id -u)" -eq 0 ] && root="--allow-run-as-root" # OpenMPI refuses root without it
  mpirun -np 2 --oversubscribe $root "$BUILD_DIR/bin/charlm" --zero 1 --threads 1 --steps 600 --hidden 256 \
    --rule adamw --layout param=bf16,grad=bf16,master=f32,state=q8 --plot "$BUILD_DIR/charlm-zero1"
}

case "${1:-}" in
  build) build ;;
  test) run_tests ;;
  demo) demo ;;
  bench) build && "$BUILD_DIR/bin/optdsl-bench" ;;
  docs) api_docs ;;
  *) echo "usage: ./dev.sh {demo|test|build|bench|docs}" >&2; exit 2 ;;
esac
