#!/usr/bin/env bash
# The embedding surface end to end: installs the C package (cmake --install, component "c")
# natively as a shared and as a static library and cross-compiled for aarch64, builds
# examples/c against each installed package with find_package(fwassist CONFIG), and runs the
# example natively and under qemu-aarch64 (cortex-a53 and SVE-512) on a pinned artifact with
# a tokenizer. Every run must print the same completion (the runtime is bit-identical across
# ISAs). Also checks that libfwassist.so exports only fwa_* symbols.
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

echo "--- installing the C package: native shared, native static, aarch64 shared"
install_package "${FWA_NATIVE_BUILD:-$work/build-shared}" "$work/prefix"
install_package "$work/build-static" "$work/prefix-static" -DFWA_CAPI_SHARED=OFF
install_package "${FWA_AARCH64_BUILD:-$work/build-aarch64}" "$work/prefix-aarch64" -DCMAKE_TOOLCHAIN_FILE="$toolchain"

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

echo "--- a pinned artifact with a tokenizer (fwassist demo's synthetic model)"
model="$work/demo.fwa"
fwassist demo --out "$model" --max-tokens 1 >/dev/null 2>&1
pin=$(python -c "import fwassist, sys; print(fwassist.Model.load(sys.argv[1]).pin)" "$model")
prompt='static int crc8(const uint8_t *p, size_t n) {'

run() {  # label command...
  local label=$1; shift
  echo "=== $label"
  "$@" "$model" "$pin" "$prompt" 24 2 >"$work/out-$label.txt"
  cat "$work/out-$label.txt"
}
run native-shared "$work/example-shared/fwa_complete"
run native-static "$work/example-static/fwa_complete"
qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
run aarch64-a53 "${qemu[@]}" -cpu cortex-a53 "$work/example-aarch64/fwa_complete"
run aarch64-sve512 "${qemu[@]}" -cpu max,sve512=on "$work/example-aarch64/fwa_complete"
for label in native-static aarch64-a53 aarch64-sve512; do
  if ! cmp -s "$work/out-native-shared.txt" "$work/out-$label.txt"; then
    echo "FAILED: $label printed another completion than native-shared"; exit 1
  fi
done
echo "--- the same completion natively (shared, static) and under qemu (cortex-a53, SVE-512)"

# A wrong pin must make the example fail with the library's status.
if "$work/example-shared/fwa_complete" "$model" "sha256:$(printf '0%.0s' $(seq 64))" x 2>"$work/err.txt"; then
  echo "FAILED: a wrong pin was accepted"; exit 1
fi
grep -q "pin_mismatch" "$work/err.txt" || { echo "FAILED: no pin_mismatch status"; cat "$work/err.txt"; exit 1; }
echo "FWA_C_PREFIX=$work/prefix"
