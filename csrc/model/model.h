/* SPDX-License-Identifier: Apache-2.0 */
// A loaded model: the verified artifact (mapped, or read into private memory with
// ModelLoadOptions::copy) plus the weights bound to its bytes (no repacking; only the small
// norm vectors are widened to float32). Read-only after load(), so one Model serves any number
// of sessions on any threads.
//
// Tensors are found by (role, layer, expert) from the manifest's tensor table; a missing or
// misshapen tensor fails the load with malformed and a message naming it, a NaN or Inf value
// of a float tensor or scale of a packed one with non_finite. In lazy mode an expert's block
// is verified, and its values checked, on its first use (Model::use_expert), never before.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "artifact/reader.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "model/config.h"
#include "model/linear.h"
#include "model/tokenizer.h"
#include "sched/residency.h"

namespace fwa {

struct ExpertWeights {
  Linear gate, up, down;  // [I, H], [I, H], [H, I]
  int32_t block = -1;     // its expert block in the artifact
};

struct LayerWeights {
  std::vector<float> input_norm, post_attention_norm, q_norm, k_norm;
  Linear q, k, v, o;
  bool moe = false;
  Linear router;                      // [E, H] (MoE layers)
  std::vector<ExpertWeights> experts; // E (MoE layers)
  Linear mlp_gate, mlp_up, mlp_down;  // dense layers
};

struct ModelLoadOptions {
  // Absent or "sha256:<64 lowercase hex>" (parse_pin; "" is malformed): checked before
  // anything is parsed.
  std::optional<std::string> pin;
  bool lazy = false;    // verify expert blocks on first use
  bool copy = false;    // read the file into private memory and verify that (OpenOptions::copy)
  bool strict = false;  // refuse a mapping nothing protects (OpenOptions::strict)
  // Copy every tensor outside the expert blocks (embedding, attention, norms, routers, dense
  // MLPs, lm_head) into private anonymous memory at load and verify the copy against its
  // digest: under a memory limit the kernel may evict a mapping's clean pages and read them
  // again from the file, unverified; a private copy is never re-read. Experts stay mapped and
  // go through the residency (re-verified on every return).
  bool private_dense = false;
};

class Model {
 public:
  static Status load(const std::string& path, const ModelLoadOptions& options,
                     std::shared_ptr<Model>* out, std::string* message);
  static Status from_artifact(std::unique_ptr<Artifact> artifact,
                              std::shared_ptr<Model>* out, std::string* message,
                              bool private_dense = false);

  const ModelConfig& config() const { return config_; }
  Artifact& artifact() const { return *artifact_; }
  std::string pin() const { return artifact_->pin(); }
  // What keeps the weights equal to the verified bytes (reader.h); a mapping may fault later.
  Protection protection() const { return artifact_->protection(); }
  const Linear& embed() const { return embed_; }
  const Linear& lm_head() const { return lm_head_; }  // the embedding when tied
  const std::vector<float>& final_norm() const { return final_norm_; }
  const LayerWeights& layer(int64_t l) const { return layers_[size_t(l)]; }

  // Makes sure the block of (layer, expert) is verified and resident, and pins it until
  // release_expert() (sched/residency.h). Without a memory budget: a cached check, no
  // allocation once verified (lazy mode verifies on the first use: digest_mismatch for
  // changed bytes, non_finite for a NaN or Inf value or scale). Thread-safe.
  Status use_expert(int64_t layer, int64_t expert, std::string* message) const;
  void release_expert(int64_t layer, int64_t expert) const;
  // Expert memory budget of this model, shared by its sessions (0: unlimited; mlock: lock
  // resident experts in RAM). Set it between forward passes.
  void set_expert_budget(uint64_t bytes, bool mlock) const { residency_.set_budget(bytes, mlock); }
  ResidencyStats residency_stats() const { return residency_.stats(); }
  // Prefetch of predicted experts (sched/residency.h; effective with a budget): MoE layers
  // then run the next MoE layer's router on their input and queue its top-k experts.
  void set_expert_prefetch(bool on) const { residency_.set_prefetch(on); }
  bool expert_prefetching() const { return residency_.prefetching(); }
  void prefetch_expert(int64_t layer, int64_t expert) const;
  void cancel_expert_prefetch() const { residency_.cancel_prefetch(); }
  void count_prediction(uint64_t n, uint64_t routed) const {
    residency_.count_prediction(n, routed);
  }
  // Bytes of the private copy of the non-expert tensors (0 unless private_dense).
  uint64_t private_dense_bytes() const { return private_bytes_; }

  // The tokenizer stored in the artifact (null when the model was exported without one).
  // Calls are serialised by a mutex: the tokenizer's scratch memory is shared. decode() skips
  // ids past the tokenizer's vocabulary (padded embedding rows have no text).
  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  std::string_view tokenizer_json() const { return tokenizer_json_; }
  Status encode(std::string_view text, std::vector<int32_t>* ids, std::string* message) const;
  Status decode(const int32_t* ids, size_t n, bool skip_special, std::string* text,
                std::string* message) const;
  // The raw bytes of one id (special tokens and ids past the tokenizer's vocabulary: none),
  // appended to *out: what the token contributes to the decoded text, before UTF-8 repair.
  Status token_bytes(int32_t id, std::string* out, std::string* message) const;

  // The config object of the manifest, as canonical JSON.
  std::string_view config_json() const { return config_json_; }

  // The generation metadata of a format 1.1 artifact (spec §3.9) as canonical JSON, empty for
  // 1.0; and its end-of-sequence ids, ascending (empty for 1.0: none are pinned).
  std::string_view generation_json() const { return generation_json_; }
  const std::vector<int32_t>& eos_ids() const { return eos_ids_; }

  // Read bandwidth with 1..n threads of `pool` over this model's largest dense weight tensor
  // (resident for every forward pass, so measuring costs no memory), measured once per model
  // for each thread count (sched/bandwidth.h): the latency policy's cost model. Thread-safe.
  const double* read_bandwidth(ThreadPool* pool, int n) const;

 private:
  Model() = default;
  Status bind(std::string* message);
  Status copy_dense(std::string* message);  // private_dense: fills private_ and private_at_

  std::unique_ptr<Artifact> artifact_;
  ModelConfig config_;
  Linear embed_, lm_head_;
  std::vector<float> final_norm_;
  std::vector<LayerWeights> layers_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::string_view tokenizer_json_, config_json_, generation_json_;
  std::vector<int32_t> eos_ids_;
  mutable std::mutex tokenizer_mu_;
  mutable ExpertResidency residency_;
  struct FreeDeleter {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t[], FreeDeleter> private_;  // verified copies of non-expert tensors
  std::vector<const uint8_t*> private_at_;           // per tensor: its copy, or null
  uint64_t private_bytes_ = 0;
  // Per expert block: 1 once its values are checked finite (at bind, or on the first use of
  // a lazily verified block).
  std::unique_ptr<std::atomic<uint8_t>[]> expert_finite_;
  mutable std::mutex bandwidth_mu_;
  mutable double bandwidth_[64] = {};
  mutable int bandwidth_threads_ = 0;  // thread counts measured so far
};

}  // namespace fwa
