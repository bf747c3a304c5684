#include "model/session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <new>

#include "kernels/vec.h"
#include "model/math.h"

namespace fwa {

namespace {

// Weight bytes of one decode step: every dense linear layer, top-k experts of average size
// per MoE layer, lm_head and one embedding row.
double decode_step_bytes(const Model& m) {
  double bytes = double(linear_bytes(m.lm_head())) +
                 double(linear_bytes(m.embed()) / size_t(m.embed().N));
  for (int64_t l = 0; l < m.config().num_layers; ++l) {
    const LayerWeights& w = m.layer(l);
    for (const Linear* lin : {&w.q, &w.k, &w.v, &w.o, &w.router, &w.mlp_gate, &w.mlp_up,
                              &w.mlp_down})
      if (lin->present()) bytes += double(linear_bytes(*lin));
    double experts = 0;
    for (const ExpertWeights& e : w.experts)
      experts += double(linear_bytes(e.gate) + linear_bytes(e.up) + linear_bytes(e.down));
    if (!w.experts.empty())
      bytes += experts / double(w.experts.size()) * double(m.config().experts_per_tok);
  }
  return bytes;
}

Status fail(std::string* message, Status st, const std::string& text) {
  if (message) *message = text;
  return st;
}

// Rows per block of the per-row work spread over the cores (norms, RoPE, routing, sums).
constexpr int64_t kRowsPerBlock = 8;
// Attention: query rows whose scores share one pass over K, and the most outputs of a pass.
constexpr int64_t kAttentionRows = 4, kAttentionOutputs = 32;
// Score rows are padded by a cache line: at a power-of-two context they would all map to the
// same L1 sets as each other and as the K rows (4 KiB apart at 1024 positions).
inline int64_t score_stride(int64_t ctx) { return ctx + 16; }

// One attention task: every row of the chunk for `per_task` query heads of one KV head (the
// heads sharing it are split into group / per_task tasks).
struct AttentionJob {
  const float* q;        // [rows, nh*hd]
  const float* k_cache;  // this layer: [nkv, hd, ctx]
  const float* v_cache;  // this layer: [nkv, ctx, hd]
  float* out;            // [rows, nh*hd]
  float* scores;         // [kAttentionRows, nh, score_stride]
  int64_t rows, pos0, nh, group, per_task, hd, ctx, score_stride;
  float sqrt_hd;
};

// Scores s[j] = sum_d q[d] * K[d][j] accumulated over d ascending (lanes are positions),
// divided by sqrt(head_dim); softmax; out[d] = sum_j p[j] * V[j][d] over j ascending (lanes are
// dimensions). Multiply then add, never fused: the same bits on every ISA, however heads and
// rows are grouped. K is read once for the task's heads and up to kAttentionRows query rows
// (each row's scores run to the block's last position: the extra ones, of positions of this
// chunk already in the cache, are never used); V once per row for the task's heads.
void attention_heads(void* ctx, int task) {
  const AttentionJob& a = *static_cast<AttentionJob*>(ctx);
  const VecOps& ops = vec_ops();
  const int64_t tasks_per_kv = a.group / a.per_task;
  const int64_t g = task / tasks_per_kv, hd = a.hd, nt = a.per_task;
  const int64_t h0 = g * a.group + (task % tasks_per_kv) * nt;
  const float* K = a.k_cache + g * hd * a.ctx;
  const float* V = a.v_cache + g * a.ctx * hd;
  const int64_t block = std::max<int64_t>(1, std::min(kAttentionRows, kAttentionOutputs / nt));
  const float* in[kAttentionOutputs];
  float* sc[kAttentionOutputs];
  float* out[kAttentionOutputs];
  for (int64_t r0 = 0; r0 < a.rows; r0 += block) {
    const int64_t r1 = std::min(a.rows, r0 + block);
    int m = 0;
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t k = 0; k < nt; ++k, ++m) {
        in[m] = a.q + (r * a.nh + h0 + k) * hd;
        sc[m] = a.scores + ((r - r0) * a.nh + h0 + k) * a.score_stride;
      }
    ops.weighted_row_sums(m, in, K, a.ctx, hd, a.pos0 + r1, sc);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = a.pos0 + r + 1;  // causal: positions 0..pos
      float* const* p = sc + (r - r0) * nt;
      for (int64_t k = 0; k < nt; ++k) {
        ops.divide(p[k], a.sqrt_hd, n);
        softmax_inplace(p[k], n);
        out[k] = a.out + (r * a.nh + h0 + k) * hd;
      }
      ops.weighted_row_sums(int(nt), p, V, hd, n, hd, out);
    }
  }
}

// CPU time of the calling thread: a decode step's wall time minus it is the time the caller
// was off its core, parked waiting for another thread's chunk or descheduled itself.
double thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) * 1e-6;
}

