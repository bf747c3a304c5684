/* SPDX-License-Identifier: Apache-2.0 */
// The data plane of the artifact writer (docs/artifact-format.md): the caller plans the layout
// (fwassist.artifact.writer: tensor order, offsets, expert blocks, manifest length) and streams
// the tensors' bytes in file order; this places each at its offset, hashes it (and its expert
// block, both SHA-256 streams in one pass over the bytes) while writing, then takes the header
// and manifest, which hold those digests, writes them in front, fsyncs and renames the file
// over the target. Memory is two 4 MiB staging buffers whatever the model's size.
//
// The file is a temporary one beside the target (".<name>.XXXXXX.tmp", mode 0600 until the
// finish makes it 0644) created at its final length, so every byte the caller does not write
// (the gap after the manifest) is zero. Any failure, or destroying the writer before publish,
// removes the temporary file: the target is either the old file or the complete new one, never
// a partial write.
//
// The data region is staged: the tensors' bytes (and the zero padding between them) are
// copied, as they are hashed, into one of two page-aligned 4 MiB buffers, and a second thread
// writes each full buffer at its page-aligned file offset while the next one fills. With
// IoMode::direct the file is opened O_DIRECT, so those writes go from the buffer to the device
// without a copy into the page cache: on a VM the kernel's page-cache copy was a third of the
// writer's CPU time and capped it at the buffered write rate (benchmarks/README.md, scale_30b),
// and a multi-GB artifact written once has no use for the cache it would evict. A filesystem
// that refuses O_DIRECT (tmpfs, some network mounts) gets the same staged writes buffered.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "artifact/sha256.h"
#include "core/status.h"

namespace fwa {

struct WriterPlan {
  struct Tensor {
    uint64_t offset = 0;  // from data_offset
    uint64_t length = 0;
    int64_t block = -1;   // index into blocks, or -1 outside every expert block
  };
  struct Block {
    uint64_t offset = 0;  // from data_offset
    uint64_t length = 0;
  };
  uint64_t data_offset = 0;  // where the data region starts (header + manifest before it)
  uint64_t data_length = 0;
  std::vector<Tensor> tensors;  // in file order (increasing offset)
  std::vector<Block> blocks;    // in file order; each block's tensors are consecutive
};

class ArtifactWriter {
 public:
  enum class IoMode { direct, buffered };  // direct: O_DIRECT where the filesystem allows it

  ~ArtifactWriter();
  ArtifactWriter(const ArtifactWriter&) = delete;
  ArtifactWriter& operator=(const ArtifactWriter&) = delete;

  // Checks the plan (in order, inside the data region, blocks holding their tensors) and
  // creates the temporary file. Status invalid_argument for a bad plan, io_error otherwise.
  static Status create(const std::string& path, WriterPlan plan,
                       std::unique_ptr<ArtifactWriter>* out, std::string* msg,
                       IoMode mode = IoMode::direct);

  // Writes the next tensor of the plan (its `length` bytes) and returns its sha256. After the
  // last tensor of an expert block, that block's digest is known (block_digest).
  Status write_tensor(const void* data, size_t n, Sha256Digest* digest, std::string* msg);
  size_t tensors_written() const { return next_; }
  const Sha256Digest& block_digest(size_t i) const { return block_digests_[i]; }

  // head: the 128-byte header followed by the manifest (at most data_offset bytes). Needs every
  // tensor written; writes head at offset 0, checks the file's size, fsyncs and closes it. The
  // complete file is then tmp_path(), for a check before publish().
  Status finish(const void* head, size_t n, std::string* msg);
  const std::string& tmp_path() const { return tmp_; }

  // After finish: makes the file 0644, renames it over the target, fsyncs the directory.
  Status publish(std::string* msg);

  // Removes the temporary file (also done by the destructor unless published).
  void abort();

  // Whether the data region went to the device O_DIRECT (false: buffered, by request or
  // because the filesystem refused it).
  bool direct() const { return direct_; }

 private:
  static constexpr size_t kStage = size_t(4) << 20;  // one staging buffer, a page multiple

  ArtifactWriter() = default;
  Status fail(Status st, std::string text, std::string* msg);
  Status put(uint64_t at, const uint8_t* p, size_t n, std::string* msg);
  // Staging: append n bytes (nullptr: zeros) to the data stream; hand a full buffer to the
  // I/O thread; wait for it to have written everything.
  Status stage(const uint8_t* p, size_t n, std::string* msg);
  Status submit(size_t n, std::string* msg);
  Status drain(std::string* msg);
  void io_loop();
  void stop_io();

  std::string path_, tmp_, dir_;
  int fd_ = -1;
  bool direct_ = false;
  // Two buffers: fill_buf_ fills from the caller while the I/O thread writes the other.
  // pending_: the buffer handed over (-1 none), its length and file offset; io_error_: the
  // first write error (errno), after which nothing more is written.
  std::unique_ptr<uint8_t, void (*)(void*)> stage_mem_{nullptr, nullptr};
  uint8_t* bufs_[2] = {nullptr, nullptr};
  int fill_buf_ = 0;
  size_t fill_ = 0;
  uint64_t fill_at_ = 0;  // file offset of the filling buffer's first byte
  std::thread io_;
  std::mutex mu_;
  std::condition_variable cv_;
  int pending_ = -1;
  size_t pending_len_ = 0;
  uint64_t pending_at_ = 0;
  int io_error_ = 0;
  bool io_stop_ = false;
  WriterPlan plan_;
  std::vector<size_t> block_last_;  // index of each block's last tensor
  std::vector<Sha256Digest> block_digests_;
  Sha256 block_hash_;
  uint64_t block_pos_ = 0;  // end of what block_hash_ has seen, from data_offset
  size_t next_ = 0;
  bool finished_ = false;
  bool committed_ = false;
};

}  // namespace fwa
