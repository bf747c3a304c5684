/* SPDX-License-Identifier: Apache-2.0 */
// The C++ exception the bindings throw for a failed artifact status; the translator that
// bind_artifact.cpp registers turns it into fwassist._core.ArtifactFailure(status, message)
// (a ValueError subclass), which the Python layer maps to fwassist.ArtifactError.
#pragma once
#include <string>

#include "core/status.h"

namespace fwa_python {

struct ArtifactFailure {
  fwa::Status status;
  std::string message;
};

}  // namespace fwa_python
