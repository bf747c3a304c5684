#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The kernel variants a CPU feature set must expose, derived from the one list
# csrc/kernels/variants.def (rows "FWA_KERNEL_VARIANT(name, arch, kF1 | kF2, ...)"):
#   tests/variants.sh expect ARCH FEATURES  -> the usable variants, best first, "ref" last
#                                              (FEATURES: FWA_CPU_FEATURES names, "none" = no
#                                              feature), e.g. "avx512,avx2,ref"
#   tests/variants.sh rows ARCH             -> "FEATURES|EXPECTED" for each variant of ARCH
#                                              (just its own features), then "none|ref"
set -euo pipefail
list="$(cd "$(dirname "$0")/.." && pwd)/csrc/kernels/variants.def"

# "name arch f1,f2" per row, in list order.
rows() {
  sed -n 's/^FWA_KERNEL_VARIANT(\([a-z0-9]*\), \([a-z0-9_]*\), \([^,]*\),.*/\1 \2 \3/p' "$list" |
  while read -r name arch required; do
    feats=$({ grep -oE 'k[A-Z0-9]+' <<<"$required" || true; } | sed 's/^k//' | tr 'A-Z' 'a-z' |
            paste -sd, -)
    echo "$name $arch ${feats:-none}"
  done
}

expect() {  # arch features
  local out="" name arch feats f ok
  while read -r name arch feats; do
    [ "$arch" = "$1" ] || [ "$arch" = any ] || continue
    ok=1
    if [ "$feats" != none ]; then
      for f in ${feats//,/ }; do
        case ",$2," in *",$f,"*) ;; *) ok=0 ;; esac
      done
    fi
    if [ "$ok" = 1 ]; then out+="${out:+,}$name"; fi
  done < <(rows)
  echo "$out"
}

case "${1:-}" in
  expect) expect "$2" "$3" ;;
  rows)
    while read -r name arch feats; do
      if [ "$arch" = "$2" ]; then echo "$feats|$(expect "$2" "$feats")"; fi
    done < <(rows)
    echo "none|ref" ;;
  *) echo "usage: $0 expect ARCH FEATURES | rows ARCH" >&2; exit 2 ;;
esac
