#!/bin/sh
# ptxas-file.sh PTXAS ARCH FILE: assembles a hand-written PTX file (the
# runtime's own kernels) for ARCH as the driver's JIT would, spills refused.
# Exit 77 (ctest: skipped) only when ptxas is absent.
set -eu
ptxas=$1 arch=$2 file=$3
if [ -z "$ptxas" ] || [ ! -x "$ptxas" ]; then
  echo "SKIPPED: ptxas not found (install the CUDA toolkit or set CUDA_HOME and re-run cmake)"
  exit 77
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$ptxas" -arch="$arch" -O3 --warn-on-spills --warning-as-error "$file" -o "$out"
test -s "$out"
echo "ok: $(basename "$file") assembles for $arch ($(wc -c < "$out") bytes of cubin)"
