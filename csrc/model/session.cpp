// SPDX-License-Identifier: Apache-2.0
#include "model/session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <new>

#include "kernels/vec.h"
#include "model/forward_steps.h"
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

// Attention: query rows whose scores share one pass over K, and the most outputs of a pass.
constexpr int64_t kAttentionRows = 4, kAttentionOutputs = 32;
// Score rows are padded by a cache line: at a power-of-two context they would all map to the
// same L1 sets as each other and as the K rows (4 KiB apart at 1024 positions).
inline int64_t score_stride(int64_t ctx) { return ctx + 16; }

// One attention task: every row of the chunk for `per_task` query heads of one KV head (the
// heads sharing it are split into group / per_task tasks).
struct AttentionJob {
  const float* q;        // [rows, nh*hd]
  const void* k_cache;   // this layer: [nkv, hd, ctx], of `kv` elements
  const void* v_cache;   // this layer: [nkv, ctx, hd]
  KvType kv;
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
  const size_t elem = a.kv == KvType::f32 ? 4 : 2;
  const void* K = static_cast<const uint8_t*>(a.k_cache) + size_t(g * hd * a.ctx) * elem;
  const void* V = static_cast<const uint8_t*>(a.v_cache) + size_t(g * a.ctx * hd) * elem;
  // x . a over the cache in its storage type, widened exactly (kernels/vec.h).
  auto sums = [&](int k, const float* const* w, const void* x, int64_t ld, int64_t rows,
                  int64_t n, float* const* y) {
    if (a.kv == KvType::f32)
      ops.weighted_row_sums(k, w, static_cast<const float*>(x), ld, rows, n, y);
    else if (a.kv == KvType::f16)
      ops.weighted_row_sums_f16(k, w, static_cast<const uint16_t*>(x), ld, rows, n, y);
    else
      ops.weighted_row_sums_bf16(k, w, static_cast<const uint16_t*>(x), ld, rows, n, y);
  };
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
    sums(m, in, K, a.ctx, hd, a.pos0 + r1, sc);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = a.pos0 + r + 1;  // causal: positions 0..pos
      float* const* p = sc + (r - r0) * nt;
      for (int64_t k = 0; k < nt; ++k) {
        ops.divide(p[k], a.sqrt_hd, n);
        softmax_inplace(p[k], n);
        out[k] = a.out + (r * a.nh + h0 + k) * hd;
      }
      sums(int(nt), p, V, hd, n, hd, out);
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

}  // namespace

int64_t kv_bytes_per_token(const ModelConfig& c, KvType type) {
  return 2 * c.num_layers * c.num_kv_heads * c.head_dim * (type == KvType::f32 ? 4 : 2);
}

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
  if (o.kv_cache != KvType::f32 && o.kv_cache != KvType::f16 && o.kv_cache != KvType::bf16)
    return fail(message, Status::invalid_argument,
                "session: kv_cache must be f32, f16 or bf16, got " +
                    std::to_string(int(o.kv_cache)));
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
  const ModelConfig& c = model_->config();
  const int64_t C = opt_.prefill_chunk, H = c.hidden_size, hd = c.head_dim;
  const int64_t nh = c.num_heads, nkv = c.num_kv_heads, L = c.num_layers;
  ctx_ = opt_.max_context;
  chunk_ = C;
  if (opt_.pool) {
    pool_ = opt_.pool;
  } else {
    own_pool_.reset(new ThreadPool(opt_.n_threads));
    pool_ = own_pool_.get();
  }
  policy_.set(opt_.n_threads, 0, opt_.n_threads);
  decode_bytes_ = decode_step_bytes(*model_);
  tokens_.reserve(size_t(ctx_));
  kv_elem_ = opt_.kv_cache == KvType::f32 ? 4 : 2;
  k_cache_.reset(new uint8_t[size_t(L * nkv * hd * ctx_) * kv_elem_]);
  v_cache_.reset(new uint8_t[size_t(L * nkv * ctx_ * hd) * kv_elem_]);
  kv_cache_bytes_ = 2 * size_t(L * nkv * hd * ctx_) * kv_elem_;

  // Matmul workspace: the largest any linear needs for C rows.
  ws_bytes_ = forward_workspace_bytes(*model_, C, opt_.mode);
  // The MLP block's per-chunk scratch: the larger of the MoE and the dense plans at C rows.
  BufferPlan p;
  moe_.declare(*model_, opt_.n_threads, C, opt_.mode, &p);
  ffn_bytes_ = mlp_scratch_bytes(moe_, C, dense_intermediate(*model_));

  p.declare(&x_, C * H, "hidden states");
  p.declare(&xn_, C * H, "normalised hidden states");
  p.declare(&tmp_, C * H, "block outputs");
  p.declare(&q_, C * nh * hd, "queries");
  p.declare(&attn_, C * nh * hd, "attention outputs");
  p.declare(&k_, C * nkv * hd, "keys");
  p.declare(&v_, C * nkv * hd, "values");
  p.declare(&scores_, kAttentionRows * nh * score_stride(ctx_), "attention scores");
  p.declare(&rope_cos_, ctx_ * (hd / 2), "rope cos");
  p.declare(&rope_sin_, ctx_ * (hd / 2), "rope sin");
  p.declare(&last_logits_, c.vocab_size, "last logits");
  p.declare(&ws_, int64_t(ws_bytes_), "matmul workspace");
  p.declare(&ffn_scratch_, int64_t(ffn_bytes_), "mlp scratch");
  const Status st = p.allocate(&storage_, message);
  if (st != Status::ok) return st;
  rope_tables(c.rope_theta, hd, ctx_, rope_cos_, rope_sin_);
  return Status::ok;
}

