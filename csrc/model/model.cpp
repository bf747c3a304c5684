// SPDX-License-Identifier: Apache-2.0
#include "model/model.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <tuple>

#include "artifact/json.h"
#include "sched/bandwidth.h"

namespace fwa {

namespace {

using Key = std::tuple<std::string, int64_t, int64_t>;  // role, layer, expert (-1 for none)

Status fail(std::string* message, Status st, const std::string& text) {
  if (message) *message = text;
  return st;
}

std::string describe(const std::string& role, int64_t layer, int64_t expert) {
  std::string s = role;
  if (layer >= 0) s += " of layer " + std::to_string(layer);
  if (expert >= 0) s += ", expert " + std::to_string(expert);
  return s;
}

// non_finite, naming the tensor and the place, if a value or scale of w is NaN or Inf: such a
// weight turns every output it touches into NaN (fast mode would refuse it at run time, exact
// mode would emit token 0 forever), so the model is refused where it is found.
Status check_finite(const TensorInfo& t, const Linear& w, std::string* message) {
  int64_t row = 0, col = 0;
  bool is_scale = false;
  if (!linear_find_non_finite(w, &row, &col, &is_scale)) return Status::ok;
  return fail(message, Status::non_finite,
              "model: tensor " + t.name + " holds a non-finite value (NaN or Inf)" +
                  (is_scale ? " in the scale of row " + std::to_string(row) + ", block " +
                                  std::to_string(col)
                            : " at row " + std::to_string(row) + ", column " +
                                  std::to_string(col)));
}

struct Binder {
  Artifact& a;
  std::map<Key, size_t> index;
  const std::vector<const uint8_t*>* private_at;  // copies of non-expert tensors, if any

  const TensorInfo* find(const std::string& role, int64_t layer, int64_t expert) const {
    auto it = index.find(Key{role, layer, expert});
    return it == index.end() ? nullptr : &a.tensors()[it->second];
  }

  // Bytes of a tensor: through the verifying accessor, except expert tensors, whose block is
  // verified by Model::use_expert before every use (lazy mode) or was verified at open.
  const uint8_t* bytes(const TensorInfo& t) const {
    const size_t i = size_t(&t - a.tensors().data());
    if (i < private_at->size() && (*private_at)[i]) return (*private_at)[i];
    return a.source()->data() + a.data_offset() + t.offset;
  }

  Status linear(const std::string& role, int64_t layer, int64_t expert, int64_t N, int64_t K,
                Linear* out, std::string* message) const {
    const TensorInfo* t = find(role, layer, expert);
    if (!t)
      return fail(message, Status::malformed,
                  "model: the artifact has no " + describe(role, layer, expert) + " tensor");
    if (t->rank != 2 || t->shape[0] != N || t->shape[1] != K)
      return fail(message, Status::malformed,
                  "model: tensor " + t->name + " must have shape [" + std::to_string(N) + ", " +
                      std::to_string(K) + "] for this config");
    const Status st = bind_linear(*t, bytes(*t), out, message);
    if (st != Status::ok) return st;
    // An expert block not verified yet (lazy mode) is checked on its first use instead.
    if (expert >= 0 && a.lazy()) return Status::ok;
    return check_finite(*t, *out, message);
  }

