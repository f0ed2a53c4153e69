// RUN: optc-opt %s --split-input-file --canonicalize | FileCheck %s
// The opt dialect's own canonicalizations: a store of the value the state
// had is dropped unless an earlier store changed the state; a state nothing
// reads or writes is erased (never allocated); one only written is kept.

// CHECK-LABEL: opt.rule @noop
// CHECK-NOT:     opt.state @s
// CHECK:         opt.state @kept
// CHECK:         opt.update {
// CHECK-NOT:       @s
// CHECK:           opt.store_state @kept
opt.rule @noop phases 1 {
  opt.state @s
  opt.state @kept
  opt.update {
    %s = opt.load_state @s : f32
    opt.store_state @s, %s phase 0 : f32
    %g = opt.grad : f32
    opt.store_state @kept, %g phase 0 : f32
  }
}

// -----

// After `s = grad`, writing the start-of-step value back is a real write.
// CHECK-LABEL: opt.rule @rewrite
// CHECK:         opt.state @s
// CHECK:         %[[S:.*]] = opt.load_state @s : f32
// CHECK:         opt.store_state @s, %{{.*}} phase 0 : f32
// CHECK:         opt.store_state @s, %[[S]] phase 0 : f32
opt.rule @rewrite phases 1 {
  opt.state @s
  opt.update {
    %s = opt.load_state @s : f32
    %g = opt.grad : f32
    opt.store_state @s, %g phase 0 : f32
    opt.store_state @s, %s phase 0 : f32
  }
}

// -----

// A reloaded value stored back unchanged is a no-op too.
// CHECK-LABEL: opt.rule @reload
// CHECK:         opt.phase 1
// CHECK-NOT:       opt.store_state @m
// CHECK:           opt.store_param
opt.rule @reload phases 2 {
  opt.state @m
  opt.update {
    %n = opt.phase 0 reduce ["sum"] uniforms {
      opt.yield
    } elements {
      %g = opt.grad : f32
      opt.store_state @m, %g phase 0 : f32
      opt.yield %g : f32
    } : f64
    opt.phase 1 uniforms {
      opt.yield
    } elements {
      %m = opt.reload @m : f32
      opt.store_state @m, %m phase 1 : f32
      opt.store_param %m phase 1 : f32
      opt.yield
    }
  }
}
