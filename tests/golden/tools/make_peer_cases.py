#!/usr/bin/env python3
"""Generate golden optimizer trajectories (format ``optdsl-golden/1``) from
real peer implementations: torch.optim (single-tensor path, foreach=False),
lion-pytorch (lucidrains), timm's Lamb, adam-atan2-pytorch (lucidrains),
pytorch-optimizer (Lookahead, AdaBound, AdaBelief, ADOPT, MARS, Adan),
prodigyopt, schedulefree, sophia-opt (SophiaG, with its Hessian estimate
as the case's input `hessian_estimate`), transformers (Adafactor) and
came-pytorch (CAME), the last two on matrix-shaped tensors (the case's
`shapes`).

Every case is computed exactly as tests/golden/README.md (and the shared
FORMAT.md) describe:

* ``init`` and ``grads`` are drawn in advance with a fixed seed and rounded to
  float32-representable values (open loop: gradients do not depend on the
  parameters);
* ``expect[t][k]`` is tensor k after step t+1 with the peer computing in
  float64 (torch default dtype float64, so scalar state such as NAdam's
  ``mu_product`` is float64 too);
* ``float32_reference_error`` is the pass-criterion error of the same peer run
  in float32 on the same data, against ``expect``.

Usage (needs torch, lion-pytorch, timm, adam-atan2-pytorch, pytorch-optimizer,
prodigyopt, schedulefree, sophia-opt, einops, transformers and came-pytorch
in the interpreter that runs it; tests/golden/README.md lists the versions):

    python tests/golden/tools/make_peer_cases.py              # all cases
    python tests/golden/tools/make_peer_cases.py --only lion_basic
    python tests/golden/tools/make_peer_cases.py --selfcheck  # also compare
        # the float64 peer runs with an independent numpy transcription

The output is deterministic (fixed seeds, one torch thread).
"""
import argparse
import contextlib
import json
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.normpath(os.path.join(HERE, "..", "cases"))


# --------------------------------------------------------------------------
# data


def f32(a):
    """Round to float32-representable values, returned as float64."""
    return np.asarray(a, dtype=np.float64).astype(np.float32).astype(np.float64)


def make_data(seed, sizes, steps, grad_scales, init_scales, sparse_p,
              zero_steps=(), zero_init=(), spike_p=0.06):
    """Open-loop gradients of varied scale.

    grads[t][k] = grad_scales[k] * s_t * (bias_k + N(0,1)), where s_t is a
    log-normal per-step scale with occasional x8 spikes (so second-moment
    maxima / decays matter), elements zeroed with probability sparse_p[k],
    and whole tensors zeroed at the (t, k) pairs in zero_steps (t 0-based).
    """
    rng = np.random.default_rng(seed)
    init = []
    for k, n in enumerate(sizes):
        if k in zero_init:
            init.append(np.zeros(n))
        else:
            init.append(f32(rng.normal(size=n) * init_scales[k]))
    bias = [rng.normal(size=n) * 0.5 for n in sizes]
    grads = []
    for t in range(steps):
        s_t = math.exp(0.6 * rng.normal())
        if rng.random() < spike_p:
            s_t *= 8.0
        row = []
        for k, n in enumerate(sizes):
            g = grad_scales[k] * s_t * (bias[k] + rng.normal(size=n))
            if sparse_p[k] > 0:
                g[rng.random(size=n) < sparse_p[k]] = 0.0
            if (t, k) in zero_steps:
                g[:] = 0.0
            row.append(f32(g))
        grads.append(row)
    return init, grads


# --------------------------------------------------------------------------
# peers


def build_torch(name, hy):
    o = torch.optim
    common = dict(foreach=False, maximize=False, differentiable=False)

    def mk(params):
        if name == "rmsprop":
            return o.RMSprop(params, lr=hy["lr"], alpha=hy["alpha"], eps=hy["eps"],
                             weight_decay=hy["weight_decay"], momentum=hy["momentum"],
                             centered=bool(hy["centered"]), capturable=False, **common)
        if name == "adagrad":
            return o.Adagrad(params, lr=hy["lr"], lr_decay=hy["lr_decay"],
                             weight_decay=hy["weight_decay"],
                             initial_accumulator_value=hy["initial_accumulator_value"],
                             eps=hy["eps"], **common)
        if name == "nadam":
            return o.NAdam(params, lr=hy["lr"], betas=(hy["beta1"], hy["beta2"]), eps=hy["eps"],
                           weight_decay=hy["weight_decay"], momentum_decay=hy["momentum_decay"],
                           decoupled_weight_decay=False, capturable=False, **common)
        if name == "radam":
            return o.RAdam(params, lr=hy["lr"], betas=(hy["beta1"], hy["beta2"]), eps=hy["eps"],
                           weight_decay=hy["weight_decay"], decoupled_weight_decay=False,
                           capturable=False, **common)
        if name == "adam":
            return o.Adam(params, lr=hy["lr"], betas=(hy["beta1"], hy["beta2"]), eps=hy["eps"],
                          weight_decay=hy["weight_decay"], amsgrad=bool(hy["amsgrad"]),
                          capturable=False, fused=None, **common)
        if name == "adamw":
            return o.AdamW(params, lr=hy["lr"], betas=(hy["beta1"], hy["beta2"]), eps=hy["eps"],
                           weight_decay=hy["weight_decay"], amsgrad=bool(hy.get("amsgrad", 0)),
                           capturable=False, fused=None, **common)
        if name == "sgd":
            return o.SGD(params, lr=hy["lr"], momentum=hy["momentum"], dampening=hy["dampening"],
                         weight_decay=hy["weight_decay"], nesterov=bool(hy["nesterov"]),
                         fused=None, **common)
        if name == "lion":
            from lion_pytorch.lion_pytorch import Lion
            # plain update_fn (use_triton=False), coupled lr*wd step decay
            return Lion(params, lr=hy["lr"], betas=(hy["beta1"], hy["beta2"]),
                        weight_decay=hy["weight_decay"], use_triton=False,
                        decoupled_weight_decay=False)
        if name == "adabound":
            from pytorch_optimizer import AdaBound
            return AdaBound(params, lr=hy["lr"], final_lr=hy["final_lr"], betas=(hy["beta1"], hy["beta2"]),
                            gamma=hy["gamma"], weight_decay=hy["weight_decay"],
                            weight_decouple=bool(hy["weight_decouple"]), fixed_decay=bool(hy["fixed_decay"]),
                            ams_bound=bool(hy["ams_bound"]), eps=hy["eps"], foreach=False)
        if name == "lookahead_adamw":
            from pytorch_optimizer import Lookahead
            base = o.AdamW(params, lr=hy["lr"], betas=(hy["beta1"], hy["beta2"]), eps=hy["eps"],
                           weight_decay=hy["weight_decay"], amsgrad=False, capturable=False,
                           fused=None, **common)
            return Lookahead(base, k=int(hy["k"]), alpha=hy["alpha"], pullback_momentum="none")
        if name == "adam_atan2":
            from adam_atan2_pytorch.adam_atan2 import AdamAtan2
            # the defaults: weight decay coupled to lr, no regenerative
            # regularisation, no cautious masking
            return AdamAtan2(params, lr=hy["lr"], betas=(hy["beta1"], hy["beta2"]),
                             weight_decay=hy["weight_decay"], a=hy["a"], b=hy["b"])
        if name == "lamb":
            from timm.optim.lamb import Lamb
            return Lamb(params, lr=hy["lr"], bias_correction=True,
                        betas=(hy["beta1"], hy["beta2"]), eps=hy["eps"],
                        weight_decay=hy["weight_decay"], grad_averaging=True,
                        max_grad_norm=hy["max_grad_norm"] or None, trust_clip=bool(hy["trust_clip"]),
                        always_adapt=False,
                        caution=False, decoupled_decay=False, foreach=False)
        if name == "schedulefree_adamw":
            from schedulefree import AdamWScheduleFree
            opt = AdamWScheduleFree(params, lr=hy["lr"], betas=(hy["beta1"], hy["beta2"]), eps=hy["eps"],
                                    weight_decay=hy["weight_decay"], warmup_steps=int(hy["warmup_steps"]),
                                    r=hy["r"], weight_lr_power=hy["weight_lr_power"], foreach=False)
            opt.train()  # the params are y while training
            return opt
        if name == "mars":
            from pytorch_optimizer import MARS
            return MARS(params, lr=hy["lr"], betas=(hy["beta1"], hy["beta2"]), gamma=hy["gamma"], mars_type="adamw",
                        optimize_1d=bool(hy["optimize_1d"]), lr_1d=hy["lr_1d"],
                        betas_1d=(hy["beta1_1d"], hy["beta2_1d"]), weight_decay=hy["weight_decay"],
                        weight_decay_1d=hy["weight_decay_1d"],
                        weight_decouple=bool(hy["weight_decouple"]), fixed_decay=bool(hy["fixed_decay"]),
                        ams_bound=bool(hy["ams_bound"]), eps=hy["eps"], foreach=False)
        if name == "adabelief":
            from pytorch_optimizer import AdaBelief
            return AdaBelief(params, lr=hy["lr"], betas=(hy["beta1"], hy["beta2"]), weight_decay=hy["weight_decay"],
                             weight_decouple=bool(hy["weight_decouple"]), fixed_decay=bool(hy["fixed_decay"]),
                             rectify=bool(hy["rectify"]), n_sma_threshold=int(hy["n_sma_threshold"]),
                             degenerated_to_sgd=bool(hy["degenerated_to_sgd"]), ams_bound=bool(hy["ams_bound"]),
                             eps=hy["eps"], foreach=False)
        if name == "adopt":
            from pytorch_optimizer import ADOPT
            return ADOPT(params, lr=hy["lr"], betas=(hy["beta1"], hy["beta2"]), weight_decay=hy["weight_decay"],
                         weight_decouple=bool(hy["weight_decouple"]), fixed_decay=bool(hy["fixed_decay"]),
                         eps=hy["eps"], foreach=False)
        if name == "adan":
            from pytorch_optimizer import Adan
            return Adan(params, lr=hy["lr"], betas=(hy["beta1"], hy["beta2"], hy["beta3"]),
                        weight_decay=hy["weight_decay"], weight_decouple=bool(hy["weight_decouple"]),
                        max_grad_norm=hy["max_grad_norm"], eps=hy["eps"], foreach=False)
        if name == "sophia":
            from sophia_opt import SophiaG
            return SophiaG(params, lr=hy["lr"], betas=(hy["beta1"], hy["beta2"]), rho=hy["rho"],
                           weight_decay=hy["weight_decay"])
        if name == "prodigy":
            from prodigyopt import Prodigy
            # beta3 -1 stands for None (sqrt(beta2)); one group: prodigyopt
            # keeps one d for all groups, the rule one per group
            return Prodigy(params, lr=hy["lr"], betas=(hy["beta1"], hy["beta2"]),
                           beta3=None if hy["beta3"] < 0 else hy["beta3"], eps=hy["eps"],
                           weight_decay=hy["weight_decay"], decouple=bool(hy["decouple"]),
                           use_bias_correction=bool(hy["use_bias_correction"]),
                           safeguard_warmup=bool(hy["safeguard_warmup"]), d0=hy["d0"], d_coef=hy["d_coef"],
                           growth_rate=hy["growth_rate"])
        if name == "dadapt_adam":
            from pytorch_optimizer import DAdaptAdam
            # growth_rate 1e30 stands for pytorch-optimizer's inf
            return DAdaptAdam(params, lr=hy["lr"], betas=(hy["beta1"], hy["beta2"]), d0=hy["d0"],
                              growth_rate=hy["growth_rate"], weight_decay=hy["weight_decay"],
                              weight_decouple=bool(hy["weight_decouple"]), fixed_decay=bool(hy["fixed_decay"]),
                              bias_correction=bool(hy["bias_correction"]), eps=hy["eps"], foreach=False)
        if name == "adafactor":
            from transformers.optimization import Adafactor
            # lr 0 and beta1 0 stand for transformers' None
            return Adafactor(params, lr=hy["lr"] or None, eps=(hy["eps1"], hy["eps2"]),
                             clip_threshold=hy["clip_threshold"], decay_rate=hy["decay_rate"],
                             beta1=hy["beta1"] or None, weight_decay=hy["weight_decay"],
                             scale_parameter=bool(hy["scale_parameter"]), relative_step=bool(hy["relative_step"]),
                             warmup_init=bool(hy["warmup_init"]))
        if name == "came":
            from came_pytorch import CAME
            return CAME(params, lr=hy["lr"], eps=(hy["eps1"], hy["eps2"]), clip_threshold=hy["clip_threshold"],
                        betas=(hy["beta1"], hy["beta2"], hy["beta3"]), weight_decay=hy["weight_decay"])
        raise KeyError(name)

    return mk