template <typename T>
void reserve_zero(std::vector<T>* v, int64_t n) {
  v->assign(size_t(n), T(0));
}

}  // namespace

Status Session::create(std::shared_ptr<const Model> model, const SessionOptions& options,
                       std::unique_ptr<Session>* out, std::string* message) {
  if (!model) return fail(message, Status::invalid_argument, "session: no model");
  const ModelConfig& c = model->config();
  SessionOptions o = options;
  if (o.max_context == 0) o.max_context = std::min<int64_t>(c.max_position_embeddings, 4096);
  if (o.max_context < 1 || o.max_context > c.max_position_embeddings)
    return fail(message, Status::invalid_argument,
                "session: max_context " + std::to_string(o.max_context) + " is outside [1, " +
                    std::to_string(c.max_position_embeddings) +
                    "] (the model's max_position_embeddings)");
  if (o.n_threads < 1 || o.n_threads > 256)
    return fail(message, Status::invalid_argument,
                "session: threads must be in [1, 256], got " + std::to_string(o.n_threads));
  if (o.prefill_chunk < 1 || o.prefill_chunk > 4096)
    return fail(message, Status::invalid_argument,
                "session: prefill_chunk must be in [1, 4096], got " +
                    std::to_string(o.prefill_chunk));
  if (o.mode != ComputeMode::exact && o.mode != ComputeMode::fast)
    return fail(message, Status::invalid_argument, "session: mode must be exact or fast");
  o.prefill_chunk = std::min(o.prefill_chunk, o.max_context);
  try {
    std::unique_ptr<Session> s(new Session());
    s->model_ = std::move(model);
    s->opt_ = o;
    const Status st = s->allocate(message);
    if (st != Status::ok) return st;
    *out = std::move(s);
    return Status::ok;
  } catch (const std::bad_alloc&) {
    return fail(message, Status::io_error,
                "session: out of memory allocating the KV cache and buffers for max_context " +
                    std::to_string(o.max_context));
  } catch (const std::system_error&) {
    return fail(message, Status::io_error, "session: cannot start the worker threads");
  }
}

Session::~Session() = default;

Status Session::allocate(std::string* message) {
  (void)message;
  const ModelConfig& c = model_->config();
  const int64_t C = opt_.prefill_chunk, H = c.hidden_size, hd = c.head_dim;
  const int64_t nh = c.num_heads, nkv = c.num_kv_heads, L = c.num_layers;
  ctx_ = opt_.max_context;
  chunk_ = C;
  pool_.reset(new ThreadPool(opt_.n_threads));
  active_threads_ = max_active_ = opt_.n_threads;
  decode_bytes_ = decode_step_bytes(*model_);
  tokens_.reserve(size_t(ctx_));
  reserve_zero(&x_, C * H);
  reserve_zero(&xn_, C * H);
  reserve_zero(&tmp_, C * H);
  reserve_zero(&q_, C * nh * hd);
  reserve_zero(&attn_, C * nh * hd);
  reserve_zero(&k_, C * nkv * hd);
  reserve_zero(&v_, C * nkv * hd);
  reserve_zero(&scores_, kAttentionRows * nh * score_stride(ctx_));
  // The KV cache is left uninitialised: only positions < n_past are ever read, so its pages
  // are touched (and count in RSS) as the context grows, not at creation.
  k_cache_.reset(new float[size_t(L * nkv * hd * ctx_)]);
  v_cache_.reset(new float[size_t(L * nkv * ctx_ * hd)]);
  reserve_zero(&rope_cos_, ctx_ * (hd / 2));
  reserve_zero(&rope_sin_, ctx_ * (hd / 2));
  rope_tables(c.rope_theta, hd, ctx_, rope_cos_.data(), rope_sin_.data());
  const int64_t E = c.num_experts, K = c.experts_per_tok;
  int64_t I = 0;
  bool any_moe = false;
  for (int64_t l = 0; l < L; ++l) {
    if (model_->layer(l).moe) {
      any_moe = true;
      I = std::max(I, c.moe_intermediate_size);
    } else {
      I = std::max(I, c.intermediate_size);
    }
  }
  if (any_moe) {
    reserve_zero(&router_, C * E);
    reserve_zero(&topk_w_, C * K);
    reserve_zero(&topk_e_, C * K);
    reserve_zero(&token_entries_, C * K);
    reserve_zero(&group_w_, C * K);
    reserve_zero(&group_row_, C * K);
    reserve_zero(&group_start_, E + 1);
    reserve_zero(&expert_tokens_, L * E);
  }
  // MoE rows: each token once per routed expert (C * K); dense layers use the first C.
  const int64_t R = any_moe ? C * std::max<int64_t>(K, 1) : C;
  reserve_zero(&xe_, R * H);
  reserve_zero(&gate_, R * I);
  reserve_zero(&up_, R * I);
  reserve_zero(&down_, R * H);
  if (any_moe) {
    expert_ids_.assign(size_t(E), 0);
    expert_lin_.assign(size_t(3 * E), nullptr);
    expert_req_.resize(size_t(3 * E));
    bin_items_.assign(size_t(E), 0);
    bin_of_.assign(size_t(E), 0);
    bin_start_.assign(size_t(opt_.n_threads) + 1, 0);
    bin_load_.assign(size_t(opt_.n_threads), 0);
    bin_status_.assign(size_t(opt_.n_threads), Status::ok);
  }
  reserve_zero(&last_logits_, c.vocab_size);

  // Matmul workspace: the largest any linear needs for C rows (or 1 row for lm_head).
  size_t ws = linear_workspace_bytes(model_->lm_head(), C, opt_.mode);
  for (int64_t l = 0; l < L; ++l) {
    const LayerWeights& w = model_->layer(l);
    for (const Linear* lin : {&w.q, &w.k, &w.v, &w.o, &w.router, &w.mlp_gate, &w.mlp_up,
                              &w.mlp_down})
      if (lin->present()) ws = std::max(ws, linear_workspace_bytes(*lin, C, opt_.mode));
    for (const ExpertWeights& e : w.experts)
      for (const Linear* lin : {&e.gate, &e.up, &e.down})
        ws = std::max(ws, linear_workspace_bytes(*lin, C, opt_.mode));
  }
  // Batched experts: one workspace region per expert request (gate, up, down), each
  // 64-aligned, all live at once (packed experts run concurrently); their rows add up to C * K
  // per kind (gate/up input is the hidden size, down's the intermediate size).
  size_t moe_ws = 0;
  for (int64_t l = 0; l < L; ++l)
    for (const ExpertWeights& e : model_->layer(l).experts)
      moe_ws = std::max(moe_ws, 2 * linear_workspace_bytes(e.gate, C * K, opt_.mode) +
                                    linear_workspace_bytes(e.down, C * K, opt_.mode) +
                                    size_t(3 * E) * 256);
  workspace_.assign(ws + moe_ws + 128, 0);
  const uintptr_t p = reinterpret_cast<uintptr_t>(workspace_.data());
  ws_ = workspace_.data() + ((64 - p % 64) % 64);
  ws_bytes_ = ws;
  moe_ws_ = static_cast<uint8_t*>(ws_) + (ws + 63) / 64 * 64;
  return Status::ok;
}

