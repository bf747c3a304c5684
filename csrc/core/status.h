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
  // Signed releases (csrc/release/release.h, docs/releases.md).
  policy_malformed = 50,      // the trust policy breaks a rule of its format
  policy_unsatisfiable = 51,  // a required role its own non-revoked keys cannot meet
  signature_malformed = 52,   // the signature file, a bundle, DSSE envelope or statement
  subject_mismatch = 53,      // the statement is about another artifact
  signature_invalid = 54,     // a trusted key's signature does not verify
  untrusted = 55,             // a required role lacks valid signatures of trusted keys
  revoked = 56,               // ... and revoked keys would have met it
  rollback = 57,              // security version below the policy's minimum or the counter
  counter_unavailable = 58,   // the monotonic counter cannot be read (never taken as 0)
  no_crypto = 59,             // a trust policy in a build without crypto or callback
};

const char* status_string(Status s);

}  // namespace fwa