  Status vector(const std::string& role, int64_t layer, int64_t n, std::vector<float>* out,
                std::string* message) const {
    const TensorInfo* t = find(role, layer, -1);
    if (!t)
      return fail(message, Status::malformed,
                  "model: the artifact has no " + describe(role, layer, -1) + " tensor");
    if (t->dtype == DType::packed || t->rank != 1 || t->shape[0] != n)
      return fail(message, Status::malformed,
                  "model: tensor " + t->name + " must be a float vector of " +
                      std::to_string(n) + " values");
    Linear l;
    l.dtype = t->dtype;
    l.N = 1;
    l.K = n;
    l.data = bytes(*t);
    out->resize(size_t(n));
    linear_row(l, 0, out->data());
    return check_finite(*t, l, message);
  }
};

}  // namespace

Status Model::load(const std::string& path, const ModelLoadOptions& options,
                   std::shared_ptr<Model>* out, std::string* message) {
  OpenOptions o;
  o.pin = options.pin;
  o.lazy = options.lazy;
  o.copy = options.copy;
  o.strict = options.strict;
  std::unique_ptr<Artifact> a;
  const Status st = Artifact::open_file(path, o, &a, message);
  if (st != Status::ok) return st;
  return from_artifact(std::move(a), out, message, options.private_dense);
}

void Model::FreeDeleter::operator()(uint8_t* p) const { std::free(p); }

Status Model::copy_dense(std::string* message) {
  const Artifact& a = *artifact_;
  const std::vector<TensorInfo>& ts = a.tensors();
  uint64_t total = 0;
  for (const TensorInfo& t : ts)
    if (t.block < 0) total += (t.length + 63) / 64 * 64;
  void* mem = nullptr;
  if (total > 0 && posix_memalign(&mem, 64, size_t(total)) != 0)
    return fail(message, Status::io_error,
                "model: out of memory for the private copy of the non-expert weights (" +
                    std::to_string(total) + " bytes)");
  private_.reset(static_cast<uint8_t*>(mem));
  private_at_.assign(ts.size(), nullptr);
  const uint8_t* data = a.source()->data() + a.data_offset();
  uint64_t at = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    const TensorInfo& t = ts[i];
    if (t.block >= 0) continue;
    uint8_t* dst = private_.get() + at;
    std::memcpy(dst, data + t.offset, size_t(t.length));
    // The copy is what runs: verify it, not the mapping it came from (which may have been
    // evicted and read again from the file since open verified it).
    if (sha256(dst, size_t(t.length)) != t.sha256)
      return fail(message, Status::digest_mismatch,
                  "model: tensor " + t.name +
                      " changed on disk after open: its private copy does not match its "
                      "sha256 " + digest_hex(t.sha256));
    private_at_[i] = dst;
    at += (t.length + 63) / 64 * 64;
  }
  private_bytes_ = total;
  return Status::ok;
}

Status Model::from_artifact(std::unique_ptr<Artifact> artifact, std::shared_ptr<Model>* out,
                            std::string* message, bool private_dense) {
  try {
    std::shared_ptr<Model> m(new Model());
    m->artifact_ = std::move(artifact);
    if (private_dense) {
      const Status st = m->copy_dense(message);
      if (st != Status::ok) return st;
    }
    const Status st = m->bind(message);
    if (st != Status::ok) return st;
    m->residency_.init(m->artifact_.get());
    *out = std::move(m);
    return Status::ok;
  } catch (const std::bad_alloc&) {
    return fail(message, Status::io_error, "model: out of memory");
  }
}