Status Session::truncate(int64_t n, std::string* message) {
  if (n < 0 || n > n_past())
    return fail(message, Status::invalid_argument,
                "session: cannot truncate to " + std::to_string(n) + " tokens: the context holds " +
                    std::to_string(n_past()));
  tokens_.resize(size_t(n));
  has_last_logits_ = false;
  return Status::ok;
}

void Session::clear_expert_hits() { std::fill(expert_tokens_.begin(), expert_tokens_.end(), 0); }

int64_t Session::experts_activated(int64_t layer) const {
  const ModelConfig& c = model_->config();
  if (expert_tokens_.empty() || !model_->layer(layer).moe) return 0;
  int64_t n = 0;
  for (int64_t e = 0; e < c.num_experts; ++e)
    n += expert_tokens_[size_t(layer * c.num_experts + e)] != 0;
  return n;
}

LinearRequest Session::request(const float* x, int64_t rows, int64_t x_stride, float* y,
                               int64_t y_stride) const {
  LinearRequest r;
  r.x = x;
  r.M = rows;
  r.x_stride = x_stride;
  r.y = y;
  r.y_stride = y_stride;
  r.mode = opt_.mode;
  r.workspace = ws_;
  r.workspace_bytes = ws_bytes_;
  r.pool = pool_.get();
  r.n_threads = active_threads_;
  return r;
}

template <typename F>
void Session::for_blocks(int64_t n, int64_t per, F&& f) {
  struct Job {
    F* f;
    int64_t n, per;
  };
  Job job{&f, n, per};
  auto block = [](void* ctx, int c) {
    const Job& j = *static_cast<const Job*>(ctx);
    const int64_t b = int64_t(c) * j.per;
    (*j.f)(b, std::min(j.n, b + j.per));
  };
  const int64_t blocks = (n + per - 1) / per;
  if (active_threads_ > 1 && blocks > 1)
    pool_->run(int(blocks), active_threads_, block, &job);
  else
    for (int64_t c = 0; c < blocks; ++c) block(&job, int(c));
}

Status Session::run_linear(const Linear& w, const float* x, int64_t rows, int64_t x_stride,
                           float* y, int64_t y_stride) {
  weight_bytes_read_ += linear_bytes(w);
  return linear_forward(w, request(x, rows, x_stride, y, y_stride));
}

