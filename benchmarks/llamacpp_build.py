#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Builds the llama.cpp that the PyPI ``llama-cpp-python`` source distribution vendors, for
benchmarks/llamacpp_compare.py.

    python benchmarks/llamacpp_build.py [--root benchmarks/.llamacpp] [--jobs 2] [--force]

Steps, each skipped when already done (idempotent): ``pip download`` of the pinned sdist (only
that package from source: its build requirements come as wheels), a SHA-256 check, unpacking,
a CMake configure of ``vendor/llama.cpp`` (Release, CPU only, shared libraries, GGML_NATIVE and
GGML_OPENMP at llama.cpp's defaults (ON), no OpenSSL, no tests or server) and a build of
``libllama.so`` / ``libggml*.so`` (driven through the sdist's own ctypes bindings,
``llama_cpp/llama_cpp.py``, which match that library's structs) plus ``llama-quantize``,
``llama-bench`` and ``llama-simple``, under ``nice -n 15`` with ``-j2`` (the machine is shared).
When the build finishes, ``build-info.json`` in the build folder records the version, the
vendored llama.cpp commit (the short hash from the sdist's CHANGELOG; ``ensure_built`` adds the
full hash from the git metadata the sdist ships in ``vendor/llama.cpp`` and the one llama.cpp's
build-info compiled in; git is kept from walking up into this repository, whose HEAD it would
otherwise report), the CMake flags, the compiler and the build time. Its presence means
"built".

Everything lives under ``--root``: by default ``$FWA_LLAMACPP_ROOT``, else
``benchmarks/.llamacpp/`` (ignored by git), the one default every benchmark shares
(bench_paths.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_paths import LLAMACPP_ROOT  # noqa: E402

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
# sha256 of llama_cpp_python-0.3.36.tar.gz as downloaded from PyPI (2026-11)
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
DEFAULT_ROOT = LLAMACPP_ROOT
TARGETS = ("llama", "llama-quantize", "llama-bench", "llama-simple")
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_NATIVE=ON",          # llama.cpp's default: -march=native
    "-DGGML_OPENMP=ON",          # llama.cpp's default thread pool
    "-DGGML_CUDA=OFF", "-DGGML_VULKAN=OFF", "-DGGML_METAL=OFF", "-DGGML_BLAS=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_EXAMPLES=ON", "-DLLAMA_BUILD_COMMON=ON",
)


def log(msg: str) -> None:
    print(f"[llamacpp_build] {msg}", file=sys.stderr, flush=True)


def sdist_path(root: str) -> str:
    return os.path.join(root, f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz")


def source_dir(root: str) -> str:
    return os.path.join(root, f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}")


def llama_src(root: str) -> str:
    return os.path.join(source_dir(root), "vendor", "llama.cpp")


def build_dir(root: str) -> str:
    return os.path.join(root, f"build-{LLAMA_CPP_PYTHON_VERSION}")


def info_path(root: str) -> str:
    return os.path.join(build_dir(root), "build-info.json")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(root: str) -> None:
    path = sdist_path(root)
    if not os.path.exists(path):
        os.makedirs(root, exist_ok=True)
        log(f"pip download llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} (sdist)")
        # --no-binary for this package only: with :all: pip would build cmake from source
        # to prepare the sdist's metadata.
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                        "--no-binary", "llama-cpp-python",
                        f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", root],
                       check=True)
    digest = sha256_file(path)
    if digest != SDIST_SHA256:
        raise SystemExit(f"{path}: sha256 {digest} != pinned {SDIST_SHA256}")


def unpack(root: str) -> None:
    if os.path.isfile(os.path.join(llama_src(root), "CMakeLists.txt")):
        return
    log(f"unpacking {sdist_path(root)}")
    with tarfile.open(sdist_path(root)) as tf:
        tf.extractall(root, filter="data")


def vendored_commit(root: str) -> Optional[str]:
    """The llama.cpp commit of this release, from the sdist's CHANGELOG section
    ("feat: update llama.cpp to ggml-org/llama.cpp@<hash>")."""
    try:
        with open(os.path.join(source_dir(root), "CHANGELOG.md"), encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(r"^## \[" + re.escape(LLAMA_CPP_PYTHON_VERSION) + r"\](.*?)(?=^## \[)",
                  text, re.S | re.M)
    if not m:
        return None
    h = re.search(r"llama\.cpp@([0-9a-f]{7,40})", m.group(1))
    return h.group(1) if h else None


def build_info_commit(root: str) -> Optional[str]:
    """LLAMA_COMMIT as llama.cpp's build-info recorded it (from the vendored tree's git
    metadata, which the sdist ships), or None."""
    try:
        with open(os.path.join(build_dir(root), "common", "build-info.cpp")) as f:
            m = re.search(r'LLAMA_COMMIT = "([^"]*)"', f.read())
    except OSError:
        return None
    return m.group(1) if m else None


def vendored_git_commit(root: str) -> Optional[str]:
    """Full hash of vendor/llama.cpp's HEAD from the git metadata in the sdist, or None."""
    try:
        p = subprocess.run(["git", "-C", llama_src(root), "rev-parse", "HEAD"],
                           capture_output=True, text=True, timeout=10, env=build_env(root))
    except (OSError, subprocess.SubprocessError):
        return None
    h = p.stdout.strip()
    return h if p.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", h) else None


def build_env(root: str) -> dict[str, str]:
    """Keeps git (llama.cpp's build-info) from walking up into this repository."""
    env = dict(os.environ)
    env["GIT_CEILING_DIRECTORIES"] = os.path.dirname(llama_src(root))
    return env


def compiler_version() -> str:
    try:
        return subprocess.run(["c++", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def lib_dir(root: str) -> str:
    return os.path.join(build_dir(root), "bin")


def binary(root: str, name: str) -> str:
    return os.path.join(build_dir(root), "bin", name)


def built(root: str) -> bool:
    if not os.path.isfile(info_path(root)):
        return False
    need = [binary(root, t) for t in TARGETS if t != "llama"] + \
        [os.path.join(lib_dir(root), "libllama.so")]
    return all(os.path.exists(p) for p in need)


def build(root: str, jobs: int) -> dict[str, Any]:
    bdir = build_dir(root)
    env = build_env(root)
    t0 = time.monotonic()
    flags = list(CMAKE_FLAGS) + [f"-DCMAKE_RUNTIME_OUTPUT_DIRECTORY={bdir}/bin",
                                 f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={bdir}/bin"]
    log(f"configuring {llama_src(root)} -> {bdir}")
    subprocess.run(["nice", "-n", "15", "cmake", "-S", llama_src(root), "-B", bdir,
                    *flags], check=True, env=env)
    log(f"building {', '.join(TARGETS)} (nice -n 15, -j{jobs})")
    subprocess.run(["nice", "-n", "15", "cmake", "--build", bdir, "--config", "Release",
                    f"-j{jobs}", "--target", *TARGETS], check=True, env=env)
    info = {"llama_cpp_python_version": LLAMA_CPP_PYTHON_VERSION,
            "sdist_sha256": SDIST_SHA256, "llama_cpp_commit": vendored_commit(root),
            "llama_cpp_commit_source": "sdist CHANGELOG.md", "cmake_flags": flags,
            "targets": list(TARGETS), "compiler": compiler_version(),
            "build_seconds": round(time.monotonic() - t0, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with open(info_path(root), "w") as f:
        json.dump(info, f, indent=1)
    return info


def ensure_gguf(version: str) -> None:
    """pip installs the PyPI ``gguf`` package at ``version`` when it is missing (a fresh
    machine); an installed different version is left alone (llamacpp_compare.py notes it)."""
    import importlib.metadata
    try:
        importlib.metadata.version("gguf")
    except importlib.metadata.PackageNotFoundError:
        log(f"pip install gguf=={version}")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"gguf=={version}"],
                       check=True)


def ensure_built(root: str = DEFAULT_ROOT, jobs: int = 2, force: bool = False) -> dict[str, Any]:
    """Downloads, unpacks and builds as needed; returns build-info.json's content plus paths."""
    if force or not built(root):
        download(root)
        unpack(root)
        build(root, jobs)
    else:
        log(f"already built: {build_dir(root)}")
    with open(info_path(root)) as f:
        info: dict[str, Any] = json.load(f)
    info.update(root=root, lib_dir=lib_dir(root), bindings_dir=source_dir(root),
                llama_cpp_commit_build_info=build_info_commit(root),
                llama_cpp_commit_full=vendored_git_commit(root),
                quantize=binary(root, "llama-quantize"), bench=binary(root, "llama-bench"),
                simple=binary(root, "llama-simple"))
    return info


# benchmarks/serve.py: llama-server, built on demand in the same build directory with the
# same flags plus the server (the other targets are not rebuilt).
SERVER_TARGET = "llama-server"
SERVER_FLAGS = ("-DLLAMA_BUILD_SERVER=ON",)


def ensure_server(root: str = DEFAULT_ROOT, jobs: int = 2) -> str:
    """Builds ``llama-server`` after :func:`ensure_built` (nice -n 15); returns its path."""
    ensure_built(root, jobs)
    path = binary(root, SERVER_TARGET)
    if os.path.exists(path):
        return path
    bdir = build_dir(root)
    env = build_env(root)
    flags = [f for f in CMAKE_FLAGS if not f.startswith("-DLLAMA_BUILD_SERVER=")]
    flags += list(SERVER_FLAGS) + [f"-DCMAKE_RUNTIME_OUTPUT_DIRECTORY={bdir}/bin",
                                   f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={bdir}/bin"]
    log(f"configuring {bdir} with the server")
    subprocess.run(["nice", "-n", "15", "cmake", "-S", llama_src(root), "-B", bdir, *flags],
                   check=True, env=env)
    log(f"building {SERVER_TARGET} (nice -n 15, -j{jobs})")
    subprocess.run(["nice", "-n", "15", "cmake", "--build", bdir, "--config", "Release",
                    f"-j{jobs}", "--target", SERVER_TARGET], check=True, env=env)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=DEFAULT_ROOT)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--force", action="store_true", help="rebuild even if built")
    ap.add_argument("--server", action="store_true",
                    help="also build llama-server (benchmarks/serve.py)")
    args = ap.parse_args()
    info = ensure_built(args.root, args.jobs, args.force)
    if args.server:
        info["server"] = ensure_server(args.root, args.jobs)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
