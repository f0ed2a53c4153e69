"""PyTorch's CPU AdamW on the same shape as step/adamw/f32/flat16M, for the
peer column of docs/benchmarks.md. Not part of CI (needs torch):
    python3 benchmarks/peers/torch_adamw_cpu.py
Reports GB/s counting the same 28 bytes per parameter as optdsl-bench."""
import time

import torch

torch.set_num_threads(2)
n = 16_777_216
for variant in ("single-tensor", "foreach", "fused"):
    p = torch.nn.Parameter(torch.randn(n))
    p.grad = torch.randn(n) * 1e-2
    opt = torch.optim.AdamW([p], lr=1e-3, foreach=variant == "foreach",
                            fused=True if variant == "fused" else None)
    opt.step()
    steps = 20
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    seconds = (time.perf_counter() - start) / steps
    print(f"torch {torch.__version__} AdamW {variant}: {seconds * 1e3:.1f} ms/step, "
          f"{28 * n / seconds / 1e9:.1f} GB/s")