@contextlib.contextmanager
def adan_norm_in(dtype):
    """pytorch-optimizer's Adan computes its clipping norm in float32 even
    for float64 params (get_global_gradient_norm casts the per-tensor norms
    with .float()). For the float64 reference the norm is computed in
    float64, so that the reference is the algorithm in float64 throughout;
    the float32 run keeps the peer's own code."""
    import pytorch_optimizer.optimizer.adan as adan
    original = adan.get_global_gradient_norm
    if dtype == torch.float64:
        def in_float64(param_groups, *args, **kwargs):
            norms = [p.grad.norm() for group in param_groups for p in group["params"] if p.grad is not None]
            return torch.stack(norms).square().sum().reshape(1)
        adan.get_global_gradient_norm = in_float64
    try:
        yield
    finally:
        adan.get_global_gradient_norm = original


def run_peer(peer, hy, init, grads, dtype, max_grad_norm=None, hessian_grads=None, shapes=None):
    """Run the peer in `dtype`; return traj[t][k] as float64 numpy arrays.
    With max_grad_norm, torch.nn.utils.clip_grad_norm_ over all tensors
    before each step, as a trainer calls it. hessian_grads[t] (Sophia): the
    gradients of the Hessian pass the trainer feeds update_hessian() before
    step t, or None. shapes[k]: tensor k's dimensions (None: 1-D)."""
    if peer == "adan":
        with adan_norm_in(dtype):
            return run_peer_as_is(peer, hy, init, grads, dtype, max_grad_norm)
    return run_peer_as_is(peer, hy, init, grads, dtype, max_grad_norm, hessian_grads, shapes)


def run_peer_as_is(peer, hy, init, grads, dtype, max_grad_norm=None, hessian_grads=None, shapes=None):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # scalar state (step, mu_product) follows it
    shapes = shapes or [[len(x)] for x in init]
    try:
        params = [torch.nn.Parameter(torch.tensor(x, dtype=dtype).reshape(shape)) for x, shape in zip(init, shapes)]
        opt = build_torch(peer, hy)(params)
        traj = []
        for t, row in enumerate(grads):
            if hessian_grads is not None and hessian_grads[t] is not None:
                for p, h in zip(params, hessian_grads[t]):
                    p.grad = torch.tensor(h, dtype=dtype)
                opt.update_hessian()
            for p, g in zip(params, row):
                p.grad = torch.tensor(g, dtype=dtype).reshape(p.shape)
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=False)
            if peer == "sophia":
                opt.step(bs=hy["bs"])
            else:
                opt.step()
            traj.append([p.detach().to(torch.float64).reshape(-1).numpy().copy() for p in params])
        return traj
    finally:
        torch.set_default_dtype(old)


def criterion(ours, expect, init):
    worst = 0.0
    for t in range(len(expect)):
        for k in range(len(init)):
            num = float(np.max(np.abs(ours[t][k] - expect[t][k])))
            den = float(np.max(np.abs(expect[t][k] - init[k])))
            if den == 0.0:
                if num != 0.0:
                    return math.inf
                continue
            worst = max(worst, num / den)
    return worst


# --------------------------------------------------------------------------
# independent numpy transcription of each peer (float64), for --selfcheck


