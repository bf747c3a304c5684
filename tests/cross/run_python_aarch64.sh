#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The Python package on aarch64, under qemu-user: cross-compiles fwassist._core with Debian's
# aarch64 toolchain against the headers of an arm64 Debian 12 Python, lays out an arm64 Python
# environment (the interpreter and its libraries from Debian's arm64 packages, unpacked; numpy,
# pytest, tokenizers and cffi as manylinux aarch64 wheels from PyPI), then runs the runtime,
# artifact, C ABI and demo tests (test_bundled_model, test_loader, test_hostile_artifacts,
# test_runtime_api, test_capi_cffi: cffi over the cross-built libfwassist.so) and
# `fwassist demo` on a cortex-a76 (NEON, dotprod) and an SVE-256 CPU. The demo must print the
# same completions, token counts and expert counts as the host build (timings differ).
# onnxruntime's aarch64 wheels that read the exporter's IR version (>= 1.28) crash on import
# under qemu 7.2, so the tiny models of test_runtime_api and test_capi_cffi (built through
# onnxruntime) are built by the host's Python beforehand (tests/cross/make_tiny_models.py,
# FWA_TINY_MODELS), and the two tests that run onnxruntime themselves skip under qemu
# (FWA_UNDER_QEMU, model_fixtures.needs_onnxruntime).
# binfmt_misc is not assumed: every arm64 program runs as `qemu-aarch64 -L <arm64 root> ...`,
# through a wrapper that is also the environment's sys.executable (tests start subprocesses).
# Usage: tests/cross/run_python_aarch64.sh [work-dir]   (the arm64 root there is reused)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$root/build-pyaarch64}
py=${PYTHON:-python3}
for tool in aarch64-linux-gnu-g++ qemu-aarch64 debootstrap dpkg-deb cmake ninja; do
  if ! command -v "$tool" >/dev/null; then
    echo "--- skipped the aarch64 Python tests: $tool is not installed (scripts/install_deps.sh)"
    exit 0
  fi
done
if [ "$(id -u)" != 0 ]; then
  echo "--- skipped the aarch64 Python tests: debootstrap (the arm64 Python) needs root"
  exit 0