namespace {

// Whole experts per core: bin b runs the experts bin_items[bin_start[b] .. bin_start[b + 1])
// one after the other, each gate|up (one quantization of its input), SwiGLU, down, on one
// thread. Every expert's values are those of the split path: no result depends on packing.
struct ExpertBinJob {
  const Linear* const* lin;
  const LinearRequest* req;  // single-threaded copies
  const int32_t* bin_items;
  const int32_t* bin_start;
  int n_req;
  int64_t I;
  Status* status;  // per bin
};

void run_expert_bin(void* ctx, int bin) {
  const ExpertBinJob& j = *static_cast<const ExpertBinJob*>(ctx);
  Status st = Status::ok;
  for (int32_t k = j.bin_start[bin]; k < j.bin_start[bin + 1] && st == Status::ok; ++k) {
    const int32_t i = j.bin_items[k];
    linear_prefetch_head(*j.lin[2 * j.n_req + i]);
    if (k + 1 < j.bin_start[bin + 1]) {
      const int32_t next = j.bin_items[k + 1];
      linear_prefetch_head(*j.lin[2 * next]);
      linear_prefetch_head(*j.lin[2 * next + 1]);
    }
    st = linear_batch(j.lin + 2 * i, j.req + 2 * i, 2);
    if (st != Status::ok) break;
    const LinearRequest& gate = j.req[2 * i];
    swiglu_inplace(gate.y, j.req[2 * i + 1].y, gate.M * j.I);
    st = linear_forward(*j.lin[2 * j.n_req + i], j.req[2 * j.n_req + i]);
  }
  j.status[bin] = st;
}

}  // namespace

Status Session::run_experts_packed(int n_req, int cores, int64_t I) {
  // Longest processing time first: experts by rows, descending (ties: lower index first),
  // each to the least loaded core. A core's experts run in ascending index order.
  for (int i = 0; i < n_req; ++i) bin_items_[size_t(i)] = i;
  auto rows_of = [&](int32_t i) { return expert_req_[size_t(2 * i)].M; };
  std::sort(bin_items_.begin(), bin_items_.begin() + n_req, [&](int32_t a, int32_t b) {
    return rows_of(a) != rows_of(b) ? rows_of(a) > rows_of(b) : a < b;
  });
  for (int b = 0; b < cores; ++b) bin_load_[size_t(b)] = 0;
  for (int k = 0; k < n_req; ++k) {
    const int32_t i = bin_items_[size_t(k)];
    int best = 0;
    for (int b = 1; b < cores; ++b)
      if (bin_load_[size_t(b)] < bin_load_[size_t(best)]) best = b;
    bin_load_[size_t(best)] += rows_of(i);
    bin_of_[size_t(i)] = best;
  }
  // Counting sort by bin, ascending expert index inside a bin.
  for (int b = 0; b <= cores; ++b) bin_start_[size_t(b)] = 0;
  for (int i = 0; i < n_req; ++i) ++bin_start_[size_t(bin_of_[size_t(i)] + 1)];
  for (int b = 0; b < cores; ++b) bin_start_[size_t(b + 1)] += bin_start_[size_t(b)];
  for (int b = 0; b < cores; ++b) bin_load_[size_t(b)] = bin_start_[size_t(b)];
  for (int i = 0; i < n_req; ++i) bin_items_[size_t(bin_load_[size_t(bin_of_[size_t(i)])]++)] = i;
  for (int i = 0; i < 3 * n_req; ++i) {
    expert_req_[size_t(i)].pool = nullptr;
    expert_req_[size_t(i)].n_threads = 1;
  }
  ExpertBinJob job{expert_lin_.data(), expert_req_.data(), bin_items_.data(), bin_start_.data(),
                   n_req, I, bin_status_.data()};
  pool_->run(cores, cores, run_expert_bin, &job);
  for (int b = 0; b < cores; ++b)
    if (bin_status_[size_t(b)] != Status::ok) return bin_status_[size_t(b)];
  return Status::ok;
}

void Session::release_experts(int64_t layer, int n) {
  for (int i = 0; i < n; ++i) model_->release_expert(layer, expert_ids_[size_t(i)]);
}

Status Session::run_batch(const Linear* const* w, const LinearRequest* r, int n) {
  for (int i = 0; i < n; ++i) weight_bytes_read_ += linear_bytes(*w[i]);
  return linear_batch(w, r, n);
}

void Session::set_policy(int max_cores, double target_ms) {
  max_active_ = max_cores < 1 || max_cores > opt_.n_threads ? opt_.n_threads : max_cores;
  target_ms_ = target_ms > 0 ? target_ms : 0;
  active_threads_ = max_active_;
  window_ms_ = window_off_ms_ = 0;
  window_steps_ = 0;
  trial_ = hold_ = 0;
  hold_next_ = kHoldMin;
  if (target_ms_ == 0) return;
  const double* bw = model_->read_bandwidth(pool_.get(), max_active_);
  for (int n = 1; n <= max_active_; ++n)
    if (decode_bytes_ / bw[n - 1] * 1e3 < 0.85 * target_ms_) {
      active_threads_ = n;
      break;
    }
}

