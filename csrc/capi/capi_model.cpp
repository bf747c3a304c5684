// SPDX-License-Identifier: Apache-2.0
// C ABI: library information, models (open, identity, manifest sections) and the tokenizer.
#include <cstddef>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "artifact/json.h"
#include "artifact/reader.h"
#include "capi/handles.h"
#include "cpu/cpu_features.h"
#include "kernels/registry.h"

using fwa_capi::fail;
using fwa_capi::fail_core;
using fwa_capi::guarded;

static_assert(int(fwa::Protection::none) == FWA_PROTECTION_NONE &&
                  int(fwa::Protection::copy) == FWA_PROTECTION_COPY &&
                  int(fwa::Protection::caller_memory) == FWA_PROTECTION_CALLER_MEMORY &&
                  int(fwa::Protection::fs_verity) == FWA_PROTECTION_FS_VERITY &&
                  int(fwa::Protection::immutable) == FWA_PROTECTION_IMMUTABLE &&
                  int(fwa::Protection::read_only_mount) == FWA_PROTECTION_READ_ONLY_MOUNT &&
                  int(fwa::Protection::memfd_sealed) == FWA_PROTECTION_MEMFD_SEALED,
              "fwa_protection mirrors fwa::Protection");

namespace {

const fwa::Model& model_of(const fwa_model* m) { return *m->model; }

// Parses the model's manifest (mapped, verified bytes) for the sections read on request.
fwa::Status parse_manifest(const fwa::Model& m, fwa::json::Document* doc, std::string* message) {
  const fwa::Artifact& a = m.artifact();
  return doc->parse(a.manifest_data(), a.manifest_size(), fwa::json::Limits(), message);
}

// The size of fwa_open_options before `trust` was appended: still accepted (no release check).
constexpr size_t kOpenOptionsV1 = offsetof(fwa_open_options, trust);

fwa_status read_open_options(const fwa_open_options* options, fwa::OpenOptions* o,
                             const fwa_trust** trust, const char* fn) {
  *trust = nullptr;
  if (!options) return FWA_OK;
  uint32_t size;
  std::memcpy(&size, options, sizeof size);
  if (size != kOpenOptionsV1) {
    const fwa_status st = fwa_capi::check_struct(options, sizeof *options, fn);
    if (st != FWA_OK) return st;
    *trust = options->trust;
  }
  const uint32_t known =
      FWA_OPEN_LAZY_VERIFY | FWA_OPEN_COPY | FWA_OPEN_STRICT | FWA_OPEN_PRIVATE_WEIGHTS;
  if (options->flags & ~known)
    return fail(FWA_ERR_INVALID_ARGUMENT, "%s: unknown flags 0x%x", fn,
                unsigned(options->flags & ~known));
  o->lazy = (options->flags & FWA_OPEN_LAZY_VERIFY) != 0;
  o->copy = (options->flags & FWA_OPEN_COPY) != 0;
  o->strict = (options->flags & FWA_OPEN_STRICT) != 0;
  if (options->pin) {  // NULL is "no pin"; "" is a malformed pin like any other text
    fwa::Sha256Digest digest;
    std::string message;
    if (fwa::parse_pin(options->pin, &digest, &message) != fwa::Status::ok)
      return fail(FWA_ERR_INVALID_ARGUMENT, "%s: %s", fn, message.c_str());
    o->pin = options->pin;
  }
  return FWA_OK;
}

// The size of fwa_trust before the signed-policy fields were appended: still accepted (the
// policy is trusted as given).
constexpr size_t kTrustV1 = offsetof(fwa_trust, root_keys);

// Checks the release of the verified artifact `a` against *trust (release::verify's order).
fwa_status verify_release(const fwa::Artifact& a, const fwa_trust* trust,
                          fwa::release::Verdict* verdict, const char* fn) {
  uint32_t size;
  std::memcpy(&size, trust, sizeof size);
  const bool v1 = size == kTrustV1;
  fwa_status s = v1 ? FWA_OK : fwa_capi::check_struct(trust, sizeof *trust, fn);
  if (s != FWA_OK) return s;
  if (trust->reserved0 != 0)
    return fail(FWA_ERR_INVALID_ARGUMENT, "%s: trust->reserved0 must be 0", fn);
  if (!trust->policy) return fail(FWA_ERR_NULL_ARGUMENT, "%s: trust->policy is NULL", fn);
  if (!trust->signatures)
    return fail(FWA_ERR_NULL_ARGUMENT, "%s: trust->signatures is NULL", fn);
  fwa::release::TrustInputs in;
  in.policy = static_cast<const uint8_t*>(trust->policy);
  in.policy_size = trust->policy_size;
  in.signatures = static_cast<const uint8_t*>(trust->signatures);
  in.signatures_size = trust->signatures_size;
  in.verify = trust->verify;
  in.verify_ctx = trust->verify_ctx;
  if (trust->counter) {
    s = fwa_capi::read_counter(trust->counter, &in.counter, fn);
    if (s != FWA_OK) return s;
  }
  if (!v1) {
    if (trust->reserved1 != 0)
      return fail(FWA_ERR_INVALID_ARGUMENT, "%s: trust->reserved1 must be 0", fn);
    if (trust->n_root_keys && !trust->root_keys)
      return fail(FWA_ERR_NULL_ARGUMENT, "%s: trust->root_keys is NULL", fn);
    if (trust->n_root_keys > fwa::release::kMaxRootKeys)
      return fail(FWA_ERR_INVALID_ARGUMENT, "%s: %zu root keys, at most %zu", fn,
                  trust->n_root_keys, fwa::release::kMaxRootKeys);
    for (size_t i = 0; i < trust->n_root_keys; ++i) {
      if (!trust->root_keys[i])
        return fail(FWA_ERR_NULL_ARGUMENT, "%s: trust->root_keys[%zu] is NULL", fn, i);
      in.root_keys.emplace_back(trust->root_keys[i]);
    }
    in.root_threshold = trust->root_threshold;
    in.policy_signatures = static_cast<const uint8_t*>(trust->policy_signatures);
    in.policy_signatures_size = trust->policy_signatures_size;
    if (trust->policy_counter) {
      s = fwa_capi::read_counter(trust->policy_counter, &in.policy_counter, fn);
      if (s != FWA_OK) return s;
    }
  }
  std::string message;
  const fwa::Status st = fwa::release::verify(a, in, verdict, &message);
  if (st != fwa::Status::ok) return fail_core(st, message);
  return FWA_OK;
}

// Reads the options, opens the artifact with open(options, &artifact, &message), checks its
// release when a trust policy is given, binds the model and registers its handle.
template <class Open>
fwa_status open_model(const fwa_open_options* options, fwa_model** model, const char* fn,
                      Open&& open) {
  FWA_CHECK_NOT_NULL(model, fn);
  fwa::OpenOptions o;
  const fwa_trust* trust = nullptr;
  const fwa_status s = read_open_options(options, &o, &trust, fn);
  if (s != FWA_OK) return s;
  std::unique_ptr<fwa::Artifact> a;
  std::string message;
  fwa::Status st = open(o, &a, &message);
  if (st != fwa::Status::ok) return fail_core(st, message);
  std::optional<fwa::release::Verdict> verdict;
  if (trust) {
    const fwa_status vs = verify_release(*a, trust, &verdict.emplace(), fn);
    if (vs != FWA_OK) return vs;
  }
  std::shared_ptr<fwa::Model> m;
  const bool private_dense = options && (options->flags & FWA_OPEN_PRIVATE_WEIGHTS) != 0;
  st = fwa::Model::from_artifact(std::move(a), &m, &message, private_dense);
  if (st != fwa::Status::ok) return fail_core(st, message);
  std::unique_ptr<fwa_model> h(new fwa_model{std::move(m), std::move(verdict)});
  const fwa_status registered = fwa_capi::register_handle(h.get(), model, fn);
  if (registered == FWA_OK) h.release();  // the table owns it now
  return registered;
}

}  // namespace

