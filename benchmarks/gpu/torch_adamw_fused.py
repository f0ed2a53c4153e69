"""torch.optim.AdamW(fused=True) on the GPU, on the shapes of
optdsl-gpu-bench (step/adamw/f32/gpt2s and gpt1.3b), for the peer column of
docs/benchmarks.md. Run by benchmarks/gpu/run.sh; needs torch with CUDA.
Counts the same 28 bytes per parameter as optdsl-gpu-bench, and times the
same way: each step followed by a synchronize, host clock, mean over steps.
Prints one JSON object per shape."""
import json
import sys
import time

import torch


def shape(name):
    d, layers, context = (768, 12, 1024) if name == "gpt2s" else (2048, 24, 2048)
    sizes = [50257 * d, context * d]
    for _ in range(layers):
        sizes += [d, d, d * 3 * d, 3 * d, d * d, d, d, d, d * 4 * d, 4 * d, 4 * d * d, d]
    return sizes + [d, d]


def seconds_per_step(make, sizes, device):
    """Mean wall time of opt.step() (each followed by a synchronize) for the
    optimizer `make(params)` over tensors of `sizes` on `device`, after three
    warm-up steps; at least 10 steps and 2 seconds. Shared with bnb_8bit.py."""
    params = [torch.nn.Parameter(torch.full((n,), 0.02, device=device)) for n in sizes]
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    opt = make(params)
    for _ in range(3):
        opt.step()
    torch.cuda.synchronize()
    steps, total = 0, 0.0
    while total < 2.0 or steps < 10:
        start = time.perf_counter()
        opt.step()
        torch.cuda.synchronize()
        total += time.perf_counter() - start
        steps += 1
    del opt, params
    torch.cuda.empty_cache()
    return total / steps


def main():
    if not torch.cuda.is_available():
        print("torch_adamw_fused.py: torch sees no CUDA GPU", file=sys.stderr)
        sys.exit(77)
    device = torch.device("cuda", 0)
    for name in ("gpt2s", "gpt1.3b"):
        sizes = shape(name)
        seconds = seconds_per_step(lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True), sizes, device)
        n = sum(sizes)
        print(json.dumps({"peer": f"torch {torch.__version__} AdamW(fused=True)", "shape": name,
                          "params_M": n / 1e6, "ms_per_step": seconds * 1e3,
                          "GBps": 28 * n / seconds / 1e9, "device": torch.cuda.get_device_name(0)}))


if __name__ == "__main__":
    main()
