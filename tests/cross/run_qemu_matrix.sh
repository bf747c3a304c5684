#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Cross-compiles the C++ kernel tests for aarch64 and runs them under qemu-aarch64 for every ARM
# kernel path: ARMv8.0 (cortex-a53), dotprod (cortex-a76), i8mm without SVE, and SVE at vector
# lengths 128, 256, 512 and 2048 bits. Each row states the features the emulated CPU has, and
# the variants it must then expose come from the variant list (tests/variants.sh), so a wrong
# -cpu setting fails instead of silently testing only the reference.
# Then the artifact tests (SHA-256, JSON, reader) twice: with the ARMv8 SHA-256 instructions
# (qemu's cortex-a53 and max both have them) and with them masked off (scalar dispatch); every
# run also checks the scalar SHA-256 against the NIST vectors.
# Then the runtime: on every CPU model the logits digest tool must print exactly the lines the
# native x86 build printed (FWA_EXPECT_DIGESTS, a file), and the runtime tests (determinism,
# zero-allocation decode) run on the ARMv8.0 and SVE-512 rows (FWA_TEST_MODEL, the model of
# tests/cross/make_test_model.py).
# Then the signed-release tests and the C ABI release walk (FWA_RELEASE_FIXTURES) in a build
# without crypto, which must refuse every policy with no_crypto: the main build when it has no
# arm64 libcrypto (CI: scripts/install_deps.sh does not install Debian's libssl-dev:arm64, see
# docs/releases.md), else a second build (FWA_WITH_OPENSSL=OFF) besides the main one's OpenSSL.
# Usage: tests/cross/run_qemu_matrix.sh [build-dir]   (FWA_TEST_ITERS sets the cases per variant)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-aarch64}
export FWA_TEST_ITERS=${FWA_TEST_ITERS:-40}

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFWA_BUILD_TESTS=ON \
  -DCMAKE_TOOLCHAIN_FILE="$root/csrc/cmake/toolchains/aarch64-linux-gnu.cmake" >/dev/null
cmake --build "$build" --target fwa_kernel_tests fwa_artifact_tests fwa_model_math_tests \
  fwa_model_tests fwa_logits_digest fwa_release_tests fwa_release_walk
test_bin="$build/tests/cpp/fwa_kernel_tests"
artifact_bin="$build/tests/cpp/fwa_artifact_tests"

# cpu model | its features (of those the kernel variants need) | expected SVE bits
matrix=(
  "cortex-a53|neon|0"
  "cortex-a76|neon,dotprod|0"
  "max,sve=off|neon,dotprod,i8mm|0"
  "max,sve128=on|neon,dotprod,i8mm,sve|128"
  "max,sve256=on|neon,dotprod,i8mm,sve|256"
  "max,sve512=on|neon,dotprod,i8mm,sve|512"
  "max,sve2048=on,sve-default-vector-length=256|neon,dotprod,i8mm,sve|2048"
)
failed=0
for row in "${matrix[@]}"; do
  IFS='|' read -r cpu feats sve_bits <<<"$row"
  variants=$(bash "$root/tests/variants.sh" expect aarch64 "$feats")
  echo "=== qemu-aarch64 -cpu $cpu (variants $variants)"
  if ! FWA_EXPECT_VARIANTS="$variants" FWA_EXPECT_SVE_BITS="$sve_bits" \
      qemu-aarch64 -cpu "$cpu" -L /usr/aarch64-linux-gnu "$test_bin"; then
    echo "FAILED: -cpu $cpu"
    failed=$((failed + 1))
  fi
