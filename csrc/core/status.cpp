// SPDX-License-Identifier: Apache-2.0
#include "core/status.h"

namespace fwa {

const char* status_string(Status s) {
  switch (s) {
    case Status::ok: return "ok";
    case Status::invalid_argument: return "invalid argument";
    case Status::unsupported_format: return "unsupported quantization format";
    case Status::shape_mismatch: return "shape mismatch";
    case Status::non_finite: return "non-finite value (NaN or Inf)";
    case Status::buffer_too_small: return "buffer too small";
    case Status::no_kernel: return "no kernel variant available for this CPU";
    case Status::io_error: return "I/O error";
    case Status::truncated: return "truncated file";
    case Status::bad_magic: return "bad magic: not a fwassist artifact";
    case Status::unsupported_version: return "unsupported format version";
    case Status::malformed: return "malformed artifact";
    case Status::cap_exceeded: return "a size or count exceeds the format's caps";
    case Status::trailing_bytes: return "trailing bytes after the declared end";
    case Status::out_of_bounds: return "region out of bounds";
    case Status::overlap: return "overlapping regions";
    case Status::nonzero_padding: return "non-zero padding";
    case Status::digest_mismatch: return "sha256 digest mismatch";
    case Status::pin_mismatch: return "root digest does not match the pin";
    case Status::incompatible: return "artifact requires features this build lacks";
    case Status::policy_malformed: return "malformed trust policy";
    case Status::policy_unsatisfiable: return "trust policy cannot be met by its own keys";
    case Status::signature_malformed: return "malformed release signature";
    case Status::subject_mismatch: return "release statement is about another artifact";
    case Status::signature_invalid: return "a trusted key's signature does not verify";
    case Status::untrusted: return "required signatures missing";
    case Status::revoked: return "required signatures come from revoked keys";
    case Status::rollback: return "security version lower than allowed";
    case Status::counter_unavailable: return "monotonic counter unavailable";
    case Status::no_crypto: return "no crypto backend for a trust policy";
  }
  return "unknown status";
}

}  // namespace fwa
