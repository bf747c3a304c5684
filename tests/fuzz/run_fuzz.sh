#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Fuzzes the artifact reader and runs the C++ artifact tests under sanitizers:
#   0. differential fuzzing (tests/fuzz/differential.py): the C++ reader (fwassist.load_artifact)
#      and the Python verifier (fwassist.artifact.pyverify) on the same mutated artifacts for the
#      same bounded time; any disagreement fails (inputs saved to <build>/differential; needs
#      the fwassist package installed, PYTHON picks the interpreter);
#   1. builds tests/fuzz/fuzz_artifact.cpp with clang -fsanitize=fuzzer,address,undefined and
#      runs it for a bounded time from the kept seed corpus (tests/fuzz/corpus, left untouched;
#      new inputs go to <build>/corpus, crashes to <build>/crash-*);
#   1b. tests/fuzz/fuzz_release.cpp the same way for the signed-release parsers (a quarter of the
#      time, seeded with tests/capi/make_release_fixtures.py's files);
#   2. builds fwa_artifact_tests with -DFWA_SANITIZE=ON (ASan + UBSan) and runs it, then the
#      runtime tests, the C ABI tests (bad-input walk, handles, decode loop, release walk) on
#      FWA_TEST_MODEL (made with tests/cross/make_test_model.py when unset).
# Usage: tests/fuzz/run_fuzz.sh [seconds]   (default 60; FWA_FUZZ_BUILD sets the build dir,
#        FWA_FUZZ_JOBS the parallel fuzz jobs, default 1)
# Needs clang and its libFuzzer/sanitizer runtimes. Debian 12:
#   apt-get install clang libclang-rt-14-dev      (clang-14; or clang-N + libclang-rt-N-dev)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-60}
out=${FWA_FUZZ_BUILD:-$root/build-fuzz}
jobs=${FWA_FUZZ_JOBS:-1}
mkdir -p "$out/obj" "$out/corpus"
status=0

echo "### differential fuzzing (C++ reader vs Python verifier) for ${secs}s"
if ! "${PYTHON:-python}" "$root/tests/fuzz/differential.py" --seconds "$secs" \
    --out "$out/differential"; then
  echo "FAILED: the readers disagree (see $out/differential)"
  status=1
fi

cxx=""
for c in clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15 clang++-14; do
  if command -v "$c" >/dev/null; then cxx=$c; break; fi
done
if [ -z "$cxx" ]; then
  echo "run_fuzz.sh: clang++ not found (apt-get install clang libclang-rt-14-dev)" >&2
  exit 2
fi
echo "### libFuzzer build ($cxx)"
common=(-std=c++17 -O1 -g -fno-omit-frame-pointer -I"$root/csrc"
        -fsanitize=address,undefined -fno-sanitize-recover=undefined)
defs=()
isa_src=""
isa_flags=()
case "$(uname -m)" in
  x86_64) defs=(-DFWA_HAVE_SHANI); isa_src=artifact/sha256_x86_shani.cpp; isa_flags=(-msha -msse4.1) ;;
  aarch64) defs=(-DFWA_HAVE_ARM_SHA); isa_src=artifact/sha256_arm_crypto.cpp
           isa_flags=(-march=armv8-a+crypto) ;;
esac
objs=()
for src in artifact/json.cpp artifact/reader.cpp artifact/sha256.cpp core/status.cpp \
           cpu/cpu_features.cpp quant/format.cpp release/counter.cpp release/crypto.cpp \
           release/encoding.cpp release/release.cpp $isa_src; do
  obj="$out/obj/$(echo "$src" | tr / _).o"
  flags=()
  [ "$src" = "$isa_src" ] && flags=("${isa_flags[@]}")
  "$cxx" "${common[@]}" "${defs[@]}" "${flags[@]}" -fsanitize=fuzzer-no-link \
    -c "$root/csrc/$src" -o "$obj"
  objs+=("$obj")
done
"$cxx" "${common[@]}" "${defs[@]}" -fsanitize=fuzzer "$root/tests/fuzz/fuzz_artifact.cpp" \
  "${objs[@]}" -o "$out/fuzz_artifact"
"$cxx" "${common[@]}" "${defs[@]}" -fsanitize=fuzzer "$root/tests/fuzz/fuzz_release.cpp" \
  "${objs[@]}" -o "$out/fuzz_release"

