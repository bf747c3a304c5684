#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The static libfwassist.a exposes the C ABI only: its global defined symbols are exactly the
# functions declared in fwassist.h (no fwa:: internals, no std:: template instances), and a
# C++ program defining its own fwa:: functions of the same names (tests/capi/symbol_clash.cpp)
# links against it and runs. For the native or the aarch64 package (run under qemu).
# Usage: tests/capi/check_static_symbols.sh PREFIX WORK_DIR [aarch64]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
prefix=$1
work=$2
tools="" run=()
if [ "${3:-}" = aarch64 ]; then
  tools=aarch64-linux-gnu-
  run=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
fi
lib="$prefix/lib/libfwassist.a"
header="$prefix/include/fwassist/fwassist.h"
mkdir -p "$work"

# Function declarations of the header: "fwa_name(" (the callback typedef reads "fwa_x)(").
grep -oE '\bfwa_[a-z0-9_]+\(' "$header" | tr -d '(' | sort -u >"$work/declared.txt"
"${tools}nm" -g --defined-only "$lib" | awk 'NF == 3 {print $3}' | sort >"$work/global.txt"
if ! diff "$work/declared.txt" "$work/global.txt" >"$work/symbols.diff"; then
  echo "FAILED: $lib: global symbols differ from the functions of fwassist.h (< declared only,"
  echo "> global only):"; cat "$work/symbols.diff"; exit 1
fi
echo "$lib: $(wc -l <"$work/global.txt") global symbols, exactly the functions of fwassist.h"

# A library built with FWA_WITH_OPENSSL needs libcrypto too (release signatures). nm's output
# is read whole first: `nm | grep -q` under pipefail fails when grep stops early (SIGPIPE).
crypto=()
undefined=$("${tools}nm" -u "$lib")
if grep -q ' EVP_' <<<"$undefined"; then crypto=(-lcrypto); fi
"${tools}g++" -std=c++17 -O1 -Wall -Wextra -Werror -I"$prefix/include" \
  "$root/tests/capi/symbol_clash.cpp" "$lib" -pthread "${crypto[@]}" -o "$work/symbol_clash"
"${run[@]}" "$work/symbol_clash"
