// SPDX-License-Identifier: Apache-2.0
#include "model/config.h"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace fwa {

bool ModelConfig::is_moe_layer(int64_t layer) const {
  if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) != mlp_only_layers.end())
    return false;
  return num_experts > 0 && (layer + 1) % decoder_sparse_step == 0;
}

namespace {

Status fail(std::string* message, const std::string& text) {
  if (message) *message = "config: " + text;
  return Status::malformed;
}

Status get_int(const json::Value& c, const char* key, int64_t lo, int64_t hi, int64_t* out,
               std::string* message) {
  json::Value v = c.find(key);
  if (!v.valid()) return fail(message, std::string(key) + " is missing");
  if (!v.get_int(out)) return fail(message, std::string(key) + " is not an integer");
  if (*out < lo || *out > hi)
    return fail(message, std::string(key) + " = " + std::to_string(*out) + " is outside [" +
                             std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return Status::ok;
}

Status get_bool(const json::Value& c, const char* key, bool* out, std::string* message) {
  json::Value v = c.find(key);
  if (!v.valid()) return fail(message, std::string(key) + " is missing");
  if (!v.get_bool(out)) return fail(message, std::string(key) + " is not a boolean");
  return Status::ok;
}

// Reals are strings holding a decimal (std::from_chars: independent of the C locale).
Status get_real(const json::Value& c, const char* key, double* out, std::string* message) {
  json::Value v = c.find(key);
  std::string s;
  if (!v.valid()) return fail(message, std::string(key) + " is missing");
  if (!v.get_string(&s)) return fail(message, std::string(key) + " is not a decimal string");
  auto r = std::from_chars(s.data(), s.data() + s.size(), *out);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || !std::isfinite(*out) || *out <= 0)
    return fail(message, std::string(key) + " = \"" + s + "\" is not a positive finite real");
  return Status::ok;
}

}  // namespace

Status parse_model_config(const json::Value& c, ModelConfig* out, std::string* message) {
  if (!c.is(json::Type::object)) return fail(message, "not an object");
  ModelConfig m;
  json::Value arch = c.find("architecture");
  if (!arch.string_equals("qwen3_moe"))
    return fail(message, "architecture is not \"qwen3_moe\"");
  constexpr int64_t kBig = int64_t(1) << 31;
  Status st;
  if ((st = get_int(c, "vocab_size", 1, kBig, &m.vocab_size, message)) != Status::ok ||
      (st = get_int(c, "hidden_size", 1, 1 << 20, &m.hidden_size, message)) != Status::ok ||
      (st = get_int(c, "num_hidden_layers", 1, 4096, &m.num_layers, message)) != Status::ok ||
      (st = get_int(c, "num_attention_heads", 1, 4096, &m.num_heads, message)) != Status::ok ||
      (st = get_int(c, "num_key_value_heads", 1, 4096, &m.num_kv_heads, message)) != Status::ok ||
      (st = get_int(c, "head_dim", 2, 4096, &m.head_dim, message)) != Status::ok ||
      (st = get_int(c, "intermediate_size", 0, 1 << 22, &m.intermediate_size, message)) !=
          Status::ok ||
      (st = get_int(c, "moe_intermediate_size", 0, 1 << 22, &m.moe_intermediate_size,
                    message)) != Status::ok ||
      (st = get_int(c, "num_experts", 0, 65536, &m.num_experts, message)) != Status::ok ||
      (st = get_int(c, "num_experts_per_tok", 0, 65536, &m.experts_per_tok, message)) !=
          Status::ok ||
      (st = get_int(c, "decoder_sparse_step", 1, 4096, &m.decoder_sparse_step, message)) !=
          Status::ok ||
      (st = get_int(c, "max_position_embeddings", 1, kBig, &m.max_position_embeddings,
                    message)) != Status::ok ||
      (st = get_bool(c, "norm_topk_prob", &m.norm_topk_prob, message)) != Status::ok ||
      (st = get_bool(c, "tie_word_embeddings", &m.tie_word_embeddings, message)) != Status::ok ||
      (st = get_real(c, "rms_norm_eps", &m.rms_norm_eps, message)) != Status::ok ||
      (st = get_real(c, "rope_theta", &m.rope_theta, message)) != Status::ok)
    return st;
  json::Value mlp_only = c.find("mlp_only_layers");
  if (!mlp_only.is(json::Type::array)) return fail(message, "mlp_only_layers is not an array");
  for (json::Value v = mlp_only.first(); v.valid(); v = v.next()) {
    int64_t l = 0;
    if (!v.get_int(&l) || l < 0 || l >= m.num_layers)
      return fail(message, "mlp_only_layers holds a value that is not a layer index");
    m.mlp_only_layers.push_back(l);
  }
  if (m.head_dim % 2 != 0) return fail(message, "head_dim must be even (RoPE)");
  if (m.num_heads % m.num_kv_heads != 0)
    return fail(message, "num_attention_heads is not a multiple of num_key_value_heads");
  bool any_moe = false, any_dense = false;
  for (int64_t l = 0; l < m.num_layers; ++l) (m.is_moe_layer(l) ? any_moe : any_dense) = true;
  if (any_moe && (m.experts_per_tok < 1 || m.experts_per_tok > m.num_experts ||
                  m.moe_intermediate_size < 1))
    return fail(message, "num_experts_per_tok must be in [1, num_experts] and "
                         "moe_intermediate_size positive for MoE layers");
  if (any_dense && m.intermediate_size < 1)
    return fail(message, "intermediate_size must be positive for dense layers");
  *out = std::move(m);
  return Status::ok;
}

}  // namespace fwa
