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

    The update comes in two forms. As built from the source it is flat: one
    SSA graph in which uniform and per-element values mix and every write
    carries its phase. `opt-split-phases` and `opt-hoist-uniforms` turn it
    into the explicit form the backends lower: one `opt.phase` per pass over
    memory, each with a uniform region (once per tensor, f64) and an element
    region (once per element, f32), followed by the scalar-state updates.
  }];
}

class Opt_Op<string mnemonic, list<Trait> traits = []> :
    Op<Opt_Dialect, mnemonic, traits>;

def Opt_RuleOp : Opt_Op<"rule", [Symbol, SymbolTable, NoTerminator, SingleBlock,
                                 IsolatedFromAbove]> {
  let summary = "An optimizer rule";
  let description = [{
    Holds the rule's declarations and its update. `num_phases` is the number
    of passes over a tensor per step the flat update implies (1 + the depth
    of reductions). In the explicit form the `opt.phase` ops decide: a phase
    with nothing to do (no write, no reduction anything reads) canonicalizes
    away, and the backends run one pass per remaining `opt.phase`.

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
    betas, flags as 0/1). A `fixed` hyper was folded into the kernels at
    build time (`opt-specialize-hypers`): its value is `default_value` and
    the runtime refuses to change it.

    The optional `lower`/`upper` bounds (absent: unbounded; `lower_open`/
    `upper_open`: the bound itself excluded) are the range the rule
    declares (`hyper beta2 = 0.999 in [0, 1);`); every setter checks it, so
    analyses may rely on it (a state proved non-negative gets the unsigned
    q8 map).

    Example: `opt.hyper @lr = 1.000000e-03 {lower = 0.000000e+00 : f64}`,
    `opt.hyper @amsgrad = 0.000000e+00 fixed`
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, F64Attr:$default_value, UnitAttr:$fixed,
                       OptionalAttr<F64Attr>:$lower, OptionalAttr<F64Attr>:$upper,
                       UnitAttr:$lower_open, UnitAttr:$upper_open);
  let assemblyFormat = "$sym_name `=` $default_value (`fixed` $fixed^)? attr-dict";
}

