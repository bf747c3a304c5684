// SPDX-License-Identifier: Apache-2.0
// Bindings of the artifact reader (csrc/artifact): SHA-256 of a buffer, and an artifact handle
// opened from a path (mapped read-only) or from a Python buffer (borrowed, held until the last
// view is gone). fwassist.loader wraps this in the typed API.
//
// Failures raise fwassist._core.ArtifactFailure(status_name, message), a ValueError subclass
// that fwassist.loader turns into ArtifactError. Hashing and verification run with the GIL
// released. Views are read-only numpy arrays over the artifact's bytes (no copy); each holds a
// reference to the artifact, so the memory stays valid after close() until the last view dies.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "artifact/reader.h"
#include "artifact/sha256.h"
#include "errors.h"

namespace nb = nanobind;
using namespace nb::literals;

using fwa_python::ArtifactFailure;

namespace {

[[noreturn]] void raise(fwa::Status st, std::string message) {
  throw ArtifactFailure{st, std::move(message)};
}

// A Python object's buffer (bytes, bytearray, memoryview, contiguous numpy array, mmap...),
// held for the artifact's lifetime: a bytearray cannot be resized while it is exported.
class PyBufferSource : public fwa::ByteSource {
 public:
  explicit PyBufferSource(nb::handle obj) {
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_SIMPLE) != 0) throw nb::python_error();
    data_ = static_cast<const uint8_t*>(view_.buf);
    size_ = size_t(view_.len);
  }
  ~PyBufferSource() override {
    nb::gil_scoped_acquire gil;
    PyBuffer_Release(&view_);
  }

 private:
  Py_buffer view_;
};

class ArtifactHandle {
 public:
  explicit ArtifactHandle(std::shared_ptr<fwa::Artifact> a) : a_(std::move(a)) {}

  fwa::Artifact& get() const {
    if (!a_) throw std::invalid_argument("the artifact is closed");
    return *a_;
  }
  const std::shared_ptr<fwa::Artifact>& shared() const {
    get();
    return a_;
  }
  void close() { a_.reset(); }
  bool closed() const { return !a_; }

 private:
  std::shared_ptr<fwa::Artifact> a_;
};

using Pin = std::optional<std::string>;  // None: no pin; "" is a malformed pin (parse_pin)

fwa::OpenOptions open_options(const Pin& pin, bool lazy, bool copy, bool strict) {
  fwa::OpenOptions opt;
  opt.pin = pin;
  opt.lazy = lazy;
  opt.copy = copy;
  opt.strict = strict;
  return opt;
}

ArtifactHandle open_source(std::shared_ptr<const fwa::ByteSource> src,
                           const fwa::OpenOptions& opt) {
  std::unique_ptr<fwa::Artifact> a;
  std::string msg;
  fwa::Status st;
  {
    nb::gil_scoped_release release;
    st = fwa::Artifact::open(src, opt, &a, &msg);
    src.reset();  // on failure the last reference may go here: PyBufferSource takes the GIL
  }
  if (st != fwa::Status::ok) raise(st, msg);
  return ArtifactHandle(std::shared_ptr<fwa::Artifact>(std::move(a)));
}

ArtifactHandle open_path(const std::string& path, const Pin& pin, bool lazy, bool copy,
                         bool strict) {
  const fwa::OpenOptions opt = open_options(pin, lazy, copy, strict);
  std::unique_ptr<fwa::Artifact> a;
  std::string msg;
  fwa::Status st;
  {
    nb::gil_scoped_release release;
    st = fwa::Artifact::open_file(path, opt, &a, &msg);
  }
  if (st != fwa::Status::ok) raise(st, msg);
  return ArtifactHandle(std::shared_ptr<fwa::Artifact>(std::move(a)));
}

// copy: the buffer's bytes go into private memory and the buffer is released at once.
ArtifactHandle open_buffer(nb::handle obj, const Pin& pin, bool lazy, bool copy) {
  const fwa::OpenOptions opt = open_options(pin, lazy, false, false);
  if (!copy) return open_source(std::make_shared<PyBufferSource>(obj), opt);
  std::shared_ptr<const fwa::ByteSource> private_copy;
  {
    PyBufferSource view(obj);
    nb::gil_scoped_release release;
    private_copy = fwa::copy_memory(view.data(), view.size());
  }
  return open_source(std::move(private_copy), opt);
}

