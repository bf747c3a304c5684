/* SPDX-License-Identifier: Apache-2.0 */
// The data plane of the artifact writer (docs/artifact-format.md): the caller plans the layout
// (fwassist.artifact.writer: tensor order, offsets, expert blocks, manifest length) and streams
// the tensors' bytes in file order; this places each at its offset, hashes it (and its expert
// block, both SHA-256 streams in one pass over the bytes) while writing, then takes the header
// and manifest, which hold those digests, writes them in front, fsyncs and renames the file
// over the target. Memory is one chunk buffer whatever the model's size.
//
// The file is a temporary one beside the target (".<name>.XXXXXX.tmp", mode 0600 until the
// finish makes it 0644) created at its final length, so every byte the caller does not write
// (padding, the gap after the manifest) is zero. Any failure, or destroying the writer before
// publish, removes the temporary file: the target is either the old file or the complete new
// one, never a partial write.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
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
  ~ArtifactWriter();
  ArtifactWriter(const ArtifactWriter&) = delete;
  ArtifactWriter& operator=(const ArtifactWriter&) = delete;

  // Checks the plan (in order, inside the data region, blocks holding their tensors) and
  // creates the temporary file. Status invalid_argument for a bad plan, io_error otherwise.
  static Status create(const std::string& path, WriterPlan plan,
                       std::unique_ptr<ArtifactWriter>* out, std::string* msg);

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

 private:
  ArtifactWriter() = default;
  Status fail(Status st, std::string text, std::string* msg);
  Status put(uint64_t at, const uint8_t* p, size_t n, std::string* msg);

  std::string path_, tmp_, dir_;
  int fd_ = -1;
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
