// RUN: optc-opt %s --split-input-file --opt-hoist-uniforms | FileCheck %s
// RUN: optc-opt %s --split-input-file --opt-hoist-uniforms --opt-hoist-uniforms | FileCheck %s
// opt-hoist-uniforms alone (and again: nothing left to move). Per-tensor
// math (hypers, step, scalar states, inputs) moves into the uniform region;
// the element region keeps per-element math and constants and receives the
// hoisted values it reads as arguments, f32 or i1.

// CHECK-LABEL: opt.rule @momentum
// CHECK:         opt.phase 0 uniforms {
// CHECK-DAG:       %[[LR:.*]] = opt.get_hyper @lr : f64
// CHECK-DAG:       %[[T:.*]] = opt.step : f64
// CHECK-DAG:       %[[POW:.*]] = math.powf %{{.*}}, %[[T]] : f64
// CHECK-DAG:       %[[C:.*]] = opt.load_state @count : f64
// CHECK-DAG:       %[[ON:.*]] = arith.cmpf ogt, %[[C]], %{{.*}} : f64
// CHECK:           opt.yield %{{.*}}, %[[ON]] : f32, i1
// CHECK-NEXT:    } elements {
// CHECK-NEXT:    ^bb0(%[[STEP:.*]]: f32, %[[FLAG:.*]]: i1):
// CHECK-NOT:       opt.get_hyper
// CHECK-NOT:       opt.step
// CHECK-NOT:       math.powf
// CHECK-NOT:       : f64
// CHECK:           %[[G:.*]] = opt.grad : f32
// CHECK:           %[[HALF:.*]] = arith.constant 5.000000e-01 : f32
// CHECK:           %[[M:.*]] = arith.mulf %[[HALF]], %[[G]] : f32
// CHECK:           %[[D:.*]] = arith.mulf %[[STEP]], %[[M]] : f32
// CHECK:           arith.select %[[FLAG]], %{{.*}}, %{{.*}} : f32
// CHECK:           opt.store_param
opt.rule @momentum phases 1 {
  opt.hyper @lr = 1.0e-01
  opt.hyper @beta = 9.0e-01
  opt.state @count scalar
  opt.update {
    opt.phase 0 uniforms {
      opt.yield
    } elements {
      %p = opt.param : f32
      %g = opt.grad : f32
      %half = arith.constant 5.0e-01 : f32
      %m = arith.mulf %half, %g : f32
      %lr = opt.get_hyper @lr : f64
      %beta = opt.get_hyper @beta : f64
      %t = opt.step : f64
      %pow = math.powf %beta, %t : f64
      %one = arith.constant 1.0 : f64
      %bc = arith.subf %one, %pow : f64
      %size = arith.divf %lr, %bc : f64
      %size32 = arith.truncf %size : f64 to f32
      %d = arith.mulf %size32, %m : f32
      %c = opt.load_state @count : f64
      %zero = arith.constant 0.0 : f64
      %on = arith.cmpf ogt, %c, %zero : f64
      %p1 = arith.subf %p, %d : f32
      %new = arith.select %on, %p1, %p : f32
      opt.store_param %new phase 0 : f32
      opt.yield
    }
  }
}

// -----

// An input only the uniform region needs stays an input; element arguments
// that passed it through are dropped.
// CHECK-LABEL: opt.rule @trust
// CHECK:         %[[N:.*]] = opt.phase 0 reduce ["norm"]
// CHECK:         opt.phase 1(%[[N]] : f64) uniforms {
// CHECK-NEXT:    ^bb0(%[[NORM:.*]]: f64):
// CHECK:           %[[R:.*]] = arith.truncf %{{.*}} : f64 to f32
// CHECK-NEXT:      opt.yield %[[R]] : f32
// CHECK-NEXT:    } elements {
// CHECK-NEXT:    ^bb0(%[[RATIO:.*]]: f32):
// CHECK-NEXT:      %[[P:.*]] = opt.param : f32
// CHECK-NEXT:      %[[G:.*]] = opt.grad : f32
// CHECK-NEXT:      arith.mulf %[[RATIO]], %[[G]] : f32
opt.rule @trust phases 2 {
  opt.update {
    %n = opt.phase 0 reduce ["norm"] uniforms {
      opt.yield
    } elements {
      %p = opt.param : f32
      opt.yield %p : f32
    } : f64
    opt.phase 1(%n : f64) uniforms {
    ^bb0(%a: f64):
      opt.yield %a : f64
    } elements {
    ^bb0(%norm: f64):
      %p = opt.param : f32
      %g = opt.grad : f32
      %one = arith.constant 1.0 : f64
      %r = arith.addf %norm, %one : f64
      %r32 = arith.truncf %r : f64 to f32
      %d = arith.mulf %r32, %g : f32
      %p1 = arith.subf %p, %d : f32
      opt.store_param %p1 phase 1 : f32
      opt.yield
    }
  }
}
