#!/bin/sh
# ptxas-check.sh OPTC RULE ARCH PTXAS
# Generates the rule's PTX for ARCH and assembles it with ptxas, as the
# driver would before running it. Exit 77 (ctest: skipped) only when ptxas
# is absent; any other failure fails the test.
set -eu
optc=$1 rule=$2 arch=$3 ptxas=${4:-}
if [ -z "$ptxas" ] || [ ! -x "$ptxas" ]; then
  echo "SKIPPED: ptxas not found (install the CUDA toolkit or set CUDA_HOME and re-run cmake)"
  exit 77
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$optc" --emit=ptx --gpu-arch="$arch" "$rule" -o "$dir/kernels.ptx"
"$ptxas" -arch="$arch" -O3 --warn-on-spills "$dir/kernels.ptx" -o "$dir/kernels.cubin"
test -s "$dir/kernels.cubin"
echo "ok: $(basename "$rule") assembles for $arch ($(wc -c < "$dir/kernels.cubin") bytes of cubin)"