extern "C" {

uint32_t fwa_version_number(void) { return FWA_VERSION_NUMBER; }
const char* fwa_version_string(void) { return FWA_VERSION_STRING; }
uint32_t fwa_abi_version(void) { return FWA_ABI_VERSION; }

const char* fwa_status_string(fwa_status status) {
  switch (status) {
    case FWA_ERR_NULL_ARGUMENT: return "null_argument";
    case FWA_ERR_BAD_HANDLE: return "bad_handle";
    case FWA_ERR_BAD_STRUCT_SIZE: return "bad_struct_size";
    case FWA_ERR_BAD_TOKEN: return "bad_token";
    case FWA_ERR_CONTEXT_FULL: return "context_full";
    case FWA_ERR_NO_TOKENIZER: return "no_tokenizer";
    case FWA_ERR_OUT_OF_MEMORY: return "out_of_memory";
    case FWA_ERR_NOT_FOUND: return "not_found";
    case FWA_ERR_NO_LOGITS: return "no_logits";
    case FWA_ERR_CANCELLED: return "cancelled";
    case FWA_ERR_UNSUPPORTED: return "unsupported";
    case FWA_ERR_INTERNAL: return "internal";
    default: break;
  }
  if ((int(status) >= 0 && int(status) <= int(fwa::Status::incompatible)) ||
      (int(status) >= int(fwa::Status::policy_malformed) &&
       int(status) <= int(fwa::Status::no_crypto))) {
    const char* name = fwa::status_name(fwa::Status(int(status)));
    if (std::strcmp(name, "unknown") != 0) return name;
  }
  return "unknown_status";
}

fwa_status fwa_cpu_features(char* buf, size_t cap, size_t* needed) {
  return guarded("fwa_cpu_features", [&] {
    const std::string s = fwa::cpu_feature_names(fwa::cpu_info().features);
    return fwa_capi::write_text(s.data(), s.size(), buf, cap, needed, "fwa_cpu_features");
  });
}

fwa_status fwa_kernel_choices(char* buf, size_t cap, size_t* needed) {
  return guarded("fwa_kernel_choices", [&] {
    std::string s;
    for (int op = 0; op < fwa::kNumMatmulOps; ++op) {
      if (op) s += ',';
      s += fwa::matmul_op_name(fwa::MatmulOp(op));
      s += '=';
      const char* v = fwa::select_kernel(fwa::MatmulOp(op)).variant;
      s += v ? v : "none";
    }
    return fwa_capi::write_text(s.data(), s.size(), buf, cap, needed, "fwa_kernel_choices");
  });
}

void fwa_open_options_init(fwa_open_options* options) {
  if (!options) return;
  std::memset(options, 0, sizeof *options);
  options->struct_size = sizeof *options;
}

fwa_status fwa_model_open_file(const char* path, const fwa_open_options* options,
                               fwa_model** model) {
  const char* fn = "fwa_model_open_file";
  return guarded(fn, [&] {
    FWA_CHECK_NOT_NULL(path, fn);
    return open_model(options, model, fn, [&](const fwa::OpenOptions& o, auto* a, auto* msg) {
      return fwa::Artifact::open_file(path, o, a, msg);
    });
  });
}

fwa_status fwa_model_open_memory(const void* data, size_t size, const fwa_open_options* options,
                                 fwa_model** model) {
  const char* fn = "fwa_model_open_memory";
  return guarded(fn, [&] {
    FWA_CHECK_NOT_NULL(data, fn);
    return open_model(options, model, fn, [&](const fwa::OpenOptions& o, auto* a, auto* msg) {
      return fwa::Artifact::open_memory(data, size, o, a, msg);
    });
  });
}

void fwa_model_free(fwa_model* model) {
  // Not a live model handle (NULL, freed, forged): nothing to delete. The weights stay
  // mapped while a session still holds the model.
  delete fwa_capi::unregister_handle(model);
}

void fwa_model_info_init(fwa_model_info* info) {
  if (!info) return;
  std::memset(info, 0, sizeof *info);
  info->struct_size = sizeof *info;
}

fwa_status fwa_model_get_info(const fwa_model* model, fwa_model_info* info) {
  const char* fn = "fwa_model_get_info";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(model, model, fn);
    FWA_CHECK_NOT_NULL(info, fn);
    fwa_status s = fwa_capi::check_struct(info, sizeof *info, fn);
    if (s != FWA_OK) return s;
    const fwa::Model& m = model_of(model);
    fwa::json::Document doc;
    std::string message;
    const fwa::Status st = parse_manifest(m, &doc, &message);
    if (st != fwa::Status::ok) return fail_core(st, message);
    fwa_model_info out;
    fwa_model_info_init(&out);
    const fwa::json::Value version = doc.root().find("format_version");
    int64_t major = 0, minor = 0;
    version.first().get_int(&major);
    version.first().next().get_int(&minor);
    out.format_version_major = uint32_t(major);
    out.format_version_minor = uint32_t(minor);
    out.has_tokenizer = m.has_tokenizer() ? 1 : 0;
    const std::string pin = m.pin();
    std::memcpy(out.pin, pin.c_str(), pin.size() + 1);  // 71 bytes + NUL
    const fwa::ModelConfig& c = m.config();
    out.vocab_size = c.vocab_size;
    out.hidden_size = c.hidden_size;
    out.num_layers = c.num_layers;
    out.num_heads = c.num_heads;
    out.num_kv_heads = c.num_kv_heads;
    out.head_dim = c.head_dim;
    out.num_experts = c.num_experts;
    out.experts_per_token = c.experts_per_tok;
    out.moe_intermediate_size = c.moe_intermediate_size;
    out.intermediate_size = c.intermediate_size;
    out.max_position_embeddings = c.max_position_embeddings;
    out.weight_bytes = int64_t(m.artifact().data_length());
    *info = out;
    return FWA_OK;
  });
}

