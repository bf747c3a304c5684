/* SPDX-License-Identifier: Apache-2.0 */
// Signed releases for the Python bindings: NativeModel.verify_release / commit_security_version
// (bind_model.cpp) run these. Failures raise fwassist._core.ReleaseFailure(status, message),
// which fwassist.runtime maps to fwassist.ReleaseError.
#pragma once
#include <nanobind/nanobind.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

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

// A signed policy's inputs: root keys (PEM), threshold, the policy's .sig bytes (None: an
// unsigned policy) and the policy counter. No root keys: the policy is trusted as given.
struct PyPolicySignature {
  std::vector<std::string> root_keys;
  int64_t root_threshold = 1;
  nanobind::object signatures;  // bytes or None
  PyCounter counter;
};

// Verifies the model's release (release::verify, GIL released; a Python counter's read() is
// called with the GIL held). verifier: None for the built-in crypto, or a Python callable
// (algorithm, spki_der, message, signature) -> bool used as release::VerifyFn. Returns
// (security_version, rxswin or None, policy_version, counter, [(keyid, role or None, status
// word)], policy_signed, policy_counter); *policy_version is set when the policy was signed.
nanobind::tuple verify_release(const fwa::Model& model, const nanobind::bytes& policy,
                               const nanobind::bytes& signatures, const PyCounter& counter,
                               const nanobind::object& verifier,
                               const PyPolicySignature& policy_sig, int64_t* security_version,
                               std::optional<int64_t>* policy_version);
// Raises the counter to security_version (never lowers it).
void commit_security_version(int64_t security_version, const PyCounter& counter);

void bind_release(nanobind::module_& m);

}  // namespace fwa_python
