# SPDX-License-Identifier: Apache-2.0
# fwassist/_build_info.json in the Python package: the compiler, C++ runtime and nanobind that
# built fwassist._core, for the wheel's SBOM (scripts/wheel_sbom.py). Included from the top
# CMakeLists.txt after csrc/, so csrc/python has found nanobind. FWA_TOOLCHAIN and
# FWA_GLIBC_TARGET are set by scripts/build_wheels.sh (zig and the glibc the wheel targets).
include(CheckCXXSymbolExists)
check_cxx_symbol_exists(_LIBCPP_VERSION cstddef FWA_HAVE_LIBCPP)
check_cxx_symbol_exists(__GLIBCXX__ cstddef FWA_HAVE_LIBSTDCXX)
if(FWA_HAVE_LIBCPP)
  set(fwa_cxx_runtime libc++)
elseif(FWA_HAVE_LIBSTDCXX)
  set(fwa_cxx_runtime libstdc++)
else()
  set(fwa_cxx_runtime unknown)
endif()
get_directory_property(fwa_nanobind_version DIRECTORY ${PROJECT_SOURCE_DIR}/csrc/python
                       DEFINITION nanobind_VERSION)
set(FWA_TOOLCHAIN "" CACHE STRING "The toolchain that built the package (build_wheels.sh)")
set(FWA_GLIBC_TARGET "" CACHE STRING "The glibc version the build targets (build_wheels.sh)")
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/_build_info.json "{
  \"fwassist_version\": \"${PROJECT_VERSION}\",
  \"target_arch\": \"${CMAKE_SYSTEM_PROCESSOR}\",
  \"compiler\": {\"id\": \"${CMAKE_CXX_COMPILER_ID}\", \"version\": \"${CMAKE_CXX_COMPILER_VERSION}\"},
  \"toolchain\": \"${FWA_TOOLCHAIN}\",
  \"glibc_target\": \"${FWA_GLIBC_TARGET}\",
  \"cxx_runtime\": \"${fwa_cxx_runtime}\",
  \"nanobind_version\": \"${fwa_nanobind_version}\",
  \"nanobind_linkage\": \"static\"
}
")
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/_build_info.json DESTINATION fwassist COMPONENT python)
