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
  }
  return "unknown status";
}

}  // namespace fwa