def ref_run(peer, hy, init, grads, shapes=None):
    p = [x.copy() for x in init]
    st = [dict() for _ in p]
    traj = []
    b1, b2 = hy.get("beta1"), hy.get("beta2")
    lr, wd, eps = hy["lr"], hy.get("weight_decay", 0.0), hy.get("eps")
    for t0, row in enumerate(grads):
        t = t0 + 1
        if peer == "lamb":
            bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
            # timm's global clipping: the norm of every tensor's gradient first.
            clip = 1.0
            if hy["max_grad_norm"]:
                clip = max(math.sqrt(sum(float(np.sum(g * g)) for g in row)) / hy["max_grad_norm"], 1.0)
            row = [g / clip for g in row]
        for k, g in enumerate(row):
            s, x = st[k], p[k]
            z = np.zeros_like(x)
            if peer == "rmsprop":
                g = g + wd * x
                s["sa"] = hy["alpha"] * s.get("sa", z) + (1 - hy["alpha"]) * g * g
                if hy["centered"]:
                    s["ga"] = hy["alpha"] * s.get("ga", z) + (1 - hy["alpha"]) * g
                    avg = np.sqrt(s["sa"] - s["ga"] ** 2) + eps
                else:
                    avg = np.sqrt(s["sa"]) + eps
                if hy["momentum"] > 0:
                    s["buf"] = hy["momentum"] * s.get("buf", z) + g / avg
                    x = x - lr * s["buf"]
                else:
                    x = x - lr * g / avg
            elif peer == "adagrad":
                clr = lr / (1 + (t - 1) * hy["lr_decay"])
                g = g + wd * x
                s["sum"] = s.get("sum", z + hy["initial_accumulator_value"]) + g * g
                x = x - clr * g / (np.sqrt(s["sum"]) + eps)
            elif peer == "nadam":
                g = g + wd * x
                md = hy["momentum_decay"]
                mu = b1 * (1 - 0.5 * 0.96 ** (t * md))
                mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * md))
                s["mp"] = s.get("mp", 1.0) * mu
                s["m"] = b1 * s.get("m", z) + (1 - b1) * g
                s["v"] = b2 * s.get("v", z) + (1 - b2) * g * g
                denom = np.sqrt(s["v"] / (1 - b2 ** t)) + eps
                x = (x - lr * (1 - mu) / (1 - s["mp"]) * g / denom
                     - lr * mu_next / (1 - s["mp"] * mu_next) * s["m"] / denom)
            elif peer == "radam":
                g = g + wd * x
                s["m"] = b1 * s.get("m", z) + (1 - b1) * g
                s["v"] = b2 * s.get("v", z) + (1 - b2) * g * g
                bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
                rho_inf = 2 / (1 - b2) - 1
                rho_t = rho_inf - 2 * t * b2 ** t / bc2
                if rho_t > 5:
                    rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                                     / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                    x = x - s["m"] / bc1 * lr * math.sqrt(bc2) / (np.sqrt(s["v"]) + eps) * rect
                else:
                    x = x - s["m"] / bc1 * lr
            elif peer in ("adam", "adamw"):
                if peer == "adamw":
                    x = x * (1 - lr * wd)
                else:
                    g = g + wd * x
                s["m"] = b1 * s.get("m", z) + (1 - b1) * g
                s["v"] = b2 * s.get("v", z) + (1 - b2) * g * g
                v = s["v"]
                if hy.get("amsgrad"):
                    s["vmax"] = np.maximum(s.get("vmax", z), s["v"])
                    v = s["vmax"]
                bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
                x = x - lr / bc1 * s["m"] / (np.sqrt(v) / math.sqrt(bc2) + eps)
            elif peer == "sgd":
                g = g + wd * x
                if hy["momentum"] != 0:
                    if "buf" not in s:
                        s["buf"] = g.copy()  # first step: no dampening
                    else:
                        s["buf"] = hy["momentum"] * s["buf"] + (1 - hy["dampening"]) * g
                    g = g + hy["momentum"] * s["buf"] if hy["nesterov"] else s["buf"]
                x = x - lr * g
            elif peer == "lion":
                x = x * (1 - lr * wd)
                m = s.get("m", z)
                x = x - lr * np.sign(b1 * m + (1 - b1) * g)
                s["m"] = b2 * m + (1 - b2) * g
            elif peer == "adabound":
                if hy["weight_decouple"]:
                    x = x * (1 - wd * (1 if hy["fixed_decay"] else lr))
                else:
                    g = g + wd * x
                s["m"] = s.get("m", z) + (1 - b1) * (g - s.get("m", z))
                s["v"] = b2 * s.get("v", z) + (1 - b2) * g * g
                v = s["v"]
                if hy["ams_bound"]:
                    s["vmax"] = np.maximum(s.get("vmax", z), s["v"])
                    v = s["vmax"]
                step_size = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                final = hy["final_lr"]  # lr / base_lr = 1: no schedule here
                lower = final * (1 - 1 / (hy["gamma"] * t + 1))
                upper = final * (1 + 1 / (hy["gamma"] * t))
                x = x - np.clip(step_size / (np.sqrt(v + 1e-15) + eps), lower, upper) * s["m"]
            elif peer == "lookahead_adamw":
                if "slow" not in s:
                    s["slow"] = x.copy()
                x = x * (1 - lr * wd)
                s["m"] = b1 * s.get("m", z) + (1 - b1) * g
                s["v"] = b2 * s.get("v", z) + (1 - b2) * g * g
                bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
                x = x - lr / bc1 * s["m"] / (np.sqrt(s["v"]) / math.sqrt(bc2) + eps)
                if t % int(hy["k"]) == 0:
                    x = s["slow"] + hy["alpha"] * (x - s["slow"])
                    s["slow"] = x.copy()
            elif peer == "adam_atan2":
                bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
                s["m"] = s.get("m", z) + (1 - b1) * (g - s.get("m", z))
                s["v"] = s.get("v", z) + (1 - b2) * (g * g - s.get("v", z))
                update = np.arctan2(s["m"] / bc1, hy["b"] * np.sqrt(s["v"] / bc2))
                x = x * (1 - lr * wd) - lr * hy["a"] * update
            elif peer == "schedulefree_adamw":
                if "z" not in s:
                    s["z"] = x.copy()
                lr_t = lr * (t / hy["warmup_steps"]) if t <= hy["warmup_steps"] else lr
                s["lr_max"] = max(lr_t, s.get("lr_max", -1.0))
                weight = t ** hy["r"] * s["lr_max"] ** hy["weight_lr_power"]
                s["wsum"] = s.get("wsum", 0.0) + weight
                ckp1 = weight / s["wsum"] if s["wsum"] != 0 else 0.0
                s["v"] = b2 * s.get("v", z) + (1 - b2) * g * g
                gn = g / (np.sqrt(s["v"] / (1 - b2 ** t)) + eps) + wd * x
                x = x + ckp1 * (s["z"] - x) + lr_t * (b1 * (1 - ckp1) - 1) * gn
                s["z"] = s["z"] - lr_t * gn
            elif peer == "mars":
                # optimize_1d off: tensors of rank < 2 take AdamW with the _1d
                # hypers (lr scaled by lr_1d / lr, fixed at construction).
                mars_path = hy["optimize_1d"] or (shapes is not None and len(shapes[k]) >= 2)
                b1, b2 = (hy["beta1"], hy["beta2"]) if mars_path else (hy["beta1_1d"], hy["beta2_1d"])
                lr = hy["lr"] if mars_path else hy["lr"] * (hy["lr_1d"] / hy["lr"])
                wd = hy["weight_decay"] if mars_path else hy["weight_decay_1d"]
                last = s.get("last", z)
                c = (g - last) * (hy["gamma"] * (b1 / (1 - b1))) + g
                n = float(np.linalg.norm(c))
                if n > 1:
                    c = c / n
                if not mars_path:
                    c = g
                s["m"] = s.get("m", z) + (1 - b1) * (c - s.get("m", z))
                s["v"] = b2 * s.get("v", z) + (1 - b2) * c * c
                v = s["v"]
                if hy["ams_bound"]:
                    s["vmax"] = np.maximum(s.get("vmax", z), s["v"])
                    v = s["vmax"]
                denom = (np.sqrt(v + 1e-15) + eps) / math.sqrt(1 - b2 ** t) * (1 - b1 ** t)
                start = x
                if hy["weight_decouple"]:
                    x = x * (1 - wd * (1 if hy["fixed_decay"] else lr))
                x = x - lr * (s["m"] / denom)
                s["last"] = g if hy["weight_decouple"] else g + wd * start
            elif peer == "adabelief":
                if hy["weight_decouple"]:
                    x = x * (1 - wd * (1 if hy["fixed_decay"] else lr))
                else:
                    g = g + wd * x
                s["m"] = s.get("m", z) + (1 - b1) * (g - s.get("m", z))
                r = g - s["m"]
                s["v"] = b2 * s.get("v", z) + (1 - b2) * r * r + eps
                v = s["v"]
                if hy["ams_bound"]:
                    s["vmax"] = np.maximum(s.get("vmax", z), s["v"])
                    v = s["vmax"]
                n_max = 2 / (1 - b2) - 1
                b2t = b2 ** t
                n_sma = n_max - 2 * t * b2t / (1 - b2t)
                if hy["rectify"]:
                    if n_sma >= hy["n_sma_threshold"]:
                        rt = math.sqrt((1 - b2t) * (n_sma - 4) / (n_max - 4) * (n_sma - 2) / n_sma * n_max / (n_max - 2))
                    else:
                        rt = 1.0 if hy["degenerated_to_sgd"] else -1.0
                    size = lr * rt / (1 - b1 ** t)
                    if n_sma >= hy["n_sma_threshold"]:
                        x = x - size * s["m"] / (np.sqrt(v) + eps)
                    elif size > 0:
                        x = x - size * s["m"]
                else:
                    x = x - lr / (1 - b1 ** t) * s["m"] / (np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps)
            elif peer == "adopt":
                if hy["weight_decouple"]:
                    x = x * (1 - wd * (1 if hy["fixed_decay"] else lr))
                else:
                    g = g + wd * x
                if t == 1:
                    s["v"] = g * g
                else:
                    clip = t ** 0.25
                    normed = np.clip(g / np.maximum(np.sqrt(s["v"]), eps), -clip, clip)
                    s["m"] = s.get("m", z) + (1 - b1) * (normed - s.get("m", z))
                    x = x - lr * s["m"]
                    s["v"] = b2 * s["v"] + (1 - b2) * g * g
            elif peer == "lamb":
                s["m"] = b1 * s.get("m", z) + (1 - b1) * g
                s["v"] = b2 * s.get("v", z) + (1 - b2) * g * g
                u = (s["m"] / bc1) / (np.sqrt(s["v"]) / math.sqrt(bc2) + eps)
                if wd != 0:
                    u = u + wd * x
                    wn, un = np.linalg.norm(x), np.linalg.norm(u)
                    ratio = wn / un if (wn > 0 and un > 0) else 1.0
                    if hy["trust_clip"]:
                        ratio = min(ratio, 1.0)
                    u = u * ratio
                x = x - lr * u
            else:
                raise KeyError(peer)
            p[k] = x
        traj.append([x.copy() for x in p])
    return traj