nb::bytes sha256_bytes(nb::handle obj, const std::string& backend) {
  const fwa::Sha256Backend* be = &fwa::sha256_backend();
  if (!backend.empty()) {
    be = fwa::sha256_find_backend(backend.c_str());
    if (!be) {
      throw std::invalid_argument("sha256 backend '" + backend + "' is not available here (" +
                                  fwa::sha256_backend_names() + ")");
    }
  }
  Py_buffer view;
  if (PyObject_GetBuffer(obj.ptr(), &view, PyBUF_SIMPLE) != 0) throw nb::python_error();
  fwa::Sha256Digest d;
  {
    nb::gil_scoped_release release;
    d = fwa::sha256(view.buf, size_t(view.len), *be);
  }
  PyBuffer_Release(&view);
  return nb::bytes(reinterpret_cast<const char*>(d.data()), d.size());
}

const fwa::TensorInfo& info_of(const fwa::Artifact& a, const std::string& name) {
  const fwa::TensorInfo* t = a.find_tensor(name);
  if (!t) raise(fwa::Status::invalid_argument, "no tensor named '" + name + "'");
  return *t;
}

nb::dict tensor_info(const ArtifactHandle& h, const std::string& name) {
  const fwa::Artifact& a = h.get();
  const fwa::TensorInfo& t = info_of(a, name);
  nb::dict d;
  d["name"] = t.name;
  d["role"] = t.role;
  d["dtype"] = fwa::dtype_name(t.dtype);
  nb::list shape;
  for (int i = 0; i < t.rank; ++i) shape.append(t.shape[i]);
  d["shape"] = nb::tuple(shape);
  if (t.dtype == fwa::DType::packed) {
    nb::dict q;
    q["bits"] = t.quant.bits;
    q["block"] = t.quant.block;
    q["zero_points"] = t.quant.has_zero;
    q["scale"] = t.quant.scale == fwa::ScaleType::f16 ? "f16" : "f32";
    d["quant"] = q;
  } else {
    d["quant"] = nb::none();
  }
  d["offset"] = t.offset;
  d["length"] = t.length;
  d["layer"] = t.layer < 0 ? nb::object(nb::none()) : nb::object(nb::int_(t.layer));
  d["expert"] = t.expert < 0 ? nb::object(nb::none()) : nb::object(nb::int_(t.expert));
  d["sha256"] = fwa::digest_hex(t.sha256);
  return d;
}

// The verified bytes of a tensor (verifying its expert block first when lazy).
// (A local reference keeps the artifact alive if another thread closes the handle meanwhile.)
fwa::TensorView checked_view(const ArtifactHandle& h, const std::string& name) {
  const std::shared_ptr<fwa::Artifact> keep = h.shared();
  fwa::Artifact& a = *keep;
  const fwa::TensorInfo& t = info_of(a, name);
  fwa::TensorView v;
  std::string msg;
  fwa::Status st;
  {
    nb::gil_scoped_release release;
    st = a.tensor_at(size_t(&t - a.tensors().data()), &v, &msg);
  }
  if (st != fwa::Status::ok) raise(st, msg);
  return v;
}

nb::capsule keep_alive(const ArtifactHandle& h) {
  auto* keep = new std::shared_ptr<fwa::Artifact>(h.shared());
  return nb::capsule(keep, [](void* p) noexcept {
    delete static_cast<std::shared_ptr<fwa::Artifact>*>(p);
  });
}

using RoArray = nb::ndarray<nb::numpy, nb::ro>;

// uint8 view of a tensor's bytes.
RoArray tensor_bytes(const ArtifactHandle& h, const std::string& name) {
  const fwa::TensorView v = checked_view(h, name);
  const size_t n = size_t(v.info->length);
  return RoArray(v.data, 1, &n, keep_alive(h), nullptr, nb::dtype<uint8_t>());
}

// Typed view: float32 / float16 in the tensor's shape, bf16 as uint16 bit patterns; packed
// tensors as their uint8 bytes.
RoArray tensor_array(const ArtifactHandle& h, const std::string& name) {
  const fwa::TensorView v = checked_view(h, name);
  const fwa::TensorInfo& t = *v.info;
  if (t.dtype == fwa::DType::packed) {
    const size_t n = size_t(t.length);
    return RoArray(v.data, 1, &n, keep_alive(h), nullptr, nb::dtype<uint8_t>());
  }
  size_t shape[fwa::kArtifactMaxRank];
  for (int i = 0; i < t.rank; ++i) shape[i] = size_t(t.shape[i]);
  nb::dlpack::dtype dt;
  switch (t.dtype) {
    case fwa::DType::f32: dt = nb::dtype<float>(); break;
    case fwa::DType::f16:
      dt = {uint8_t(nb::dlpack::dtype_code::Float), 16, 1};
      break;
    default: dt = nb::dtype<uint16_t>(); break;  // bf16 bit patterns
  }
  return RoArray(v.data, size_t(t.rank), shape, keep_alive(h), nullptr, dt);
}