Status Session::truncate(int64_t n, std::string* message) {
  if (n < 0 || n > n_past())
    return fail(message, Status::invalid_argument,
                "session: cannot truncate to " + std::to_string(n) + " tokens: the context holds " +
                    std::to_string(n_past()));
  tokens_.resize(size_t(n));
  has_last_logits_ = false;
  ++epoch_;
  return Status::ok;
}

BlockContext Session::context() {
  BlockContext ctx;
  ctx.pool = pool_;
  ctx.active_threads = policy_.active();
  ctx.mode = opt_.mode;
  ctx.workspace = ws_;
  ctx.workspace_bytes = ws_bytes_;
  ctx.weight_bytes_read = &weight_bytes_read_;
  return ctx;
}

void Session::set_policy(int max_cores, double target_ms) {
  const int max_active = max_cores < 1 || max_cores > opt_.n_threads ? opt_.n_threads : max_cores;
  int initial = max_active;
  if (target_ms > 0) {
    const double* bw = model_->read_bandwidth(pool_, max_active);
    for (int n = 1; n <= max_active; ++n)
      if (decode_bytes_ / bw[n - 1] * 1e3 < CorePolicy::kBudgetMargin * target_ms) {
        initial = n;
        break;
      }
  }
  policy_.set(max_active, target_ms, initial);
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
  if (const Status st = check_room(n, message); st != Status::ok) return st;
  has_last_logits_ = false;
  ++epoch_;
  const bool timed = n == 1 && policy_.max_active() > 1;  // the policy measures decode steps
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
  if (const Status st = check_weights_mapped(*model_, message); st != Status::ok) {
    tokens_.resize(size_t(start));
    return st;
  }
  has_last_logits_ = out == LogitsOut::last;
  if (timed) {
    const double cpu = thread_cpu_ms() - cpu0;
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    policy_.account(ms, ms - cpu);
  }
  return Status::ok;
}

Status Session::check_room(int64_t n, std::string* message) const {
  if (n <= ctx_ - n_past()) return Status::ok;
  return fail(message, Status::invalid_argument,
              "session: " + std::to_string(n) + " tokens after " + std::to_string(n_past()) +
                  " exceed the context of " + std::to_string(ctx_) + " tokens");
}

Status Session::forward_chunk(const int32_t* ids, int64_t rows, int64_t pos0, LogitsOut out,
                              float* logits, std::string* message) {
  const ModelConfig& c = model_->config();
  const int64_t H = c.hidden_size;
  const BlockContext ctx = context();
  embed_rows(ctx, *model_, ids, rows, x_);
  Status st;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = model_->layer(l);
    residual_norm(ctx, c, w.input_norm, l > 0, rows, x_, tmp_, xn_);
    if ((st = attention_block(ctx, l, rows, pos0, message)) != Status::ok) return st;
    residual_norm(ctx, c, w.post_attention_norm, true, rows, x_, tmp_, xn_);
    st = mlp_block(ctx, moe_, *model_, l, xn_, rows, ffn_scratch_, ffn_bytes_, tmp_, message);
    if (st != Status::ok) return st;
  }
  // Finite weights can still overflow float32 (a NaN or Inf then reaches every later value of
  // its row, and the rows that attend to it): the residual stream and the last block's output
  // must be finite, in both modes (fast mode's activation quantization also refuses them).
  if (!all_finite(x_, rows * H) || !all_finite(tmp_, rows * H))
    return fail(message, Status::non_finite,
                "the hidden states of positions " + std::to_string(pos0) + ".." +
                    std::to_string(pos0 + rows - 1) +
                    " are not finite (NaN or Inf): the model's values overflow float32");
  if (out == LogitsOut::none) return Status::ok;
  // The last block's residual add, then the final norm, for the rows whose logits are asked.
  const int64_t first = out == LogitsOut::all ? 0 : rows - 1;
  final_norm(*model_, first, rows, x_, tmp_, xn_);
  float* y = out == LogitsOut::all ? logits : last_logits_;
  st = ctx.run_linear(model_->lm_head(), xn_ + first * H, rows - first, H, y, c.vocab_size);
  if (st != Status::ok)
    return fail(message, st, std::string("lm_head: ") + status_string(st));
  if (!all_finite(y, (rows - first) * c.vocab_size))
    return fail(message, Status::non_finite,
                "the logits of position " + std::to_string(pos0 + rows - 1) +
                    " are not finite (NaN or Inf): the model's values overflow float32");
  return Status::ok;
}

