#!/usr/bin/env bash
# ctest charlm.zero1: charlm data-parallel over 2 MPI ranks (--zero 1: each
# rank half of every batch, the optimizer state sharded) against one process
# on the same batches. Averaging two half-batch gradients equals the
# full-batch gradient up to rounding, so every curve point's validation loss
# must agree closely (8.6e-5 relative when written); ranks that took the same
# slice differ by 8.3e-3, and ranks whose params drifted apart by far more.
set -euo pipefail
charlm=$1 mpiexec=$2 scratch=$3
mkdir -p "$scratch"
common=(--corpus /usr/share/common-licenses --steps 80 --eval-every 20 --hidden 64 --threads 1 --rule adamw
        --layout f32 --layout param=bf16,grad=bf16,master=f32,state=q8)
"$charlm" "${common[@]}" --plot "$scratch/one" --csv "$scratch/one.csv" > "$scratch/one.log"
"$mpiexec" -np 2 --allow-run-as-root --oversubscribe "$charlm" "${common[@]}" --zero 1 \
  --plot "$scratch/two" --csv "$scratch/two.csv" > "$scratch/two.log"
grep -q "data-parallel over 2 ranks (128 characters each)" "$scratch/two.log" ||
  { cat "$scratch/two.log"; echo "no data-parallel banner"; exit 1; }
grep -q "ZeRO-1 over 2 ranks" "$scratch/two.log" || { echo "no ZeRO-1 note under the table"; exit 1; }
python3 - "$scratch/one.csv" "$scratch/two.csv" <<'PY'
import csv, sys
one, two = (list(csv.DictReader(open(path))) for path in sys.argv[1:3])
assert len(one) == len(two) and len(one) > 4, (len(one), len(two))
worst = 0.0
for a, b in zip(one, two):
    assert (a["rule"], a["step"]) == (b["rule"], b["step"])
    worst = max(worst, abs(float(a["val_loss"]) - float(b["val_loss"])) / float(a["val_loss"]))
print(f"largest relative difference of the validation loss: {worst:.2e}")
assert worst < 2e-3, worst
PY