def ref_run_adan(hy, init, grads):
    """pytorch-optimizer's Adan, float64: the clipping coefficient needs the
    norm over every tensor first."""
    p = [x.copy() for x in init]
    m = [np.zeros_like(x) for x in init]
    md = [np.zeros_like(x) for x in init]
    v = [np.zeros_like(x) for x in init]
    prev = [None for _ in init]
    b1, b2, b3 = hy["beta1"], hy["beta2"], hy["beta3"]
    lr, wd, eps = hy["lr"], hy["weight_decay"], hy["eps"]
    traj = []
    for t0, row in enumerate(grads):
        t = t0 + 1
        clip = 1.0
        if hy["max_grad_norm"] > 0:
            norm = math.sqrt(sum(float(np.sum(g * g)) for g in row)) + eps
            clip = min(hy["max_grad_norm"] / norm, 1.0)
        for k, grad in enumerate(row):
            g = grad * clip
            diff = np.zeros_like(g) if prev[k] is None else g - prev[k]
            m[k] = m[k] + (1 - b1) * (g - m[k])
            md[k] = md[k] + (1 - b2) * (diff - md[k])
            e = b2 * diff + g
            v[k] = b3 * v[k] + (1 - b3) * e * e
            denom = np.sqrt(v[k]) / math.sqrt(1 - b3 ** t) + eps
            x = p[k] * (1 - lr * wd) if hy["weight_decouple"] else p[k]
            x = x - lr / (1 - b1 ** t) * m[k] / denom - lr * b2 / (1 - b2 ** t) * md[k] / denom
            p[k] = x if hy["weight_decouple"] else x / (1 + lr * wd)
            prev[k] = g
        traj.append([x.copy() for x in p])
    return traj


def ref_run_sophia(hy, init, grads, hessian_grads):
    """sophia-opt's SophiaG, float64: the Hessian EMA takes g_hat^2 when the
    trainer has an estimate, before the step that uses it."""
    p = [x.copy() for x in init]
    m = [np.zeros_like(x) for x in init]
    h = [np.zeros_like(x) for x in init]
    lr, b1, b2 = hy["lr"], hy["beta1"], hy["beta2"]
    traj = []
    for t, row in enumerate(grads):
        for k, g in enumerate(row):
            if hessian_grads[t] is not None:
                h[k] = b2 * h[k] + (1 - b2) * hessian_grads[t][k] ** 2
            m[k] = b1 * m[k] + (1 - b1) * g
            ratio = np.minimum(np.abs(m[k]) / (hy["rho"] * hy["bs"] * h[k] + 1e-15), 1.0)
            p[k] = p[k] * (1 - lr * hy["weight_decay"]) - lr * np.sign(m[k]) * ratio
        traj.append([x.copy() for x in p])
    return traj


def ref_run_factored(peer, hy, init, grads, shapes):
    """Adafactor (transformers) and CAME (came-pytorch) in numpy float64, on
    tensors of the given shapes: factored over the last two dimensions from
    rank 2 on, unfactored below."""
    b1 = hy["beta1"]
    p = [x.reshape(s).copy() for x, s in zip(init, shapes)]
    st = [dict() for _ in p]
    traj = []

    def rms(a):
        return math.sqrt(float(np.sum(a * a)) / a.size)

    def approx(row, col):
        return (1 / np.sqrt(row / row.mean(axis=-1, keepdims=True)))[..., None] * (1 / np.sqrt(col))[..., None, :]

    for t0, row in enumerate(grads):
        t = t0 + 1
        for k, g in enumerate(row):
            g, x, s = g.reshape(p[k].shape), p[k], st[k]
            factored = x.ndim >= 2
            if not s:
                s["m"] = np.zeros_like(x)
                s["r"], s["c"] = np.zeros(x.shape[:-1]), np.zeros(x.shape[:-2] + x.shape[-1:])
                s["rr"], s["rc"] = np.zeros(x.shape[:-1]), np.zeros(x.shape[:-2] + x.shape[-1:])
                s["v"] = np.zeros_like(x)
            if peer == "adafactor":
                lr = hy["lr"]
                if hy["relative_step"]:
                    lr = min(1e-6 * t if hy["warmup_init"] else 1e-2, 1 / math.sqrt(t))
                if hy["scale_parameter"]:
                    lr *= max(hy["eps2"], rms(x))
                b2 = 1 - t ** hy["decay_rate"]
            else:
                lr, b2 = hy["lr"], hy["beta2"]
            u = g * g + hy["eps1"]
            if factored:
                s["r"] = b2 * s["r"] + (1 - b2) * u.mean(axis=-1)
                s["c"] = b2 * s["c"] + (1 - b2) * u.mean(axis=-2)
                upd = approx(s["r"], s["c"]) * g
            else:
                s["v"] = b2 * s["v"] + (1 - b2) * u
                upd = g / np.sqrt(s["v"])
            upd = upd / max(rms(upd) / hy["clip_threshold"], 1.0)
            if peer == "adafactor":
                upd = upd * lr
                if b1:
                    s["m"] = b1 * s["m"] + (1 - b1) * upd
                    upd = s["m"]
                x = x - hy["weight_decay"] * lr * x - upd
            else:
                s["m"] = b1 * s["m"] + (1 - b1) * upd
                if factored:
                    res = (upd - s["m"]) ** 2 + hy["eps2"]
                    s["rr"] = hy["beta3"] * s["rr"] + (1 - hy["beta3"]) * res.mean(axis=-1)
                    s["rc"] = hy["beta3"] * s["rc"] + (1 - hy["beta3"]) * res.mean(axis=-2)
                    upd = approx(s["rr"], s["rc"]) * s["m"]
                else:
                    upd = s["m"]
                x = x - hy["weight_decay"] * lr * x - lr * upd
            p[k] = x
        traj.append([x.reshape(-1).copy() for x in p])
    return traj


