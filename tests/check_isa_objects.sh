#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ISA-specific object files must not export weak/COMDAT symbols (an inline or template function
# compiled with AVX-512 or SVE flags could be picked by the linker for baseline callers and
# raise SIGILL on an older CPU) and must have no static initialisers (.init_array).
# Usage: tests/check_isa_objects.sh BUILD_DIR [nm] [objdump]
set -euo pipefail
build=$1
nm=${2:-nm}
objdump=${3:-objdump}
objs=$(find "$build/csrc" -name '*.o' \( -path '*kernels/x86/*' -o -path '*kernels/arm/*' \
        -o -name 'sha256_x86*' -o -name 'sha256_arm*' \))
[ -n "$objs" ] || { echo "no ISA objects under $build"; exit 1; }
bad=0
for o in $objs; do
  weak=$("$nm" -C --defined-only "$o" | awk '$2 ~ /^[WVu]$/' || true)
  if [ -n "$weak" ]; then echo "FAIL $o exports weak symbols:"; echo "$weak"; bad=1; fi
  if "$objdump" -h "$o" | grep 'init_array' >/dev/null; then echo "FAIL $o has static initialisers"; bad=1; fi
done
n=$(echo "$objs" | wc -l)
echo "ISA objects: $n checked, $([ $bad = 0 ] && echo clean || echo FAILED)"
exit $bad
