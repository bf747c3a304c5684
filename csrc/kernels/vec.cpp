// SPDX-License-Identifier: Apache-2.0
#include "kernels/vec.h"

#include <cstring>

#include "cpu/cpu_features.h"

namespace fwa {

extern const VecOps kVecOpsRef;
#ifdef FWA_HAVE_AVX2
extern const VecOps kVecOpsAvx2;
#endif
#ifdef FWA_HAVE_AVX512
extern const VecOps kVecOpsAvx512;
#endif

namespace {

// Best first, with the features each needs.
struct Entry {
  const VecOps* ops;
  uint64_t needs;
};
const Entry kEntries[] = {
#ifdef FWA_HAVE_AVX512
    {&kVecOpsAvx512, kAVX512F | kAVX512BW | kAVX512VL | kAVX2},
#endif
#ifdef FWA_HAVE_AVX2
    {&kVecOpsAvx2, kAVX2},
#endif
    {&kVecOpsRef, 0},
};

bool usable(const Entry& e) { return (cpu_info().features & e.needs) == e.needs; }

}  // namespace

const VecOps& vec_ops() {
  static const VecOps* best = [] {
    for (const Entry& e : kEntries)
      if (usable(e)) return e.ops;
    return &kVecOpsRef;
  }();
  return *best;
}

const VecOps* vec_ops_variant(const char* name) {
  for (const Entry& e : kEntries)
    if (std::strcmp(e.ops->name, name) == 0) return usable(e) ? e.ops : nullptr;
  return nullptr;
}

}  // namespace fwa
