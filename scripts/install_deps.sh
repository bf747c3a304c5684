#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what fwassist needs on Debian/Ubuntu, as root or through sudo:
#   build  the C++ compiler and the active Python's headers (for `pip install .`)
#   test   (default) also cmake, ninja, doctest, the aarch64 cross toolchain, qemu-user, clang
#          with its fuzzer runtime, debootstrap, softhsm2, chromium (tests/run_all.sh's parts),
#          then the package with its test extras into the active Python.
#   bench  test, plus llvm-19 and clang-19 for benchmarks/arm_model.py (llvm-mca-19); not CI's.
# Packages already present are not asked for again, so a machine that has them all needs neither
# root nor sudo. The optional ones (cross toolchain, qemu, clang, debootstrap) may be missing for
# the platform: then the test parts that need them say so and are skipped.
# FWA_NO_INSTALL=1 skips everything (a developer's machine set up by hand).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-test}
case "$mode" in build|test|bench) ;; *) echo "usage: $0 [build|test|bench]" >&2; exit 2;; esac
if [ "${FWA_NO_INSTALL:-0}" = 1 ]; then echo "install_deps: FWA_NO_INSTALL=1, nothing installed"; exit 0; fi
py=${PYTHON:-python3}

# The active Python's headers: a Debian/Ubuntu system Python (or a venv made from one) has them
# in pythonX.Y-dev.
required=(g++ libssl-dev)  # libssl-dev: libcrypto for release signatures (csrc/release)
if ! "$py" -c 'import os, sysconfig, sys
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)'; then
  required+=("$("$py" -c 'import sys; print("python%d.%d-dev" % sys.version_info[:2])')")
fi
optional=()
if [ "$mode" = test ] || [ "$mode" = bench ]; then
  required+=(cmake ninja-build doctest-dev)
  # chromium: the headless browser tests of the audit report's page and the serve dashboard;
  # curl: tests/test_serve.py drives fwassist serve with it.
  optional=(g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user clang debootstrap softhsm2
            chromium curl)
fi
if [ "$mode" = bench ]; then optional+=(llvm-19 clang-19); fi

missing() {  # the named packages dpkg does not list as installed
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}
as_root() {  # command...: as root, through sudo when not root
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}
apt_install() {  # packages...
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
    >/dev/null
}
can_be_root() {  # root, passwordless sudo, or sudo that may ask on this terminal
  [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null ||
    { [ -t 0 ] && command -v sudo >/dev/null && sudo -v; }
}

if command -v dpkg-query >/dev/null && command -v apt-get >/dev/null; then
  mapfile -t need < <(missing "${required[@]}" "${optional[@]}")
  if [ "${#need[@]}" -gt 0 ]; then
    if ! can_be_root; then
      echo "install_deps: need root or sudo to apt-get install: ${need[*]}" >&2
      exit 1
    fi
    echo "install_deps: apt-get install ${need[*]}"
    as_root apt-get update -qq
    mapfile -t need_req < <(missing "${required[@]}")
    [ "${#need_req[@]}" -eq 0 ] || apt_install "${need_req[@]}"
    for p in $(missing "${optional[@]}"); do
      apt_install "$p" || echo "install_deps: $p is not available here; the tests that need it are skipped"
    done
  fi
  # libFuzzer and the sanitizer runtimes of the installed clang (libclang-rt-N-dev on Debian 12
  # and Ubuntu 22.04 and later; part of the clang package on older releases).
  if command -v clang >/dev/null && [ "$mode" != build ]; then
    major=$(clang -dumpversion | cut -d. -f1)
    if [ -n "$(missing "libclang-rt-$major-dev")" ] && can_be_root; then
      as_root apt-get update -qq
      if apt-cache show "libclang-rt-$major-dev" >/dev/null 2>&1; then
        echo "install_deps: apt-get install libclang-rt-$major-dev"
        apt_install "libclang-rt-$major-dev"
      fi
    fi
  fi
  # No Debian multiarch arm64 packages (libssl-dev:arm64): their arm64 libc lands in
  # /lib/aarch64-linux-gnu, where the dynamic loader under `qemu-aarch64 -L` finds it before the
  # cross sysroot's, and with it the thread pool's parking under qemu-user 7.2 stalls (the
  # kernel tests' idle-pool case hangs). The aarch64 release tests therefore run without OpenSSL
  # in the library: no_crypto, then the same suite through the verification callback.
else
  echo "install_deps: no apt-get/dpkg on this system: install ${required[*]} ${optional[*]} yourself"
fi

[ "$mode" != build ] || exit 0
# pip refuses to install into a Debian/Ubuntu system Python (PEP 668): say what to do instead.
if "$py" -c 'import os, sys, sysconfig
sys.exit(0 if sys.prefix == sys.base_prefix and os.path.exists(
    os.path.join(sysconfig.get_paths()["stdlib"], "EXTERNALLY-MANAGED")) else 1)'; then
  echo "install_deps: $py is the system's own Python, which pip may not change: run" \
       "'python3 -m venv .venv && . .venv/bin/activate' first" >&2
  exit 1
fi
echo "install_deps: pip install $root[test]"
"$py" -m pip install -q "$root[test]"