fwa_status fwa_model_protection(const fwa_model* model, int32_t* protection) {
  const char* fn = "fwa_model_protection";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(model, model, fn);
    FWA_CHECK_NOT_NULL(protection, fn);
    *protection = int32_t(model_of(model).protection());  // the values of fwa::Protection
    return FWA_OK;
  });
}

const char* fwa_protection_string(int32_t protection) {
  if (protection < 0 || protection > int32_t(fwa::Protection::memfd_sealed)) return "unknown";
  return fwa::protection_name(fwa::Protection(protection));
}

fwa_status fwa_model_manifest_json(const fwa_model* model, const char* section, char* buf,
                                   size_t cap, size_t* needed) {
  const char* fn = "fwa_model_manifest_json";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(model, model, fn);
    FWA_CHECK_NOT_NULL(section, fn);
    FWA_CHECK_NOT_NULL(needed, fn);
    fwa::json::Document doc;
    std::string message;
    const fwa::Status st = parse_manifest(model_of(model), &doc, &message);
    if (st != fwa::Status::ok) return fail_core(st, message);
    const fwa::json::Value v = doc.root().find(section);
    if (!v.valid())
      return fail(FWA_ERR_NOT_FOUND, "%s: the manifest has no section \"%s\"", fn, section);
    const std::string_view raw = v.raw();
    return fwa_capi::write_text(raw.data(), raw.size(), buf, cap, needed, fn);
  });
}