void Session::account_decode_step(double ms, double off_cpu_ms) {
  if (max_active_ <= 1) return;
  window_ms_ += ms;
  window_off_ms_ += off_cpu_ms;
  if (++window_steps_ < kPolicyWindow) return;
  const double avg = window_ms_ / window_steps_;
  const double off = window_ms_ > 0 ? window_off_ms_ / window_ms_ : 0;
  window_ms_ = window_off_ms_ = 0;
  window_steps_ = 0;
  if (target_ms_ <= 0)
    fastest_policy_window(avg, off);
  else
    latency_policy_window(avg);
}

void Session::latency_policy_window(double avg_ms) {
  if (trial_ != 0) {  // this window ran on one core fewer: kept if it met the budget
    if (avg_ms <= target_ms_) {
      hold_next_ = kHoldMin;
    } else {
      ++active_threads_;
      hold_next_ = std::min(2 * hold_next_, kHoldMax);
      hold_ = hold_next_;
    }
    trial_ = 0;
    return;
  }
  if (avg_ms > target_ms_ && active_threads_ < max_active_) {
    ++active_threads_;
    hold_ = hold_next_;
  } else if (active_threads_ > 1 &&
             avg_ms * active_threads_ / (active_threads_ - 1) < 0.85 * target_ms_) {
    --active_threads_;  // even linear scaling would meet the budget
  } else if (hold_ > 0) {
    --hold_;
  } else if (active_threads_ > 1 && avg_ms < 0.85 * target_ms_) {
    --active_threads_;  // decode rarely scales linearly: measure one core fewer
    trial_ = -1;
  }
}

void Session::fastest_policy_window(double avg_ms, double off_fraction) {
  if (trial_ != 0) {  // this window ran the trial: keep it only if clearly faster
    const bool kept = avg_ms < (1 - kTrialGain) * before_trial_ms_;
    if (kept && trial_ > 0) {  // the shed core is free again
      hold_ = 0;
      hold_next_ = kHoldMin;
    } else if (kept) {  // shed: retry the core after a hold
      hold_ = hold_next_;
    } else {  // no gain: undo, and wait longer before the next trial
      active_threads_ -= trial_;
      hold_next_ = std::min(2 * hold_next_, kHoldMax);
      hold_ = hold_next_;
    }
    trial_ = 0;
    return;
  }
  if (hold_ > 0) {
    --hold_;
    return;
  }
  if (active_threads_ < max_active_) {
    trial_ = +1;
  } else if (active_threads_ > 1 && off_fraction > kContendedWait) {
    trial_ = -1;
  } else {
    return;
  }
  before_trial_ms_ = avg_ms;
  active_threads_ += trial_;
}

Status Session::eval(const int32_t* ids, int64_t n, LogitsOut out, float* logits,
                     std::string* message) {
  const ModelConfig& c = model_->config();
  if (n < 1) return fail(message, Status::invalid_argument, "session: no tokens to evaluate");
  if (!ids || (out == LogitsOut::all && !logits))
    return fail(message, Status::invalid_argument, "session: null buffer");
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= c.vocab_size)
      return fail(message, Status::invalid_argument,
                  "token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                      " is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
  const int64_t start = n_past();
  if (n > ctx_ - start)
    return fail(message, Status::invalid_argument,
                "session: " + std::to_string(n) + " tokens after " + std::to_string(start) +
                    " exceed the context of " + std::to_string(ctx_) + " tokens");
  has_last_logits_ = false;
  const bool timed = n == 1 && max_active_ > 1;  // the policy measures decode steps
  const auto t0 =
      timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
  const double cpu0 = timed ? thread_cpu_ms() : 0;
  for (int64_t i0 = 0; i0 < n; i0 += chunk_) {
    const int64_t rows = std::min(chunk_, n - i0);
    const bool last_chunk = i0 + rows == n;
    const LogitsOut o = out == LogitsOut::all ? LogitsOut::all
                        : (out == LogitsOut::last && last_chunk) ? LogitsOut::last
                                                                  : LogitsOut::none;
    const Status st = forward_chunk(ids + i0, rows, start + i0, o,
                                    o == LogitsOut::all ? logits + i0 * c.vocab_size : nullptr,
                                    message);
    if (st != Status::ok) {
      tokens_.resize(size_t(start));
      return st;
    }
    tokens_.insert(tokens_.end(), ids + i0, ids + i0 + rows);  // capacity reserved: no allocation
  }
  if (model_->artifact().source()->faulted()) {  // SIGBUS: computed on zero pages (reader.h)
    tokens_.resize(size_t(start));
    return fail(message, Status::io_error,
                "the artifact file was truncated while mapped (SIGBUS): its weights are gone; "
                "reload the model (copy=True or protected storage prevents this)");
  }
  has_last_logits_ = out == LogitsOut::last;
  if (timed) {
    const double cpu = thread_cpu_ms() - cpu0;
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    account_decode_step(ms, ms - cpu);
  }
  return Status::ok;
}

