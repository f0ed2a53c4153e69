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
# Installed, then moved: the program still finds its rule (relative to
# itself, nothing absolute compiled in), and fails by name without it.
cmake --install "$scratch/build" --prefix "$scratch/app" > "$scratch.app-install.log" 2>&1 ||
  { cat "$scratch.app-install.log"; exit 1; }
mv "$scratch/app" "$scratch/moved-app"
"$scratch/moved-app/bin/consumer"
if strings "$scratch/moved-app/bin/consumer" | grep -q "$scratch"; then
  echo "the installed consumer has a build path compiled in"; exit 1
fi
mv "$scratch/moved-app/lib/optdsl/libopt_adamw.so" "$scratch/libopt_adamw.so.away"
if "$scratch/moved-app/bin/consumer" 2> "$scratch.missing.log"; then
  echo "the consumer ran without its rule"; exit 1
fi
grep -q "kernel artifact 'libopt_adamw.so' not found; looked in:" "$scratch.missing.log" ||
  { cat "$scratch.missing.log"; exit 1; }
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
# README's example, extracted as it is written (the fenced block after each
# "readme-example" marker), built against the installed prefix and run, with
# the artifact and with the JIT.
example="$scratch/readme-example"
mkdir -p "$example"
for file in CMakeLists.txt trainer.cpp; do
  awk -v marker="<!-- readme-example: $file -->" '
    $0 == marker { found = 1; next }
    found && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }' "$source_dir/README.md" > "$example/$file"
  [ -s "$example/$file" ] || { echo "README.md has no example $file"; exit 1; }
done
cmake -S "$example" -B "$example/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$scratch/prefix" > "$scratch.readme-configure.log" 2>&1 ||
  { cat "$scratch.readme-configure.log"; exit 1; }
cmake --build "$example/build"
"$example/build/trainer"
"$example/build/trainer" "$scratch/prefix/share/optdsl/rules/adamw.opt"
