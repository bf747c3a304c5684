// SPDX-License-Identifier: Apache-2.0
// fwassist._core: thin nanobind bindings over fwassist_core. Arrays are passed without copies
// (C-contiguous numpy views); the Python side (sdk/fwassist/kernels.py) validates arguments
// and allocates outputs, this side re-checks every size it relies on and releases the GIL
// around the work.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/cpu_features.h"
#include "kernels/matmul.h"
#include "kernels/registry.h"
#include "quant/format.h"
#include "sched/bandwidth.h"

namespace nb = nanobind;
using namespace nb::literals;

void bind_artifact(nb::module_& m);  // bind_artifact.cpp
void bind_tokenizer(nb::module_& m);  // bind_tokenizer.cpp
void bind_model(nb::module_& m);      // bind_model.cpp
void bind_writer(nb::module_& m);     // bind_writer.cpp
namespace fwa_python {
void bind_release(nb::module_& m);    // bind_release.cpp
}

namespace {

template <typename T, typename... Extra>
using Array = nb::ndarray<T, nb::c_contig, nb::device::cpu, Extra...>;

void check(fwa::Status st, const char* what) {
  if (st != fwa::Status::ok) {
    throw std::invalid_argument(std::string(what) + ": " + fwa::status_string(st));
  }
}

fwa::PackedLayout make_layout(int bits, int block, bool has_zero, const std::string& scale,
                              int64_t N, int64_t K) {
  if (scale != "f16" && scale != "f32") {
    throw std::invalid_argument("scale type must be 'f16' or 'f32', got '" + scale + "'");
  }
  const fwa::QuantFormat fmt{bits, block, has_zero,
                             scale == "f16" ? fwa::ScaleType::f16 : fwa::ScaleType::f32};
  fwa::PackedLayout L;
  const fwa::Status st = fwa::packed_layout(fmt, N, K, &L);
  if (st == fwa::Status::unsupported_format) {
    throw std::invalid_argument("unsupported format: bits=" + std::to_string(bits) +
                                " block=" + std::to_string(block) +
                                " (bits must be 2, 3, 4 or 8; block 32, 64 or 128)");
  }
  check(st, "invalid shape");
  return L;
}

void require_size(size_t got, size_t want, const char* name) {
  if (got != want) {
    throw std::invalid_argument(std::string(name) + " has " + std::to_string(got) +
                                " elements, expected " + std::to_string(want));
  }
}

const fwa::KernelVariant* variant_by_name(const std::string& name) {
  if (name.empty()) return nullptr;
  const fwa::KernelVariant* v = fwa::find_variant(name.c_str());
  if (!v) throw std::invalid_argument("kernel variant '" + name + "' is not available on this CPU");
  return v;
}

// One pool for the module, grown on demand; run() is not reentrant, so calls serialise on it.
std::mutex g_pool_mu;
std::unique_ptr<fwa::ThreadPool> g_pool;

fwa::ThreadPool* pool_for(int threads) {
  if (threads < 1) throw std::invalid_argument("threads must be >= 1");
  if (threads == 1) return nullptr;
  if (!g_pool || g_pool->size() < threads) {
    g_pool.reset();
    g_pool = std::make_unique<fwa::ThreadPool>(threads);
  }
  return g_pool.get();
}

nb::dict cpu_info() {
  const fwa::CpuInfo& info = fwa::cpu_info();
  nb::dict d;
  d["arch"] = info.arch;
  d["features"] = fwa::cpu_feature_names(info.features);
  d["detected"] = fwa::cpu_feature_names(info.detected);
  d["sve_vector_bits"] = info.sve_vector_bits;
  nb::list usable;
  int n = 0;
  const fwa::KernelVariant* vs = fwa::kernel_variants(&n);
  for (int i = 0; i < n; ++i) {
    if (fwa::find_variant(vs[i].name)) usable.append(vs[i].name);
  }
  d["variants"] = usable;
  nb::dict kernels;
  for (int op = 0; op < fwa::kNumMatmulOps; ++op) {
    kernels[fwa::matmul_op_name(fwa::MatmulOp(op))] = fwa::select_kernel(fwa::MatmulOp(op)).variant;
  }
  d["kernels"] = kernels;
  return d;
}

// The variant that runs `op` ("gemv_fast", ...) when `variant` is forced ("" = dispatch).
std::string kernel_for(const std::string& op, const std::string& variant) {
  for (int i = 0; i < fwa::kNumMatmulOps; ++i) {
    if (op == fwa::matmul_op_name(fwa::MatmulOp(i))) {
      return fwa::select_kernel(fwa::MatmulOp(i), variant_by_name(variant)).variant;
    }
  }
  throw std::invalid_argument("unknown operation '" + op + "'");
}

nb::dict layout_info(int bits, int block, bool has_zero, const std::string& scale, int64_t N,
                     int64_t K) {
  const fwa::PackedLayout L = make_layout(bits, block, has_zero, scale, N, K);
  nb::dict d;
  d["n_tiles"] = L.n_tiles;
  d["k_chunks"] = L.k_chunks;
  d["n_blocks"] = L.n_blocks;
  d["chunk_bytes"] = L.chunk_bytes;
  d["scales_offset"] = L.scales_offset;
  d["zeros_offset"] = L.zeros_offset;
  d["tile_bytes"] = L.tile_bytes;
  d["total_bytes"] = L.total_bytes;
  return d;
}

void pack(Array<const uint8_t, nb::ndim<2>> codes, Array<const float, nb::ndim<2>> scales,
          std::optional<Array<const uint8_t, nb::ndim<2>>> zeros, int bits, int block,
          const std::string& scale, Array<uint8_t, nb::ndim<1>> out) {
  const int64_t N = int64_t(codes.shape(0)), K = int64_t(codes.shape(1));
  const fwa::PackedLayout L = make_layout(bits, block, zeros.has_value(), scale, N, K);
  require_size(scales.size(), size_t(N * L.n_blocks), "scales");
  if (zeros) require_size(zeros->size(), size_t(N * L.n_blocks), "zero_points");
  require_size(out.size(), L.total_bytes, "out");
  fwa::Status st;
  {
    nb::gil_scoped_release release;
    st = fwa::pack_weights(L, codes.data(), scales.data(), zeros ? zeros->data() : nullptr,
                           out.data());
  }
  if (st == fwa::Status::invalid_argument) {
    throw std::invalid_argument("pack: a code is >= 2^bits, or an fp16 scale is not exactly "
                                "representable in fp16");
  }
  check(st, "pack");
}

void unpack(Array<const uint8_t, nb::ndim<1>> data, int bits, int block, bool has_zero,
            const std::string& scale, Array<uint8_t, nb::ndim<2>> codes,
            Array<float, nb::ndim<2>> scales, Array<uint8_t, nb::ndim<2>> zeros) {
  const int64_t N = int64_t(codes.shape(0)), K = int64_t(codes.shape(1));
  const fwa::PackedLayout L = make_layout(bits, block, has_zero, scale, N, K);
  require_size(data.size(), L.total_bytes, "packed data");
  require_size(scales.size(), size_t(N * L.n_blocks), "scales");
  require_size(zeros.size(), size_t(N * L.n_blocks), "zero_points");
  nb::gil_scoped_release release;
  fwa::unpack_weights(L, data.data(), codes.data(), scales.data(), zeros.data());
}

void dequantize(Array<const uint8_t, nb::ndim<1>> data, int bits, int block, bool has_zero,
                const std::string& scale, Array<float, nb::ndim<2>> out) {
  const int64_t N = int64_t(out.shape(0)), K = int64_t(out.shape(1));
  const fwa::PackedLayout L = make_layout(bits, block, has_zero, scale, N, K);
  require_size(data.size(), L.total_bytes, "packed data");
  nb::gil_scoped_release release;
  fwa::dequantize_weights(L, data.data(), out.data());
}

fwa::ComputeMode parse_mode(const std::string& mode) {
  if (mode == "fast") return fwa::ComputeMode::fast;
  if (mode == "exact") return fwa::ComputeMode::exact;
  throw std::invalid_argument("mode must be 'fast' or 'exact', got '" + mode + "'");
}

// Shared by matmul and bench_matmul: validates and fills a request (workspace not yet set).
fwa::MatmulRequest make_request(const fwa::PackedLayout& L, const uint8_t* w, size_t w_size,
                                Array<const float, nb::ndim<2>>& x, Array<float, nb::ndim<2>>& y,
                                const std::string& mode, int threads,
                                const std::string& variant) {
  require_size(w_size, L.total_bytes, "packed data");
  const int64_t M = int64_t(x.shape(0));
  if (M < 1) throw std::invalid_argument("x must have at least one row");
  if (int64_t(x.shape(1)) != L.K) {
    throw std::invalid_argument("x has " + std::to_string(x.shape(1)) +
                                " columns but the weight has K=" + std::to_string(L.K));
  }
  if (int64_t(y.shape(0)) != M || int64_t(y.shape(1)) != L.N) {
    throw std::invalid_argument("out must have shape (M, N)");
  }
  fwa::MatmulRequest r;
  r.layout = &L;
  r.w = w;
  r.x = x.data();
  r.M = M;
  r.x_stride = L.K;
  r.y = y.data();
  r.y_stride = L.N;
  r.mode = parse_mode(mode);
  r.variant = variant_by_name(variant);
  r.n_threads = threads;
  if (threads < 1) throw std::invalid_argument("threads must be >= 1");
  return r;
}

void matmul(Array<const uint8_t, nb::ndim<1>> data, int bits, int block, bool has_zero,
            const std::string& scale, int64_t N, Array<const float, nb::ndim<2>> x,
            Array<float, nb::ndim<2>> y, const std::string& mode, int threads,
            const std::string& variant) {
  const fwa::PackedLayout L = make_layout(bits, block, has_zero, scale, N, int64_t(x.shape(1)));
  fwa::MatmulRequest r = make_request(L, data.data(), data.size(), x, y, mode, threads, variant);
  std::vector<uint8_t> ws(fwa::matmul_workspace_bytes(L, r.M, r.mode));
  r.workspace = ws.data();
  r.workspace_bytes = ws.size();
  fwa::Status st;
  {
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(g_pool_mu);
    r.pool = pool_for(threads);
    st = fwa::matmul(r);
  }
  if (st == fwa::Status::non_finite) throw std::invalid_argument("x contains NaN or Inf");
  check(st, "matmul");
}

void quantize_activations(Array<const float, nb::ndim<2>> x, Array<int8_t, nb::ndim<2>> xq,
                          Array<float, nb::ndim<2>> xd, Array<int32_t, nb::ndim<2>> xsum) {
  const int64_t M = int64_t(x.shape(0)), K = int64_t(x.shape(1));
  const int64_t kc = (K + fwa::kChunk - 1) / fwa::kChunk;
  require_size(xq.size(), size_t(M * kc * fwa::kChunk), "xq");
  require_size(xd.size(), size_t(M * kc), "xd");
  require_size(xsum.size(), size_t(M * kc), "xsum");
  fwa::Status st;
  {
    nb::gil_scoped_release release;
    st = fwa::quantize_activations(x.data(), M, K, K, kc, xq.data(), xd.data(), xsum.data());
  }
  if (st == fwa::Status::non_finite) throw std::invalid_argument("x contains NaN or Inf");
  check(st, "quantize_activations");
}

// Times `reps` calls, cycling through `weights` (several copies make a working set larger
// than the last-level cache: the "cold" case). Returns seconds per call.
std::vector<double> bench_matmul(std::vector<Array<const uint8_t, nb::ndim<1>>> weights, int bits,
                                 int block, bool has_zero, const std::string& scale, int64_t N,
                                 Array<const float, nb::ndim<2>> x, Array<float, nb::ndim<2>> y,
                                 const std::string& mode, int threads, int reps,
                                 const std::string& variant) {
  if (weights.empty() || reps < 1) throw std::invalid_argument("need weights and reps >= 1");
  const fwa::PackedLayout L = make_layout(bits, block, has_zero, scale, N, int64_t(x.shape(1)));
  fwa::MatmulRequest r =
      make_request(L, weights[0].data(), weights[0].size(), x, y, mode, threads, variant);
  for (auto& w : weights) require_size(w.size(), L.total_bytes, "packed data");
  std::vector<uint8_t> ws(fwa::matmul_workspace_bytes(L, r.M, r.mode));
  r.workspace = ws.data();
  r.workspace_bytes = ws.size();
  std::vector<double> times(static_cast<size_t>(reps));
  {
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(g_pool_mu);
    r.pool = pool_for(threads);
    for (int i = 0; i < reps; ++i) {
      r.w = weights[size_t(i) % weights.size()].data();
      const auto t0 = std::chrono::steady_clock::now();
      const fwa::Status st = fwa::matmul(r);
      const auto t1 = std::chrono::steady_clock::now();
      if (st != fwa::Status::ok) break;
      times[size_t(i)] = std::chrono::duration<double>(t1 - t0).count();
    }
  }
  return times;
}

// Memory read-bandwidth probe: one full pass over buf per rep, split over threads.
std::vector<double> bench_read_bandwidth(Array<const uint8_t, nb::ndim<1>> buf, int threads,
                                         int reps) {
  if (threads < 1 || threads > 64 || reps < 1) throw std::invalid_argument("bad threads/reps");
  std::vector<double> times(static_cast<size_t>(reps));
  nb::gil_scoped_release release;
  std::lock_guard<std::mutex> lock(g_pool_mu);
  fwa::ThreadPool* pool = pool_for(threads);
  for (int i = 0; i < reps; ++i)
    times[size_t(i)] = fwa::read_pass_seconds(pool, threads, buf.data(), buf.size());
  return times;
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "fwassist native core (bindings only; see fwassist.kernels for the typed API)";
  m.def("cpu_info", &cpu_info);
  m.def("kernel_for", &kernel_for, "op"_a, "variant"_a);
  m.def("layout_info", &layout_info, "bits"_a, "block"_a, "has_zero"_a, "scale"_a, "N"_a, "K"_a);
  m.def("pack", &pack, "codes"_a, "scales"_a, "zeros"_a.none(), "bits"_a, "block"_a, "scale"_a,
        "out"_a);
  m.def("unpack", &unpack, "data"_a, "bits"_a, "block"_a, "has_zero"_a, "scale"_a, "codes"_a,
        "scales"_a, "zeros"_a);
  m.def("dequantize", &dequantize, "data"_a, "bits"_a, "block"_a, "has_zero"_a, "scale"_a,
        "out"_a);
  m.def("matmul", &matmul, "data"_a, "bits"_a, "block"_a, "has_zero"_a, "scale"_a, "N"_a, "x"_a,
        "out"_a, "mode"_a, "threads"_a, "variant"_a);
  m.def("quantize_activations", &quantize_activations, "x"_a, "xq"_a, "xd"_a, "xsum"_a);
  m.def("bench_matmul", &bench_matmul, "weights"_a, "bits"_a, "block"_a, "has_zero"_a, "scale"_a,
        "N"_a, "x"_a, "out"_a, "mode"_a, "threads"_a, "reps"_a, "variant"_a);
  m.def("bench_read_bandwidth", &bench_read_bandwidth, "buf"_a, "threads"_a, "reps"_a);
  bind_artifact(m);
  bind_tokenizer(m);
  bind_model(m);
  bind_writer(m);
  fwa_python::bind_release(m);
}
