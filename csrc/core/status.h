/* SPDX-License-Identifier: Apache-2.0 */
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
  // Artifact reading and verification (docs/artifact-format.md).
  io_error = 10,            // the file cannot be opened, sized, mapped or read
  truncated = 11,           // shorter than the header or than its declared length
  bad_magic = 12,           // not a .fwa file
  unsupported_version = 13, // format version this reader does not implement
  malformed = 14,           // a field breaks a rule of the spec (header, manifest, table)
  cap_exceeded = 15,        // a length or count above the spec's caps
  trailing_bytes = 16,      // bytes after the declared end of the file
  out_of_bounds = 17,       // a region outside the data region
  overlap = 18,             // two regions share bytes
  nonzero_padding = 19,     // a byte outside every declared region is not zero
  digest_mismatch = 20,     // a sha256 differs (the manifest, a tensor or an expert block)
  pin_mismatch = 21,        // the root digest is not the expected pin
  incompatible = 22,        // requires something this build does not implement
};

const char* status_string(Status s);

}  // namespace fwa
