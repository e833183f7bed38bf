# Shared by the bench/ scripts (sourced, not run).

# ensure_native_bench BUILD_DIR: configures BUILD_DIR with -DALIGNER_NATIVE=ON (the kernels' vector width is chosen at
# compile time) and builds aligner_bench, unless BUILD_DIR already has one.
ensure_native_bench() {
  local build=$1
  if [ ! -x "$build/bin/aligner_bench" ]; then
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DALIGNER_NATIVE=ON -DALIGNER_BUILD_TESTS=OFF >/dev/null
    cmake --build "$build" --target aligner_bench -j"$(nproc)" >/dev/null
  fi
}
