"""bitsandbytes' hand-written 8-bit optimizers on the GPU, the peer column of
the q8 rows of docs/benchmarks.md: AdamW8bit and AdEMAMix8bit (block-wise
dynamic quantisation, blocks of 256, as OptDSL's `state=q8`) on the shapes
of optdsl-gpu-bench (gpt2s, gpt1.3b), f32 params and grads.

Run by benchmarks/gpu/run.sh when `import bitsandbytes` works. The GPU
machines have torch but not bitsandbytes and nothing can be fetched there;
its wheel (about 43 MB) travels in a call of its own, ahead of the
.gpu-carry one (together they exceed a call's 64 MiB):
  benchmarks/gpu/prepare-carry.sh --bnb      (here: downloads it into .whl/)
  run(command="python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl",
      carry=[".whl"])
  run(command="PYTHONPATH=/tmp/site benchmarks/gpu/run.sh", carry=[".gpu-carry"])

Bytes per parameter are those of OptDSL's layout for the same storage
(param f32 read and written, grad f32 read, each q8 state read and written
plus 4 bytes of absmax per 256 elements), so GBps compares like with like.
Tensors under 4096 elements keep f32 states in both (bitsandbytes'
min_8bit_size), which the byte count ignores as OptDSL's does. Timing as
torch_adamw_fused.py: a synchronize after each step, host clock, mean.
Prints one JSON object per optimizer and shape."""
import json
import sys

import torch

from torch_adamw_fused import seconds_per_step, shape


def q8_bytes_per_param(states):
    return 4 + 4 + 4 + states * (2 + 2 * 4 / 256)


def main():
    try:
        import bitsandbytes as bnb
    except ImportError:
        print("bnb_8bit.py: bitsandbytes is not installed (see this file's docstring)", file=sys.stderr)
        sys.exit(77)
    if not torch.cuda.is_available():
        print("bnb_8bit.py: torch sees no CUDA GPU", file=sys.stderr)
        sys.exit(77)
    device = torch.device("cuda", 0)
    peers = [("adamw", 2, f"bitsandbytes {bnb.__version__} AdamW8bit",
              lambda ps: bnb.optim.AdamW8bit(ps, lr=1e-3, weight_decay=1e-2))]
    if hasattr(bnb.optim, "AdEMAMix8bit"):
        peers.append(("ademamix", 3, f"bitsandbytes {bnb.__version__} AdEMAMix8bit",
                      lambda ps: bnb.optim.AdEMAMix8bit(ps, lr=1e-3, alpha=2.0, weight_decay=0.0)))
    for rule, states, peer, make in peers:
        for name in ("gpt2s", "gpt1.3b"):
            sizes = shape(name)
            seconds = seconds_per_step(make, sizes, device)
            n = sum(sizes)
            print(json.dumps({"peer": peer, "rule": rule, "layout": "state=q8", "shape": name,
                              "params_M": n / 1e6, "ms_per_step": seconds * 1e3,
                              "GBps": q8_bytes_per_param(states) * n / seconds / 1e9,
                              "device": torch.cuda.get_device_name(0)}), flush=True)


if __name__ == "__main__":
    main()
