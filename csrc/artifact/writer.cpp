// SPDX-License-Identifier: Apache-2.0
#include "artifact/writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <system_error>
#include <utility>

namespace fwa {

namespace {

// Hash and stage in chunks of this size, so that the bytes copied are still in cache from
// hashing them.
constexpr size_t kChunk = size_t(1) << 18;
constexpr size_t kPage = 4096;  // O_DIRECT alignment of offsets, lengths and buffers
const uint8_t kZeros[4096] = {};

bool set_direct(int fd, bool on) {
  const int fl = ::fcntl(fd, F_GETFL);
  return fl >= 0 && ::fcntl(fd, F_SETFL, on ? (fl | O_DIRECT) : (fl & ~O_DIRECT)) == 0;
}

std::string errno_text(const char* what, const std::string& path) {
  return std::string(what) + " " + path + ": " + std::strerror(errno);
}

void feed_zeros(Sha256& h, uint64_t n) {
  while (n > 0) {
    const size_t k = n < sizeof kZeros ? size_t(n) : sizeof kZeros;
    h.update(kZeros, k);
    n -= k;
  }
}

std::string plan_error(const WriterPlan& p) {
  if (p.data_length % 64 != 0) return "data_length is not a multiple of 64";
  if (p.data_offset % 4096 != 0 || p.data_offset < 128) return "data_offset is not a page above the header";
  uint64_t end = 0;
  for (size_t i = 0; i < p.tensors.size(); ++i) {
    const WriterPlan::Tensor& t = p.tensors[i];
    if (t.offset % 64 != 0) return "tensor " + std::to_string(i) + " is not 64-byte aligned";
    if (t.offset < end) return "tensor " + std::to_string(i) + " is out of order or overlaps";
    if (t.length > p.data_length || t.offset > p.data_length - t.length)
      return "tensor " + std::to_string(i) + " lies outside the data region";
    end = t.offset + t.length;
    if (t.block < 0) continue;
    if (size_t(t.block) >= p.blocks.size())
      return "tensor " + std::to_string(i) + " names a block that does not exist";
    const WriterPlan::Block& b = p.blocks[size_t(t.block)];
    if (t.offset < b.offset || end > b.offset + b.length)
      return "tensor " + std::to_string(i) + " lies outside its expert block";
    if ((t.offset - b.offset) % 64 != 0)
      return "tensor " + std::to_string(i) + " is not 64-byte aligned in its block";
  }
  uint64_t bend = 0;
  for (size_t i = 0; i < p.blocks.size(); ++i) {
    const WriterPlan::Block& b = p.blocks[i];
    if (b.offset % 4096 != 0 || b.length % 4096 != 0 || b.length == 0)
      return "expert block " + std::to_string(i) + " is not page-aligned";
    if (b.offset < bend || b.length > p.data_length || b.offset > p.data_length - b.length)
      return "expert block " + std::to_string(i) + " is out of order or outside the data region";
    bend = b.offset + b.length;
  }
  return "";
}

}  // namespace

ArtifactWriter::~ArtifactWriter() { abort(); }

void ArtifactWriter::stop_io() {
  if (!io_.joinable()) return;
  {
    std::lock_guard<std::mutex> g(mu_);
    io_stop_ = true;
  }
  cv_.notify_all();
  io_.join();
}

// The I/O thread: writes each buffer handed over at its offset. A filesystem that accepted
// O_DIRECT at open but refuses it on write (EINVAL) gets this and later writes buffered.
void ArtifactWriter::io_loop() {
  for (;;) {
    int buf;
    size_t n;
    uint64_t at;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return pending_ >= 0 || io_stop_; });
      if (pending_ < 0) return;
      buf = pending_;
      n = pending_len_;
      at = pending_at_;
    }
    const uint8_t* p = bufs_[buf];
    int err = 0;
    while (n > 0) {
      const ssize_t k = ::pwrite(fd_, p, n, off_t(at));
      if (k < 0) {
        if (errno == EINTR) continue;
        if (errno == EINVAL && direct_ && set_direct(fd_, false)) {
          direct_ = false;
          continue;
        }
        err = errno;
        break;
      }
      p += k;
      n -= size_t(k);
      at += uint64_t(k);
    }
    {
      std::lock_guard<std::mutex> g(mu_);
      if (err && !io_error_) io_error_ = err;
      pending_ = -1;
    }
    cv_.notify_all();
  }
}

void ArtifactWriter::abort() {
  stop_io();
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!committed_ && !tmp_.empty()) {
    ::unlink(tmp_.c_str());
    tmp_.clear();
  }
}