Status Model::bind(std::string* message) {
  Artifact& a = *artifact_;
  json::Document doc;
  Status st = doc.parse(a.manifest_data(), a.manifest_size(), json::Limits(), message);
  if (st != Status::ok) return st;
  const json::Value config = doc.root().find("config");
  if ((st = parse_model_config(config, &config_, message)) != Status::ok) return st;
  config_json_ = config.raw();
  const ModelConfig& c = config_;

  const json::Value tok = doc.root().find("tokenizer");
  if (tok.is(json::Type::object)) {
    tokenizer_json_ = tok.raw();
    tokenizer_.reset(new Tokenizer());
    std::string why;
    st = tokenizer_->load(tokenizer_json_, &why);
    if (st != Status::ok) return fail(message, st, "model: tokenizer: " + why);
    if (tokenizer_->vocab_size() > c.vocab_size)
      return fail(message, Status::malformed,
                  "model: the tokenizer has " + std::to_string(tokenizer_->vocab_size()) +
                      " ids but vocab_size is " + std::to_string(c.vocab_size));
  }

  // Generation metadata (1.1): the reader checked it, ids below vocab_size included.
  const json::Value gen = doc.root().find("generation");
  if (gen.is(json::Type::object)) {
    generation_json_ = gen.raw();
    const json::Value eos = gen.find("eos_token_ids");
    for (json::Value v = eos.first(); v.valid(); v = v.next()) {
      int64_t id = -1;
      v.get_int(&id);
      eos_ids_.push_back(int32_t(id));
    }
  }

  // Per expert block: its values checked finite (at open unless lazy; see use_expert).
  const size_t nb = a.expert_blocks().size();
  expert_finite_.reset(new std::atomic<uint8_t>[nb]);
  for (size_t i = 0; i < nb; ++i) expert_finite_[i].store(a.lazy() ? 0 : 1);

  Binder b{a, {}, &private_at_};
  for (size_t i = 0; i < a.tensors().size(); ++i) {
    const TensorInfo& t = a.tensors()[i];
    b.index[Key{t.role, t.layer, t.expert}] = i;
  }
  const int64_t H = c.hidden_size, hd = c.head_dim;
  if ((st = b.linear("embed", -1, -1, c.vocab_size, H, &embed_, message)) != Status::ok)
    return st;
  if (b.find("lm_head", -1, -1)) {
    if ((st = b.linear("lm_head", -1, -1, c.vocab_size, H, &lm_head_, message)) != Status::ok)
      return st;
  } else if (c.tie_word_embeddings) {
    lm_head_ = embed_;
  } else {
    return fail(message, Status::malformed,
                "model: no lm_head tensor and tie_word_embeddings is false");
  }
  if ((st = b.vector("final_norm", -1, H, &final_norm_, message)) != Status::ok) return st;

  layers_.resize(size_t(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerWeights& L = layers_[size_t(l)];
    if ((st = b.vector("input_norm", l, H, &L.input_norm, message)) != Status::ok ||
        (st = b.vector("post_attention_norm", l, H, &L.post_attention_norm, message)) !=
            Status::ok ||
        (st = b.vector("q_norm", l, hd, &L.q_norm, message)) != Status::ok ||
        (st = b.vector("k_norm", l, hd, &L.k_norm, message)) != Status::ok ||
        (st = b.linear("q_proj", l, -1, c.num_heads * hd, H, &L.q, message)) != Status::ok ||
        (st = b.linear("k_proj", l, -1, c.num_kv_heads * hd, H, &L.k, message)) != Status::ok ||
        (st = b.linear("v_proj", l, -1, c.num_kv_heads * hd, H, &L.v, message)) != Status::ok ||
        (st = b.linear("o_proj", l, -1, H, c.num_heads * hd, &L.o, message)) != Status::ok)
      return st;
    L.moe = c.is_moe_layer(l);
    if (!L.moe) {
      const int64_t I = c.intermediate_size;
      if ((st = b.linear("mlp_gate", l, -1, I, H, &L.mlp_gate, message)) != Status::ok ||
          (st = b.linear("mlp_up", l, -1, I, H, &L.mlp_up, message)) != Status::ok ||
          (st = b.linear("mlp_down", l, -1, H, I, &L.mlp_down, message)) != Status::ok)
        return st;
      continue;
    }
    const int64_t I = c.moe_intermediate_size;
    if ((st = b.linear("router", l, -1, c.num_experts, H, &L.router, message)) != Status::ok)
      return st;
    L.experts.resize(size_t(c.num_experts));
    for (int64_t e = 0; e < c.num_experts; ++e) {
      ExpertWeights& E = L.experts[size_t(e)];
      if ((st = b.linear("expert_gate", l, e, I, H, &E.gate, message)) != Status::ok ||
          (st = b.linear("expert_up", l, e, I, H, &E.up, message)) != Status::ok ||
          (st = b.linear("expert_down", l, e, H, I, &E.down, message)) != Status::ok)
        return st;
      E.block = b.find("expert_gate", l, e)->block;
      if (E.block < 0 || b.find("expert_up", l, e)->block != E.block ||
          b.find("expert_down", l, e)->block != E.block)
        return fail(message, Status::malformed,
                    "model: the weights of " + describe("expert", l, e) +
                        " are not in one expert block");
    }
  }
  return Status::ok;
}

Status Model::use_expert(int64_t layer, int64_t expert, std::string* message) const {
  const ExpertWeights& x = layers_[size_t(layer)].experts[size_t(expert)];
  const size_t block = size_t(x.block);
  Status st = residency_.acquire(block, message);
  if (st != Status::ok || expert_finite_[block].load(std::memory_order_acquire) == 1) return st;
  // The block's first verification in lazy mode: its values were not checked at open.
  // Allocates nothing unless it fails; concurrent first uses compute the same answer.
  const Artifact& a = *artifact_;
  const ExpertBlockInfo& b = a.expert_blocks()[block];
  const uint8_t* base = a.source()->data() + a.data_offset();
  for (const Linear* lin : {&x.gate, &x.up, &x.down})
    for (uint32_t ti = b.first_tensor; ti < b.end_tensor; ++ti) {
      const TensorInfo& t = a.tensors()[ti];
      if (base + t.offset != lin->data) continue;
      try {
        st = check_finite(t, *lin, message);
      } catch (const std::bad_alloc&) {
        st = Status::non_finite;
      }
      if (st != Status::ok) {
        residency_.release(block);
        return st;
      }
    }
  expert_finite_[block].store(1, std::memory_order_release);
  return Status::ok;
}

void Model::prefetch_expert(int64_t layer, int64_t expert) const {
  residency_.prefetch(size_t(layers_[size_t(layer)].experts[size_t(expert)].block));
}

void Model::release_expert(int64_t layer, int64_t expert) const {
  residency_.release(size_t(layers_[size_t(layer)].experts[size_t(expert)].block));
}

const double* Model::read_bandwidth(ThreadPool* pool, int n) const {
  std::lock_guard<std::mutex> lock(bandwidth_mu_);
  n = std::min(n, 64);
  if (n > bandwidth_threads_) {
    const Linear* big = &lm_head_;
    auto consider = [&big](const Linear& w) {
      if (w.present() && linear_bytes(w) > linear_bytes(*big)) big = &w;
    };
    consider(embed_);
    for (const LayerWeights& w : layers_)
      for (const Linear* lin : {&w.q, &w.k, &w.v, &w.o, &w.mlp_gate, &w.mlp_up, &w.mlp_down})
        consider(*lin);
    measure_read_bandwidth(pool, n, big->data, linear_bytes(*big), bandwidth_);
    bandwidth_threads_ = n;
  }
  return bandwidth_;
}

Status Model::encode(std::string_view text, std::vector<int32_t>* ids,
                     std::string* message) const {
  if (!tokenizer_)
    return fail(message, Status::invalid_argument,
                "the model was exported without a tokenizer: pass token ids");
  try {
    std::lock_guard<std::mutex> lock(tokenizer_mu_);
    ids->resize(text.size() + 16);
    size_t n = 0;
    Status st = tokenizer_->encode(text, ids->data(), ids->size(), &n);
    if (st == Status::buffer_too_small) {
      ids->resize(n);
      st = tokenizer_->encode(text, ids->data(), ids->size(), &n);
    }
    if (st != Status::ok) return fail(message, st, "tokenizer: the text is not valid UTF-8");
    ids->resize(n);
    return Status::ok;
  } catch (const std::bad_alloc&) {
    return fail(message, Status::io_error, "tokenizer: out of memory");
  }
}

Status Model::token_bytes(int32_t id, std::string* out, std::string* message) const {
  if (!tokenizer_)
    return fail(message, Status::invalid_argument,
                "the model was exported without a tokenizer: its tokens have no bytes");
  std::lock_guard<std::mutex> lock(tokenizer_mu_);
  if (id < 0 || id >= tokenizer_->vocab_size()) return Status::ok;
  const Status st = tokenizer_->token_bytes(id, true, out);
  // An id inside the range that the tokenizer does not know (a gap) has no text either.
  return st == Status::invalid_argument ? Status::ok : st;
}

Status Model::decode(const int32_t* ids, size_t n, bool skip_special, std::string* text,
                     std::string* message) const {
  if (!tokenizer_)
    return fail(message, Status::invalid_argument,
                "the model was exported without a tokenizer: no text to decode");
  try {
    std::lock_guard<std::mutex> lock(tokenizer_mu_);
    // Ids past the tokenizer's vocabulary (embedding rows padded beyond it) have no text.
    const int32_t tv = tokenizer_->vocab_size();
    bool all_known = true;
    for (size_t i = 0; i < n; ++i) all_known = all_known && ids[i] >= 0 && ids[i] < tv;
    std::vector<int32_t> known;
    if (!all_known) {
      for (size_t i = 0; i < n; ++i)
        if (ids[i] >= 0 && ids[i] < tv) known.push_back(ids[i]);
      ids = known.data();
      n = known.size();
    }
    size_t need = 0;
    if (text->capacity() == 0) text->reserve(64);
    text->resize(text->capacity());
    Status st = tokenizer_->decode(ids, n, skip_special, &(*text)[0], text->size(), &need);
    if (st == Status::buffer_too_small) {
      text->resize(need);
      st = tokenizer_->decode(ids, n, skip_special, &(*text)[0], text->size(), &need);
    }
    if (st != Status::ok) {
      text->clear();
      return fail(message, st, "tokenizer: cannot decode the ids");
    }
    text->resize(need);
    return Status::ok;
  } catch (const std::bad_alloc&) {
    return fail(message, Status::io_error, "tokenizer: out of memory");
  }
}

}  // namespace fwa
