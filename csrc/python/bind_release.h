/* SPDX-License-Identifier: Apache-2.0 */
// Signed releases for the Python bindings: NativeModel.verify_release / commit_security_version
// (bind_model.cpp) run these. Failures raise fwassist._core.ReleaseFailure(status, message),
// which fwassist.runtime maps to fwassist.ReleaseError.
#pragma once
#include <nanobind/nanobind.h>

#include <cstdint>
#include <optional>
#include <string>

#include "model/model.h"

namespace fwa_python {

struct ReleaseFailure {
  fwa::Status status;
  std::string message;
};

// The counter: a file store path, or a Python object with read() -> int and advance(int).
struct PyCounter {
  std::optional<std::string> path;
  nanobind::object obj;
};

// Verifies the model's release (release::verify, GIL released; a Python counter's read() is
// called with the GIL held). verifier: None for the built-in crypto, or a Python callable
// (algorithm, spki_der, message, signature) -> bool used as release::VerifyFn. Returns (security_version, rxswin or None, policy_version,
// counter, [(keyid, role or None, status)]).
nanobind::tuple verify_release(const fwa::Model& model, const nanobind::bytes& policy,
                               const nanobind::bytes& signatures, const PyCounter& counter,
                               const nanobind::object& verifier, int64_t* security_version);
// Raises the counter to security_version (never lowers it).
void commit_security_version(int64_t security_version, const PyCounter& counter);

void bind_release(nanobind::module_& m);

}  // namespace fwa_python
