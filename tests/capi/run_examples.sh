#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The embedding surface end to end: installs the C package (cmake --install, component "c")
# natively as a shared and as a static library and cross-compiled for aarch64, builds
# examples/c against each installed package with find_package(fwassist CONFIG), and runs the
# example natively and under qemu-aarch64 (cortex-a53 and SVE-512) on a pinned artifact with
# a tokenizer: the bundled model (sdk/fwassist/models) with its pin. Every run must print the
# golden greedy completion of tests/golden, in exact and in fast mode (the runtime is
# bit-identical across ISAs). Also checks that libfwassist.so exports only fwa_* symbols and
# that libfwassist.a (native, aarch64) has only the C ABI global (check_static_symbols.sh).
# Usage: tests/capi/run_examples.sh WORK_DIR   (prints FWA_C_PREFIX=<native prefix> last;
#        FWA_NATIVE_BUILD / FWA_AARCH64_BUILD reuse existing build directories)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:?usage: run_examples.sh WORK_DIR}
mkdir -p "$work"
toolchain="$root/csrc/cmake/toolchains/aarch64-linux-gnu.cmake"

install_package() {  # build-dir prefix [cmake args...]
  local build=$1 prefix=$2; shift 2
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFWA_BUILD_CAPI=ON "$@" >/dev/null
  cmake --build "$build" --target fwassist
  cmake --install "$build" --prefix "$prefix" --component c >/dev/null
}
build_example() {  # prefix build-dir [cmake args...]
  local prefix=$1 build=$2; shift 2
  cmake -S "$root/examples/c" -B "$build" -G Ninja -Dfwassist_DIR="$prefix/lib/cmake/fwassist" \
    "$@" >/dev/null
  cmake --build "$build"
}

echo "--- installing the C package: native shared, native static, aarch64 shared, aarch64 static"
# One build directory per architecture makes both packages: switching FWA_CAPI_SHARED
# recompiles the three C ABI files and relinks libfwassist, the core's objects stay.
native=${FWA_NATIVE_BUILD:-$work/build-native}
aarch64=${FWA_AARCH64_BUILD:-$work/build-aarch64}
install_package "$native" "$work/prefix" -DFWA_CAPI_SHARED=ON
install_package "$native" "$work/prefix-static" -DFWA_CAPI_SHARED=OFF
install_package "$aarch64" "$work/prefix-aarch64" -DFWA_CAPI_SHARED=ON -DCMAKE_TOOLCHAIN_FILE="$toolchain"
install_package "$aarch64" "$work/prefix-aarch64-static" -DFWA_CAPI_SHARED=OFF \
  -DCMAKE_TOOLCHAIN_FILE="$toolchain"

echo "--- libfwassist.a (native, aarch64): only the C ABI global, no clash with a program's fwa::"
bash "$root/tests/capi/check_static_symbols.sh" "$work/prefix-static" "$work/symbols-static"
bash "$root/tests/capi/check_static_symbols.sh" "$work/prefix-aarch64-static" \
  "$work/symbols-aarch64-static" aarch64

so="$work/prefix/lib/libfwassist.so"
others=$(nm -D --defined-only "$so" | awk '{print $NF}' | grep -v '^fwa_' || true)
if [ -n "$others" ]; then echo "FAILED: libfwassist.so exports non-fwa_ symbols:"; echo "$others"; exit 1; fi
echo "libfwassist.so exports $(nm -D --defined-only "$so" | wc -l) symbols, all fwa_*"
others=$(aarch64-linux-gnu-nm -D --defined-only "$work/prefix-aarch64/lib/libfwassist.so" |
         awk '{print $NF}' | grep -v '^fwa_' || true)
if [ -n "$others" ]; then echo "FAILED: aarch64 libfwassist.so exports:"; echo "$others"; exit 1; fi

echo "--- building examples/c against each installed package"
build_example "$work/prefix" "$work/example-shared"
build_example "$work/prefix-static" "$work/example-static"
build_example "$work/prefix-aarch64" "$work/example-aarch64" -DCMAKE_TOOLCHAIN_FILE="$toolchain"

echo "--- the bundled model, pinned: greedy completions against tests/golden (exact, fast)"
model="$root/sdk/fwassist/models/tiny-coder.fwa"
pin=$(sed -n 's/^TINY_CODER_PIN = "\(sha256:[0-9a-f]*\)"$/\1/p' "$root/sdk/fwassist/models/__init__.py")
[ -n "$pin" ] || { echo "FAILED: no TINY_CODER_PIN in sdk/fwassist/models/__init__.py"; exit 1; }
prompt=$(cat "$root/tests/golden/tiny-coder-prompt.c")
qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu)

run() {  # mode label command...
  local mode=$1 label=$2; shift 2
  echo "=== $label ($mode)"
  "$@" "$model" "$pin" "$prompt" 32 2 "$mode" >"$work/out-$mode-$label.txt"
  cat "$work/out-$mode-$label.txt"
}
for mode in exact fast; do
  golden="$root/tests/golden/tiny-coder-$mode.txt"
  run "$mode" native-shared "$work/example-shared/fwa_complete"
  run "$mode" native-static "$work/example-static/fwa_complete"
  run "$mode" aarch64-a53 "${qemu[@]}" -cpu cortex-a53 "$work/example-aarch64/fwa_complete"
  run "$mode" aarch64-sve512 "${qemu[@]}" -cpu max,sve512=on "$work/example-aarch64/fwa_complete"
  if [ "${FWA_UPDATE_GOLDEN:-0}" = 1 ]; then cp "$work/out-$mode-native-shared.txt" "$golden"; fi
  for label in native-shared native-static aarch64-a53 aarch64-sve512; do
    if ! cmp -s "$golden" "$work/out-$mode-$label.txt"; then
      echo "FAILED: $label ($mode) differs from $golden (FWA_UPDATE_GOLDEN=1 rewrites it"
      echo "after a deliberate model change)"; diff "$golden" "$work/out-$mode-$label.txt" || true
      exit 1
    fi
  done
done
echo "--- the golden completions natively (shared, static) and under qemu (cortex-a53, SVE-512)"

# A wrong pin must make the example fail with the library's status.
if "$work/example-shared/fwa_complete" "$model" "sha256:$(printf '0%.0s' $(seq 64))" x 2>"$work/err.txt"; then
  echo "FAILED: a wrong pin was accepted"; exit 1
fi
grep -q "pin_mismatch" "$work/err.txt" || { echo "FAILED: no pin_mismatch status"; cat "$work/err.txt"; exit 1; }
echo "FWA_C_PREFIX=$work/prefix"
