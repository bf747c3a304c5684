# SPDX-License-Identifier: Apache-2.0
# Cross build for 64-bit ARM Linux with Debian's g++-aarch64-linux-gnu; tests run under
# qemu-aarch64 (user mode) with the cross sysroot. Pick the emulated CPU with QEMU_CPU.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64;-L;/usr/aarch64-linux-gnu)
# Target libraries from Debian's multiarch packages (`dpkg --add-architecture arm64` and
# `apt-get install libssl-dev:arm64`, for FWA_WITH_OPENSSL) live in /usr/lib/aarch64-linux-gnu
# and /usr/include/aarch64-linux-gnu, outside the cross sysroot. The cross compiler already
# searches them after the sysroot (its own headers and libraries come first); "/" as a second
# find root lets CMake's find_package see them too (lib/aarch64-linux-gnu only: the
# architecture directory keeps the host's x86_64 libraries out), and pkg-config (which
# FindOpenSSL asks first) reads the target's .pc files, not the host's.
list(APPEND CMAKE_FIND_ROOT_PATH /)
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig)
