// RUN: optc-opt %s --split-input-file --verify-diagnostics
// The verifiers of the explicit form: opt.phase, opt.reload, opt.yield, and
// opt.update once it has phases.

opt.rule @r phases 1 {
  opt.update {
    opt.phase 0 uniforms {
      %c = arith.constant 1.0 : f32
      // expected-error @+1 {{'opt.yield' op yields 1 uniform values of types 'f32', but the element region takes 'i1'}}
      opt.yield %c : f32
    } elements {
    ^bb0(%flag: i1):
      opt.yield
    }
  }
}

// -----

opt.rule @r phases 1 {
  opt.update {
    opt.phase 0 reduce ["norm"] uniforms {
      opt.yield
    } elements {
      // expected-error @+1 {{'opt.yield' op must yield one f32 per reduction of the phase (1)}}
      opt.yield
    } : f64
  }
}

// -----

opt.rule @r phases 1 {
  opt.update {
    // expected-error @+1 {{'opt.phase' op has 1 reductions but 0 results}}
    opt.phase 0 reduce ["sum"] uniforms {
      opt.yield
    } elements {
      %g = opt.grad : f32
      opt.yield %g : f32
    }
  }
}

// -----

opt.rule @r phases 1 {
  opt.update {
    // expected-error @+1 {{'opt.phase' op unknown reduction 'prod' (expected sum, norm, mean or max, or one of them after group_)}}
    %n = opt.phase 0 reduce ["prod"] uniforms {
      opt.yield
    } elements {
      %g = opt.grad : f32
      opt.yield %g : f32
    } : f64
  }
}

// -----

opt.rule @r phases 1 {
  opt.update {
    opt.phase 0 uniforms {
      // expected-error @+1 {{'opt.grad' op cannot run in the uniform region of a phase}}
      %g = opt.grad : f32
      opt.yield
    } elements {
      opt.yield
    }
  }
}

// -----

opt.rule @r phases 1 {
  opt.update {
    // expected-error @+1 {{'opt.phase' op uniform region arguments must match the inputs}}
    opt.phase 0 uniforms {
    ^bb0(%n: f64):
      opt.yield
    } elements {
      opt.yield
    }
  }
}

// -----

opt.rule @r phases 2 {
  opt.state @m
  opt.update {
    opt.phase 0 uniforms {
      opt.yield
    } elements {
      %g = opt.grad : f32
      // expected-error @+1 {{'opt.store_state' op is marked phase 1 inside phase 0}}
      opt.store_state @m, %g phase 1 : f32
      opt.yield
    }
  }
}

// -----

opt.rule @r phases 1 {
  opt.state @count scalar
  opt.update {
    opt.phase 0 uniforms {
      opt.yield
    } elements {
      %c = arith.constant 1.0 : f64
      // expected-error @+1 {{'opt.store_state' op stores a scalar state: scalar states are updated after the phases}}
      opt.store_state @count, %c phase 0 : f64
      opt.yield
    }
  }
}

// -----

opt.rule @r phases 1 {
  opt.update {
    opt.phase 0 uniforms {
      opt.yield
    } elements {
      %g = opt.grad : f32
      // expected-error @+1 {{'opt.reduce' op cannot run inside a phase: the phase's results are its reductions}}
      %n = opt.reduce "sum" %g phase 0 : f32 -> f64
      opt.yield
    }
  }
}

// -----

opt.rule @r phases 2 {
  opt.update {
    opt.phase 0 uniforms {
      opt.yield
    } elements {
      opt.yield
    }
    // expected-error @+1 {{'opt.grad' op works per element, so it belongs in an opt.phase once the update has phases}}
    %g = opt.grad : f32
  }
}

// -----

opt.rule @r phases 2 {
  opt.update {
    opt.phase 1 uniforms {
      opt.yield
    } elements {
      opt.yield
    }
    // expected-error @+1 {{'opt.phase' op has index 0, not after phase 1}}
    opt.phase 0 uniforms {
      opt.yield
    } elements {
      opt.yield
    }
  }
}

// -----

opt.rule @r phases 2 {
  opt.state @m
  opt.update {
    opt.phase 0 uniforms {
      opt.yield
    } elements {
      opt.yield
    }
    opt.phase 1 uniforms {
      opt.yield
    } elements {
      // expected-error @+1 {{'opt.reload' op reloads 'm', which no earlier phase stores}}
      %m = opt.reload @m : f32
      opt.store_param %m phase 1 : f32
      opt.yield
    }
  }
}

// -----

opt.rule @r phases 1 {
  opt.update {
    // expected-error @+1 {{'opt.reload' op must be in the element region of an opt.phase}}
    %p = opt.reload param : f32
  }
}

// -----

opt.rule @r phases 1 {
  opt.state @m init {
    %c = arith.constant 1.0 : f32
    // expected-error @+1 {{'opt.yield' op in a state's init region must yield one f64}}
    opt.yield %c : f32
  }
  opt.update {
  }
}

// -----

opt.rule @r phases 2 {
  opt.state @m
  opt.update {
    opt.phase 0 uniforms {
      opt.yield
    } elements {
      %g = opt.grad : f32
      opt.store_state @m, %g phase 0 : f32
      opt.yield
    }
    opt.phase 1 uniforms {
      opt.yield
    } elements {
      // expected-error @+1 {{'opt.load_state' op reads the start-of-step value of 'm', which an earlier phase overwrote (opt.reload reads what it stored)}}
      %m = opt.load_state @m : f32
      opt.store_param %m phase 1 : f32
      opt.yield
    }
  }
}

// -----

opt.rule @r phases 2 {
  opt.update {
    opt.phase 0 uniforms {
      opt.yield
    } elements {
      %g = opt.grad : f32
      opt.store_param %g phase 0 : f32
      opt.yield
    }
    opt.phase 1 uniforms {
      opt.yield
    } elements {
      // expected-error @+1 {{'opt.param' op reads the start-of-step value of 'param', which an earlier phase overwrote (opt.reload reads what it stored)}}
      %p = opt.param : f32
      opt.yield
    }
  }
}
