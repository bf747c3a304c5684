// Status codes shared by the core and (later) the C ABI. Values are explicit and never
// renumbered: they are part of the ABI.
#pragma once

namespace fwa {

enum class Status : int {
  ok = 0,
  invalid_argument = 1,   // a parameter is out of its documented range
  unsupported_format = 2, // bits/block/scale type the packed layout does not define
  shape_mismatch = 3,     // K/N/M disagree between weight, activations and output
  non_finite = 4,         // NaN or Inf where a finite number is required
  buffer_too_small = 5,   // caller-provided buffer or workspace is smaller than required
  no_kernel = 6,          // no registered kernel variant runs on this CPU (or the forced one)
};

const char* status_string(Status s);

}  // namespace fwa