echo "### fuzzing for ${secs}s"
cd "$out"
rm -f fuzz-*.log
par=()
[ "$jobs" -gt 1 ] && par=(-jobs="$jobs" -workers="$jobs")  # workers log to fuzz-N.log
./fuzz_artifact -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=20 \
  -print_final_stats=1 -artifact_prefix="$out/" "${par[@]}" \
  "$out/corpus" "$root/tests/fuzz/corpus" >"$out/fuzz.log" 2>&1 || true
cat "$out/fuzz.log" fuzz-*.log 2>/dev/null | \
  grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)|stat::|ERROR|SUMMARY|crash-|leak-|timeout-" | tail -n 25 || true
# grep reads the files itself: `cat a missing | grep -q` fails under pipefail (cat's status on a
# missing fuzz-*.log, SIGPIPE when grep stops early) and would hide a finding.
if grep -qE "ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)|runtime error|deadly signal" \
    "$out/fuzz.log" fuzz-*.log 2>/dev/null; then
  echo "FAILED: the fuzzer found a problem (see $out/fuzz.log and $out/crash-*)"
  status=1
fi
cd "$root"

# The signed-release parsers (.sig bundles/DSSE, statement, trust policy, base64), seeded with
# valid files made for the test artifact (tests/capi/make_release_fixtures.py) and the
# statement they carry; a quarter of the time budget, at least 10 s. The runtime and C ABI tests
# below use the same artifact: FWA_TEST_MODEL, or one made here (never skipped).
echo "### release parsers: fuzzing for $(( secs / 4 > 10 ? secs / 4 : 10 ))s"
if [ -z "${FWA_TEST_MODEL:-}" ]; then
  export FWA_TEST_MODEL="$out/test-model.fwa"
  python "$root/tests/cross/make_test_model.py" "$FWA_TEST_MODEL" >/dev/null
fi
rseeds="$out/release-seeds"
mkdir -p "$out/release-corpus"
"${PYTHON:-python}" "$root/tests/capi/make_release_fixtures.py" "$FWA_TEST_MODEL" "$rseeds"
"${PYTHON:-python}" - "$rseeds" <<'PY'
import base64, json, pathlib, sys
d = pathlib.Path(sys.argv[1])
line = json.loads((d / "ok.sig").read_bytes().splitlines()[0])
(d / "statement.json").write_bytes(base64.b64decode(line["dsseEnvelope"]["payload"]))
PY
(cd "$out" && ./fuzz_release -max_total_time=$(( secs / 4 > 10 ? secs / 4 : 10 )) -max_len=131072 \
  -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 -artifact_prefix="$out/release-" \
  "$out/release-corpus" "$rseeds" >"$out/fuzz-release.log" 2>&1) || true
grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)|ERROR|SUMMARY|crash-|timeout-" "$out/fuzz-release.log" | tail -n 8 || true
if grep -qE "ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)|runtime error|deadly signal" "$out/fuzz-release.log"; then
  echo "FAILED: the release fuzzer found a problem (see $out/fuzz-release.log and $out/release-crash-*)"
  status=1
fi

echo "### C++ artifact tests under ASan + UBSan"
cmake -S "$root" -B "$out/asan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFWA_BUILD_TESTS=ON \
  -DFWA_SANITIZE=ON >/dev/null
cmake --build "$out/asan" --target fwa_artifact_tests
if ! ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$out/asan/tests/cpp/fwa_artifact_tests"; then
  echo "FAILED: artifact tests under sanitizers"
  status=1
fi
echo "### C++ runtime tests under ASan + UBSan"
cmake --build "$out/asan" --target fwa_model_tests fwa_model_math_tests fwa_capi_walk \
  fwa_capi_tests fwa_release_tests fwa_release_walk
san=(env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1)
if ! "${san[@]}" "$out/asan/tests/cpp/fwa_model_math_tests" ||
   ! "${san[@]}" "$out/asan/tests/cpp/fwa_model_tests"; then
  echo "FAILED: runtime tests under sanitizers"
  status=1
fi
echo "### C ABI bad-input walk, handles and decode loop under ASan + UBSan"
if ! "${san[@]}" "$out/asan/tests/cpp/fwa_capi_walk" "$FWA_TEST_MODEL" ||
   ! "${san[@]}" "$out/asan/tests/cpp/fwa_capi_tests" ||
   ! "${san[@]}" "$out/asan/tests/cpp/fwa_release_tests" ||
   ! "${san[@]}" "$out/asan/tests/cpp/fwa_release_walk" "$FWA_TEST_MODEL" "$rseeds"; then
  echo "FAILED: C ABI tests under sanitizers"
  status=1
fi
[ "$status" -eq 0 ] && echo "run_fuzz.sh: fuzzing and sanitizer tests passed"
exit "$status"
