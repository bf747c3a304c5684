// SPDX-License-Identifier: Apache-2.0
// Signed releases: the ReleaseFailure exception, release verification and counter commits on a
// loaded model, and the file counter store (_core.counter_file_init / counter_file_read).
#include "bind_release.h"

#include <nanobind/stl/string.h>

#include <string>

#include "artifact/reader.h"
#include "release/release.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace fwa_python {
namespace {

[[noreturn]] void raise(fwa::Status st, std::string message) {
  throw ReleaseFailure{st, std::move(message)};
}

// The context of a Python counter's callbacks: the object and the first error it raised.
struct PyCounterCtx {
  nb::handle obj;
  std::string error;
};

int py_read(void* ctx, uint64_t* value) {
  auto* c = static_cast<PyCounterCtx*>(ctx);
  nb::gil_scoped_acquire gil;
  try {
    const nb::object v = c->obj.attr("read")();
    const int64_t x = nb::cast<int64_t>(v);
    if (x < 0) {
      c->error = "read() returned a negative value";
      return 1;
    }
    *value = uint64_t(x);
    return 0;
  } catch (const std::exception& e) {
    c->error = e.what();
    return 1;
  }
}

int py_advance(void* ctx, uint64_t value) {
  auto* c = static_cast<PyCounterCtx*>(ctx);
  nb::gil_scoped_acquire gil;
  try {
    c->obj.attr("advance")(value);
    return 0;
  } catch (const std::exception& e) {
    c->error = e.what();
    return 1;
  }
}

fwa::release::Counter make_counter(const PyCounter& pc, PyCounterCtx* ctx) {
  fwa::release::Counter c;
  c.path = pc.path;
  if (pc.obj.is_valid() && !pc.obj.is_none()) {
    ctx->obj = pc.obj;
    c.read = py_read;
    c.advance = py_advance;
    c.ctx = ctx;
  }
  return c;
}

std::string with_cause(std::string message, const PyCounterCtx& ctx) {
  if (!ctx.error.empty()) message += ": " + ctx.error;
  return message;
}

// A Python signature verifier (fwassist._trust: `cryptography` in wheels built without
// OpenSSL): verifier(algorithm, spki_der, message, signature) -> bool. An exception is a
// failure of the verifier (not "invalid"); its text is kept for the message.
struct PyVerifierCtx {
  nb::handle fn;
  std::string error;
};

int py_verify(void* ctx, int32_t algorithm, const uint8_t* spki, size_t spki_len,
              const uint8_t* msg, size_t msg_len, const uint8_t* sig, size_t sig_len) {
  auto* c = static_cast<PyVerifierCtx*>(ctx);
  nb::gil_scoped_acquire gil;
  try {
    const nb::object r = c->fn(algorithm, nb::bytes(spki, spki_len), nb::bytes(msg, msg_len),
                               nb::bytes(sig, sig_len));
    return nb::cast<bool>(r) ? 1 : 0;
  } catch (const std::exception& e) {
    c->error = e.what();
    return -1;
  }
}

}  // namespace