Status Session::forward_chunk(const int32_t* ids, int64_t rows, int64_t pos0, LogitsOut out,
                              float* logits, std::string* message) {
  const ModelConfig& c = model_->config();
  const int64_t H = c.hidden_size;
  const float eps = float(c.rms_norm_eps);
  for (int64_t r = 0; r < rows; ++r) linear_row(model_->embed(), ids[r], &x_[size_t(r * H)]);
  weight_bytes_read_ += size_t(rows) * (linear_bytes(model_->embed()) / size_t(model_->embed().N));
  Status st;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = model_->layer(l);
    // Per row: the residual add of the previous block (none before layer 0), then the norm.
    auto residual_norm = [&](const std::vector<float>& norm, bool add) {
      for_blocks(rows, kRowsPerBlock, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          float* x = &x_[size_t(r * H)];
          if (add)
            for (int64_t i = 0; i < H; ++i) x[i] = x[i] + tmp_[size_t(r * H + i)];
          rms_norm(x, norm.data(), H, eps, &xn_[size_t(r * H)]);
        }
      });
    };
    residual_norm(w.input_norm, l > 0);
    if ((st = attention_block(l, rows, pos0, message)) != Status::ok) return st;
    residual_norm(w.post_attention_norm, true);
    st = w.moe ? moe_block(l, rows, message) : dense_block(l, rows, message);
    if (st != Status::ok) return st;
  }
  if (out == LogitsOut::none) return Status::ok;
  // The last block's residual add, then the final norm, for the rows whose logits are asked.
  const int64_t first = out == LogitsOut::all ? 0 : rows - 1;
  for (int64_t r = first; r < rows; ++r) {
    float* x = &x_[size_t(r * H)];
    for (int64_t i = 0; i < H; ++i) x[i] = x[i] + tmp_[size_t(r * H + i)];
    rms_norm(x, model_->final_norm().data(), H, eps, &xn_[size_t(r * H)]);
  }
  float* y = out == LogitsOut::all ? logits : last_logits_.data();
  st = run_linear(model_->lm_head(), &xn_[size_t(first * H)], rows - first, H, y, c.vocab_size);
  if (st != Status::ok)
    return fail(message, st, std::string("lm_head: ") + status_string(st));
  return Status::ok;
}

Status Session::attention_block(int64_t l, int64_t rows, int64_t pos0, std::string* message) {
  const ModelConfig& c = model_->config();
  const LayerWeights& w = model_->layer(l);
  const int64_t H = c.hidden_size, hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t qd = nh * hd, kd = nkv * hd, half = hd / 2;
  const float eps = float(c.rms_norm_eps);
  // One parallel region and one activation quantization for the three projections (they
  // share their input, so they share the workspace).
  const Linear* qkv[3] = {&w.q, &w.k, &w.v};
  const LinearRequest r[3] = {request(xn_.data(), rows, H, q_.data(), qd),
                              request(xn_.data(), rows, H, k_.data(), kd),
                              request(xn_.data(), rows, H, v_.data(), kd)};
  Status st = run_batch(qkv, r, 3);
  if (st != Status::ok)
    return fail(message, st, "layer " + std::to_string(l) + " attention projections: " +
                                 status_string(st));
  float* kc = k_cache_.get() + size_t(l * nkv * hd * ctx_);
  float* vc = v_cache_.get() + size_t(l * nkv * ctx_ * hd);
  for_blocks(rows, kRowsPerBlock, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t pos = pos0 + r;
      const float* cs = &rope_cos_[size_t(pos * half)];
      const float* sn = &rope_sin_[size_t(pos * half)];
      for (int64_t h = 0; h < nh; ++h) {
        float* qh = &q_[size_t(r * qd + h * hd)];
        rms_norm(qh, w.q_norm.data(), hd, eps, qh);
        rope_apply(qh, hd, cs, sn);
      }
      for (int64_t g = 0; g < nkv; ++g) {
        float* kh = &k_[size_t(r * kd + g * hd)];
        rms_norm(kh, w.k_norm.data(), hd, eps, kh);
        rope_apply(kh, hd, cs, sn);
        const float* vh = &v_[size_t(r * kd + g * hd)];
        for (int64_t d = 0; d < hd; ++d) {
          kc[size_t((g * hd + d) * ctx_ + pos)] = kh[d];
          vc[size_t((g * ctx_ + pos) * hd + d)] = vh[d];
        }
      }
    }
  });
  // All heads of a KV head in one task, unless that leaves cores idle or passes
  // kAttentionOutputs heads: then the fewest splits of each group (a divisor of it) that
  // give every active core a task.
  const int64_t group = nh / nkv;
  int64_t splits = 1;
  while ((nkv * splits < active_threads_ || group / splits > kAttentionOutputs) &&
         splits < group) {
    ++splits;
    while (group % splits) ++splits;
  }
  AttentionJob job{q_.data(), kc, vc, attn_.data(), scores_.data(), rows, pos0, nh, group,
                   group / splits, hd, ctx_, score_stride(ctx_), std::sqrt(float(hd))};
  for_blocks(nkv * splits, 1, [&](int64_t t, int64_t) { attention_heads(&job, int(t)); });
  if ((st = run_linear(w.o, attn_.data(), rows, qd, tmp_.data(), H)) != Status::ok)
    return fail(message, st, "layer " + std::to_string(l) + " o_proj: " + status_string(st));
  return Status::ok;
}

