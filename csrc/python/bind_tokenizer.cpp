// SPDX-License-Identifier: Apache-2.0
// Bindings of the byte-level BPE tokenizer (csrc/model/tokenizer.h). fwassist.tokenizer wraps
// this in the typed API. Failures raise ValueError with the status name and message.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/tokenizer.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

// One native tokenizer plus its output buffers; calls serialise on a mutex (the native object
// uses owned scratch memory and allows one call at a time).
class TokenizerHandle {
 public:
  explicit TokenizerHandle(const std::string& json) {
    std::string msg;
    const fwa::Status st = tok_.load(json, &msg);
    if (st != fwa::Status::ok)
      throw std::invalid_argument(std::string(fwa::status_string(st)) + ": " + msg);
  }

  std::vector<int32_t> encode(const std::string& text) {
    std::vector<int32_t> ids;
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    ids_.resize(std::max<size_t>(ids_.size(), text.size() + 16));
    fwa::Status st = tok_.encode(text, ids_.data(), ids_.size(), &n);
    if (st == fwa::Status::buffer_too_small) {
      ids_.resize(n);
      st = tok_.encode(text, ids_.data(), ids_.size(), &n);
    }
    if (st == fwa::Status::invalid_argument) throw std::invalid_argument("text is not valid UTF-8");
    if (st != fwa::Status::ok)
      throw std::invalid_argument(std::string("encode: ") + fwa::status_string(st));
    ids.assign(ids_.begin(), ids_.begin() + long(n));
    return ids;
  }

  std::string decode(const std::vector<int64_t>& ids64, bool skip_special) {
    std::vector<int32_t> ids(ids64.size());
    for (size_t k = 0; k < ids64.size(); ++k) {
      if (ids64[k] < 0 || ids64[k] >= tok_.vocab_size())
        throw std::invalid_argument("unknown token id " + std::to_string(ids64[k]));
      ids[k] = int32_t(ids64[k]);
    }
    nb::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    fwa::Status st = tok_.decode(ids.data(), ids.size(), skip_special, buf_.data(), buf_.size(), &n);
    if (st == fwa::Status::buffer_too_small) {
      buf_.resize(n);
      st = tok_.decode(ids.data(), ids.size(), skip_special, buf_.data(), buf_.size(), &n);
    }
    if (st == fwa::Status::invalid_argument) throw std::invalid_argument("unknown token id");
    if (st != fwa::Status::ok)
      throw std::invalid_argument(std::string("decode: ") + fwa::status_string(st));
    return std::string(buf_.data(), n);
  }

  int vocab_size() const { return tok_.vocab_size(); }

 private:
  fwa::Tokenizer tok_;
  std::mutex mu_;
  std::vector<int32_t> ids_;
  std::vector<char> buf_;
};

}  // namespace

void bind_tokenizer(nb::module_& m) {
  nb::class_<TokenizerHandle>(m, "NativeTokenizer")
      .def(nb::init<const std::string&>(), "json"_a)
      .def("encode", &TokenizerHandle::encode, "text"_a)
      .def("decode", &TokenizerHandle::decode, "ids"_a, "skip_special_tokens"_a = true)
      .def_prop_ro("vocab_size", &TokenizerHandle::vocab_size);
}