nb::tuple verify_release(const fwa::Model& model, const nb::bytes& policy,
                         const nb::bytes& signatures, const PyCounter& counter,
                         const nb::object& verifier, const PyPolicySignature& policy_sig,
                         int64_t* security_version, std::optional<int64_t>* policy_version) {
  PyCounterCtx ctx, pctx;
  PyVerifierCtx vctx;
  fwa::release::TrustInputs in;
  in.policy = static_cast<const uint8_t*>(policy.data());
  in.policy_size = policy.size();
  in.signatures = static_cast<const uint8_t*>(signatures.data());
  in.signatures_size = signatures.size();
  in.counter = make_counter(counter, &ctx);
  for (const std::string& k : policy_sig.root_keys) in.root_keys.emplace_back(k);
  in.root_threshold = policy_sig.root_threshold;
  nb::bytes psig;
  if (policy_sig.signatures.is_valid() && !policy_sig.signatures.is_none()) {
    psig = nb::cast<nb::bytes>(policy_sig.signatures);
    in.policy_signatures = static_cast<const uint8_t*>(psig.data());
    in.policy_signatures_size = psig.size();
  }
  in.policy_counter = make_counter(policy_sig.counter, &pctx);
  if (verifier.is_valid() && !verifier.is_none()) {
    vctx.fn = verifier;
    in.verify = py_verify;
    in.verify_ctx = &vctx;
  }
  fwa::release::Verdict v;
  std::string msg;
  fwa::Status st;
  {
    nb::gil_scoped_release nogil;
    st = fwa::release::verify(model.artifact(), in, &v, &msg);
  }
  if (st != fwa::Status::ok) {
    if (!vctx.error.empty()) msg += ": " + vctx.error;
    raise(st, with_cause(with_cause(msg, ctx), pctx));
  }
  *security_version = v.security_version;
  if (v.policy_signed) *policy_version = v.policy_version;
  nb::list signers;
  for (const auto& s : v.signers)
    signers.append(nb::make_tuple(
        s.keyid, s.role.empty() ? nb::object(nb::none()) : nb::object(nb::str(s.role.c_str())),
        fwa::release::signer_status_word(s.status)));
  return nb::make_tuple(v.security_version,
                        v.rxswin ? nb::object(nb::str(v.rxswin->c_str())) : nb::none(),
                        v.policy_version, v.counter, signers, v.policy_signed,
                        v.policy_counter);
}

// Raises the counter to `version` (never lowers it): the security version or the policy version.
void commit_security_version(int64_t security_version, const PyCounter& counter) {
  PyCounterCtx ctx;
  const fwa::release::Counter c = make_counter(counter, &ctx);
  std::string msg;
  fwa::Status st;
  {
    nb::gil_scoped_release nogil;
    st = fwa::release::counter_commit(c, uint64_t(security_version), &msg);
  }
  if (st != fwa::Status::ok) raise(st, with_cause(msg, ctx));
}

void bind_release(nb::module_& m) {
  static nb::handle failure_type = PyErr_NewExceptionWithDoc(
      "fwassist._core.ReleaseFailure",
      "A signed release failed to verify: args are (status name, message).", PyExc_ValueError,
      nullptr);
  if (!failure_type) throw nb::python_error();
  m.attr("ReleaseFailure") = failure_type;
  nb::register_exception_translator(
      [](const std::exception_ptr& p, void* payload) {
        try {
          std::rethrow_exception(p);
        } catch (const ReleaseFailure& e) {
          PyObject* msg =
              PyUnicode_DecodeUTF8(e.message.data(), Py_ssize_t(e.message.size()), "replace");
          PyObject* args = msg ? Py_BuildValue("(sN)", fwa::status_name(e.status), msg) : nullptr;
          if (args) {
            PyErr_SetObject(static_cast<PyObject*>(payload), args);
            Py_DECREF(args);
          }
        }
      },
      failure_type.ptr());
  m.def("have_release_crypto", &fwa::release::have_crypto,
        "True when this build verifies release signatures itself (OpenSSL libcrypto).");
  m.def(
      "counter_file_init",
      [](const std::string& path, int64_t value) {
        if (value < 0) throw nb::value_error("a counter value is >= 0");
        std::string msg;
        const fwa::Status st = fwa::release::file_counter_init(path, uint64_t(value), &msg);
        if (st != fwa::Status::ok) raise(st, msg);
      },
      "path"_a, "value"_a);
  m.def(
      "counter_file_read",
      [](const std::string& path) {
        uint64_t v = 0;
        std::string msg;
        const fwa::Status st = fwa::release::file_counter_read(path, &v, &msg);
        if (st != fwa::Status::ok) raise(st, msg);
        return v;
      },
      "path"_a);
}

}  // namespace fwa_python
