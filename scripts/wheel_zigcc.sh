#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# usage: wheel_zigcc.sh <cc|c++> <zig target, e.g. aarch64-linux-gnu.2.31> <compiler args...>
# The C/C++ compiler of scripts/build_wheels.sh: zig's clang with its own libc headers for the
# glibc version in the target, so the wheel runs on that glibc and newer. FWA_ZIG is the zig
# executable of the ziglang package (called directly: inside pip's isolated build environment
# another Python could not import ziglang).
#
# zig reads -march=<name> as a CPU name, so the Arm ISA flags of csrc/kernels/variants.def
# (-march=armv8.2-a+dotprod, ...) become the equivalent -mcpu=generic+v8_2a+dotprod.
set -euo pipefail
mode=$1
target=$2
shift 2
args=()
for a in "$@"; do
  case $a in
    -march=armv8-a) a=-mcpu=generic ;;
    -march=armv8-a+*) a=-mcpu=generic+${a#-march=armv8-a+} ;;
    -march=armv8.[0-9]-a*)
      rest=${a#-march=armv8.}
      a=-mcpu=generic+v8_${rest%%-a*}a${rest#?-a}
      ;;
  esac
  args+=("$a")
done
exec "${FWA_ZIG:?FWA_ZIG must name the zig executable}" "$mode" -target "$target" "${args[@]}"
