//===- OptOps.td - the opt dialect -------------------------*- tablegen -*-===//
//
// The `opt` dialect represents one checked optimizer rule: its hypers and
// states as symbols, and one step's update as SSA values. Uniform values
// (hypers, `step`, scalar states, reductions) are f64 — computed once per
// tensor and step, in double like torch's Python scalars; per-element values
// are f32. Arithmetic uses the arith and math dialects.
//
//===----------------------------------------------------------------------===//

#ifndef OPTDSL_DIALECT_OPTOPS_TD
#define OPTDSL_DIALECT_OPTOPS_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

def Opt_Dialect : Dialect {
  let name = "opt";
  let cppNamespace = "::optdsl::opt";
  let summary = "Optimizer update rules: hypers, states, one step's update";
  let description = [{
    A rule from a `.opt` file after sema. `opt.rule` holds `opt.hyper` and
    `opt.state` declarations and one `opt.update` region: the update of one
    tensor for one step, as if for a single element. Reductions
    (`opt.reduce`) end a phase: the backends run one pass over the tensor per
    phase.
  }];
}

class Opt_Op<string mnemonic, list<Trait> traits = []> :
    Op<Opt_Dialect, mnemonic, traits>;

def Opt_RuleOp : Opt_Op<"rule", [Symbol, SymbolTable, NoTerminator, SingleBlock,
                                 IsolatedFromAbove]> {
  let summary = "An optimizer rule";
  let description = [{
    Holds the rule's declarations and its update. `num_phases` is the number
    of passes over a tensor per step (1 + the depth of reductions).

    Example:
    ```mlir
    opt.rule @sgd phases 1 {
      opt.hyper @lr = 1.000000e-02
      opt.update {
        %lr = opt.get_hyper @lr : f64
        ...
      }
    }
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, I64Attr:$num_phases);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$sym_name `phases` $num_phases attr-dict-with-keyword $body";
}

def Opt_HyperOp : Opt_Op<"hyper", [Symbol, HasParent<"RuleOp">]> {
  let summary = "A hyper-parameter with its default value";
  let description = [{
    A per-group scalar the user may change between steps (learning rate,
    betas, flags as 0/1).

    Example: `opt.hyper @lr = 1.000000e-03`
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, F64Attr:$default_value);
  let assemblyFormat = "$sym_name `=` $default_value attr-dict";
}

def Opt_StateOp : Opt_Op<"state", [Symbol, HasParent<"RuleOp">, NoTerminator,
                                   IsolatedFromAbove]> {
  let summary = "An optimizer state buffer";
  let description = [{
    A per-element buffer (f32 arithmetic) or, with `scalar`, one f64 per
    tensor. The optional `init` region computes the initial value from hypers
    (`opt.yield`); without it the state starts at zero.

    Example:
    ```mlir
    opt.state @exp_avg
    opt.state @mu_product scalar init {
      %one = arith.constant 1.0 : f64
      opt.yield %one : f64
    }
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, UnitAttr:$scalar);
  let regions = (region AnyRegion:$init);
  let assemblyFormat = "$sym_name (`scalar` $scalar^)? (`init` $init^)? attr-dict";
}

def Opt_UpdateOp : Opt_Op<"update", [HasParent<"RuleOp">, NoTerminator, SingleBlock,
                                     IsolatedFromAbove]> {
  let summary = "One step's update of one tensor, written per element";
  let description = [{
    The statements of the rule in order. Reads of `param`, `grad` and states
    yield the values at the start of the step; writes happen in program
    order and carry the phase in which they run.

    Example:
    ```mlir
    opt.update {
      %p = opt.param : f32
      %g = opt.grad : f32
      %lr = opt.get_hyper @lr : f64
      %lr32 = arith.truncf %lr : f64 to f32
      %d = arith.mulf %lr32, %g : f32
      %new = arith.subf %p, %d : f32
      opt.store_param %new phase 0 : f32
    }
    ```
  }];
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "attr-dict-with-keyword $body";
}

def Opt_YieldOp : Opt_Op<"yield", [Pure, Terminator, HasParent<"StateOp">]> {
  let summary = "The initial value of a state";
  let description = "Example: `opt.yield %zero : f64`";
  let arguments = (ins F64:$value);
  let assemblyFormat = "$value attr-dict `:` type($value)";
}

def Opt_GetHyperOp : Opt_Op<"get_hyper", [Pure, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "The current value of a hyper";
  let description = "Example: `%lr = opt.get_hyper @lr : f64`";
  let arguments = (ins FlatSymbolRefAttr:$hyper);
  let results = (outs F64:$result);
  let assemblyFormat = "$hyper attr-dict `:` type($result)";
}

def Opt_StepOp : Opt_Op<"step", [Pure]> {
  let summary = "The 1-based step count";
  let description = "Example: `%t = opt.step : f64`";
  let results = (outs F64:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
}

def Opt_ParamOp : Opt_Op<"param", [Pure]> {
  let summary = "The element's parameter at the start of the step";
  let description = "Example: `%p = opt.param : f32`";
  let results = (outs F32:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
}

def Opt_GradOp : Opt_Op<"grad", [Pure]> {
  let summary = "The element's gradient";
  let description = "Example: `%g = opt.grad : f32`";
  let results = (outs F32:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
}

def Opt_LoadStateOp : Opt_Op<"load_state", [Pure, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "A state's value at the start of the step";
  let description = [{
    f32 for a per-element state, f64 for a scalar state.

    Example: `%m = opt.load_state @exp_avg : f32`
  }];
  let arguments = (ins FlatSymbolRefAttr:$state);
  let results = (outs AnyTypeOf<[F32, F64]>:$result);
  let assemblyFormat = "$state attr-dict `:` type($result)";
}

def Opt_StoreStateOp : Opt_Op<"store_state", [DeclareOpInterfaceMethods<SymbolUserOpInterface>,
                                               MemoryEffects<[MemWrite]>]> {
  let summary = "Writes a state's new value";
  let description = "Example: `opt.store_state @exp_avg, %m1 phase 0 : f32`";
  let arguments = (ins FlatSymbolRefAttr:$state, AnyTypeOf<[F32, F64]>:$value, I64Attr:$phase);
  let assemblyFormat = "$state `,` $value `phase` $phase attr-dict `:` type($value)";
}

def Opt_StoreParamOp : Opt_Op<"store_param", [MemoryEffects<[MemWrite]>]> {
  let summary = "Writes the element's new parameter";
  let description = "Example: `opt.store_param %p1 phase 0 : f32`";
  let arguments = (ins F32:$value, I64Attr:$phase);
  let assemblyFormat = "$value `phase` $phase attr-dict `:` type($value)";
}

def Opt_ReduceOp : Opt_Op<"reduce", [Pure]> {
  let summary = "A per-tensor reduction of an elementwise value";
  let description = [{
    `kind` is one of sum, norm (L2), mean, max. The result is uniform (f64)
    and available from phase `phase` + 1 on, where `phase` is the pass that
    computes the argument.

    Example: `%n = opt.reduce norm %u phase 0 : f32 -> f64`
  }];
  let arguments = (ins StrAttr:$kind, F32:$input, I64Attr:$phase);
  let results = (outs F64:$result);
  let assemblyFormat = "$kind $input `phase` $phase attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

#endif // OPTDSL_DIALECT_OPTOPS_TD
