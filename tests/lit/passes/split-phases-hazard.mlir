// RUN: optc-opt %s --opt-split-phases --verify-diagnostics
// Phase 1 needs m's start-of-step value, but phase 0 overwrote m's buffer.
opt.rule @hazard phases 2 {
  opt.state @m
  opt.update {
    // expected-error @+1 {{the start-of-step value of 'm' is needed in phase 1, after an earlier phase overwrote it; keep the value you need in a state}}
    %m = opt.load_state @m : f32
    %g = opt.grad : f32
    %m1 = arith.addf %m, %g : f32
    opt.store_state @m, %m1 phase 0 : f32
    %n = opt.reduce "sum" %m1 phase 0 : f32 -> f64
    %n32 = arith.truncf %n : f64 to f32
    %d = arith.mulf %m, %n32 : f32
    %p = opt.param : f32
    %p1 = arith.subf %p, %d : f32
    opt.store_param %p1 phase 1 : f32
  }
}
