#!/usr/bin/env bash
# ctest install.find_package: install this build into a scratch prefix, then
# configure, build and run tests/install/consumer against it as an outside
# project would (find_package(OptDSL), optdsl_add_rule, OptDSL::optrt), and
# tests/install/jit-consumer (find_package(OptDSL COMPONENTS jit), which
# must configure without any "Could NOT find" message).
set -euo pipefail
build_dir=$1 source_dir=$2 scratch=$3
rm -rf "$scratch"
cmake --install "$build_dir" --prefix "$scratch/prefix" > "$scratch.install.log" 2>&1 ||
  { cat "$scratch.install.log"; exit 1; }
cmake -S "$source_dir/tests/install/consumer" -B "$scratch/build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$scratch/prefix"
cmake --build "$scratch/build"
"$scratch/build/consumer"
# Editing the rule must rebuild the artifact: touch it and expect optc again.
touch "$scratch/prefix/share/optdsl/rules/adamw.opt"
cmake --build "$scratch/build" | grep -q "optc: adamw" ||
  { echo "editing the .opt did not rebuild the artifact"; exit 1; }
# The JIT component: no spurious messages from LLVM's dependency searches.
cmake -S "$source_dir/tests/install/jit-consumer" -B "$scratch/jit-build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$scratch/prefix" > "$scratch.jit-configure.log" 2>&1 ||
  { cat "$scratch.jit-configure.log"; exit 1; }
if grep -n "Could NOT find" "$scratch.jit-configure.log"; then
  echo "find_package(OptDSL COMPONENTS jit) printed the messages above"; exit 1
fi
cmake --build "$scratch/jit-build"
"$scratch/jit-build/jit-consumer"