def Opt_StateOp : Opt_Op<"state", [Symbol, HasParent<"RuleOp">, NoTerminator,
                                   IsolatedFromAbove]> {
  let summary = "An optimizer state buffer";
  let description = [{
    A per-element buffer (f32 arithmetic) or, with `scalar`, one f64 per
    tensor. The optional `init` region computes the initial value from hypers
    (`opt.yield`); without it the state starts at zero. A state that the
    update neither reads nor writes is erased by canonicalization: nothing
    is allocated for it.

    `axis`: a state of a rule that reads tensors as matrices, one f32 per
    row (`"rows"`) or column (`"cols"`) of each matrix, or (`"matrices"`)
    one per matrix. `scratch`: not the rule's own state but where a row or
    column reduction (`opt.reduce` with `into`) leaves its result for later
    phases; not saved with a checkpoint.

    Example:
    ```mlir
    opt.state @exp_avg
    opt.state @exp_avg_sq_row {axis = "rows"}
    opt.state @mu_product scalar init {
      %one = arith.constant 1.0 : f64
      opt.yield %one : f64
    }
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, UnitAttr:$scalar, OptionalAttr<StrAttr>:$axis,
                       UnitAttr:$scratch);
  let regions = (region AnyRegion:$init);
  let assemblyFormat = "$sym_name (`scalar` $scalar^)? (`init` $init^)? attr-dict";
  // A state the update neither reads nor writes keeps its initial value and
  // influences nothing: it canonicalizes away, so it is never allocated.
  let hasCanonicalizeMethod = 1;
}

def Opt_InputOp : Opt_Op<"input", [Symbol, HasParent<"RuleOp">]> {
  let summary = "A per-element input the trainer passes with the gradient";
  let description = [{
    `input NAME;` in the source: a tensor stream besides the gradient
    (Sophia's Hessian estimate). An `optional` input is one the rule tests
    with `given(NAME)`: the trainer may leave it out of a step, and then
    `opt.get_input` reads 0 without touching memory. Any other input must
    come with every step.

    Example: `opt.input @hessian optional`
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, UnitAttr:$optional);
  let assemblyFormat = "$sym_name (`optional` $optional^)? attr-dict";
}

def Opt_UpdateOp : Opt_Op<"update", [HasParent<"RuleOp">, NoTerminator, SingleBlock,
                                     IsolatedFromAbove]> {
  let summary = "One step's update of one tensor, written per element";
  let description = [{
    The statements of the rule in order. Reads of `param`, `grad` and states
    yield the values at the start of the step; writes happen in program
    order and carry the phase in which they run.

    In the explicit form (after `opt-split-phases`) the body holds the
    `opt.phase` ops, in order, and after them only uniform work: the f64
    computation of the scalar states' new values from hypers, `step`,
    start-of-step scalar states and the phases' reductions, and their
    `opt.store_state`. Per-element operations then live only inside phases.

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
  let hasVerifier = 1;
}

def Opt_PhaseOp : Opt_Op<"phase", [HasParent<"UpdateOp">, IsolatedFromAbove,
                                   RecursiveMemoryEffects]> {
  let summary = "One pass over a tensor's elements: uniform part, element part";
  let description = [{
    The explicit form of one phase of the update (see the dialect). The
    `uniforms` region runs once per tensor and step: its block arguments are
    the `inputs` (results of reductions of earlier phases), it reads hypers,
    `step` and scalar states, and yields the values the element region
    needs. The `elements` region runs once per element: its block arguments
    are those yielded values, it reads and writes the per-element buffers and
    yields one f32 per entry of `reduce`, whose per-tensor reduction is the
    corresponding result (f64), available to later phases and to the
    scalar-state updates.

    Within a phase every read sees the buffer as it was when the phase
    began: `opt.param` and an f32 `opt.load_state` read the start-of-step
    value (no earlier phase wrote the buffer), `opt.reload` what an earlier
    phase stored. The writes land when the phase ends.

    After `opt-split-phases` the element region still holds the uniform
    computations it needs (element arguments are then the f64 inputs passed
    through); `opt-hoist-uniforms` moves them into the uniform region, and the
    element arguments become the f32 and i1 values the element code reads.
    The phase is isolated from above so that folding and CSE never pull a
    value out of one part into another.

    `domain` (a rule that reads tensors as matrices): what the element region
    runs once for. Absent: each element. `"rows"` / `"cols"`: each row /
    column of each matrix, between the passes over the elements (it reads
    and writes `axis` states of its own axis, and the per-matrix results of
    earlier row and column reductions); its `opt.accumulate`s reduce over
    the matrix. `"matrices"`: each matrix, after those (a reduction over the
    tensor of a value per matrix).

    Example:
    ```mlir
    %norm = opt.phase 0 reduce ["norm"] uniforms {
      %lr = opt.get_hyper @lr : f64
      %lr32 = arith.truncf %lr : f64 to f32
      opt.yield %lr32 : f32
    } elements {
    ^bb0(%lr32: f32):
      %m = opt.load_state @m : f32
      %g = opt.grad : f32
      %m1 = arith.addf %m, %g : f32
      opt.store_state @m, %m1 phase 0 : f32
      opt.yield %m1 : f32
    } : f64
    opt.phase 1 (%norm : f64) uniforms {
    ^bb0(%n: f64):
      ...
    } elements { ... }
    ```
  }];
  let arguments = (ins I64Attr:$index, Variadic<F64>:$inputs,
                       DefaultValuedAttr<StrArrayAttr, "{}">:$reduce, OptionalAttr<StrAttr>:$domain);
  let results = (outs Variadic<F64>:$results);
  let regions = (region SizedRegion<1>:$uniforms, SizedRegion<1>:$elements);
  let assemblyFormat = [{
    $index (`(` $inputs^ `:` type($inputs) `)`)? (`reduce` $reduce^)? attr-dict-with-keyword
    `uniforms` $uniforms `elements` $elements (`:` type($results)^)?
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    ::mlir::Block &getUniformBody() { return getUniforms().front(); }
    ::mlir::Block &getElementBody() { return getElements().front(); }
  }];
}

def Opt_YieldOp : Opt_Op<"yield", [Pure, Terminator, ParentOneOf<["StateOp", "PhaseOp"]>]> {
  let summary = "Ends a state's init region or a region of a phase";
  let description = [{
    In `opt.state`'s init region: the initial value (one f64). In
    `opt.phase`: the uniform values handed to the element region, or the
    element values the phase reduces.

    Example: `opt.yield %zero : f64`
  }];
  let arguments = (ins Variadic<AnyTypeOf<[F32, F64, I1]>>:$values);
  let assemblyFormat = "($values^ `:` type($values))? attr-dict";
  let hasVerifier = 1;
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
  let description = [{
    In a phase, only while no earlier phase wrote the parameter (after that,
    `opt.reload param` reads what it wrote).

    Example: `%p = opt.param : f32`
  }];
  let results = (outs F32:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Opt_GradOp : Opt_Op<"grad", [Pure]> {
  let summary = "The element's gradient";
  let description = "Example: `%g = opt.grad : f32`";
  let results = (outs F32:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
}

def Opt_GetInputOp : Opt_Op<"get_input", [Pure, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "The element's value of an input";
  let description = [{
    For an optional input, `given` (uniform: the runtime's hyper
    `given(NAME)` is not 0) says whether the trainer passed it this step;
    when it is false the result is 0 and the backends read no memory.

    Example: `%h = opt.get_input @hessian if %given : f32`
  }];
  let arguments = (ins FlatSymbolRefAttr:$input, Optional<I1>:$given);
  let results = (outs F32:$result);
  let assemblyFormat = "$input (`if` $given^)? attr-dict `:` type($result)";
}

def Opt_RandomOp : Opt_Op<"random", [Pure]> {
  let summary = "The element's draw of a counter-based random stream";
  let description = [{
    `random(stream)` in the source: uniform in [0, 1) (24 random bits times
    2^-24), a function of the runtime's seed, the optimizer's step, the
    tensor, `stream` and the element's index (optrt/Storage.h
    randomStreamSalt), so every backend, layout and thread count draws the
    same values.

    Example: `%u = opt.random 0 : f32`
  }];
  let arguments = (ins I64Attr:$stream);
  let results = (outs F32:$result);
  let assemblyFormat = "$stream attr-dict `:` type($result)";
}

def Opt_LoadStateOp : Opt_Op<"load_state", [Pure, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "A state's value at the start of the step";
  let description = [{
    f32 for a per-element state, f64 for a scalar state. In a phase, a
    per-element state is only read so while no earlier phase wrote it (after
    that, `opt.reload` reads what it wrote).

    Example: `%m = opt.load_state @exp_avg : f32`
  }];
  let arguments = (ins FlatSymbolRefAttr:$state);
  let results = (outs AnyTypeOf<[F32, F64]>:$result);
  let assemblyFormat = "$state attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Opt_ReloadOp : Opt_Op<"reload", [Pure, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "A per-element buffer's value as an earlier phase left it";
  let description = [{
    In the element region of a phase after the first: the element's value of
    the state `state`, or of the parameter when `state` is absent, as stored
    by an earlier phase. This is how a later pass over memory gets a value
    computed before a reduction without recomputing it from start-of-step
    values that are gone.

    Example: `%m = opt.reload @exp_avg : f32`, `%p = opt.reload param : f32`
  }];
  let arguments = (ins OptionalAttr<FlatSymbolRefAttr>:$state);
  let results = (outs F32:$result);
  let assemblyFormat = "($state^):(`param`)? attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Opt_StoreStateOp : Opt_Op<"store_state", [DeclareOpInterfaceMethods<SymbolUserOpInterface>,
                                               MemoryEffects<[MemWrite]>]> {
  let summary = "Writes a state's new value";
  let description = [{
    Writing back the value the state had when it was read
    (`store @s, (load_state @s)` with no earlier store to `@s` in the same
    block) changes nothing and canonicalizes away: that is what is left of
    `s = flag ? ... : s` once the flag is a fixed hyper.

    Example: `opt.store_state @exp_avg, %m1 phase 0 : f32`
  }];
  let arguments = (ins FlatSymbolRefAttr:$state, AnyTypeOf<[F32, F64]>:$value, I64Attr:$phase);
  let assemblyFormat = "$state `,` $value `phase` $phase attr-dict `:` type($value)";
  let hasCanonicalizeMethod = 1;
}

def Opt_AccumulateOp : Opt_Op<"accumulate", [MemoryEffects<[MemWrite]>,
                                               DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "Adds a value into its row's or column's reduction";
  let description = [{
    In a phase's element region: `row_sum`/`row_mean` reduce each row of
    each matrix (over its columns), `col_sum`/`col_mean` each column (over
    its rows). The result lands in the `scratch` state `into` (one f32 per
    row, column or matrix: the value's axes less the reduced one) when the
    phase ends; later phases read it with `opt.load_state`. Deterministic:
    every backend combines in a fixed order.

    Example: `opt.accumulate "row_mean" %g2 into @"row_mean(0)" : f32`
  }];
  let arguments = (ins StrAttr:$kind, F32:$value, FlatSymbolRefAttr:$into);
  let assemblyFormat = "$kind $value `into` $into attr-dict `:` type($value)";
  let hasVerifier = 1;
}

def Opt_StoreParamOp : Opt_Op<"store_param", [MemoryEffects<[MemWrite]>]> {
  let summary = "Writes the element's new parameter";
  let description = "Example: `opt.store_param %p1 phase 0 : f32`";
  let arguments = (ins F32:$value, I64Attr:$phase);
  let assemblyFormat = "$value `phase` $phase attr-dict `:` type($value)";
}

def Opt_ReduceOp : Opt_Op<"reduce", [Pure, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "A per-tensor reduction of an elementwise value";
  let description = [{
    `kind` is one of sum, norm (L2), mean, max. The result is uniform (f64)
    and available from phase `phase` + 1 on, where `phase` is the pass that
    computes the argument. Flat form only: `opt-split-phases` turns each
    reduction into a result of its `opt.phase`.

    With `into` (a rule that reads tensors as matrices): row_sum, row_mean,
    col_sum, col_mean along one axis of each matrix; the result (f32) varies
    along the argument's other axes and is kept in the scratch state `into`
    (`opt-split-phases` makes it an `opt.accumulate` and later reads
    `opt.load_state`s).

    Example: `%n = opt.reduce norm %u phase 0 : f32 -> f64`
  }];
  let arguments = (ins StrAttr:$kind, F32:$input, I64Attr:$phase, OptionalAttr<FlatSymbolRefAttr>:$into);
  let results = (outs AnyTypeOf<[F32, F64]>:$result);
  let assemblyFormat = "$kind $input `phase` $phase attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

#endif // OPTDSL_DIALECT_OPTOPS_TD