done
total=${#matrix[@]}

# cpu model | FWA_CPU_FEATURES ("" = all) | SHA-256 backend the reader must select
artifact_matrix=(
  "cortex-a53||armv8"
  "cortex-a53|neon|scalar"
  "max,sve=off||armv8"
)
for row in "${artifact_matrix[@]}"; do
  IFS='|' read -r cpu feats backend <<<"$row"
  echo "=== artifact tests: qemu-aarch64 -cpu $cpu ${feats:+FWA_CPU_FEATURES=$feats}"
  if ! env ${feats:+FWA_CPU_FEATURES=$feats} FWA_EXPECT_SHA256_BACKEND="$backend" \
      qemu-aarch64 -cpu "$cpu" -L /usr/aarch64-linux-gnu "$artifact_bin"; then
    echo "FAILED: artifact tests, -cpu $cpu ${feats}"
    failed=$((failed + 1))
  fi
done
total=$((total + ${#artifact_matrix[@]}))

# The runtime across ISAs: digests of logits (exact and fast) and of seeded samples.
if [ -n "${FWA_TEST_MODEL:-}" ]; then
  for row in "${matrix[@]}"; do
    IFS='|' read -r cpu feats sve_bits <<<"$row"
    echo "=== runtime: qemu-aarch64 -cpu $cpu"
    run=(qemu-aarch64 -cpu "$cpu" -L /usr/aarch64-linux-gnu)
    ok=1
    "${run[@]}" "$build/tests/cpp/fwa_model_math_tests" || ok=0
    if [ "$cpu" = cortex-a53 ] || [ "$cpu" = "max,sve512=on" ]; then
      "${run[@]}" "$build/tests/cpp/fwa_model_tests" || ok=0
    fi
    got=$("${run[@]}" "$build/tests/cpp/fwa_logits_digest" "$FWA_TEST_MODEL") || ok=0
    if [ -n "${FWA_EXPECT_DIGESTS:-}" ] && [ "$got" != "$(cat "$FWA_EXPECT_DIGESTS")" ]; then
      echo "logits differ from the native build:"
      diff <(echo "$got") "$FWA_EXPECT_DIGESTS" || true
      ok=0
    else
      echo "logits and samples identical to the native build (${got%%$'\n'*})"
    fi
    if [ "$ok" = 0 ]; then echo "FAILED: runtime, -cpu $cpu"; failed=$((failed + 1)); fi
  done
  total=$((total + ${#matrix[@]}))
fi
# Signed releases through the C ABI (FWA_RELEASE_FIXTURES, tests/capi/make_release_fixtures.py).
# A build with the arm64 libcrypto (only when libssl-dev:arm64 is installed, which
# scripts/install_deps.sh does not do) checks signatures with OpenSSL and again with a
# verification callback, enforcing subject, threshold, revocation, versions and signed policies
# either way; qemu's -L falls back to the host's /usr/lib/aarch64-linux-gnu for libcrypto.so.3.
# A build without crypto must refuse every policy (signed or not) with no_crypto, then the walk
# runs with the callback: that is the main build when it found no arm64 libcrypto (CI), and a
# second build (FWA_WITH_OPENSSL=OFF) only when it did.
if [ -n "${FWA_TEST_MODEL:-}" ] && [ -n "${FWA_RELEASE_FIXTURES:-}" ]; then
  release_builds=("$build")
  if grep -q '^FWA_HAVE_OPENSSL:INTERNAL=TRUE' "$build/CMakeCache.txt"; then
    cmake -S "$root" -B "$build-nocrypto" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DFWA_BUILD_TESTS=ON -DFWA_WITH_OPENSSL=OFF \
      -DCMAKE_TOOLCHAIN_FILE="$root/csrc/cmake/toolchains/aarch64-linux-gnu.cmake" >/dev/null
    cmake --build "$build-nocrypto" --target fwa_release_tests fwa_release_walk
    release_builds+=("$build-nocrypto")
  fi
  run=(qemu-aarch64 -cpu cortex-a53 -L /usr/aarch64-linux-gnu)
  for b in "${release_builds[@]}"; do
    if grep -q '^FWA_HAVE_OPENSSL:INTERNAL=TRUE' "$b/CMakeCache.txt"; then
      echo "=== signed releases: qemu-aarch64 -cpu cortex-a53, arm64 OpenSSL libcrypto"
    else
      echo "=== signed releases: qemu-aarch64 -cpu cortex-a53, no crypto (no_crypto, then the callback)"
    fi
    if ! "${run[@]}" "$b/tests/cpp/fwa_release_tests" ||
       ! "${run[@]}" "$b/tests/cpp/fwa_release_walk" "$FWA_TEST_MODEL" "$FWA_RELEASE_FIXTURES"; then
      echo "FAILED: signed releases under qemu ($b)"
      failed=$((failed + 1))
    fi
    total=$((total + 1))
  done
fi
echo "qemu matrix: $((total - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