fwa_status fwa_model_eos_ids(const fwa_model* model, int32_t* ids, size_t cap, size_t* needed) {
  const char* fn = "fwa_model_eos_ids";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(model, model, fn);
    FWA_CHECK_NOT_NULL(needed, fn);
    const std::vector<int32_t>& eos = model_of(model).eos_ids();
    *needed = eos.size();
    if (eos.size() > cap || (!ids && !eos.empty()))
      return fail(FWA_ERR_BUFFER_TOO_SMALL, "%s: %zu ids do not fit in a buffer of %zu", fn,
                  eos.size(), ids ? cap : size_t(0));
    if (!eos.empty()) std::memcpy(ids, eos.data(), eos.size() * sizeof(int32_t));
    return FWA_OK;
  });
}

fwa_status fwa_tokenize(const fwa_model* model, const char* text, size_t text_len,
                        int32_t* ids, size_t cap, size_t* needed) {
  const char* fn = "fwa_tokenize";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(model, model, fn);
    FWA_CHECK_NOT_NULL(needed, fn);
    if (!text && text_len) return fail(FWA_ERR_NULL_ARGUMENT, "%s: text is NULL", fn);
    const fwa::Model& m = model_of(model);
    if (!m.has_tokenizer())
      return fail(FWA_ERR_NO_TOKENIZER, "%s: the artifact carries no tokenizer", fn);
    std::vector<int32_t> out;
    std::string message;
    const fwa::Status st = m.encode(std::string_view(text ? text : "", text_len), &out, &message);
    if (st != fwa::Status::ok) return fail_core(st, message);
    *needed = out.size();
    if (out.size() > cap || (!ids && !out.empty()))
      return fail(FWA_ERR_BUFFER_TOO_SMALL, "%s: %zu ids do not fit in a buffer of %zu", fn,
                  out.size(), ids ? cap : size_t(0));
    if (!out.empty()) std::memcpy(ids, out.data(), out.size() * sizeof(int32_t));
    return FWA_OK;
  });
}

fwa_status fwa_detokenize(const fwa_model* model, const int32_t* ids, size_t n_ids,
                          uint32_t flags, char* buf, size_t cap, size_t* needed) {
  const char* fn = "fwa_detokenize";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(model, model, fn);
    FWA_CHECK_NOT_NULL(needed, fn);
    if (!ids && n_ids) return fail(FWA_ERR_NULL_ARGUMENT, "%s: ids is NULL", fn);
    if (flags & ~uint32_t(FWA_DETOKENIZE_SKIP_SPECIAL))
      return fail(FWA_ERR_INVALID_ARGUMENT, "%s: unknown flags 0x%x", fn, unsigned(flags));
    const fwa::Model& m = model_of(model);
    if (!m.has_tokenizer())
      return fail(FWA_ERR_NO_TOKENIZER, "%s: the artifact carries no tokenizer", fn);
    const int64_t vocab = m.config().vocab_size;
    for (size_t i = 0; i < n_ids; ++i)
      if (ids[i] < 0 || ids[i] >= vocab)
        return fail(FWA_ERR_BAD_TOKEN, "%s: token id %d at position %zu is outside [0, %lld)",
                    fn, int(ids[i]), i, static_cast<long long>(vocab));
    std::string text;
    std::string message;
    const fwa::Status st =
        m.decode(ids, n_ids, (flags & FWA_DETOKENIZE_SKIP_SPECIAL) != 0, &text, &message);
    if (st != fwa::Status::ok) return fail_core(st, message);
    return fwa_capi::write_text(text.data(), text.size(), buf, cap, needed, fn);
  });
}

}  // extern "C"