Status ArtifactWriter::fail(Status st, std::string text, std::string* msg) {
  abort();
  if (msg) *msg = std::move(text);
  return st;
}

Status ArtifactWriter::create(const std::string& path, WriterPlan plan,
                              std::unique_ptr<ArtifactWriter>* out, std::string* msg,
                              IoMode mode) {
  const std::string err = plan_error(plan);
  if (!err.empty()) {
    if (msg) *msg = "artifact writer plan: " + err;
    return Status::invalid_argument;
  }
  std::unique_ptr<ArtifactWriter> w(new ArtifactWriter());
  w->path_ = path;
  const size_t slash = path.rfind('/');
  w->dir_ = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  std::string tmpl = w->dir_ + "/." + base + ".XXXXXX.tmp";
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  const int fd = ::mkstemps(name.data(), 4);
  if (fd < 0) {
    if (msg) *msg = errno_text("cannot create a temporary file beside", path);
    return Status::io_error;
  }
  w->fd_ = fd;
  w->tmp_ = name.data();
  if (::ftruncate(fd, off_t(plan.data_offset + plan.data_length)) != 0)
    return w->fail(Status::io_error, errno_text("cannot size", w->tmp_), msg);
  w->block_last_.assign(plan.blocks.size(), 0);
  for (size_t i = 0; i < plan.tensors.size(); ++i)
    if (plan.tensors[i].block >= 0) w->block_last_[size_t(plan.tensors[i].block)] = i;
  w->block_digests_.assign(plan.blocks.size(), Sha256Digest{});
  void* mem = nullptr;
  if (::posix_memalign(&mem, kPage, 2 * kStage) != 0)
    return w->fail(Status::io_error, "cannot allocate the writer's staging buffers", msg);
  w->stage_mem_ = std::unique_ptr<uint8_t, void (*)(void*)>(static_cast<uint8_t*>(mem), std::free);
  w->bufs_[0] = w->stage_mem_.get();
  w->bufs_[1] = w->stage_mem_.get() + kStage;
  w->fill_at_ = plan.data_offset;
  w->direct_ = mode == IoMode::direct && set_direct(fd, true);
  w->plan_ = std::move(plan);
  ArtifactWriter* self = w.get();
  try {
    w->io_ = std::thread([self] { self->io_loop(); });
  } catch (const std::system_error&) {
    return w->fail(Status::io_error, "cannot start the writer's I/O thread", msg);
  }
  *out = std::move(w);
  return Status::ok;
}

Status ArtifactWriter::submit(size_t n, std::string* msg) {
  {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return pending_ < 0; });
    if (io_error_) {
      errno = io_error_;
      lk.unlock();
      return fail(Status::io_error, errno_text("cannot write", tmp_), msg);
    }
    pending_ = fill_buf_;
    pending_len_ = n;
    pending_at_ = fill_at_;
  }
  cv_.notify_all();
  fill_buf_ ^= 1;
  fill_at_ += n;
  fill_ = 0;
  return Status::ok;
}

Status ArtifactWriter::stage(const uint8_t* p, size_t n, std::string* msg) {
  while (n > 0) {
    const size_t k = n < kStage - fill_ ? n : kStage - fill_;
    if (p) {
      std::memcpy(bufs_[fill_buf_] + fill_, p, k);
      p += k;
    } else {
      std::memset(bufs_[fill_buf_] + fill_, 0, k);
    }
    fill_ += k;
    n -= k;
    if (fill_ == kStage) {
      const Status st = submit(kStage, msg);
      if (st != Status::ok) return st;
    }
  }
  return Status::ok;
}

// Writes the partly filled buffer (zero-padded to a page: the file is cut back to its length
// afterwards) and waits for the I/O thread to finish.
Status ArtifactWriter::drain(std::string* msg) {
  if (fill_ > 0) {
    const size_t n = (fill_ + kPage - 1) / kPage * kPage;
    std::memset(bufs_[fill_buf_] + fill_, 0, n - fill_);
    const Status st = submit(n, msg);
    if (st != Status::ok) return st;
  }
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return pending_ < 0; });
  if (io_error_) {
    errno = io_error_;
    lk.unlock();
    return fail(Status::io_error, errno_text("cannot write", tmp_), msg);
  }
  return Status::ok;
}

Status ArtifactWriter::put(uint64_t at, const uint8_t* p, size_t n, std::string* msg) {
  while (n > 0) {
    const ssize_t k = ::pwrite(fd_, p, n, off_t(at));
    if (k < 0) {
      if (errno == EINTR) continue;
      return fail(Status::io_error, errno_text("cannot write", tmp_), msg);
    }
    p += k;
    n -= size_t(k);
    at += uint64_t(k);
  }
  return Status::ok;
}

