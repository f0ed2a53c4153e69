# lit configuration: each test is a .opt file (or .mlir later) whose RUN
# lines sit in '#' comments, which the .opt language itself ignores.
import os

import lit.formats

config.name = "OptDSL"
config.test_format = lit.formats.ShTest(execute_external=True)
config.suffixes = [".opt", ".mlir"]
# transforms/: the transforms the apply tests use, not tests themselves.
config.excludes = ["lit.cfg.py", "lit.site.cfg.py.in", "transforms"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.optdsl_obj_root, "tests", "lit")

config.substitutions.append(("%optc", os.path.join(config.optdsl_bin_dir, "optc")))
config.substitutions.append(("%dsl", os.path.join(config.optdsl_src_root, "dsl")))
config.environment["PATH"] = os.pathsep.join(
    [config.llvm_tools_dir, config.optdsl_bin_dir, config.environment.get("PATH", "")])

# PTX generation links libdevice from a CUDA toolkit; no GPU is needed.
_cuda_roots = [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"]
if any(r and os.path.isfile(os.path.join(r, "nvvm", "libdevice", "libdevice.10.bc")) for r in _cuda_roots):
    config.available_features.add("cuda-toolkit")
