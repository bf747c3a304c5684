/* SPDX-License-Identifier: Apache-2.0 */
// The model configuration of a Qwen3-MoE decoder, read from the artifact manifest's `config`
// object (docs/artifact-format.md §3.3: Hugging Face names, reals as shortest-repr strings).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "artifact/json.h"
#include "core/status.h"

namespace fwa {

struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;            // num_hidden_layers
  int64_t num_heads = 0;             // num_attention_heads
  int64_t num_kv_heads = 0;          // num_key_value_heads
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;     // dense MLP layers
  int64_t moe_intermediate_size = 0; // each routed expert
  int64_t num_experts = 0;
  int64_t experts_per_tok = 0;       // num_experts_per_tok (top-k)
  int64_t decoder_sparse_step = 1;
  int64_t max_position_embeddings = 0;
  bool norm_topk_prob = true;
  bool tie_word_embeddings = false;
  std::vector<int64_t> mlp_only_layers;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;

  // Hugging Face Qwen3MoeDecoderLayer: routed experts unless listed in mlp_only_layers, and
  // only every decoder_sparse_step-th layer.
  bool is_moe_layer(int64_t layer) const;
};

// Parses and range-checks the config object (malformed with a message naming the key).
Status parse_model_config(const json::Value& config, ModelConfig* out, std::string* message);

}  // namespace fwa
