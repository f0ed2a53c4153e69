//===- Passes.td - passes over the opt dialect -------------*- tablegen -*-===//
//
// The passes that take a rule from the flat update MLIRGen builds to the
// explicit per-phase form the backends lower. Each runs alone from optc-opt;
// `opt-kernel-prep` chains them as optc and the JIT do.
//
//===----------------------------------------------------------------------===//

#ifndef OPTDSL_TRANSFORMS_PASSES_TD
#define OPTDSL_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def SpecializeHypers : Pass<"opt-specialize-hypers", "::optdsl::opt::RuleOp"> {
  let summary = "Fold hypers fixed at build time into the rule";
  let description = [{
    Every `opt.get_hyper` of a hyper named in `fix` becomes an
    `arith.constant`, and the hyper is marked `fixed` with that value (the
    runtime then refuses to change it). The rule is then folded with the
    canonicalization patterns, so that branches on the fixed hypers
    disappear together with what only they needed: a store that writes back
    the value the state had (`s = flag ? ... : s` with the flag fixed to 0)
    is erased, and a state that is then neither read nor written is erased
    too, so it is never allocated (AdamW's `max_exp_avg_sq` with
    `amsgrad=0`, AdEMAMix's `m1` with `beta1=0`). Only IEEE-exact folds are
    used: MLIR's arith/math folders (`x * 1`, `x + -0.0`, constant
    operands), never `x * 0` or `x + 0.0`.

    Example: `optc-opt --opt-specialize-hypers=fix=amsgrad=0,beta1=0.9`

    Errors: a name that is not a hyper of the rule, a malformed entry or a
    value that is not a finite number.
  }];
  let options = [
    ListOption<"fix", "fix", "std::string",
               "NAME=VALUE entries: hypers to fix and their values">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

def SplitPhases : Pass<"opt-split-phases", "::optdsl::opt::RuleOp"> {
  let summary = "One opt.phase per pass over memory, with explicit reloads";
  let description = [{
    Turns the flat `opt.update` into its explicit form: for each phase an
    `opt.phase` whose element region computes what the phase writes (the
    last store to each buffer in that phase) and the inputs of the
    reductions it accumulates, which become the phase's results. A value
    that an earlier phase stored and that is still in its buffer is read
    back with `opt.reload` instead of being recomputed; reading a
    start-of-step value after an earlier phase overwrote its buffer is an
    error at the read. Earlier reductions the phase needs are its inputs.
    What remains of the update after the phases is the scalar-state update.

    The element regions still hold their uniform computations (run
    `opt-hoist-uniforms` next).

    Example: LAMB's two norms end phase 0; phase 1 reloads `exp_avg` and
    `exp_avg_sq` and takes both norms as inputs.
  }];
}

def HoistUniforms : Pass<"opt-hoist-uniforms", "::optdsl::opt::RuleOp"> {
  let summary = "Move per-tensor work of each phase into its uniform region";
  let description = [{
    In every `opt.phase`, each operation of the element region that does not
    depend on a per-element value (hypers, `step`, scalar states, the
    phase's inputs, and what is computed from them only) moves into the
    uniform region, so that it runs once per tensor and step instead of once
    per element. The values the element code still needs from there are
    yielded and become the element region's arguments (f32, or i1 for
    truth values); constants stay in the element region. Inputs and
    arguments nothing uses any more are dropped.

    Example: AdamW's `lr / (1 - beta1 ^ step)` is computed in the uniform
    region; the element region receives it as one f32 argument.
  }];
}

#endif // OPTDSL_TRANSFORMS_PASSES_TD
