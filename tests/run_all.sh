#!/usr/bin/env bash
# The whole test suite: C++ kernel tests natively (every x86 variant the CPU has, plus each
# forced lower path), the aarch64 qemu matrix, then the Python tests against the installed
# package (numpy, onnxruntime, onnx.reference). Run from anywhere; needs the packages that
# .ci/run installs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

echo "### C++ kernel tests (native)"
cmake -S . -B build-native -G Ninja -DCMAKE_BUILD_TYPE=Release -DFWA_BUILD_TESTS=ON >/dev/null
cmake --build build-native --target fwa_kernel_tests
bin=build-native/tests/cpp/fwa_kernel_tests
if [ "$(uname -m)" = x86_64 ]; then
  # Each row forces a lower feature set (FWA_CPU_FEATURES only lowers) and states the variants
  # that must then be usable; rows the CPU cannot reach are skipped with a message.
  full=$("$bin" -tc="report*" 2>/dev/null | sed -n 's/.*usable variants=\(.*\)/\1/p')
  for row in "avx2,avx512f,avx512bw,avx512vl,avx512vnni|avx512vnni,avx512,avx2,ref" \
             "avx2,avx512f,avx512bw,avx512vl|avx512,avx2,ref" "avx2|avx2,ref" "none|ref"; do
    IFS='|' read -r feats expect <<<"$row"
    case ",$full," in *",${expect%%,*},"*) ;; *)
      echo "--- skipped FWA_CPU_FEATURES=$feats: this CPU lacks ${expect%%,*}"; continue;; esac
    echo "--- FWA_CPU_FEATURES=$feats"
    FWA_CPU_FEATURES=$feats FWA_EXPECT_VARIANTS=$expect "$bin"
  done
else
  "$bin"
fi

echo "### C++ artifact tests (native: SHA-256 on every backend, JSON, reader)"
cmake --build build-native --target fwa_artifact_tests
abin=build-native/tests/cpp/fwa_artifact_tests
"$abin"
echo "--- FWA_CPU_FEATURES=none (scalar SHA-256 dispatch)"
FWA_CPU_FEATURES=none FWA_EXPECT_SHA256_BACKEND=scalar "$abin"

echo "### C++ tokenizer tests (native)"
cmake --build build-native --target fwa_tokenizer_tests
build-native/tests/cpp/fwa_tokenizer_tests

echo "### C++ runtime tests (native): deterministic math, sampler, model on a real artifact"
cmake --build build-native --target fwa_model_math_tests fwa_model_tests fwa_logits_digest
build-native/tests/cpp/fwa_model_math_tests
export FWA_TEST_MODEL="$root/build-native/test-model.fwa"
python tests/cross/make_test_model.py "$FWA_TEST_MODEL"
build-native/tests/cpp/fwa_model_tests
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

echo "### C++ kernel, artifact and runtime tests (aarch64 under qemu)"
bash tests/cross/run_qemu_matrix.sh "$root/build-aarch64"

echo "### C ABI: bad-input walk, allocation-free decode, installed package + examples/c"
cmake --build build-native --target fwa_capi_walk fwa_capi_tests
build-native/tests/cpp/fwa_capi_walk "$FWA_TEST_MODEL"
build-native/tests/cpp/fwa_capi_tests
FWA_NATIVE_BUILD="$root/build-native" FWA_AARCH64_BUILD="$root/build-aarch64" \
  bash tests/capi/run_examples.sh "$root/build-capi"
export FWA_C_PREFIX="$root/build-capi/prefix"  # the cffi tests use this installed package

echo "### ISA objects: no weak symbols, no static initialisers"
bash tests/check_isa_objects.sh build-native
bash tests/check_isa_objects.sh "$root/build-aarch64" aarch64-linux-gnu-nm aarch64-linux-gnu-objdump

echo "### Artifact parser: libFuzzer + ASan/UBSan (bounded), sanitized artifact tests"
bash tests/fuzz/run_fuzz.sh "${FWA_FUZZ_SECONDS:-60}"

echo "### Python tests"
cd "$root/tests" && python -m pytest -q -p no:cacheprovider .
