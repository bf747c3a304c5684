// SPDX-License-Identifier: Apache-2.0
// Binding of the artifact writer's data plane (csrc/artifact/writer.h): fwassist.artifact.writer
// plans the layout and builds the manifest, this streams the tensors to the file, hashing them
// with the GIL released; finish() completes the temporary file, publish() renames it. Failures raise fwassist._core.ArtifactFailure(status, message); the
// temporary file is gone by then.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "artifact/writer.h"
#include "errors.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

[[noreturn]] void raise(fwa::Status st, std::string message) {
  throw fwa_python::ArtifactFailure{st, std::move(message)};
}

// A read-only view of a Python buffer for the duration of one call.
class BufferView {
 public:
  explicit BufferView(nb::handle obj) {
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_SIMPLE) != 0) throw nb::python_error();
  }
  ~BufferView() { PyBuffer_Release(&view_); }
  BufferView(const BufferView&) = delete;
  BufferView& operator=(const BufferView&) = delete;
  const void* data() const { return view_.buf; }
  size_t size() const { return size_t(view_.len); }

 private:
  Py_buffer view_;
};

nb::bytes digest_bytes(const fwa::Sha256Digest& d) {
  return nb::bytes(reinterpret_cast<const char*>(d.data()), d.size());
}

class WriterHandle {
 public:
  WriterHandle(const std::string& path, uint64_t data_offset, uint64_t data_length,
               const std::vector<std::tuple<uint64_t, uint64_t, int64_t>>& tensors,
               const std::vector<std::tuple<uint64_t, uint64_t>>& blocks, bool direct_io) {
    fwa::WriterPlan plan;
    plan.data_offset = data_offset;
    plan.data_length = data_length;
    plan.tensors.reserve(tensors.size());
    for (const auto& [off, len, blk] : tensors) plan.tensors.push_back({off, len, blk});
    for (const auto& [off, len] : blocks) plan.blocks.push_back({off, len});
    std::string msg;
    fwa::Status st;
    {
      nb::gil_scoped_release release;
      st = fwa::ArtifactWriter::create(path, std::move(plan), &w_, &msg,
                                       direct_io ? fwa::ArtifactWriter::IoMode::direct
                                                 : fwa::ArtifactWriter::IoMode::buffered);
    }
    if (st != fwa::Status::ok) raise(st, msg);
  }

  nb::bytes write_tensor(nb::handle data) {
    fwa::ArtifactWriter& w = get();
    BufferView view(data);
    fwa::Sha256Digest d;
    std::string msg;
    fwa::Status st;
    {
      nb::gil_scoped_release release;
      st = w.write_tensor(view.data(), view.size(), &d, &msg);
    }
    if (st != fwa::Status::ok) raise(st, msg);
    return digest_bytes(d);
  }

  nb::bytes block_digest(size_t i) { return digest_bytes(get().block_digest(i)); }

  void finish(nb::handle head) {
    fwa::ArtifactWriter& w = get();
    BufferView view(head);
    std::string msg;
    fwa::Status st;
    {
      nb::gil_scoped_release release;
      st = w.finish(view.data(), view.size(), &msg);
    }
    if (st != fwa::Status::ok) raise(st, msg);
  }

  std::string tmp_path() { return get().tmp_path(); }
  bool direct() { return get().direct(); }

  void publish() {
    fwa::ArtifactWriter& w = get();
    std::string msg;
    fwa::Status st;
    {
      nb::gil_scoped_release release;
      st = w.publish(&msg);
    }
    if (st != fwa::Status::ok) raise(st, msg);
    w_.reset();
  }

  void abort() { w_.reset(); }

 private:
  fwa::ArtifactWriter& get() {
    if (!w_) raise(fwa::Status::invalid_argument, "the artifact writer is closed");
    return *w_;
  }
  std::unique_ptr<fwa::ArtifactWriter> w_;
};

}  // namespace

void bind_writer(nb::module_& m) {
  nb::class_<WriterHandle>(m, "ArtifactWriter")
      .def(nb::init<const std::string&, uint64_t, uint64_t,
                    const std::vector<std::tuple<uint64_t, uint64_t, int64_t>>&,
                    const std::vector<std::tuple<uint64_t, uint64_t>>&, bool>(),
           "path"_a, "data_offset"_a, "data_length"_a, "tensors"_a, "blocks"_a,
           "direct_io"_a = true)
      .def("write_tensor", &WriterHandle::write_tensor, "data"_a)
      .def("block_digest", &WriterHandle::block_digest, "index"_a)
      .def("finish", &WriterHandle::finish, "head"_a)
      .def("tmp_path", &WriterHandle::tmp_path)
      .def("direct", &WriterHandle::direct)
      .def("publish", &WriterHandle::publish)
      .def("abort", &WriterHandle::abort);
}