def make_hessian_grads(seed, sizes, steps, scales, every, offset):
    """Gradients of Sophia's Hessian pass at steps t % every == offset (else
    None): multiples of scale / 256 with |x| < 8 * scale, scale a power of
    two, so that their squares (the estimate the rule gets) are exact in
    float32 as in float64."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(steps):
        if t % every != offset:
            rows.append(None)
            continue
        rows.append([np.clip(np.round(rng.normal(size=n) * 256), -2047, 2047) * (scales[k] / 256)
                     for k, n in enumerate(sizes)])
    return rows


def ref_run_prodigy(hy, init, grads):
    """prodigyopt's Prodigy over one group, float64: d from sums over every
    tensor, so a pass over all tensors before the params move."""
    p = [x.copy() for x in init]
    p0 = [x.copy() for x in init]
    m = [np.zeros_like(x) for x in init]
    v = [np.zeros_like(x) for x in init]
    s = [np.zeros_like(x) for x in init]
    b1, b2 = hy["beta1"], hy["beta2"]
    b3 = math.sqrt(b2) if hy["beta3"] < 0 else hy["beta3"]
    d = d_max = hy["d0"]
    d_num = 0.0
    traj = []
    for t0, row in enumerate(grads):
        t = t0 + 1
        bc = math.sqrt(1 - b2 ** t) / (1 - b1 ** t) if hy["use_bias_correction"] else 1.0
        dlr = d * hy["lr"] * bc
        gs = [g if hy["decouple"] else g + hy["weight_decay"] * x for g, x in zip(row, p)]
        num = d_num * b3 + sum((d / hy["d0"]) * dlr * float(np.dot(g, q - x)) for g, q, x in zip(gs, p0, p))
        denom_sum = 0.0
        for k, g in enumerate(gs):
            m[k] = b1 * m[k] + d * (1 - b1) * g
            v[k] = b2 * v[k] + d * d * (1 - b2) * g * g
            s[k] = b3 * s[k] + (d / hy["d0"]) * (d if hy["safeguard_warmup"] else dlr) * g
            denom_sum += float(np.sum(np.abs(s[k])))
        d_hat = hy["d_coef"] * num / denom_sum
        if d == hy["d0"]:
            d = max(d, d_hat)
        d_max = max(d_max, d_hat)
        d = min(d_max, d * hy["growth_rate"])
        d_num = num
        for k, g in enumerate(gs):
            x = p[k]
            if hy["decouple"]:
                x = x - hy["weight_decay"] * dlr * x
            p[k] = x - (dlr * m[k] if b1 > 0 else dlr * d * g) / (np.sqrt(v[k]) + d * hy["eps"])
        traj.append([x.copy() for x in p])
    return traj


def ref_run_dadapt(hy, init, grads):
    """pytorch-optimizer's DAdaptAdam over one group, float64: the numerator
    and the l1 norm of s over every tensor before the params move."""
    p = [x.copy() for x in init]
    m = [np.zeros_like(x) for x in init]
    v = [np.zeros_like(x) for x in init]
    s = [np.zeros_like(x) for x in init]
    b1, b2 = hy["beta1"], hy["beta2"]
    b2sq = math.sqrt(b2)
    d, nw = hy["d0"], 0.0
    traj = []
    for t0, row in enumerate(grads):
        t = t0 + 1
        d_lr = d * hy["lr"]
        if hy["bias_correction"]:
            d_lr /= (1 - b1 ** t) / math.sqrt(1 - b2 ** t)
        gs = [g if hy["weight_decouple"] else g + hy["weight_decay"] * x for g, x in zip(row, p)]
        acc = sum(d_lr * float(np.dot(g, s[k] / (np.sqrt(v[k]) + hy["eps"]))) for k, g in enumerate(gs))
        l1 = 0.0
        for k, g in enumerate(gs):
            m[k] = b1 * m[k] + d_lr * (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            s[k] = b2sq * s[k] + d_lr * (1 - b2sq) * g
            l1 += float(np.sum(np.abs(s[k])))
        if l1 != 0:
            nw = nw + (1 - b2sq) * (acc - nw)
            if hy["lr"] > 0:
                d = max(d, min(nw / ((1 - b2sq) * l1), d * hy["growth_rate"]))
            for k in range(len(p)):
                x = p[k]
                if hy["weight_decouple"]:
                    x = x * (1 - hy["weight_decay"] * (1 if hy["fixed_decay"] else d_lr))
                p[k] = x - m[k] / (np.sqrt(v[k]) + hy["eps"])
        traj.append([x.copy() for x in p])
    return traj


# --------------------------------------------------------------------------
# cases

TORCH_SRC = f"torch {torch.__version__.split('+')[0]} torch.optim (single-tensor path: foreach=False)"


def _pkg_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return "?"


CASES = [
    dict(name="rmsprop_centered_momentum", rule="rmsprop", peer="rmsprop",
         hypers=dict(lr=0.01, alpha=0.95, eps=1e-8, weight_decay=0.01, momentum=0.9, centered=1),
         sizes=[64, 9], steps=100, seed=1101,
         data=dict(grad_scales=[1.0, 1e-3], init_scales=[1.0, 0.1], sparse_p=[0.0, 0.25],
                   zero_steps=[(30, 1), (31, 1)])),
    dict(name="rmsprop_plain", rule="rmsprop", peer="rmsprop",
         hypers=dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=0),
         sizes=[33, 5], steps=60, seed=1102,
         data=dict(grad_scales=[0.5, 20.0], init_scales=[1.0, 3.0], sparse_p=[0.2, 0.0],
                   zero_steps=[(20, 1)])),
    dict(name="adagrad_decay", rule="adagrad", peer="adagrad",
         hypers=dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1,
                     eps=1e-10),
         sizes=[64, 9], steps=80, seed=1103,
         data=dict(grad_scales=[1.0, 0.05], init_scales=[1.0, 0.5], sparse_p=[0.1, 0.3],
                   zero_steps=[(10, 0)])),
    dict(name="nadam_basic", rule="nadam", peer="nadam",
         hypers=dict(lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                     momentum_decay=4e-3),
         sizes=[64, 9], steps=100, seed=1104,
         data=dict(grad_scales=[1.0, 1e-2], init_scales=[1.0, 0.2], sparse_p=[0.0, 0.2],
                   zero_steps=[(40, 1)])),
    dict(name="radam_basic", rule="radam", peer="radam",
         hypers=dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01),
         sizes=[33, 5], steps=100, seed=1105,
         data=dict(grad_scales=[1.0, 30.0], init_scales=[1.0, 1.0], sparse_p=[0.15, 0.0],
                   zero_steps=[(12, 1)])),
    dict(name="adam_amsgrad", rule="adam", peer="adam",
         hypers=dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=1),
         sizes=[64, 9], steps=100, seed=1106,
         data=dict(grad_scales=[1.0, 1e-3], init_scales=[1.0, 0.5], sparse_p=[0.1, 0.0],
                   zero_steps=[(50, 1), (51, 1)], spike_p=0.1)),
    dict(name="adamw_amsgrad", rule="adamw", peer="adamw",
         hypers=dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.05, amsgrad=1),
         sizes=[33, 5], steps=100, seed=1107,
         data=dict(grad_scales=[2.0, 0.01], init_scales=[1.0, 2.0], sparse_p=[0.0, 0.2],
                   zero_steps=[(25, 0)], spike_p=0.1)),
    dict(name="sgd_dampening", rule="sgd", peer="sgd",
         hypers=dict(lr=0.01, momentum=0.8, dampening=0.3, weight_decay=0.01, nesterov=0),
         sizes=[64, 9], steps=80, seed=1108,
         data=dict(grad_scales=[1.0, 0.1], init_scales=[1.0, 1.0], sparse_p=[0.0, 0.2],
                   zero_steps=[(15, 1)])),
    dict(name="lion_basic", rule="lion", peer="lion",
         hypers=dict(lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.1),
         sizes=[64, 9], steps=100, seed=1109,
         # sparse zeros from step 1: m == g == 0 there, so sign(0) = 0 matters
         data=dict(grad_scales=[1.0, 1e-2], init_scales=[1.0, 0.5], sparse_p=[0.15, 0.3],
                   zero_steps=[(60, 1)])),
    dict(name="lamb_basic", rule="lamb", peer="lamb",
         hypers=dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.01, max_grad_norm=0, trust_clip=0),
         sizes=[64, 9, 5], steps=100, seed=1110,
         # tensor 2 starts at zero (a bias): ||p|| == 0 -> trust ratio 1 at step 1
         data=dict(grad_scales=[1.0, 0.05, 0.3], init_scales=[1.0, 0.3, 0.0],
                   sparse_p=[0.0, 0.2, 0.0], zero_steps=[(70, 1)], zero_init=[2])),
    # AdaBound with AMSBound and decoupled decay; gamma 0.02 closes the
    # bounds within the run, so the clamp binds on both sides.
    dict(name="adabound_amsbound", rule="adabound", peer="adabound",
         hypers=dict(lr=1e-2, final_lr=0.05, beta1=0.9, beta2=0.999, gamma=0.02, weight_decay=0.01,
                     weight_decouple=1, fixed_decay=0, ams_bound=1, eps=1e-8),
         sizes=[64, 9], steps=100, seed=1114,
         data=dict(grad_scales=[1.0, 1e-3], init_scales=[1.0, 0.5], sparse_p=[0.1, 0.0],
                   zero_steps=[(10, 1)], spike_p=0.1)),
    # Lookahead(AdamW): slow weights from the initial params (state from
    # param), synchronised every k = 4 steps (mod in the language).
    dict(name="lookahead_adamw_basic", rule="lookahead_adamw", peer="lookahead_adamw",
         hypers=dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, k=4, alpha=0.5),
         sizes=[64, 9], steps=100, seed=1113,
         data=dict(grad_scales=[1.0, 0.1], init_scales=[1.0, 0.5], sparse_p=[0.0, 0.2],
                   zero_steps=[(20, 1)])),
    # atan2 instead of a division: zero gradients (m == v == 0, atan2(0, 0)
    # = 0), spikes, tiny and large scales; a and b away from their defaults.
    dict(name="adam_atan2_basic", rule="adam_atan2", peer="adam_atan2",
         hypers=dict(lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.1, a=1.5, b=0.8),
         sizes=[64, 9], steps=100, seed=1112,
         data=dict(grad_scales=[1.0, 1e-4], init_scales=[1.0, 0.5], sparse_p=[0.1, 0.2],
                   zero_steps=[(0, 1), (30, 0)], spike_p=0.1)),
    # The same peer run (clip_grad_norm_ + AdamW) for the rule that clips
    # itself with group_norm: the clipping is the rule's, not the runtime's.
    dict(name="adamw_clip_rule", rule="adamw_clip", peer="adamw", max_grad_norm=4.0, clip_in_rule=True,
         hypers=dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, max_grad_norm=4.0),
         sizes=[64, 9, 5], steps=100, seed=1115,
         data=dict(grad_scales=[0.6, 2.0, 0.1], init_scales=[1.0, 0.5, 0.2], sparse_p=[0.0, 0.2, 0.0],
                   zero_steps=[(40, 0), (40, 1), (40, 2)], spike_p=0.1)),
    # torch.nn.utils.clip_grad_norm_ over both tensors, then AdamW: the norm
    # is above max_grad_norm on most steps (clipped) and below it on some.
    # Prodigy: d learned from the distance travelled (group_sum over the
    # three tensors), bias correction and decoupled decay on, a growth rate
    # that binds while d climbs from d0. d0 is 1e-3, not 1e-6: steps of
    # 1e-6 on params of 1 are below float32's resolution, so the peer's own
    # float32 run would be 6% off its float64 one and the float32 criterion
    # would mean little. (Random gradients follow no loss, so d keeps
    # growing: the growth rate bounds it.)
    # Adan with clipping by the group's gradient norm (binding on most
    # steps), coupled decay (pytorch-optimizer's default) and zero gradients
    # (the change since the last step then jumps).
    # Schedule-Free AdamW in train mode (the params are y): 10 warm-up steps
    # (lr_max grows, then the averaging weights follow step^r), decay at y.
    dict(name="schedulefree_adamw_warmup", rule="schedulefree_adamw", peer="schedulefree_adamw",
         hypers=dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, warmup_steps=10, r=0.5,
                     weight_lr_power=2),
         sizes=[64, 9], steps=100, seed=1122,
         data=dict(grad_scales=[1.0, 0.1], init_scales=[1.0, 0.5], sparse_p=[0.0, 0.2],
                   zero_steps=[(20, 1)], spike_p=0.1)),
    # MARS (adamw type, every tensor through it): tensor 0's corrected
    # gradient is longer than 1 (scaled down), tensor 1's shorter; AMSBound.
    dict(name="mars_ams", rule="mars", peer="mars",
         hypers=dict(lr=3e-3, beta1=0.95, beta2=0.99, gamma=0.025, weight_decay=0.01, weight_decouple=1,
                     fixed_decay=0, ams_bound=1, eps=1e-8, optimize_1d=1, lr_1d=3e-3, beta1_1d=0.9, beta2_1d=0.95,
                     weight_decay_1d=0.1),
         sizes=[64, 9], steps=100, seed=1121,
         data=dict(grad_scales=[1.0, 0.05], init_scales=[1.0, 0.5], sparse_p=[0.0, 0.2],
                   zero_steps=[(20, 1)], spike_p=0.1)),
    # MARS as pytorch-optimizer runs it by default (optimize_1d=False): the
    # matrices take the MARS update, the vector plain AdamW with the _1d
    # hypers (the rule reads `rank`; the runtime gets the shapes).
    dict(name="mars_1d", rule="mars", peer="mars",
         hypers=dict(lr=3e-3, beta1=0.95, beta2=0.99, gamma=0.025, weight_decay=0.01, weight_decouple=1,
                     fixed_decay=0, ams_bound=0, eps=1e-8, optimize_1d=0, lr_1d=1e-2, beta1_1d=0.9, beta2_1d=0.95,
                     weight_decay_1d=0.1),
         sizes=[96, 10, 30], shapes=[[8, 12], [10], [2, 3, 5]], steps=100, seed=1127,
         data=dict(grad_scales=[1.0, 0.05, 0.3], init_scales=[1.0, 0.5, 0.2], sparse_p=[0.0, 0.2, 0.0],
                   zero_steps=[(20, 1)], spike_p=0.1)),
    # AdaBelief with RAdam's rectification (SGD with momentum for the first
    # steps, then rectified) and AMSBound, decoupled decay.
    dict(name="adabelief_rectify_ams", rule="adabelief", peer="adabelief",
         hypers=dict(lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.01, weight_decouple=1, fixed_decay=0,
                     rectify=1, n_sma_threshold=5, degenerated_to_sgd=1, ams_bound=1, eps=1e-16),
         sizes=[64, 9], steps=100, seed=1119,
         data=dict(grad_scales=[1.0, 0.1], init_scales=[1.0, 0.5], sparse_p=[0.0, 0.2],
                   zero_steps=[(20, 1)], spike_p=0.1)),
    # AdaBelief as its paper runs it: no rectification, coupled decay.
    dict(name="adabelief_plain", rule="adabelief", peer="adabelief",
         hypers=dict(lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.01, weight_decouple=0, fixed_decay=0,
                     rectify=0, n_sma_threshold=5, degenerated_to_sgd=1, ams_bound=0, eps=1e-16),
         sizes=[64, 9], steps=100, seed=1120,
         data=dict(grad_scales=[1.0, 0.1], init_scales=[1.0, 0.5], sparse_p=[0.0, 0.2],
                   zero_steps=[(20, 1)], spike_p=0.1)),
    # ADOPT: zero gradients at step 1 for tensor 1 (its second moment 0 at
    # step 2, so the normalised gradient is clipped to 2^0.25), coupled
    # decay. (Decoupled decay would move the params by lr * wd alone at step
    # 1, below float32's resolution relative to the params: the peer's own
    # float32 error would be 2.5e-3 for that reason alone.)
    dict(name="adopt_basic", rule="adopt", peer="adopt",
         hypers=dict(lr=1e-3, beta1=0.9, beta2=0.9999, weight_decay=0.01, weight_decouple=0, fixed_decay=0,
                     eps=1e-6),
         sizes=[64, 9], steps=100, seed=1118,
         data=dict(grad_scales=[1.0, 0.1], init_scales=[1.0, 0.5], sparse_p=[0.0, 0.2],
                   zero_steps=[(0, 1)], spike_p=0.1)),
    dict(name="adan_clip", rule="adan", peer="adan",
         hypers=dict(lr=1e-3, beta1=0.98, beta2=0.92, beta3=0.99, weight_decay=0.02, weight_decouple=0,
                     max_grad_norm=1.0, eps=1e-8),
         sizes=[64, 9, 5], steps=100, seed=1117,
         data=dict(grad_scales=[0.3, 1.0, 0.05], init_scales=[1.0, 0.5, 0.2], sparse_p=[0.0, 0.2, 0.0],
                   zero_steps=[(30, 1), (31, 2)], spike_p=0.1)),
    # timm's defaults: max_grad_norm 1.0 clips most steps (the gradients'
    # global norm is above 1 on most), LAMBC's trust clip on.
    dict(name="lamb_clip", rule="lamb", peer="lamb",
         hypers=dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.01, max_grad_norm=1.0, trust_clip=1),
         sizes=[64, 9, 5], steps=100, seed=1120,
         data=dict(grad_scales=[0.2, 0.05, 0.3], init_scales=[1.0, 0.3, 0.5],
                   sparse_p=[0.0, 0.2, 0.0], zero_steps=[(70, 1)], spike_p=0.1)),
    dict(name="sophia_refresh", rule="sophia", peer="sophia",
         hypers=dict(lr=1e-3, beta1=0.965, beta2=0.99, rho=0.04, weight_decay=0.1, bs=256),
         sizes=[64, 9], steps=100, seed=1119,
         data=dict(grad_scales=[1.0, 0.1], init_scales=[1.0, 0.5], sparse_p=[0.0, 0.2],
                   zero_steps=[(60, 1)], spike_p=0.1),
         hessian=dict(name="hessian_estimate", scales=[1.0, 0.25], every=5, offset=2, seed=2119)),
    # Adafactor's defaults (relative step, parameter scale, no momentum) on
    # a matrix, a vector (the unfactored branch) and a rank-3 tensor
    # (factored over its last two dimensions, per matrix).
    dict(name="adafactor_relative", rule="adafactor", peer="adafactor",
         hypers=dict(lr=0, eps1=1e-30, eps2=1e-3, clip_threshold=1.0, decay_rate=-0.8, beta1=0, weight_decay=0,
                     scale_parameter=1, relative_step=1, warmup_init=0),
         sizes=[96, 10, 30], shapes=[[8, 12], [10], [2, 3, 5]], steps=100, seed=1123,
         data=dict(grad_scales=[1.0, 0.1, 3.0], init_scales=[1.0, 0.5, 0.2], sparse_p=[0.0, 0.2, 0.1],
                   zero_steps=[(20, 1), (0, 2)], spike_p=0.1)),
    # Warm-up init: steps of 1e-6 * step relative to the params, below
    # float32's resolution at first (the peer's own float32 run strays by
    # a few percent), so this case pins the float64 semantics; the one
    # above, the float32 kernels.
    dict(name="adafactor_warmup_init", rule="adafactor", peer="adafactor",
         hypers=dict(lr=0, eps1=1e-30, eps2=1e-3, clip_threshold=1.0, decay_rate=-0.8, beta1=0, weight_decay=0,
                     scale_parameter=1, relative_step=1, warmup_init=1),
         sizes=[40, 6], shapes=[[5, 8], [6]], steps=40, seed=1126,
         data=dict(grad_scales=[1.0, 0.1], init_scales=[1.0, 0.5], sparse_p=[0.0, 0.2],
                   zero_steps=[(10, 1)], spike_p=0.1)),
    # A fixed lr, momentum, decoupled decay, a tight update clip (binding on
    # most steps) and a faster second-moment decay.
    dict(name="adafactor_lr_momentum", rule="adafactor", peer="adafactor",
         hypers=dict(lr=1e-2, eps1=1e-30, eps2=1e-3, clip_threshold=0.5, decay_rate=-0.5, beta1=0.9,
                     weight_decay=0.01, scale_parameter=0, relative_step=0, warmup_init=0),
         sizes=[63, 5, 30], shapes=[[7, 9], [5], [2, 5, 3]], steps=100, seed=1124,
         data=dict(grad_scales=[1.0, 0.05, 2.0], init_scales=[1.0, 0.5, 0.3], sparse_p=[0.1, 0.0, 0.0],
                   zero_steps=[(30, 0)], spike_p=0.1)),
    # CAME with decay on a matrix, a vector (no confidence factor there) and
    # a rank-3 tensor.
    dict(name="came_basic", rule="came", peer="came",
         hypers=dict(lr=1e-2, eps1=1e-30, eps2=1e-16, clip_threshold=1.0, beta1=0.9, beta2=0.999, beta3=0.9999,
                     weight_decay=0.01),
         sizes=[96, 10, 30], shapes=[[8, 12], [10], [2, 3, 5]], steps=100, seed=1125,
         data=dict(grad_scales=[1.0, 0.1, 3.0], init_scales=[1.0, 0.5, 0.2], sparse_p=[0.0, 0.2, 0.1],
                   zero_steps=[(20, 1)], spike_p=0.1)),
    # D-Adaptation Adam over one group of 3 tensors (d from group_sums),
    # bias correction and decoupled decay on; d0 1e-3 for the same reason
    # as prodigy_basic, and a growth rate that binds while d climbs.
    dict(name="dadapt_adam_basic", rule="dadapt_adam", peer="dadapt_adam",
         hypers=dict(lr=1.0, beta1=0.9, beta2=0.999, d0=1e-3, growth_rate=1.05, weight_decay=0.01, weight_decouple=1,
                     fixed_decay=0, bias_correction=1, eps=1e-8),
         sizes=[64, 9, 5], steps=100, seed=1128,
         data=dict(grad_scales=[1.0, 0.2, 0.05], init_scales=[1.0, 0.5, 0.2], sparse_p=[0.0, 0.2, 0.0],
                   zero_steps=[(50, 1)], spike_p=0.05)),
    # Coupled decay (pytorch-optimizer's default), no bias correction, d
    # free to grow.
    dict(name="dadapt_adam_coupled", rule="dadapt_adam", peer="dadapt_adam",
         hypers=dict(lr=1.0, beta1=0.9, beta2=0.999, d0=1e-3, growth_rate=1e30, weight_decay=0.01, weight_decouple=0,
                     fixed_decay=0, bias_correction=0, eps=1e-8),
         sizes=[64, 9], steps=60, seed=1129,
         data=dict(grad_scales=[1.0, 0.1], init_scales=[1.0, 0.5], sparse_p=[0.0, 0.2],
                   zero_steps=[(30, 1)], spike_p=0.05)),
    dict(name="prodigy_basic", rule="prodigy", peer="prodigy",
         hypers=dict(lr=1.0, beta1=0.9, beta2=0.999, beta3=-1, eps=1e-8, weight_decay=0.01, decouple=1,
                     use_bias_correction=1, safeguard_warmup=0, d0=1e-3, d_coef=1.0, growth_rate=1.02),
         sizes=[64, 9, 5], steps=100, seed=1116,
         data=dict(grad_scales=[1.0, 0.2, 0.05], init_scales=[1.0, 0.5, 0.2], sparse_p=[0.0, 0.2, 0.0],
                   zero_steps=[(50, 1)], spike_p=0.05)),
    dict(name="adamw_clip", rule="adamw", peer="adamw", max_grad_norm=4.0,
         hypers=dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, amsgrad=0),
         sizes=[64, 9], steps=100, seed=1111,
         data=dict(grad_scales=[0.6, 2.0], init_scales=[1.0, 0.5], sparse_p=[0.0, 0.2],
                   zero_steps=[(40, 0), (40, 1)], spike_p=0.1)),
]


def source_of(case):
    tv = torch.__version__.split("+")[0]
    if case["peer"] == "lion":
        return (f"lion-pytorch {_pkg_version('lion-pytorch')} lion_pytorch.Lion "
                f"(plain update_fn, use_triton=False, decoupled_weight_decay=False) on torch {tv}")
    if case["peer"] == "adabound":
        return (f"pytorch-optimizer {_pkg_version('pytorch-optimizer')} AdaBound (foreach=False) on torch {tv}")
    if case["peer"] == "lookahead_adamw":
        return (f"pytorch-optimizer {_pkg_version('pytorch-optimizer')} Lookahead(torch.optim.AdamW, "
                f"pullback_momentum='none', foreach=False AdamW) on torch {tv}")
    if case["peer"] == "adam_atan2":
        return (f"adam-atan2-pytorch {_pkg_version('adam-atan2-pytorch')} "
                f"adam_atan2_pytorch.AdamAtan2 (defaults: decay coupled to lr, regen_reg_rate=0, "
                f"cautious_factor=1) on torch {tv}")
    if case["peer"] == "schedulefree_adamw":
        return (f"schedulefree {_pkg_version('schedulefree')} AdamWScheduleFree (train mode, foreach=False) "
                f"on torch {tv}")
    if case["peer"] == "mars":
        return (f"pytorch-optimizer {_pkg_version('pytorch-optimizer')} MARS (mars_type='adamw', "
                f"optimize_1d={bool(case['hypers']['optimize_1d'])}, foreach=False) on torch {tv}")
    if case["peer"] == "adabelief":
        return (f"pytorch-optimizer {_pkg_version('pytorch-optimizer')} AdaBelief (foreach=False) on torch {tv}")
    if case["peer"] == "adopt":
        return (f"pytorch-optimizer {_pkg_version('pytorch-optimizer')} ADOPT (foreach=False, the default "
                f"clip_lambda step**0.25) on torch {tv}")
    if case["peer"] == "adan":
        return (f"pytorch-optimizer {_pkg_version('pytorch-optimizer')} Adan (foreach=False, one parameter "
                f"group) on torch {tv}")
    if case["peer"] == "sophia":
        return (f"sophia-opt {_pkg_version('sophia-opt')} sophia_opt.SophiaG, update_hessian() with the Hessian "
                f"pass's gradients before the steps that have an estimate, step(bs=bs), on torch {tv}")
    if case["peer"] == "adafactor":
        return (f"transformers {_pkg_version('transformers')} transformers.optimization.Adafactor "
                f"(lr 0 and beta1 0 passed as None) on torch {tv}")
    if case["peer"] == "came":
        return f"came-pytorch {_pkg_version('came-pytorch')} came_pytorch.CAME on torch {tv}"
    if case["peer"] == "dadapt_adam":
        return (f"pytorch-optimizer {_pkg_version('pytorch-optimizer')} DAdaptAdam (foreach=False, one parameter "
                f"group; growth_rate 1e30 passed as given) on torch {tv}")
    if case["peer"] == "prodigy":
        return (f"prodigyopt {_pkg_version('prodigyopt')} prodigyopt.Prodigy (one parameter group) on torch {tv}")
    if case["peer"] == "lamb":
        hy = case["hypers"]
        clip = hy["max_grad_norm"] or None
        return (f"timm {_pkg_version('timm')} timm.optim.Lamb (bias_correction=True, "
                f"grad_averaging=True, max_grad_norm={clip}, trust_clip={bool(hy['trust_clip'])}, "
                f"always_adapt=False, decoupled_decay=False, foreach=False) on torch {tv}")
    return TORCH_SRC


def lion_margin(hy, grads):
    """Smallest |beta1*m + (1-beta1)*g| among nonzero ones, relative to the
    largest in its tensor and step (float64): how close a sign flip is."""
    b1, b2 = hy["beta1"], hy["beta2"]
    m = [np.zeros_like(g) for g in grads[0]]
    worst = math.inf
    for row in grads:
        for k, g in enumerate(row):
            c = b1 * m[k] + (1 - b1) * g
            a = np.abs(c)
            nz = a[a > 0]
            if nz.size:
                worst = min(worst, float(nz.min() / nz.max()))
            m[k] = b2 * m[k] + (1 - b2) * g
    return worst


def clip_rows(row, max_norm):
    """torch.nn.utils.clip_grad_norm_ in numpy float64."""
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in row))
    coef = min(1.0, max_norm / (norm + 1e-6))
    return [g * coef for g in row]


def generate(case, selfcheck=False):
    d = case["data"]
    init, grads = make_data(case["seed"], case["sizes"], case["steps"],
                            d["grad_scales"], d["init_scales"], d["sparse_p"],
                            zero_steps=set(map(tuple, d.get("zero_steps", ()))),
                            zero_init=set(d.get("zero_init", ())),
                            spike_p=d.get("spike_p", 0.06))
    hy = case["hypers"]
    clip = case.get("max_grad_norm")
    hess = case.get("hessian")
    hessian_grads = (make_hessian_grads(hess["seed"], case["sizes"], case["steps"], hess["scales"], hess["every"],
                                        hess["offset"]) if hess else None)
    shapes = case.get("shapes")
    expect = run_peer(case["peer"], hy, init, grads, torch.float64, clip, hessian_grads, shapes)
    got32 = run_peer(case["peer"], hy, init, grads, torch.float32, clip, hessian_grads, shapes)
    err32 = criterion(got32, expect, init)
    info = {}
    if selfcheck:
        # Clipping is open loop too: the clipped gradients depend on the
        # gradients only.
        ref_grads = grads if clip is None else [clip_rows(row, clip) for row in grads]
        group_refs = {"prodigy": ref_run_prodigy, "adan": ref_run_adan,  # need every tensor first
                      "dadapt_adam": ref_run_dadapt}
        if case["peer"] == "sophia":
            ref = ref_run_sophia(hy, init, ref_grads, hessian_grads)
        elif case["peer"] in ("adafactor", "came"):
            ref = ref_run_factored(case["peer"], hy, init, ref_grads, shapes)
        elif case["peer"] in group_refs:
            ref = group_refs[case["peer"]](hy, init, ref_grads)
        else:
            ref = ref_run(case["peer"], hy, init, ref_grads, shapes)
        info["numpy_vs_peer64"] = criterion(ref, expect, init)
    if case["peer"] == "lion":
        info["lion_sign_margin"] = lion_margin(hy, grads)
    out = {
        "format": "optdsl-golden/1",
        "name": case["name"],
        "rule": case["rule"],
        "source": source_of(case),
        "hypers": hy,
        "sizes": case["sizes"],
        **({"shapes": shapes} if shapes else {}),
        "steps": case["steps"],
        "init": [x.tolist() for x in init],
        "grads": [[g.tolist() for g in row] for row in grads],
        "expect": [[x.tolist() for x in row] for row in expect],
        "float32_reference_error": err32,
    }
    if clip is not None and not case.get("clip_in_rule"):
        out["max_grad_norm"] = clip
    if hess:
        # The estimate the rule gets: the square the peer's update_hessian
        # takes (exact: make_hessian_grads). Per tensor null on other steps.
        out["inputs"] = {hess["name"]: [[(h * h).tolist() for h in row] if row is not None
                                        else [None] * len(case["sizes"]) for row in hessian_grads]}
        info["ratio_clamped"] = sophia_clamped_share(hy, grads, hessian_grads) if case["peer"] == "sophia" else 0
    return out, info


def sophia_clamped_share(hy, grads, hessian_grads):
    """The share of (step, element) pairs whose ratio is clamped to 1: the
    case should exercise both branches of the clamp."""
    m = [np.zeros_like(g) for g in grads[0]]
    h = [np.zeros_like(g) for g in grads[0]]
    clamped = total = 0
    for t, row in enumerate(grads):
        for k, g in enumerate(row):
            if hessian_grads[t] is not None:
                h[k] = hy["beta2"] * h[k] + (1 - hy["beta2"]) * hessian_grads[t][k] ** 2
            m[k] = hy["beta1"] * m[k] + (1 - hy["beta1"]) * g
            r = np.abs(m[k]) / (hy["rho"] * hy["bs"] * h[k] + 1e-15)
            clamped += int(np.sum(r >= 1))
            total += r.size
    return clamped / total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", help="case names to generate")
    ap.add_argument("--out", default=OUT_DIR)
    ap.add_argument("--selfcheck", action="store_true",
                    help="compare each float64 peer run with the numpy transcription")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    failed = False
    for case in CASES:
        if args.only and case["name"] not in args.only:
            continue
        out, info = generate(case, args.selfcheck)
        path = os.path.join(args.out, case["name"] + ".json")
        with open(path, "w") as f:
            json.dump(out, f, separators=(",", ":"), allow_nan=False)
            f.write("\n")
        extra = " ".join(f"{k}={v:.3g}" for k, v in info.items())
        print(f"{case['name']:28s} {os.path.getsize(path) // 1024:5d} KB  "
              f"float32_reference_error={out['float32_reference_error']:.3e} {extra}")
        if args.selfcheck and not info["numpy_vs_peer64"] <= 1e-9:
            failed = True
    if failed:
        print("selfcheck FAILED: numpy transcription disagrees with a peer", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
