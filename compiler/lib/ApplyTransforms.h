// `apply NAME;`: a rule built from shared pieces. Sema splices the
// statements of transform NAME (a file `transform NAME { ... }`) in place of
// the apply, before it declares anything, so the rule is checked, phased and
// compiled as if written out: the pieces fuse into the rule's passes.
#pragma once

#include "optdsl/AST.h"
#include "optdsl/Diagnostics.h"

#include <string>
#include <vector>

namespace optdsl {

/// A hyper a transform uses without declaring it (`hyper lr;`): the rule
/// that applies the transform must have it.
struct HyperRequirement {
  std::string name;
  SourceRange range;       // the requirement, in the transform's file
  std::string transform;   // who requires it
  SourceRange applyRange;  // where the rule applies that transform
};

/// Where transform `name` applied by the rule in file `rulePath` is looked
/// for, in order: `transforms/` next to the rule's file, then the library's
/// (the source tree's dsl/transforms, then the installed one).
std::vector<std::string> transformSearchPath(const std::string &rulePath, const std::string &name);

/// Replaces every `apply NAME;` of `rule` by the statements of transform
/// NAME (whose own applies are spliced the same way), each transform file
/// included in `source`'s range space (so diagnostics and locations name the
/// transform's file). Reports a missing or malformed transform, a value
/// after `apply NAME`, a transform applied twice or inside itself, at the
/// apply; returns the transforms' hyper requirements.
std::vector<HyperRequirement> applyTransforms(ast::Rule &rule, const SourceFile &source, DiagnosticEngine &diags);

} // namespace optdsl