Status Session::dense_block(int64_t l, int64_t rows, std::string* message) {
  const ModelConfig& c = model_->config();
  const LayerWeights& w = model_->layer(l);
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  Status st;
  if ((st = run_linear(w.mlp_gate, xn_.data(), rows, H, gate_.data(), I)) != Status::ok ||
      (st = run_linear(w.mlp_up, xn_.data(), rows, H, up_.data(), I)) != Status::ok)
    return fail(message, st, "layer " + std::to_string(l) + " mlp: " + status_string(st));
  swiglu_inplace(gate_.data(), up_.data(), rows * I);
  if ((st = run_linear(w.mlp_down, gate_.data(), rows, I, tmp_.data(), H)) != Status::ok)
    return fail(message, st, "layer " + std::to_string(l) + " mlp_down: " + status_string(st));
  return Status::ok;
}

// Router: float32 softmax over all experts, top-k by (probability desc, expert index asc),
// renormalised when norm_topk_prob. Then each routed expert runs once over its tokens
// (gate/up GEMM, SwiGLU, down GEMM) and its weighted output is added to each token's sum in
// ascending expert order: a token's result depends only on its own routing.
Status Session::moe_block(int64_t l, int64_t rows, std::string* message) {
  const ModelConfig& c = model_->config();
  const LayerWeights& w = model_->layer(l);
  const int64_t H = c.hidden_size, I = c.moe_intermediate_size;
  const int64_t E = c.num_experts, K = c.experts_per_tok;
  Status st = run_linear(w.router, xn_.data(), rows, H, router_.data(), E);
  if (st != Status::ok)
    return fail(message, st, "layer " + std::to_string(l) + " router: " + status_string(st));
  for_blocks(rows, kRowsPerBlock, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* p = &router_[size_t(r * E)];
      softmax_inplace(p, E);
      int32_t* te = &topk_e_[size_t(r * K)];
      float* tw = &topk_w_[size_t(r * K)];
      float sum = 0.0f;
      for (int64_t j = 0; j < K; ++j) {
        int64_t best = -1;
        for (int64_t e = 0; e < E; ++e) {
          bool taken = false;
          for (int64_t i = 0; i < j; ++i) taken = taken || te[i] == e;
          if (!taken && (best < 0 || p[e] > p[best])) best = e;
        }
        te[j] = int32_t(best);
        tw[j] = p[best];
        sum = sum + p[best];
      }
      if (c.norm_topk_prob)
        for (int64_t j = 0; j < K; ++j) tw[j] = tw[j] / sum;
    }
  });
  for (int64_t e = 0; e <= E; ++e) group_start_[size_t(e)] = 0;
  for (int64_t i = 0; i < rows * K; ++i) group_start_[size_t(topk_e_[size_t(i)] + 1)] += 1;
  for (int64_t e = 0; e < E; ++e) group_start_[size_t(e + 1)] += group_start_[size_t(e)];
  // Scatter (row, weight) pairs per expert, rows ascending; group_row_ reuses group_start_ as
  // a cursor, restored below. token_entries_ keeps each row's slots.
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < K; ++j) {
      const int32_t e = topk_e_[size_t(r * K + j)];
      const int32_t at = group_start_[size_t(e)]++;
      group_row_[size_t(at)] = int32_t(r);
      group_w_[size_t(at)] = topk_w_[size_t(r * K + j)];
      token_entries_[size_t(r * K + j)] = at;
    }
  for (int64_t e = E; e > 0; --e) group_start_[size_t(e)] = group_start_[size_t(e - 1)];
  group_start_[0] = 0;

  // Every routed expert's input rows: the chunk's own rows when the expert takes them all (a
  // decode step), else gathered. Slot i of an expert's group is row g0 + i of xe_ / gate_ /
  // up_ / down_.
  int n_req = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int32_t g0 = group_start_[size_t(e)], g1 = group_start_[size_t(e + 1)];
    if (g1 == g0) continue;
    if ((st = model_->use_expert(l, e, message)) != Status::ok) {
      release_experts(l, n_req);
      return st;
    }
    expert_tokens_[size_t(l * E + e)] += uint64_t(g1 - g0);
    expert_ids_[size_t(n_req++)] = int32_t(e);
  }
  if (rows > 1) {  // gather the rows of the experts that do not take them all
    for_blocks(E, 1, [&](int64_t e, int64_t) {
      const int32_t g0 = group_start_[size_t(e)], g1 = group_start_[size_t(e + 1)];
      if (g1 == g0 || g1 - g0 == rows) return;  // not routed / takes xn_ as is
      for (int32_t i = g0; i < g1; ++i)
        std::memcpy(&xe_[size_t(i * H)], &xn_[size_t(group_row_[size_t(i)] * H)],
                    size_t(H) * sizeof(float));
    });
  }
  auto input_of = [&](int64_t e) -> const float* {
    const int32_t g0 = group_start_[size_t(e)];
    return group_start_[size_t(e + 1)] - g0 == rows ? xn_.data() : &xe_[size_t(g0 * H)];
  };
  // Each request gets its own 64-aligned part of the experts' workspace.
  auto expert_request = [&](const Linear& lin, const float* in, int64_t m, int64_t in_stride,
                            float* out, int64_t out_stride, uint8_t** ws) {
    LinearRequest r = request(in, m, in_stride, out, out_stride);
    r.workspace = *ws;
    r.workspace_bytes = linear_workspace_bytes(lin, m, opt_.mode);
    *ws += (r.workspace_bytes + 63) / 64 * 64;
    return r;
  };
  // Every routed expert's three requests, each with its own 64-aligned workspace: gate and up
  // at 2i, 2i+1 (same input: one activation quantization), down at 2n + i, reading the
  // SwiGLU of gate in place.
  uint8_t* ws = moe_ws_;
  int64_t largest = 0;
  for (int i = 0; i < n_req; ++i) {
    const int64_t e = expert_ids_[size_t(i)], g0 = group_start_[size_t(e)];
    const int64_t m = group_start_[size_t(e + 1)] - g0;
    const ExpertWeights& x = w.experts[size_t(e)];
    expert_lin_[size_t(2 * i)] = &x.gate;
    expert_lin_[size_t(2 * i + 1)] = &x.up;
    expert_lin_[size_t(2 * n_req + i)] = &x.down;
    expert_req_[size_t(2 * i)] =
        expert_request(x.gate, input_of(e), m, H, &gate_[size_t(g0 * I)], I, &ws);
    expert_req_[size_t(2 * i + 1)] =
        expert_request(x.up, input_of(e), m, H, &up_[size_t(g0 * I)], I, &ws);
    expert_req_[size_t(2 * n_req + i)] =
        expert_request(x.down, &gate_[size_t(g0 * I)], m, I, &down_[size_t(g0 * H)], H, &ws);
    largest = std::max(largest, m);
  }
  const int64_t routed = rows * K;
  const int cores = std::min(active_threads_, n_req);
  if (cores > 1 && largest * cores * 4 <= routed * 5) {
    st = run_experts_packed(n_req, cores, I);
  } else {
    // One expert holds much more than a core's share of the chunk (or one core): split every
    // expert's tiles over the cores, one region for the gate/up projections, one for downs.
    if ((st = run_batch(expert_lin_.data(), expert_req_.data(), 2 * n_req)) == Status::ok) {
      swiglu_inplace(gate_.data(), up_.data(), routed * I);
      st = run_batch(expert_lin_.data() + 2 * n_req, expert_req_.data() + 2 * n_req, n_req);
    }
  }
  release_experts(l, n_req);  // their weights are read: the residency may drop them now
  if (st != Status::ok)
    return fail(message, st, "layer " + std::to_string(l) + " experts: " + status_string(st));
  // Weighted sum per token in ascending expert order: a row's slots sorted ascending (groups
  // are in expert order).
  for_blocks(rows, kRowsPerBlock, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int32_t* slots = &token_entries_[size_t(r * K)];
      std::sort(slots, slots + K);
      float* dst = &tmp_[size_t(r * H)];
      for (int64_t d = 0; d < H; ++d) dst[d] = 0.0f;
      for (int64_t j = 0; j < K; ++j) {
        const float wt = group_w_[size_t(slots[j])];
        const float* src = &down_[size_t(slots[j]) * size_t(H)];
        for (int64_t d = 0; d < H; ++d) dst[d] = dst[d] + wt * src[d];
      }
    }
  });
  return Status::ok;
}

}  // namespace fwa