Status Session::attention_block(const BlockContext& ctx, int64_t l, int64_t rows, int64_t pos0,
                                std::string* message) {
  const ModelConfig& c = model_->config();
  const LayerWeights& w = model_->layer(l);
  const int64_t H = c.hidden_size, qd = c.num_heads * c.head_dim;
  Status st = qkv_projections(ctx, *model_, l, xn_, rows, q_, k_, v_, message);
  if (st != Status::ok) return st;
  attend(ctx, l, q_, k_, v_, attn_, rows, pos0);
  if ((st = ctx.run_linear(w.o, attn_, rows, qd, tmp_, H)) != Status::ok)
    return fail(message, st, "layer " + std::to_string(l) + " o_proj: " + status_string(st));
  return Status::ok;
}

void Session::store_kv(const BlockContext& ctx, int64_t l, float* q, float* k, const float* v,
                       int64_t rows, int64_t pos0) {
  const ModelConfig& c = model_->config();
  const LayerWeights& w = model_->layer(l);
  const int64_t hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t qd = nh * hd, kd = nkv * hd, half = hd / 2;
  const float eps = float(c.rms_norm_eps);
  uint8_t* kc = k_cache_.get() + size_t(l * nkv * hd * ctx_) * kv_elem_;
  uint8_t* vc = v_cache_.get() + size_t(l * nkv * ctx_ * hd) * kv_elem_;
  const KvType kv = opt_.kv_cache;
  ctx.for_blocks(rows, kRowsPerBlock, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t pos = pos0 + r;
      const float* cs = rope_cos_ + pos * half;
      const float* sn = rope_sin_ + pos * half;
      for (int64_t h = 0; h < nh; ++h) {
        float* qh = q + r * qd + h * hd;
        rms_norm(qh, w.q_norm.data(), hd, eps, qh);
        rope_apply(qh, hd, cs, sn);
      }
      for (int64_t g = 0; g < nkv; ++g) {
        float* kh = k + r * kd + g * hd;
        rms_norm(kh, w.k_norm.data(), hd, eps, kh);
        rope_apply(kh, hd, cs, sn);
        const float* vh = v + r * kd + g * hd;
        // Stored in the cache's type (kernels/half.h: the scalar definitions, every ISA).
        for (int64_t d = 0; d < hd; ++d) {
          const size_t ki = size_t((g * hd + d) * ctx_ + pos);
          const size_t vi = size_t((g * ctx_ + pos) * hd + d);
          if (kv == KvType::f32) {
            reinterpret_cast<float*>(kc)[ki] = kh[d];
            reinterpret_cast<float*>(vc)[vi] = vh[d];
          } else if (kv == KvType::f16) {
            reinterpret_cast<uint16_t*>(kc)[ki] = f32_to_f16(kh[d]);
            reinterpret_cast<uint16_t*>(vc)[vi] = f32_to_f16(vh[d]);
          } else {
            reinterpret_cast<uint16_t*>(kc)[ki] = f32_to_bf16(kh[d]);
            reinterpret_cast<uint16_t*>(vc)[vi] = f32_to_bf16(vh[d]);
          }
        }
      }
    }
  });
}

int64_t Session::attention_splits(int64_t units, int threads) const {
  // All heads of a KV head in one task, unless that leaves cores idle or passes
  // kAttentionOutputs heads: then the fewest splits of each group (a divisor of it) that
  // give every active core a task (units: sessions attending at once, each with its tasks).
  const ModelConfig& c = model_->config();
  const int64_t nkv = c.num_kv_heads, group = c.num_heads / nkv;
  int64_t splits = 1;
  while ((units * nkv * splits < threads || group / splits > kAttentionOutputs) &&
         splits < group) {
    ++splits;
    while (group % splits) ++splits;
  }
  return splits;
}

void Session::attend_task(int64_t l, const float* q, float* out, int64_t rows, int64_t pos0,
                          int64_t splits, int64_t task) {
  const ModelConfig& c = model_->config();
  const int64_t hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads, group = nh / nkv;
  const uint8_t* kc = k_cache_.get() + size_t(l * nkv * hd * ctx_) * kv_elem_;
  const uint8_t* vc = v_cache_.get() + size_t(l * nkv * ctx_ * hd) * kv_elem_;
  AttentionJob job{q, kc, vc, opt_.kv_cache, out, scores_, rows, pos0, nh, group,
                   group / splits, hd, ctx_, score_stride(ctx_), std::sqrt(float(hd))};
  attention_heads(&job, int(task));
}

void Session::attend(const BlockContext& ctx, int64_t l, float* q, float* k, const float* v,
                     float* out, int64_t rows, int64_t pos0) {
  store_kv(ctx, l, q, k, v, rows, pos0);
  const int64_t splits = attention_splits(1, ctx.active_threads);
  ctx.for_blocks(model_->config().num_kv_heads * splits, 1, [&](int64_t t, int64_t) {
    attend_task(l, q, out, rows, pos0, splits, t);
  });
}

}  // namespace fwa
