// SPDX-License-Identifier: Apache-2.0
// C ABI: signed releases (the trust check itself runs in open_model, capi_model.cpp), the
// verified release of a model and the explicit counter commit.
#include <cstring>
#include <string>

#include "capi/handles.h"
#include "release/release.h"

using fwa_capi::fail;
using fwa_capi::fail_core;
using fwa_capi::guarded;

namespace fwa_capi {

fwa_status read_counter(const fwa_counter* c, fwa::release::Counter* out, const char* fn) {
  const fwa_status s = check_struct(c, sizeof *c, fn);
  if (s != FWA_OK) return s;
  if (c->reserved0 != 0) return fail(FWA_ERR_INVALID_ARGUMENT, "%s: counter->reserved0 must be 0", fn);
  if (c->path && (c->read || c->advance))
    return fail(FWA_ERR_INVALID_ARGUMENT,
                "%s: a counter is either a file (path) or callbacks, not both", fn);
  *out = fwa::release::Counter();
  if (c->path) out->path = std::string(c->path);
  out->read = c->read;
  out->advance = c->advance;
  out->ctx = c->ctx;
  return FWA_OK;
}

}  // namespace fwa_capi

extern "C" {

void fwa_counter_init(fwa_counter* counter) {
  if (!counter) return;
  std::memset(counter, 0, sizeof *counter);
  counter->struct_size = sizeof *counter;
}

void fwa_trust_init(fwa_trust* trust) {
  if (!trust) return;
  std::memset(trust, 0, sizeof *trust);
  trust->struct_size = sizeof *trust;
  trust->root_threshold = 1;
}

void fwa_release_info_init(fwa_release_info* info) {
  if (!info) return;
  std::memset(info, 0, sizeof *info);
  info->struct_size = sizeof *info;
}

fwa_status fwa_model_release_info(const fwa_model* model, fwa_release_info* info) {
  const char* fn = "fwa_model_release_info";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(model, model, fn);
    FWA_CHECK_NOT_NULL(info, fn);
    const fwa_status s = fwa_capi::check_struct(info, sizeof *info, fn);
    if (s != FWA_OK) return s;
    fwa_release_info out;
    fwa_release_info_init(&out);
    if (model->release) {
      const fwa::release::Verdict& v = *model->release;
      out.verified = 1;
      out.security_version = uint64_t(v.security_version);
      out.counter = v.counter;
      out.policy_version = v.policy_version;
      out.n_signers = int32_t(v.signers.size());
      for (const auto& sv : v.signers) out.n_valid_signers += sv.status == fwa::Status::ok;
      out.policy_signed = v.policy_signed ? 1 : 0;
      if (v.rxswin) {  // at most 128 bytes (release::kMaxRxswin)
        out.has_rxswin = 1;
        std::memcpy(out.rxswin, v.rxswin->c_str(), v.rxswin->size() + 1);
      }
    }
    *info = out;
    return FWA_OK;
  });
}

fwa_status fwa_model_commit_security_version(const fwa_model* model, const fwa_counter* counter) {
  const char* fn = "fwa_model_commit_security_version";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(model, model, fn);
    FWA_CHECK_NOT_NULL(counter, fn);
    if (!model->release)
      return fail(FWA_ERR_INVALID_ARGUMENT,
                  "%s: the model was opened without a trust policy: no verified security "
                  "version to commit", fn);
    fwa::release::Counter c;
    const fwa_status s = fwa_capi::read_counter(counter, &c, fn);
    if (s != FWA_OK) return s;
    std::string message;
    const fwa::Status st =
        fwa::release::counter_commit(c, uint64_t(model->release->security_version), &message);
    if (st != fwa::Status::ok) return fail_core(st, message);
    return FWA_OK;
  });
}

fwa_status fwa_model_commit_policy_version(const fwa_model* model, const fwa_counter* counter) {
  const char* fn = "fwa_model_commit_policy_version";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(model, model, fn);
    FWA_CHECK_NOT_NULL(counter, fn);
    if (!model->release || !model->release->policy_signed)
      return fail(FWA_ERR_INVALID_ARGUMENT,
                  "%s: the model was opened without a signed trust policy (root keys): no "
                  "verified policy version to commit", fn);
    fwa::release::Counter c;
    const fwa_status s = fwa_capi::read_counter(counter, &c, fn);
    if (s != FWA_OK) return s;
    std::string message;
    const fwa::Status st =
        fwa::release::counter_commit(c, uint64_t(model->release->policy_version), &message);
    if (st != fwa::Status::ok) return fail_core(st, message);
    return FWA_OK;
  });
}

fwa_status fwa_counter_file_init(const char* path, uint64_t value) {
  const char* fn = "fwa_counter_file_init";
  return guarded(fn, [&] {
    FWA_CHECK_NOT_NULL(path, fn);
    std::string message;
    const fwa::Status st = fwa::release::file_counter_init(path, value, &message);
    if (st != fwa::Status::ok) return fail_core(st, message);
    return FWA_OK;
  });
}

}  // extern "C"
