#!/usr/bin/env bash
# Prepares a GPU run from a machine that can build (this one): the GPU
# machines lent to this project have the CUDA toolkit and PyTorch but no
# MLIR/LLVM 19 and no network, so they cannot build OptDSL. This builds the
# programs benchmarks/gpu/run.sh needs, copies them into .gpu-carry/ (git
# ignores it) with the Debian packages of the shared libraries a stock CUDA
# image lacks (libLLVM 19, libMLIR 19, libz3), and prints the device call:
#   run(command="benchmarks/gpu/run.sh", carry=[".gpu-carry"])
# run.sh unpacks the packages under /tmp (never into /) and uses the carried
# programs instead of building. About 55 MB, under the 64 MiB a call carries.
# With --bnb it also downloads bitsandbytes' wheel into .whl/ for the
# 8-bit peer rows, carried in a call of its own (benchmarks/gpu/bnb_8bit.py).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
carry="$root/.gpu-carry"
cd "$root"

programs=(optdsl-cuda-gpu-tests optdsl-cuda-host-tests optdsl-golden optdsl-gpu-bench optc)
cmake --build "$build" --target "${programs[@]}" optdsl-fake-cuda
rm -rf "$carry"
mkdir -p "$carry/bin" "$carry/lib" "$carry/debs"
for program in "${programs[@]}"; do
  strip -o "$carry/bin/$program" "$build/bin/$program"
done
cp "$build/lib/liboptdsl-fake-cuda.so" "$carry/lib/"
# The packages of the libraries the programs load beyond a base system
# (glibc, libstdc++, zlib, libxml2, libedit... are in any CUDA image).
(cd "$carry/debs" && apt-get download libllvm19 libmlir-19 libz3-4 2>/dev/null)
du -sh "$carry"
echo "device call: run(command=\"benchmarks/gpu/run.sh\", carry=[\".gpu-carry\"])"
if [ "${1:-}" = "--bnb" ]; then
  grep -qx "/.whl/" "$root/.git/info/exclude" 2>/dev/null || echo "/.whl/" >>"$root/.git/info/exclude"
  rm -rf "$root/.whl" && mkdir -p "$root/.whl"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$root/.whl" bitsandbytes==0.50.2
  du -sh "$root/.whl"
  echo "first: run(command=\"python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl\", carry=[\".whl\"])"
  echo "then:  run(command=\"PYTHONPATH=/tmp/site benchmarks/gpu/run.sh\", carry=[\".gpu-carry\"])"
fi