Status ArtifactWriter::write_tensor(const void* data, size_t n, Sha256Digest* digest,
                                    std::string* msg) {
  if (fd_ < 0) {
    if (msg) *msg = "the artifact writer is closed";
    return Status::invalid_argument;
  }
  if (next_ >= plan_.tensors.size())
    return fail(Status::invalid_argument, "more tensors than the plan holds", msg);
  const WriterPlan::Tensor& t = plan_.tensors[next_];
  if (n != t.length)
    return fail(Status::invalid_argument,
                "tensor " + std::to_string(next_) + ": " + std::to_string(n) +
                    " bytes, the plan has " + std::to_string(t.length),
                msg);
  const bool in_block = t.block >= 0;
  if (in_block) {
    const WriterPlan::Block& b = plan_.blocks[size_t(t.block)];
    if (next_ == 0 || plan_.tensors[next_ - 1].block != t.block) {
      block_hash_.init();
      block_pos_ = b.offset;
    }
    feed_zeros(block_hash_, t.offset - block_pos_);  // the gap before it in the block
  }
  // The padding since the previous tensor, then the tensor, into the staged stream.
  Status st = stage(nullptr, size_t(plan_.data_offset + t.offset - (fill_at_ + fill_)), msg);
  if (st != Status::ok) return st;
  Sha256 h;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  for (size_t done = 0; done < n;) {
    const size_t k = n - done < kChunk ? n - done : kChunk;
    if (in_block)
      Sha256::update_pair(h, block_hash_, p + done, k);
    else
      h.update(p + done, k);
    st = stage(p + done, k, msg);
    if (st != Status::ok) return st;
    done += k;
  }
  *digest = h.final();
  if (in_block) {
    block_pos_ = t.offset + t.length;
    const size_t bi = size_t(t.block);
    if (block_last_[bi] == next_) {
      const WriterPlan::Block& b = plan_.blocks[bi];
      feed_zeros(block_hash_, b.offset + b.length - block_pos_);
      block_digests_[bi] = block_hash_.final();
    }
  }
  ++next_;
  return Status::ok;
}

Status ArtifactWriter::finish(const void* head, size_t n, std::string* msg) {
  if (fd_ < 0) {
    if (msg) *msg = "the artifact writer is closed";
    return Status::invalid_argument;
  }
  if (next_ != plan_.tensors.size())
    return fail(Status::invalid_argument,
                "finish after " + std::to_string(next_) + " of " +
                    std::to_string(plan_.tensors.size()) + " tensors",
                msg);
  if (n < 128 || n > plan_.data_offset)
    return fail(Status::invalid_argument, "header and manifest do not fit before data_offset",
                msg);
  Status st = drain(msg);
  if (st != Status::ok) return st;
  stop_io();
  // The last page written may reach past the end; the head is not page-sized: buffered.
  if (::ftruncate(fd_, off_t(plan_.data_offset + plan_.data_length)) != 0)
    return fail(Status::io_error, errno_text("cannot size", tmp_), msg);
  if (direct_ && !set_direct(fd_, false))
    return fail(Status::io_error, errno_text("cannot leave O_DIRECT on", tmp_), msg);
  st = put(0, static_cast<const uint8_t*>(head), n, msg);
  if (st != Status::ok) return st;
  struct stat sb;
  if (::fstat(fd_, &sb) != 0) return fail(Status::io_error, errno_text("cannot stat", tmp_), msg);
  if (uint64_t(sb.st_size) != plan_.data_offset + plan_.data_length)
    return fail(Status::io_error, "the written file's size differs from the plan", msg);
  if (::fsync(fd_) != 0) return fail(Status::io_error, errno_text("cannot fsync", tmp_), msg);
  if (::fchmod(fd_, 0644) != 0) return fail(Status::io_error, errno_text("cannot chmod", tmp_), msg);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) return fail(Status::io_error, errno_text("cannot close", tmp_), msg);
  finished_ = true;
  return Status::ok;
}

Status ArtifactWriter::publish(std::string* msg) {
  if (!finished_ || tmp_.empty()) {
    if (msg) *msg = "publish before finish";
    return Status::invalid_argument;
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    return fail(Status::io_error, errno_text("cannot rename the temporary file to", path_), msg);
  committed_ = true;
  tmp_.clear();
  // The rename is durable once the directory is; a failure here leaves the complete file.
  const int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return Status::ok;
}

}  // namespace fwa
