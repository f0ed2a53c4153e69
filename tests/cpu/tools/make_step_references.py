#!/usr/bin/env python3
"""Reference values for the training step's library code, computed by the
peers themselves (tests/cpu/TrainingStepTest.cpp reads the output):

* schedules: optax (float64: jax_enable_x64) for constant, linear,
  cosine-decay and warmup-cosine; Hugging Face transformers' LambdaLR
  lambdas for inverse-sqrt and warmup-stable-decay;
* the loss scale after each step of torch.amp.GradScaler("cpu") for a fixed
  pattern of steps with and without an Inf gradient, with torch's defaults
  and with a short growth interval.

Usage (needs torch, optax, transformers):
    python tests/cpu/tools/make_step_references.py
The output is deterministic.
"""
import json
import os

import jax

jax.config.update("jax_enable_x64", True)
import optax  # noqa: E402
import torch  # noqa: E402
import transformers.optimization as hf  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "step_references.json")
COUNTS = list(range(0, 130)) + [250, 999, 1000, 1001, 5000]


def values(fn):
    return [float(fn(c)) for c in COUNTS]


def schedules():
    out = []

    def add(name, args, fn):
        out.append({"name": name, "args": args, "values": values(fn)})

    add("constant", {"value": 3e-4}, optax.constant_schedule(3e-4))
    add("linearDecay", {"init": 1e-3, "end": 1e-5, "steps": 100},
        optax.linear_schedule(1e-3, 1e-5, 100))
    add("linearWarmup", {"peak": 6e-4, "warmupSteps": 37, "init": 0.0},
        optax.linear_schedule(0.0, 6e-4, 37))
    add("cosineDecay", {"init": 1e-3, "decaySteps": 120, "alpha": 0.1},
        optax.cosine_decay_schedule(1e-3, 120, alpha=0.1))
    add("warmupCosine", {"init": 1e-6, "peak": 1e-3, "warmupSteps": 20, "decaySteps": 110, "end": 1e-5},
        optax.warmup_cosine_decay_schedule(1e-6, 1e-3, 20, 110, end_value=1e-5))
    peak = 2e-3
    add("inverseSqrt", {"peak": peak, "warmupSteps": 25, "timescale": 0},
        lambda c: peak * hf._get_inverse_sqrt_schedule_lr_lambda(c, num_warmup_steps=25, timescale=25))
    for decay in ("linear", "cosine", "1-sqrt"):
        add("warmupStableDecay",
            {"peak": peak, "warmupSteps": 10, "stableSteps": 60, "decaySteps": 40, "minRatio": 0.05,
             "decay": decay},
            lambda c, decay=decay: peak * hf._get_wsd_scheduler_lambda(
                c, num_warmup_steps=10, num_stable_steps=60, num_decay_steps=40, warmup_type="linear",
                decay_type=decay, min_lr_ratio=0.05, num_cycles=0.5))
    return out


def scaler_sequence(pattern, **kwargs):
    """The scale after each step of GradScaler on a one-parameter SGD whose
    gradient is Inf where pattern[i] is 1."""
    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([p], lr=0.0)
    scaler = torch.amp.GradScaler("cpu", **kwargs)
    scales = []
    for bad in pattern:
        opt.zero_grad()
        scaler.scale(p.sum())  # what a trainer does before backward; sets up the scale
        p.grad = torch.full((4,), float("inf") if bad else 1.0)
        scaler.step(opt)
        scaler.update()
        scales.append(float(scaler.get_scale()))
    return scales


def scalers():
    pattern = [0] * 5 + [1] + [0] * 7 + [1, 1] + [0] * 20 + [1] + [0] * 9
    out = [{"options": {"growthInterval": 4}, "pattern": pattern,
            "scales": scaler_sequence(pattern, growth_interval=4)}]
    long_pattern = [1, 1, 1] + [0] * 4100 + [1] + [0] * 2005
    out.append({"options": {}, "pattern": long_pattern, "scales": scaler_sequence(long_pattern)})
    out.append({"options": {"initScale": 3.0e38, "growthInterval": 2}, "pattern": [0] * 6 + [1, 0, 0],
                "scales": scaler_sequence([0] * 6 + [1, 0, 0], init_scale=3.0e38, growth_interval=2)})
    return out


def main():
    data = {
        "source": f"optax {optax.__version__} (x64), transformers {hf.__name__.split('.')[0]} "
                  f"{__import__('transformers').__version__}, torch {torch.__version__.split('+')[0]}",
        "counts": COUNTS,
        "schedules": schedules(),
        "scalers": scalers(),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f, separators=(",", ":"))
        f.write("\n")
    print(OUT, os.path.getsize(OUT) // 1024, "KB")


if __name__ == "__main__":
    main()