fi
mkdir -p "$work"
work=$(cd "$work" && pwd)
arm="$work/arm64-root"
pyver=3.11  # Debian 12's Python
mirror=${FWA_DEBIAN_MIRROR:-http://deb.debian.org/debian}

echo "--- arm64 Python $pyver (Debian 12 packages, unpacked into $arm)"
if [ ! -x "$arm/usr/bin/python$pyver" ]; then
  rm -rf "$arm"
  # Download only, then unpack every package: the maintainer scripts would need an arm64 shell.
  debootstrap --download-only --arch=arm64 --variant=minbase \
    --include="python$pyver,libpython$pyver-dev,libffi8" bookworm "$arm" "$mirror" >"$work/debootstrap.log"
  for deb in "$arm"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$arm"; done
  rm -f "$arm"/var/cache/apt/archives/*.deb
fi

echo "--- fwassist._core and libfwassist.so cross-compiled for aarch64"
"$py" -m pip install -q --target "$work/host-tools" --upgrade "nanobind>=2.4"
# Debian's pythonX.Y/pyconfig.h includes <aarch64-linux-gnu/pythonX.Y/pyconfig.h>: only that
# directory of the arm64 root joins the include path (the libc headers stay the cross ones).
mkdir -p "$work/pyconfig"
ln -sfn "$arm/usr/include/aarch64-linux-gnu" "$work/pyconfig/aarch64-linux-gnu"
# Without OpenSSL, as the wheels are built (docs/packaging.md): the package checks signatures
# through its `cryptography` callback, and the arm64 root need not hold libcrypto.
cmake -S "$root" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$root/csrc/cmake/toolchains/aarch64-linux-gnu.cmake" \
  -DFWA_BUILD_PYTHON=ON -DFWA_BUILD_CAPI=ON -DFWA_CAPI_SHARED=ON -DFWA_WITH_OPENSSL=OFF \
  -DPython_EXECUTABLE="$(command -v "$py")" \
  -DPython_INCLUDE_DIR="$arm/usr/include/python$pyver" \
  -DSKBUILD_SOABI="cpython-${pyver/./}-aarch64-linux-gnu" \
  -Dnanobind_DIR="$work/host-tools/nanobind/cmake" \
  -DCMAKE_CXX_FLAGS="-isystem $work/pyconfig" >/dev/null
cmake --build "$work/build" --target _core fwassist
# The installed C package (as users get it) for test_capi_cffi.
rm -rf "$work/c-prefix"
cmake --install "$work/build" --prefix "$work/c-prefix" --component c >/dev/null

echo "--- tiny models for test_runtime_api and test_capi_cffi, built by the host's Python"
rm -rf "$work/tiny-models"
(cd "$root/tests" && "$py" "$root/tests/cross/make_tiny_models.py" "$work/tiny-models")

echo "--- arm64 environment: the package and manylinux aarch64 wheels"
env_dir="$work/env"
site="$env_dir/lib/python$pyver/site-packages"
mkdir -p "$env_dir/bin" "$site"
printf 'home = %s/usr/bin\ninclude-system-site-packages = false\n' "$arm" >"$env_dir/pyvenv.cfg"
# The environment's python: the arm64 interpreter under qemu (QEMU_CPU picks the CPU), with
# argv[0] set to this wrapper so that sys.executable re-enters qemu in subprocesses.
cat >"$env_dir/bin/python3" <<EOF
#!/bin/sh
exec qemu-aarch64 -cpu "\${QEMU_CPU:-cortex-a76}" -L "$arm" -0 "\$0" "$arm/usr/bin/python$pyver" "\$@"
EOF
chmod +x "$env_dir/bin/python3"
if [ ! -d "$site/numpy" ]; then
  platforms=()
  for v in 17 24 26 27 28 31 34 35 36; do platforms+=(--platform "manylinux_2_${v}_aarch64"); done
  "$py" -m pip install -q --target "$site" "${platforms[@]}" --only-binary=:all: \
    --python-version "$pyver" --implementation cp numpy pytest tokenizers cffi
fi
rm -rf "$site/fwassist"
cp -r "$root/sdk/fwassist" "$site/fwassist"
cp "$work/build/csrc/python/"_core.cpython-*-aarch64-linux-gnu.so "$site/fwassist/"

# The demo's text without its measurements (timings, paths, CPU line, energy figures).
demo_text() {
  sed -e '/^fwassist demo: loaded/d' -e '/^artifact /d' -e '/^cpu /d' -e '/^total /d' \
      -e '/^energy /d' -e '/^SCI /d' -e 's/, decode .* TTFT [0-9.]* ms//' \
      -e 's/, [0-9.]* core-ms\/token$//'
}
# (The completions go to stdout, the figures to stderr: both are compared.)
(cd "$work" && "$py" -m fwassist demo 2>&1) | demo_text >"$work/demo-host.txt"
failed=0
for cpu in cortex-a76 "max,sve256=on"; do
  echo "=== Python tests on qemu-aarch64 -cpu $cpu"
  (cd "$root/tests" && QEMU_CPU=$cpu FWA_UNDER_QEMU=1 FWA_TINY_MODELS="$work/tiny-models" \
     FWA_C_PREFIX="$work/c-prefix" "$env_dir/bin/python3" -m pytest -q -p no:cacheprovider -rs \
     test_bundled_model.py test_loader.py test_hostile_artifacts.py test_runtime_api.py \
     test_capi_cffi.py) || failed=1
  echo "=== fwassist demo on qemu-aarch64 -cpu $cpu"
  (cd "$work" && QEMU_CPU=$cpu "$env_dir/bin/python3" -m fwassist demo 2>&1) >"$work/demo-aarch64.txt"
  sed -n 's/^cpu  *//p' "$work/demo-aarch64.txt"
  if diff "$work/demo-host.txt" <(demo_text <"$work/demo-aarch64.txt"); then
    echo "--- same completions, token and expert counts as the host"
  else
    echo "FAILED: fwassist demo on -cpu $cpu differs from the host's"; failed=1
  fi
done
exit "$failed"
