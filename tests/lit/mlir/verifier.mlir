// RUN: optc-opt %s --split-input-file --verify-diagnostics

opt.rule @r phases 1 {
  opt.hyper @lr = 1.0
  opt.update {
    // expected-error @+1 {{'opt.get_hyper' op refers to 'lrr', which is not a hyper of this rule}}
    %0 = opt.get_hyper @lrr : f64
  }
}

// -----

opt.rule @r phases 1 {
  opt.state @m
  opt.update {
    // expected-error @+1 {{'opt.load_state' op state 'm' holds 'f32', not 'f64'}}
    %0 = opt.load_state @m : f64
  }
}

// -----

opt.rule @r phases 1 {
  opt.update {
    %0 = opt.param : f32
    // expected-error @+1 {{'opt.reduce' op unknown reduction 'prod' (expected sum, norm, mean or max, or one of them after group_)}}
    %1 = opt.reduce "prod" %0 phase 0 : f32 -> f64
  }
}

// -----

opt.rule @r phases 1 {
  opt.update {
    %0 = opt.grad : f32
    // expected-error @+1 {{'opt.store_state' op refers to 'v', which is not a state of this rule}}
    opt.store_state @v, %0 phase 0 : f32
  }
}

// -----

opt.rule @r phases 1 {
  opt.input @h optional
  opt.update {
    // expected-error @+1 {{'opt.get_input' op reads optional input 'h' without a 'given' operand}}
    %0 = opt.get_input @h : f32
  }
}

// -----

opt.rule @r phases 1 {
  opt.state @m
  opt.update {
    // expected-error @+1 {{'opt.get_input' op refers to 'm', which is not an input of this rule}}
    %0 = opt.get_input @m : f32
  }
}
