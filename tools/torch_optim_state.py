#!/usr/bin/env python3
"""Moves optimizer state between torch.optim and OptDSL.

OptDSL's ``Optimizer::exportSafetensors`` / ``importSafetensors`` read and
write a safetensors file that holds torch's state_dict under torch's names
(docs/checkpoints.md): per parameter index i, ``state.i.step`` (float32
scalar) and ``state.i.<state>`` (float32, flattened; float64 scalars for
scalar states such as NAdam's ``mu_product``), and in the metadata the rule,
the layout and ``param_groups`` as JSON with OptDSL's hyper names (torch's
``betas`` split into ``beta1``, ``beta2``, ``beta3``; flags as 0/1). This
module converts in both directions.

    # torch -> OptDSL (a state_dict saved with torch.save):
    python tools/torch_optim_state.py to-optdsl optimizer.pt state.safetensors --rule dsl/adamw.opt

    # OptDSL -> torch, in Python (the optimizer gives the params' shapes):
    from torch_optim_state import load_into_torch
    load_into_torch("state.safetensors", torch_optimizer)

Needs torch and safetensors (PyPI).
"""
import argparse
import json
import re

import torch
from safetensors import safe_open
from safetensors.torch import save_file

FORMAT = "optdsl-optim-state/1"
BETAS = ("beta1", "beta2", "beta3")


def rule_declarations(rule_path):
    """A .opt rule's name, hyper names, and its per-element states with
    whether each starts at zero (declared without an initial value)."""
    text = open(rule_path).read()
    name = re.search(r"^\s*optimizer\s+(\w+)", text, re.M).group(1)
    hypers = re.findall(r"^\s*hyper\s+(\w+)", text, re.M)
    states = {m.group(1): m.group(2) is None for m in re.finditer(r"^\s*state\s+(\w+)\s*(=)?", text, re.M)}
    return name, hypers, states


def torch_to_optdsl(state_dict, path, rule_path, layout="f32", steps=None):
    """Writes a torch.optim state_dict as OptDSL's safetensors state. A state
    the rule declares without an initial value and torch does not keep
    (AdamW's max_exp_avg_sq without amsgrad) is written as zeros, its value in
    a fresh OptDSL optimizer; any other missing state is an error. `steps`:
    the step count of every group, for optimizers whose state has no `step`
    (torch's SGD)."""
    rule, hypers, states = rule_declarations(rule_path)
    tensors, groups = {}, []
    for group in state_dict["param_groups"]:
        entry = {"params": list(group["params"])}
        for key, value in group.items():
            if key == "betas":
                entry.update({b: float(v) for b, v in zip(BETAS, value)})
            elif key in hypers and isinstance(value, (bool, int, float)):
                entry[key] = float(value)
        if steps is not None:
            group_steps = {float(steps)}
        else:
            try:
                group_steps = {float(state_dict["state"][i]["step"]) for i in group["params"]
                               if i in state_dict["state"]}
            except KeyError:
                raise ValueError("the torch state has no 'step' (torch's SGD keeps none): pass steps=N "
                                 "(--steps N), the number of steps taken") from None
        if len(group_steps) > 1:
            raise ValueError(f"the params of a group are at different steps {sorted(group_steps)}; "
                             "OptDSL keeps one step count per group")
        entry["step"] = int(group_steps.pop()) if group_steps else 0
        groups.append(entry)
        for index in group["params"]:
            state = state_dict["state"].get(index, {})
            tensors[f"state.{index}.step"] = torch.tensor(float(entry["step"]), dtype=torch.float32)
            size = next((torch.as_tensor(v).numel() for k, v in state.items()
                         if k != "step" and torch.as_tensor(v).dim() > 0), None)
            for name, zero_init in states.items():
                if name in state or size is None:
                    continue
                if not zero_init:
                    raise ValueError(f"the torch state of param {index} has no '{name}', which rule {rule} "
                                     "initialises to a value of its own")
                tensors[f"state.{index}.{name}"] = torch.zeros(size, dtype=torch.float32)
    for index, state in state_dict["state"].items():
        for name, value in state.items():
            value = torch.as_tensor(value)
            if name == "step":
                continue
            elif value.dim() == 0:
                tensors[f"state.{index}.{name}"] = value.detach().to(torch.float64).reshape(())
            else:
                tensors[f"state.{index}.{name}"] = value.detach().to(torch.float32).reshape(-1).contiguous()
    metadata = {"format": FORMAT, "rule": rule, "layout": layout, "param_groups": json.dumps(groups)}
    save_file(tensors, path, metadata=metadata)


def torch_state_names(optimizer):
    """The state names a torch optimizer keeps (after at least one step)."""
    return {name for state in optimizer.state.values() for name in state} or {"step"}


def load_into_torch(path, optimizer):
    """Loads OptDSL's safetensors state into a torch.optim optimizer over the
    same parameters (their shapes are the optimizer's)."""
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path}: not OptDSL optimizer state ({metadata.get('format')})")
        groups = json.loads(metadata["param_groups"])
        params = [p for g in optimizer.param_groups for p in g["params"]]
        state = {}
        for key in f.keys():
            _, index, name = key.split(".", 2)
            index = int(index)
            value = f.get_tensor(key)
            if name == "step":
                if "step" in torch_state_names(optimizer):
                    state.setdefault(index, {})["step"] = value.to(torch.float32)
            elif value.dim() == 0:
                state.setdefault(index, {})[name] = value.item()
            else:
                param = params[index]
                state.setdefault(index, {})[name] = value.to(param.dtype).reshape(param.shape)
    torch_groups = optimizer.state_dict()["param_groups"]
    if len(torch_groups) != len(groups):
        raise ValueError(f"{path}: {len(groups)} param groups, the optimizer has {len(torch_groups)}")
    for ours, theirs in zip(groups, torch_groups):
        if "betas" in theirs:
            theirs["betas"] = tuple(ours.get(b, v) for b, v in zip(BETAS, theirs["betas"]))
        for key, value in ours.items():
            if key in theirs and key not in ("params", "betas"):
                theirs[key] = type(theirs[key])(value) if isinstance(theirs[key], (bool, int, float)) else value
    optimizer.load_state_dict({"state": state, "param_groups": torch_groups})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    to = sub.add_parser("to-optdsl", help="a torch.save'd optimizer state_dict to OptDSL's safetensors")
    to.add_argument("state_dict")
    to.add_argument("out")
    to.add_argument("--rule", required=True, help="the .opt file of the OptDSL rule (for its hyper names)")
    to.add_argument("--layout", default="f32")
    to.add_argument("--steps", type=int, help="steps taken, for optimizers whose state has no 'step' (SGD)")
    args = parser.parse_args()
    torch_to_optdsl(torch.load(args.state_dict, weights_only=True), args.out, args.rule, args.layout, args.steps)


if __name__ == "__main__":
    main()
