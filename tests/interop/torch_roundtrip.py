#!/usr/bin/env python3
"""Optimizer state from torch to OptDSL and back (ctest interop.torch.*).

torch.optim runs 3 steps; its state_dict goes to OptDSL's safetensors state
through tools/torch_optim_state.py; an OptDSL optimizer (the C++ helper
ContinueFromState.cpp) imports it and takes 2 more steps; meanwhile torch
takes the same 2 steps. The params must agree to float32 rounding, and the
state OptDSL exports must load back into torch (load_into_torch) and equal
torch's own. Exits 77 (skipped) with a message when torch or safetensors is
absent; they come from PyPI and CI does not install them.
"""
import argparse
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import safetensors  # noqa: F401
except ImportError as e:
    print(f"SKIP: {e.name} is not installed (pip install torch safetensors numpy); "
          "the torch interchange is not tested")
    sys.exit(77)

parser = argparse.ArgumentParser()
parser.add_argument("--helper", required=True)
parser.add_argument("--root", required=True)
parser.add_argument("--rule", required=True)
parser.add_argument("--layout", default="f32")
args = parser.parse_args()
sys.path.insert(0, os.path.join(args.root, "tools"))
from torch_optim_state import load_into_torch, torch_to_optdsl  # noqa: E402

torch.manual_seed(0)
shapes = [(17, 9), (33,), (4, 4, 3), (80, 64)]  # the last above the q8 small-tensor threshold
params = [torch.nn.Parameter(torch.randn(*s)) for s in shapes]
grads = [[torch.randn(*s) for s in shapes] for _ in range(5)]
make = {
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1, foreach=False),
    "nadam": lambda p: torch.optim.NAdam(p, lr=1e-2, weight_decay=0.01, foreach=False),
    "sgd": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, nesterov=True, foreach=False),
}[args.rule]
optimizer = make(params)


def step(g):
    for p, x in zip(params, g):
        p.grad = x.clone()
    optimizer.step()


# The largest magnitude each state takes from step 3 on: what bounds the
# quantisation error of an 8-bit layout below.
peak = {}


def track():
    ids = [id(p) for p in params]
    for param, state in optimizer.state.items():
        for name, value in state.items():
            key = (ids.index(id(param)), name)
            peak[key] = max(peak.get(key, 0.0), float(torch.as_tensor(value).double().abs().max()))


for g in grads[:3]:
    step(g)
track()
rule_file = os.path.join(args.root, "dsl", args.rule + ".opt")
with tempfile.TemporaryDirectory() as tmp:
    state_in, state_out = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
    torch_to_optdsl(optimizer.state_dict(), state_in, rule_file, args.layout,
                    steps=3 if args.rule == "sgd" else None)
    with open(os.path.join(tmp, "params.bin"), "wb") as f:
        f.write(struct.pack("<I", len(params)))
        for p in params:
            data = p.detach().numpy().astype(np.float32).reshape(-1)
            f.write(struct.pack("<Q", data.size) + data.tobytes())
    with open(os.path.join(tmp, "grads.bin"), "wb") as f:
        f.write(struct.pack("<I", 2))
        for g in grads[3:]:
            for x in g:
                f.write(x.numpy().astype(np.float32).reshape(-1).tobytes())
    subprocess.run([args.helper, rule_file, args.layout, state_in, os.path.join(tmp, "params.bin"),
                    os.path.join(tmp, "grads.bin"), state_out, os.path.join(tmp, "out_params.bin")], check=True)
    ours = np.fromfile(os.path.join(tmp, "out_params.bin"), dtype=np.float32)
    for g in grads[3:]:
        step(g)
        track()
    theirs = np.concatenate([p.detach().numpy().reshape(-1) for p in params])
    error = float(np.max(np.abs(ours - theirs)))
    print(f"{args.rule} {args.layout}: params after 3 torch + 2 OptDSL steps differ from 5 torch steps by {error:.3g}")
    limit = 1e-5 if args.layout == "f32" else 3e-3
    ok = error <= limit

    # And back: OptDSL's state loads into a fresh torch optimizer and equals
    # torch's own after the same 5 steps.
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    reloaded = make(copies)
    load_into_torch(state_out, reloaded)
    mine, theirs_state = reloaded.state_dict(), optimizer.state_dict()
    # f32: the same arithmetic, to f32 rounding. q8: each of the three
    # quantisations (the import, then each step's store) errs by at most the
    # largest half-gap of bitsandbytes' dynamic map, 0.00704 of the block's
    # absmax (docs/layouts.md), and a state decays the older errors: within
    # 3 x 0.00704 of the largest magnitude the state took.
    for index, state in theirs_state["state"].items():
        for name, value in state.items():
            a = torch.as_tensor(mine["state"][index][name]).double()
            b = torch.as_tensor(value).double()
            diff = float((a - b).abs().max())
            scale = peak[(index, name)] if (index, name) in peak else float(b.abs().max())
            limit = (1e-5 if args.layout == "f32" else 3 * 0.00704) * (scale + 1e-30)
            if diff > limit:
                print(f"state {index}.{name}: differs by {diff:.3g} (limit {limit:.3g})")
                ok = False
    print("state back in torch:", "equal" if ok else "DIFFERENT")
sys.exit(0 if ok else 1)
