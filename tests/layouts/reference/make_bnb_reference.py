#!/usr/bin/env python3
"""Dump bitsandbytes' 8-bit dynamic maps and its CPU block-wise quantiser
results into bnb_q8.txt, the reference the layout tests compare optrt's
Storage code against (bit for bit).

Usage (needs torch and bitsandbytes; run once, the output is checked in):

    ATEN_CPU_CAPABILITY=avx2 python tests/layouts/reference/make_bnb_reference.py

Why the capability matters: create_dynamic_map builds its entries from
torch.linspace(0.1, 1, n, dtype=float32). torch's linspace kernel is the
scalar loop `start + step * idx` (and `end - step * (steps - idx - 1)` past
half way); torch compiles it once per CPU capability, and the AVX2/AVX-512
builds contract it into a fused multiply-add while the default build does
not. The two maps differ by one ulp in 42 (signed) / 31 (unsigned) entries.
Every x86 host that runs bitsandbytes' optimizers has AVX2, so the FMA map is
the canonical one; both are dumped (the script asks torch for each in a
subprocess).

File format (text, one record per line):
    NAME KIND COUNT v0 v1 ...
KIND is f32 (values as 8 hex digits of the IEEE bit pattern) or u8
(decimal). Records:
    map_signed, map_unsigned                 create_dynamic_map(True/False), AVX2 torch
    map_signed_nofma, map_unsigned_nofma     the same with ATEN_CPU_CAPABILITY=default
    {signed,unsigned}_input                  fixed inputs (seeded), 5 full blocks + 77
    {signed,unsigned}_codes, _absmax, _dequant   quantize_blockwise / dequantize_blockwise,
                                             blocksize 256, on the CPU
"""
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "bnb_q8.txt")
BLOCK = 256


def maps_under(capability):
    """create_dynamic_map(True/False) as torch builds it under a capability."""
    code = ("import sys, numpy as np, bitsandbytes.functional as F;"
            "sys.stdout.write(' '.join('%08x' % v for v in np.concatenate(["
            "F.create_dynamic_map(True).numpy(), F.create_dynamic_map(False).numpy()]).view(np.uint32)))")
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                         text=True).stdout.split()
    bits = np.array([int(v, 16) for v in out], dtype=np.uint32)
    assert bits.size == 512
    return bits[:256].view(np.float32), bits[256:].view(np.float32)


def planted_inputs(rng, code, signed):
    """5 full blocks and a partial one. Blocks 0-1: normal data at two scales.
    Block 2: absmax exactly 1 (so x/absmax == x) holding every map entry and
    the float32 midpoint of every adjacent pair (ties and near-ties). Block 3:
    log-uniform magnitudes over 12 decades. Block 4: a negative absmax
    element (x/absmax == -1, below the signed map's smallest entry) and
    values near 0. Last 77: normal data."""
    n = 5 * BLOCK + 77
    x = np.zeros(n, dtype=np.float32)
    x[0:BLOCK] = rng.standard_normal(BLOCK) * 3.0
    x[BLOCK:2 * BLOCK] = rng.standard_normal(BLOCK) * 1e-4
    c = code.astype(np.float32)
    mids = ((c[:-1].astype(np.float64) + c[1:].astype(np.float64)) / 2).astype(np.float32)
    pool = np.concatenate([c, mids])
    pick = rng.choice(pool.size, BLOCK - 1, replace=False)
    x[2 * BLOCK:3 * BLOCK - 1] = pool[pick]
    x[3 * BLOCK - 1] = 1.0
    mags = 10.0 ** rng.uniform(-12, 0, BLOCK)
    x[3 * BLOCK:4 * BLOCK] = mags * np.where(rng.random(BLOCK) < 0.5, -1, 1)
    x[4 * BLOCK:5 * BLOCK] = rng.standard_normal(BLOCK) * 1e-7
    x[4 * BLOCK + 7] = -2.5
    x[5 * BLOCK:] = rng.standard_normal(77) * 0.5
    if not signed:
        x = np.abs(x)  # the unsigned map is for non-negative states
    return x.astype(np.float32)


def main():
    import torch
    import bitsandbytes.functional as F

    torch.set_num_threads(1)
    fma_s, fma_u = maps_under("avx2")
    plain_s, plain_u = maps_under("default")
    lines = []

    def put(name, arr, kind):
        if kind == "f32":
            vals = " ".join("%08x" % v for v in np.asarray(arr, dtype=np.float32).view(np.uint32))
        else:
            vals = " ".join(str(int(v)) for v in np.asarray(arr, dtype=np.uint8))
        lines.append("%s %s %d %s" % (name, kind, len(arr), vals))

    put("map_signed", fma_s, "f32")
    put("map_unsigned", fma_u, "f32")
    put("map_signed_nofma", plain_s, "f32")
    put("map_unsigned_nofma", plain_u, "f32")

    rng = np.random.default_rng(20260523)
    for name, code in (("signed", fma_s), ("unsigned", fma_u)):
        x = planted_inputs(rng, code, name == "signed")
        code_t = torch.from_numpy(code.copy())
        q, state = F.quantize_blockwise(torch.from_numpy(x.copy()), code=code_t, blocksize=BLOCK)
        # The CPU quantiser must not have changed the map it was given.
        assert np.array_equal(code_t.numpy().view(np.uint32), code.view(np.uint32))
        y = F.dequantize_blockwise(q, state)
        put(name + "_input", x, "f32")
        put(name + "_codes", q.numpy(), "u8")
        put(name + "_absmax", state.absmax.numpy(), "f32")
        put(name + "_dequant", y.numpy(), "f32")

    with open(OUT, "w") as f:
        f.write("# bitsandbytes %s, torch %s: written by make_bnb_reference.py\n"
                % (__import__("bitsandbytes").__version__, torch.__version__))
        f.write("\n".join(lines) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
