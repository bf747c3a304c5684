#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The whole test suite: C++ kernel tests natively (every x86 variant the CPU has, plus each
# forced lower path), the aarch64 qemu matrix, the C ABI packages, fuzzing, the Python package
# cross-compiled for aarch64 under qemu, the wheels for this CPython (x86_64, aarch64: built,
# checked and smoke-tested), then the Python tests against the installed package
# (numpy, onnxruntime, onnx.reference). Run from anywhere, in the Python environment to test (a venv on Debian/Ubuntu):
# scripts/install_deps.sh first installs the apt packages (as root or through sudo) and the
# package with its test extras; parts whose tools this platform lacks are skipped with a message.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

echo "### Dependencies (apt and pip)"
bash scripts/install_deps.sh test
# The aarch64 parts need the cross compiler and qemu-user (optional packages: not on every
# platform).
aarch64=1
for tool in aarch64-linux-gnu-g++ qemu-aarch64; do
  command -v "$tool" >/dev/null || { aarch64=0; missing_tool=$tool; }
done

echo "### C++ tests (native): every test binary under ctest"
# The C ABI tests link the shared libfwassist (run_examples.sh switches this directory to the
# static one afterwards).
cmake -S . -B build-native -G Ninja -DCMAKE_BUILD_TYPE=Release -DFWA_BUILD_TESTS=ON \
  -DFWA_CAPI_SHARED=ON >/dev/null
cmake --build build-native
export FWA_TEST_MODEL="$root/build-native/test-model.fwa"
python3 tests/cross/make_test_model.py "$FWA_TEST_MODEL"
# Signed releases of that artifact for the C ABI release walk (here and under qemu).
export FWA_RELEASE_FIXTURES="$root/build-native/release-fixtures"
python3 tests/capi/make_release_fixtures.py "$FWA_TEST_MODEL" "$FWA_RELEASE_FIXTURES"
# kernels (every variant the CPU has), artifact reader, tokenizer, deterministic math and
# sampler, the runtime on a real artifact, logits with every feature and none, and the C ABI
# (bad-input walk, allocation-free decode, generation-tagged handles).
ctest --test-dir build-native --output-on-failure

echo "### C++ kernel tests (native): forced lower feature sets"
bin=build-native/tests/cpp/fwa_kernel_tests
if [ "$(uname -m)" = x86_64 ]; then
  # Each row forces a lower feature set (FWA_CPU_FEATURES only lowers) and states the variants
  # that must then be usable, from the variant list (tests/variants.sh); rows the CPU cannot
  # reach are skipped with a message.
  full=$("$bin" -tc="report*" 2>/dev/null | sed -n 's/.*usable variants=\(.*\)/\1/p')
  while IFS='|' read -r feats expect; do
    case ",$full," in *",${expect%%,*},"*) ;; *)
      echo "--- skipped FWA_CPU_FEATURES=$feats: this CPU lacks ${expect%%,*}"; continue;; esac
    echo "--- FWA_CPU_FEATURES=$feats"
    FWA_CPU_FEATURES=$feats FWA_EXPECT_VARIANTS=$expect "$bin"
  done < <(bash tests/variants.sh rows x86_64)
fi

echo "### C++ artifact tests (native): scalar SHA-256 dispatch"
FWA_CPU_FEATURES=none FWA_EXPECT_SHA256_BACKEND=scalar build-native/tests/cpp/fwa_artifact_tests

echo "### C++ runtime (native): identical logits and samples on every x86 kernel path"
# The logits every kernel path must reproduce bit for bit (x86 rows here, aarch64 under qemu).
export FWA_EXPECT_DIGESTS="$root/build-native/logits-digests.txt"
build-native/tests/cpp/fwa_logits_digest "$FWA_TEST_MODEL" | tee "$FWA_EXPECT_DIGESTS"
if [ "$(uname -m)" = x86_64 ]; then
  for feats in avx2,avx512f,avx512bw,avx512vl avx2 none; do
    if ! diff <(FWA_CPU_FEATURES=$feats build-native/tests/cpp/fwa_logits_digest \
                "$FWA_TEST_MODEL") "$FWA_EXPECT_DIGESTS"; then
      echo "FAILED: logits differ with FWA_CPU_FEATURES=$feats"; exit 1
    fi
    echo "--- FWA_CPU_FEATURES=$feats: identical logits and samples"
  done
fi

if [ "$aarch64" = 1 ]; then
  echo "### C++ kernel, artifact and runtime tests (aarch64 under qemu)"
  bash tests/cross/run_qemu_matrix.sh "$root/build-aarch64"

  echo "### C ABI: installed packages (shared, static; native, aarch64), symbols, examples/c"
  FWA_NATIVE_BUILD="$root/build-native" FWA_AARCH64_BUILD="$root/build-aarch64" \
    bash tests/capi/run_examples.sh "$root/build-capi"
  export FWA_C_PREFIX="$root/build-capi/prefix"  # the cffi tests use this installed package
else
  echo "### skipped the aarch64 qemu matrix and the C ABI packages: $missing_tool is not installed"
fi

echo "### ISA objects: no weak symbols, no static initialisers"
bash tests/check_isa_objects.sh build-native
if [ "$aarch64" = 1 ]; then
  bash tests/check_isa_objects.sh "$root/build-aarch64" aarch64-linux-gnu-nm aarch64-linux-gnu-objdump
fi

echo "### Artifact parser: libFuzzer + ASan/UBSan (bounded), sanitized artifact tests"
if command -v clang++ >/dev/null; then
  bash tests/fuzz/run_fuzz.sh "${FWA_FUZZ_SECONDS:-60}"
else
  echo "### skipped the fuzzing: clang++ is not installed"
fi

echo "### Python package on aarch64 (qemu: cortex-a76, SVE-256)"
bash tests/cross/run_python_aarch64.sh "$root/build-pyaarch64"

pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
echo "### Wheels: cp${pyver/./} manylinux x86_64 and aarch64 (zig), auditwheel show, smoke-tested"
# scripts/build_wheels.sh (docs/packaging.md) for this Python, with the development install's
# demo as the reference (no third compile of the sdist); aarch64 needs the arm64 root made
# just above (Debian 12: CPython 3.11; build_wheels.sh says so when it lacks this Python).
arm64_root="$root/build-pyaarch64/arm64-root"
wheel_archs=x86_64
if [ "$aarch64" = 1 ] && [ -d "$arm64_root/usr/bin" ]; then
  wheel_archs="x86_64 aarch64"
else
  echo "--- no aarch64 wheel: no arm64 root (the aarch64 Python step was skipped)"
fi
mkdir -p "$root/build-wheels"
(cd "$root/build-wheels" && fwassist demo >reference-demo.txt 2>&1)
bash scripts/build_wheels.sh --arch "$wheel_archs" --python "$pyver" \
  --out "$root/build-wheels/dist" --arm64-root "$arm64_root" \
  --reference "$root/build-wheels/reference-demo.txt"

echo "### Python tests"
cd "$root/tests" && python3 -m pytest -q -p no:cacheprovider .
