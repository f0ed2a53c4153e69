#!/bin/sh
# ptxas-check.sh OPTC RULE ARCH PTXAS [LAYOUT...]
# Generates the rule's PTX for ARCH in each storage LAYOUT (default f32) and
# assembles it with ptxas, as the driver would before running it. Exit 77
# (ctest: skipped) only when ptxas is absent; any other failure fails the test.
set -eu
optc=$1 rule=$2 arch=$3 ptxas=${4:-}
shift 4 || shift $#
if [ -z "$ptxas" ] || [ ! -x "$ptxas" ]; then
  echo "SKIPPED: ptxas not found (install the CUDA toolkit or set CUDA_HOME and re-run cmake)"
  exit 77
fi
[ $# -gt 0 ] || set -- f32
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for layout in "$@"; do
  "$optc" --emit=ptx --gpu-arch="$arch" --layout="$layout" "$rule" -o "$dir/kernels.ptx"
  "$ptxas" -arch="$arch" -O3 --warn-on-spills "$dir/kernels.ptx" -o "$dir/kernels.cubin"
  test -s "$dir/kernels.cubin"
  echo "ok: $(basename "$rule") [$layout] assembles for $arch ($(wc -c < "$dir/kernels.cubin") bytes of cubin)"
done