void verify_expert(const ArtifactHandle& h, int64_t layer, int64_t expert) {
  const std::shared_ptr<fwa::Artifact> keep = h.shared();
  fwa::Artifact& a = *keep;
  std::string msg;
  fwa::Status st;
  {
    nb::gil_scoped_release release;
    st = a.verify_expert(layer, expert, &msg);
  }
  if (st != fwa::Status::ok) raise(st, msg);
}

nb::list expert_blocks(const ArtifactHandle& h) {
  const fwa::Artifact& a = h.get();
  nb::list out;
  for (size_t i = 0; i < a.expert_blocks().size(); ++i) {
    const fwa::ExpertBlockInfo& b = a.expert_blocks()[i];
    nb::dict d;
    d["layer"] = b.layer;
    d["expert"] = b.expert;
    d["offset"] = b.offset;
    d["length"] = b.length;
    d["sha256"] = fwa::digest_hex(b.sha256);
    d["verified"] = a.block_verified(i);
    out.append(d);
  }
  return out;
}

nb::list tensor_names(const ArtifactHandle& h) {
  nb::list out;
  for (const fwa::TensorInfo& t : h.get().tensors()) out.append(t.name);
  return out;
}

}  // namespace

void bind_artifact(nb::module_& m) {
  static nb::handle failure_type = PyErr_NewExceptionWithDoc(
      "fwassist._core.ArtifactFailure",
      "An artifact failed to open or verify: args are (status name, message).",
      PyExc_ValueError, nullptr);
  if (!failure_type) throw nb::python_error();
  m.attr("ArtifactFailure") = failure_type;
  nb::register_exception_translator(
      [](const std::exception_ptr& p, void* payload) {
        try {
          std::rethrow_exception(p);
        } catch (const ArtifactFailure& e) {
          PyObject* msg = PyUnicode_DecodeUTF8(e.message.data(), Py_ssize_t(e.message.size()),
                                               "replace");
          PyObject* args =
              msg ? Py_BuildValue("(sN)", fwa::status_name(e.status), msg) : nullptr;
          if (args) {
            PyErr_SetObject(static_cast<PyObject*>(payload), args);
            Py_DECREF(args);
          }
        }
      },
      failure_type.ptr());

  m.def("sha256", &sha256_bytes, "data"_a, "backend"_a = "",
        "SHA-256 of a bytes-like object (GIL released); backend '' is the one in use");
  m.def("sha256_backends", &fwa::sha256_backend_names);
  m.def("sha256_backend", [] { return std::string(fwa::sha256_backend().name); });

  nb::class_<ArtifactHandle>(m, "ArtifactHandle")
      .def_static("open_path", &open_path, "path"_a, "pin"_a = nb::none(), "lazy"_a = false,
                  "copy"_a = false, "strict"_a = false)
      .def_static("open_buffer", &open_buffer, "buffer"_a, "pin"_a = nb::none(),
                  "lazy"_a = false, "copy"_a = false)
      .def("root_digest",
           [](const ArtifactHandle& h) {
             const auto& d = h.get().root_digest();
             return nb::bytes(reinterpret_cast<const char*>(d.data()), d.size());
           })
      .def("pin", [](const ArtifactHandle& h) { return h.get().pin(); })
      .def("manifest",
           [](const ArtifactHandle& h) {
             const fwa::Artifact& a = h.get();
             return nb::bytes(reinterpret_cast<const char*>(a.manifest_data()),
                              a.manifest_size());
           })
      .def_prop_ro("lazy", [](const ArtifactHandle& h) { return h.get().lazy(); })
      .def_prop_ro("protection",
                   [](const ArtifactHandle& h) { return fwa::protection_name(h.get().protection()); })
      .def_prop_ro("closed", &ArtifactHandle::closed)
      .def_prop_ro("data_offset", [](const ArtifactHandle& h) { return h.get().data_offset(); })
      .def_prop_ro("data_length", [](const ArtifactHandle& h) { return h.get().data_length(); })
      .def("tensor_names", &tensor_names)
      .def("tensor_info", &tensor_info, "name"_a)
      .def("tensor_bytes", &tensor_bytes, "name"_a)
      .def("tensor_array", &tensor_array, "name"_a)
      .def("verify_expert", &verify_expert, "layer"_a, "expert"_a)
      .def("expert_blocks", &expert_blocks)
      .def("close", &ArtifactHandle::close);
}
