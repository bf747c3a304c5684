// SPDX-License-Identifier: Apache-2.0
#include "model/forward_steps.h"

#include <algorithm>
#include <cstring>

#include "model/math.h"

namespace fwa {

namespace {

Status fail(std::string* message, Status st, const std::string& text) {
  if (message) *message = text;
  return st;
}

void declare_dense_scratch(int64_t rows, int64_t I, float** gate, float** up, BufferPlan* plan) {
  if (I == 0) return;
  plan->declare(gate, rows * I, "mlp gate");
  plan->declare(up, rows * I, "mlp up");
}

}  // namespace

bool all_finite(const float* x, int64_t n) {
  uint32_t hit = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t v;
    std::memcpy(&v, x + i, 4);
    hit |= uint32_t((v & 0x7f800000u) == 0x7f800000u);
  }
  return hit == 0;
}

size_t forward_workspace_bytes(const Model& model, int64_t rows, ComputeMode mode) {
  size_t bytes = linear_workspace_bytes(model.lm_head(), rows, mode);
  for (int64_t l = 0; l < model.config().num_layers; ++l) {
    const LayerWeights& w = model.layer(l);
    for (const Linear* lin : {&w.q, &w.k, &w.v, &w.o, &w.router, &w.mlp_gate, &w.mlp_up,
                              &w.mlp_down})
      if (lin->present()) bytes = std::max(bytes, linear_workspace_bytes(*lin, rows, mode));
    for (const ExpertWeights& e : w.experts)
      for (const Linear* lin : {&e.gate, &e.up, &e.down})
        bytes = std::max(bytes, linear_workspace_bytes(*lin, rows, mode));
  }
  return bytes;
}

int64_t dense_intermediate(const Model& model) {
  for (int64_t l = 0; l < model.config().num_layers; ++l)
    if (!model.layer(l).moe) return model.config().intermediate_size;
  return 0;
}

size_t mlp_scratch_bytes(MoeBlock& moe, int64_t rows, int64_t dense_I) {
  BufferPlan moe_scratch, dense_scratch;
  moe.declare_scratch(rows, &moe_scratch);
  float *gate = nullptr, *up = nullptr;
  declare_dense_scratch(rows, dense_I, &gate, &up, &dense_scratch);
  return std::max(moe_scratch.bytes(), dense_scratch.bytes());
}

void embed_rows(const BlockContext& ctx, const Model& model, const int32_t* ids, int64_t rows,
                float* x) {
  const int64_t H = model.config().hidden_size;
  for (int64_t r = 0; r < rows; ++r) linear_row(model.embed(), ids[r], x + r * H);
  *ctx.weight_bytes_read += size_t(rows) * (linear_bytes(model.embed()) / size_t(model.embed().N));
}

void residual_norm(const BlockContext& ctx, const ModelConfig& c, const std::vector<float>& norm,
                   bool add, int64_t rows, float* x, const float* tmp, float* xn) {
  const int64_t H = c.hidden_size;
  const float eps = float(c.rms_norm_eps);
  ctx.for_blocks(rows, kRowsPerBlock, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* xr = x + r * H;
      if (add)
        for (int64_t i = 0; i < H; ++i) xr[i] = xr[i] + tmp[r * H + i];
      rms_norm(xr, norm.data(), H, eps, xn + r * H);
    }
  });
}

void final_norm(const Model& model, int64_t first, int64_t rows, float* x, const float* tmp,
                float* xn) {
  const int64_t H = model.config().hidden_size;
  const float eps = float(model.config().rms_norm_eps);
  for (int64_t r = first; r < rows; ++r) {
    float* xr = x + r * H;
    for (int64_t i = 0; i < H; ++i) xr[i] = xr[i] + tmp[r * H + i];
    rms_norm(xr, model.final_norm().data(), H, eps, xn + r * H);
  }
}

Status qkv_projections(const BlockContext& ctx, const Model& model, int64_t l, const float* xn,
                       int64_t rows, float* q, float* k, float* v, std::string* message) {
  const ModelConfig& c = model.config();
  const LayerWeights& w = model.layer(l);
  const int64_t H = c.hidden_size, qd = c.num_heads * c.head_dim;
  const int64_t kd = c.num_kv_heads * c.head_dim;
  // One parallel region and one activation quantization for the three projections (they
  // share their input, so they share the workspace).
  const Linear* qkv[3] = {&w.q, &w.k, &w.v};
  const LinearRequest req[3] = {ctx.request(xn, rows, H, q, qd), ctx.request(xn, rows, H, k, kd),
                                ctx.request(xn, rows, H, v, kd)};
  const Status st = ctx.run_batch(qkv, req, 3);
  if (st != Status::ok)
    return fail(message, st, "layer " + std::to_string(l) + " attention projections: " +
                                 status_string(st));
  return Status::ok;
}

Status mlp_block(const BlockContext& ctx, MoeBlock& moe, const Model& model, int64_t l,
                 const float* xn, int64_t rows, void* scratch, size_t scratch_bytes, float* tmp,
                 std::string* message) {
  const LayerWeights& w = model.layer(l);
  if (w.moe) return moe.run(ctx, l, xn, rows, tmp, scratch, scratch_bytes, message);
  const int64_t H = model.config().hidden_size, I = model.config().intermediate_size;
  float *gate = nullptr, *up = nullptr;
  BufferPlan plan;
  declare_dense_scratch(rows, I, &gate, &up, &plan);
  Status st = plan.carve(scratch, scratch_bytes, false, message);
  if (st != Status::ok) return st;
  if ((st = ctx.run_linear(w.mlp_gate, xn, rows, H, gate, I)) != Status::ok ||
      (st = ctx.run_linear(w.mlp_up, xn, rows, H, up, I)) != Status::ok)
    return fail(message, st, "layer " + std::to_string(l) + " mlp: " + status_string(st));
  swiglu_inplace(gate, up, rows * I);
  if ((st = ctx.run_linear(w.mlp_down, gate, rows, I, tmp, H)) != Status::ok)
    return fail(message, st, "layer " + std::to_string(l) + " mlp_down: " + status_string(st));
  return Status::ok;
}

Status check_weights_mapped(const Model& model, std::string* message) {
  if (!model.artifact().source()->faulted()) return Status::ok;
  return fail(message, Status::io_error,
              "the artifact file was truncated while mapped (SIGBUS): its weights are gone; "
              "reload the model (copy=True or protected storage prevents this)");
}

}  // namespace fwa
