// SPDX-License-Identifier: Apache-2.0
#include "model/batch.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <new>

#include "model/forward_steps.h"
#include "model/math.h"

namespace fwa {

namespace {

Status fail(std::string* message, Status st, const std::string& text) {
  if (message) *message = text;
  return st;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Core-seconds between two snapshots of a pool over `wall_ms` of the caller's time, as
// Generation::finish_stats counts them: the caller's wall time less its waits, plus the
// workers' busy time; spin and parked time of every thread.
struct CoreSeconds {
  double busy = 0, spin = 0, parked = 0;
};
CoreSeconds core_seconds(const ThreadPoolStats& a, const ThreadPoolStats& b, double wall_ms) {
  const ThreadPoolThreadStats& c0 = b.thread[0];
  const ThreadPoolThreadStats& a0 = a.thread[0];
  const double caller_waits_s =
      1e-9 * double(c0.spin_ns - a0.spin_ns + c0.parked_ns - a0.parked_ns);
  const double workers_busy_s = 1e-9 * double(b.busy_ns - a.busy_ns - (c0.busy_ns - a0.busy_ns));
  CoreSeconds s;
  s.busy = std::max(0.0, 1e-3 * wall_ms - caller_waits_s) + workers_busy_s;
  s.spin = 1e-9 * double(b.spin_ns - a.spin_ns);
  s.parked = 1e-9 * double(b.parked_ns - a.parked_ns);
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// DecodeBatch

Status DecodeBatch::create(std::shared_ptr<const Model> model, const BatchOptions& options,
                           std::unique_ptr<DecodeBatch>* out, std::string* message) {
  if (!model) return fail(message, Status::invalid_argument, "batch: no model");
  if (options.slots < 1 || options.slots > kMaxSlots)
    return fail(message, Status::invalid_argument,
                "batch: slots must be in [1, " + std::to_string(kMaxSlots) + "], got " +
                    std::to_string(options.slots));
  const SessionOptions& so = options.session;
  if (so.n_threads < 1 || so.n_threads > 256)
    return fail(message, Status::invalid_argument,
                "batch: threads must be in [1, 256], got " + std::to_string(so.n_threads));
  if (so.mode != ComputeMode::exact && so.mode != ComputeMode::fast)
    return fail(message, Status::invalid_argument, "batch: mode must be exact or fast");
  try {
    std::unique_ptr<DecodeBatch> b(new DecodeBatch());
    b->model_ = model;
    b->slots_ = options.slots;
    b->n_threads_ = so.n_threads;
    b->mode_ = so.mode;
    b->vocab_ = model->config().vocab_size;
    b->pool_.reset(new ThreadPool(so.n_threads));
    SessionOptions slot = so;
    slot.pool = b->pool_.get();
    b->sessions_.resize(size_t(options.slots));
    for (std::unique_ptr<Session>& s : b->sessions_) {
      const Status st = Session::create(model, slot, &s, message);
      if (st != Status::ok) return st;
    }
    const Status st = b->allocate(message);
    if (st != Status::ok) return st;
    *out = std::move(b);
    return Status::ok;
  } catch (const std::bad_alloc&) {
    return fail(message, Status::io_error,
                "batch: out of memory allocating " + std::to_string(options.slots) +
                    " sessions of max_context " + std::to_string(so.max_context));
  } catch (const std::system_error&) {
    return fail(message, Status::io_error, "batch: cannot start the worker threads");
  }
}

Status DecodeBatch::allocate(std::string* message) {
  const ModelConfig& c = model_->config();
  const int64_t S = slots_, H = c.hidden_size, hd = c.head_dim;
  const int64_t nh = c.num_heads, nkv = c.num_kv_heads;
  ws_bytes_ = forward_workspace_bytes(*model_, S, mode_);
  BufferPlan p;
  moe_.declare(*model_, n_threads_, S, mode_, &p);
  ffn_bytes_ = mlp_scratch_bytes(moe_, S, dense_intermediate(*model_));
  p.declare(&x_, S * H, "hidden states");
  p.declare(&xn_, S * H, "normalised hidden states");
  p.declare(&tmp_, S * H, "block outputs");
  p.declare(&q_, S * nh * hd, "queries");
  p.declare(&attn_, S * nh * hd, "attention outputs");
  p.declare(&k_, S * nkv * hd, "keys");
  p.declare(&v_, S * nkv * hd, "values");
  p.declare(&logits_, S * vocab_, "logits");
  p.declare(&ids_, S, "step ids");
  p.declare(&slot_of_, S, "step slots");
  p.declare(&used_, S, "slot used");
  p.declare(&ws_, int64_t(ws_bytes_), "matmul workspace");
  p.declare(&ffn_scratch_, int64_t(ffn_bytes_), "mlp scratch");
  return p.allocate(&storage_, message);
}

Status DecodeBatch::step(const int* slot_of, const int32_t* ids, int n, std::string* message) {
  if (n < 1 || n > slots_)
    return fail(message, Status::invalid_argument,
                "batch: a step takes 1 to " + std::to_string(slots_) + " rows, got " +
                    std::to_string(n));
  if (!slot_of || !ids) return fail(message, Status::invalid_argument, "batch: null buffer");
  std::memset(used_, 0, size_t(slots_));
  for (int r = 0; r < n; ++r) {
    const int s = slot_of[r];
    if (s < 0 || s >= slots_ || used_[s])
      return fail(message, Status::invalid_argument,
                  "batch: row " + std::to_string(r) + " names slot " + std::to_string(s) +
                      (s < 0 || s >= slots_ ? ", outside [0, " + std::to_string(slots_) + ")"
                                            : ", already in this step"));
    used_[s] = 1;
    if (ids[r] < 0 || ids[r] >= vocab_)
      return fail(message, Status::invalid_argument,
                  "token id " + std::to_string(ids[r]) + " for slot " + std::to_string(s) +
                      " is outside the vocabulary [0, " + std::to_string(vocab_) + ")");
    if (const Status st = sessions_[size_t(s)]->check_room(1, message); st != Status::ok) {
      if (message) *message += " (slot " + std::to_string(s) + ")";
      return st;
    }
    slot_of_[r] = s;
    ids_[r] = ids[r];
  }
  Status st = forward(n, message);
  if (st != Status::ok) return st;
  if ((st = check_weights_mapped(*model_, message)) != Status::ok) return st;
  for (int r = 0; r < n; ++r) {
    Session& s = *sessions_[size_t(slot_of_[r])];
    s.tokens_.push_back(ids_[r]);  // capacity reserved at create: no allocation
    s.has_last_logits_ = false;    // the logits are the batch's (logits(r))
    ++s.epoch_;
  }
  return Status::ok;
}

Status DecodeBatch::forward(int n, std::string* message) {
  const ModelConfig& c = model_->config();
  const int64_t H = c.hidden_size, qd = c.num_heads * c.head_dim;
  const int64_t kd = c.num_kv_heads * c.head_dim, rows = n;
  BlockContext ctx;
  ctx.pool = pool_.get();
  ctx.active_threads = n_threads_;
  ctx.mode = mode_;
  ctx.workspace = ws_;
  ctx.workspace_bytes = ws_bytes_;
  ctx.weight_bytes_read = &weight_bytes_read_;
  // As Session::forward_chunk (model/forward_steps.h), but each row at its own session's
  // position.
  embed_rows(ctx, *model_, ids_, rows, x_);
  Status st;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = model_->layer(l);
    residual_norm(ctx, c, w.input_norm, l > 0, rows, x_, tmp_, xn_);
    if ((st = qkv_projections(ctx, *model_, l, xn_, rows, q_, k_, v_, message)) != Status::ok)
      return st;
    // Each row against its own session's cache, at that session's position: the K/V stores,
    // then every row's head tasks in one parallel region (each session has its own scores).
    for (int64_t r = 0; r < rows; ++r) {
      Session& s = *sessions_[size_t(slot_of_[r])];
      s.store_kv(ctx, l, q_ + r * qd, k_ + r * kd, v_ + r * kd, 1, s.n_past());
    }
    const int64_t splits = sessions_[0]->attention_splits(rows, ctx.active_threads);
    const int64_t per_row = c.num_kv_heads * splits;
    ctx.for_blocks(rows * per_row, 1, [&](int64_t t, int64_t) {
      const int64_t r = t / per_row;
      Session& s = *sessions_[size_t(slot_of_[r])];
      s.attend_task(l, q_ + r * qd, attn_ + r * qd, 1, s.n_past(), splits, t % per_row);
    });
    if ((st = ctx.run_linear(w.o, attn_, rows, qd, tmp_, H)) != Status::ok)
      return fail(message, st, "layer " + std::to_string(l) + " o_proj: " + status_string(st));
    residual_norm(ctx, c, w.post_attention_norm, true, rows, x_, tmp_, xn_);
    st = mlp_block(ctx, moe_, *model_, l, xn_, rows, ffn_scratch_, ffn_bytes_, tmp_, message);
    if (st != Status::ok) return st;
  }
  // As a session alone: the residual stream and the last block's output must be finite.
  if (!all_finite(x_, rows * H) || !all_finite(tmp_, rows * H))
    return fail(message, Status::non_finite,
                "the hidden states of a batched step are not finite (NaN or Inf): the model's "
                "values overflow float32");
  final_norm(*model_, 0, rows, x_, tmp_, xn_);
  st = ctx.run_linear(model_->lm_head(), xn_, rows, H, logits_, vocab_);
  if (st != Status::ok) return fail(message, st, std::string("lm_head: ") + status_string(st));
  if (!all_finite(logits_, rows * vocab_))
    return fail(message, Status::non_finite,
                "the logits of a batched step are not finite (NaN or Inf): the model's values "
                "overflow float32");
  return Status::ok;
}

const float* DecodeBatch::keep_logits(int row) {
  Session& s = *sessions_[size_t(slot_of_[row])];
  std::memcpy(s.last_logits_, logits(row), size_t(vocab_) * sizeof(float));
  s.has_last_logits_ = true;
  return s.last_logits_;
}

// ---------------------------------------------------------------------------------------------
// BatchGenerator

Status BatchGenerator::create(std::shared_ptr<const Model> model, const BatchOptions& options,
                              std::unique_ptr<BatchGenerator>* out, std::string* message) {
  std::unique_ptr<DecodeBatch> batch;
  Status st = DecodeBatch::create(std::move(model), options, &batch, message);
  if (st != Status::ok) return st;
  try {
    std::unique_ptr<BatchGenerator> g(new BatchGenerator());
    const size_t S = size_t(options.slots);
    const ModelConfig& c = batch->session(0).model().config();
    g->state_.resize(S);
    for (Slot& s : g->state_) {
      if ((st = s.sampler.init(int32_t(c.vocab_size), message)) != Status::ok) return st;
      s.stats.experts_activated.assign(size_t(c.num_layers), 0);
    }
    g->results_.resize(S);
    g->rows_slot_.resize(S);
    g->rows_id_.resize(S);
    g->batch_ = std::move(batch);
    *out = std::move(g);
    return Status::ok;
  } catch (const std::bad_alloc&) {
    return fail(message, Status::io_error, "batch: out of memory");
  }
}

int BatchGenerator::active_count() const {
  int n = 0;
  for (const Slot& s : state_) n += s.active ? 1 : 0;
  return n;
}

void BatchGenerator::finish(int slot, StopReason reason) {
  Slot& s = state_[size_t(slot)];
  s.active = false;
  s.reason = reason;
  s.freed_at = ++releases_;
}

void BatchGenerator::expert_tokens(uint64_t* out) const {
  const ModelConfig& c = batch_->session(0).model().config();
  const int64_t n = c.num_layers * c.num_experts;
  const uint64_t* b = batch_->expert_tokens();
  for (int64_t i = 0; i < n; ++i) out[i] = b ? b[i] : 0;
  for (int s = 0; s < slots(); ++s) {
    const uint64_t* t = batch_->session(s).expert_tokens();
    if (t)
      for (int64_t i = 0; i < n; ++i) out[i] += t[i];
  }
}

bool BatchGenerator::cancel(int slot) {
  if (slot < 0 || slot >= slots() || !state_[size_t(slot)].active) return false;
  finish(slot, StopReason::cancelled);
  return true;
}

Status BatchGenerator::add(const int32_t* prompt, int64_t n, const SlotParams& params,
                           int* slot, std::string* message) {
  DecodeBatch& b = *batch_;
  const ModelConfig& c = b.session(0).model().config();
  const int64_t ctx = b.session(0).options().max_context;
  if (!prompt || n < 1)
    return fail(message, Status::invalid_argument, "batch: the prompt is empty");
  for (int64_t i = 0; i < n; ++i)
    if (prompt[i] < 0 || prompt[i] >= c.vocab_size)
      return fail(message, Status::invalid_argument,
                  "token id " + std::to_string(prompt[i]) + " at position " + std::to_string(i) +
                      " is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
  if (n > ctx)
    return fail(message, Status::invalid_argument,
                "batch: the prompt's " + std::to_string(n) + " tokens exceed the context of " +
                    std::to_string(ctx) + " tokens");
  if (params.max_tokens < 1)
    return fail(message, Status::invalid_argument, "generate: max_tokens must be >= 1");
  Status st = check_sampling_params(params.sampling, message);
  if (st != Status::ok) return st;
  if (params.guard && params.guard->vocab_size() != c.vocab_size)
    return fail(message, Status::invalid_argument,
                "generate: the code policy was compiled for a vocabulary of " +
                    std::to_string(params.guard->vocab_size()) + " tokens, the model has " +
                    std::to_string(c.vocab_size));
  // The free slot with the longest common prefix; ties: the one freed first.
  int best = -1;
  int64_t best_common = -1;
  for (int i = 0; i < slots(); ++i) {
    const Slot& s = state_[size_t(i)];
    if (s.active) continue;
    const std::vector<int32_t>& t = b.session(i).tokens();
    const int64_t lim = std::min<int64_t>(int64_t(t.size()), n);
    int64_t common = 0;
    while (common < lim && t[size_t(common)] == prompt[common]) ++common;
    if (common > best_common ||
        (common == best_common && s.freed_at < state_[size_t(best)].freed_at)) {
      best = i;
      best_common = common;
    }
  }
  if (best < 0)
    return fail(message, Status::cap_exceeded,
                "batch: all " + std::to_string(slots()) + " slots are generating");
  Slot& s = state_[size_t(best)];
  Session& ss = b.session(best);
  try {
    s.params = params;
  } catch (const std::bad_alloc&) {
    return fail(message, Status::io_error, "batch: out of memory");
  }
  s.sampler.reset(params.sampling);
  s.generated = 0;
  s.reason = StopReason::none;
  std::fill(s.stats.experts_activated.begin(), s.stats.experts_activated.end(), 0);
  std::vector<int64_t> experts = std::move(s.stats.experts_activated);
  std::vector<GuardIntervention> interventions = std::move(s.stats.interventions);
  s.stats = GenerationStats();
  s.stats.experts_activated = std::move(experts);
  interventions.clear();
  s.stats.interventions = std::move(interventions);
  if (params.guard) {  // at most one per step: the steps append within this capacity
    try {
      s.stats.interventions.reserve(size_t(std::min<int64_t>(params.max_tokens, 1 << 20)));
    } catch (const std::bad_alloc&) {
      return fail(message, Status::io_error, "batch: out of memory");
    }
  }
  const int64_t keep = std::min(best_common, n - 1);  // the last prompt token gives the logits
  ThreadPoolStats before, after;
  b.pool_stats(&before);
  const uint64_t bytes0 = ss.weight_bytes_read();
  const auto t0 = std::chrono::steady_clock::now();
  ss.truncate(keep, nullptr);
  st = ss.eval(prompt + keep, n - keep, LogitsOut::last, nullptr, message);
  s.stats.prefill_ms = ms_since(t0);
  b.pool_stats(&after);
  const CoreSeconds cs = core_seconds(before, after, s.stats.prefill_ms);
  s.stats.busy_core_s = cs.busy;
  s.stats.spin_core_s = cs.spin;
  s.stats.parked_core_s = cs.parked;
  s.stats.weight_bytes_read = ss.weight_bytes_read() - bytes0;
  s.stats.prompt_tokens = n;
  s.stats.cached_tokens = keep;
  if (st != Status::ok) {
    s.freed_at = ++releases_;
    return st;
  }
  s.logits = ss.last_logits();
  s.guard_state = guard_state_after(params.guard.get(), prompt, n);
  s.active = true;
  *slot = best;
  return Status::ok;
}

Status BatchGenerator::step(int* n_out, std::string* message) {
  *n_out = 0;
  DecodeBatch& b = *batch_;
  const auto t0 = std::chrono::steady_clock::now();
  ThreadPoolStats before, after;
  b.pool_stats(&before);
  const uint64_t bytes0 = b.weight_bytes_read();
  // Sample every active slot, in the order Generation::next checks: context full, the guard
  // (policy), stop id.
  int n_res = 0, rows = 0;
  for (int i = 0; i < slots(); ++i) {
    Slot& s = state_[size_t(i)];
    if (!s.active) continue;
    const Session& ss = b.session(i);
    SlotResult& res = results_[size_t(n_res++)];
    res.slot = i;
    res.token = -1;
    res.reason = StopReason::none;
    if (ss.n_past() >= ss.options().max_context) {
      res.reason = StopReason::context_full;
      continue;
    }
    bool blocked = false;
    const int32_t tok = guarded_sample(s.sampler, s.params.guard.get(), s.guard_state, s.logits,
                                       ss.tokens().data(), size_t(ss.n_past()), s.generated,
                                       &s.stats.interventions, &s.guard_state, &blocked);
    if (blocked) {
      res.reason = StopReason::policy;  // the banned token is neither emitted nor kept
      continue;
    }
    if (std::find(s.params.stop_ids.begin(), s.params.stop_ids.end(), tok) !=
        s.params.stop_ids.end()) {
      res.reason = StopReason::stop_id;  // neither emitted nor kept
      continue;
    }
    res.token = tok;
    rows_slot_[size_t(rows)] = i;
    rows_id_[size_t(rows)] = tok;
    ++rows;
  }
  if (n_res == 0) return Status::ok;
  bool batched = rows > 0;
  if (rows > 0) {
    Status st = b.step(rows_slot_.data(), rows_id_.data(), rows, message);
    if (st == Status::non_finite) {
      // A row overflowed float32. Run the rows alone to find which (a row alone is the same
      // computation as in the batch): fast mode quantizes a layer's activations in one pass,
      // which refuses the whole step for one bad row.
      batched = false;
      for (int r = 0; r < n_res; ++r) {
        SlotResult& res = results_[size_t(r)];
        if (res.token < 0) continue;
        st = b.step(&res.slot, &res.token, 1, message);
        if (st == Status::non_finite) {
          res.reason = StopReason::non_finite;  // not kept, as a session alone refuses it
          res.token = -1;
        } else if (st != Status::ok) {
          return st;
        } else {
          state_[size_t(res.slot)].logits = b.keep_logits(0);
        }
      }
      st = Status::ok;
    }
    if (st != Status::ok) return st;
  }
  const double wall_ms = ms_since(t0);
  b.pool_stats(&after);
  const CoreSeconds cs = core_seconds(before, after, wall_ms);
  const uint64_t bytes = b.weight_bytes_read() - bytes0;
  int row = 0;
  for (int r = 0; r < n_res; ++r) {
    SlotResult& res = results_[size_t(r)];
    Slot& s = state_[size_t(res.slot)];
    if (s.generated == 0) s.stats.ttft_ms = s.stats.prefill_ms + wall_ms;
    s.stats.decode_ms += wall_ms;
    s.stats.busy_core_s += cs.busy / n_res;
    s.stats.spin_core_s += cs.spin / n_res;
    s.stats.parked_core_s += cs.parked / n_res;
    s.stats.weight_bytes_read += bytes / uint64_t(n_res) + (r == 0 ? bytes % uint64_t(n_res) : 0);
    if (res.token >= 0) {
      if (batched) s.logits = b.logits(row++);
      s.stats.generated_tokens = ++s.generated;
      if (s.generated >= s.params.max_tokens) res.reason = StopReason::max_tokens;
    }
    if (res.reason != StopReason::none) finish(res.slot, res.reason);
  }
  *n_out = n_res;
  return Status::ok;
}

}  // namespace fwa
