/* SPDX-License-Identifier: Apache-2.0 */
// The fail-closed reader and verifier of .fwa artifacts (docs/artifact-format.md, normative).
//
// Artifact::open checks, in the order of spec §5, and stops at the first failure:
//   1. the header (§2): size, magic, version, flags, reserved, lengths, offsets, file size;
//   2. the root digest sha256(manifest): against the caller's pin first (pin_mismatch), then
//      against the header (digest_mismatch) — all before the manifest is parsed;
//   3. the manifest: strict canonical JSON with the caps (json.h);
//   4. `requires` (incompatible);
//   5. the schema, section digests, the tensor table and expert blocks (§3.2–3.6);
//   6. zero padding (§4), then the sha256 of every tensor and expert block.
// In lazy mode step 6 skips the bytes inside expert blocks: verify_expert checks a block's
// padding, the digests of its tensors and the block's own digest on first use and caches the
// result (success or failure). No pointer into an unverified block is ever handed out: the
// tensor accessors verify the block first and fail closed.
//
// Every public function returns a Status with a message naming the field, tensor or block and
// the expected and actual values; no exception escapes (out of memory becomes io_error). All
// size arithmetic is checked for overflow; memory use is bounded by the manifest's size, so a
// small file never causes a large allocation.
//
// Files are opened only if they are regular files (O_NONBLOCK, then fstat: a FIFO or device
// never blocks the open) and mapped read-only, or with OpenOptions::copy read into private
// memory first. A private mapping does not freeze the file on Linux: a later write to it shows
// through the pages not yet copied, so a mapping is only as safe as the storage; its
// Protection (fs-verity, immutable, read-only filesystem, sealed memfd or none) is detected at
// open and OpenOptions::strict refuses "none". A file truncated while mapped does not kill the
// process: the SIGBUS handler maps zero pages over the lost range and marks the source
// faulted(), and the runtime turns that into an error (docs/runtime.md, "Verification
// guarantees per open mode").
#pragma once
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "artifact/sha256.h"
#include "core/status.h"
#include "quant/format.h"

namespace fwa {

// Layout constants and caps of format 1.x.
constexpr size_t kArtifactHeaderBytes = 128;
constexpr uint64_t kArtifactMaxManifest = uint64_t(16) << 20;
constexpr uint64_t kArtifactDataAlign = 4096;   // data_offset, expert block offset and length
constexpr uint64_t kArtifactTensorAlign = 64;   // tensor offsets, data_length
constexpr size_t kArtifactMaxTensors = 65536;
constexpr size_t kArtifactMaxExpertBlocks = 65536;
constexpr int kArtifactMaxRank = 4;
constexpr int64_t kArtifactMaxDim = int64_t(1) << 31;
constexpr uint16_t kArtifactVersionMajor = 1;
constexpr uint16_t kArtifactVersionMinor = 1;  // 1.1 adds `generation` (spec §3.9)
extern const uint8_t kArtifactMagic[8];

// The identifier of a status ("truncated", "bad_magic", "digest_mismatch", ...).
const char* status_name(Status s);

// Parses a pin, "sha256:" followed by the 64 lowercase hex digits of a root digest: the one
// parser behind every entry point (C++, C, Python). An empty string is malformed, never "no
// pin" (no pin is an absent std::optional / a NULL pointer / None). invalid_argument with a
// message quoting the value.
Status parse_pin(std::string_view text, Sha256Digest* out, std::string* message);

// What keeps an opened artifact's bytes equal to the verified ones until it is closed.
enum class Protection : uint8_t {
  none,             // a mapping of a file that can still be written or truncated
  copy,             // private memory the file was read into (OpenOptions::copy)
  caller_memory,    // memory the caller owns (open_memory): keeping it unchanged is its job
  fs_verity,        // fs-verity file: no writes; the kernel checks every page read from disk
  immutable,        // the inode's immutable flag (chattr +i): no writes, no truncation
  read_only_mount,  // the file system itself (its superblock, not just this mount) is read-only
  memfd_sealed,     // a memfd sealed against writes and shrinking (F_SEAL_WRITE|F_SEAL_SHRINK)
};
// "none", "copy", "caller-memory", "fs-verity", "immutable", "read-only-mount", "memfd-sealed".
const char* protection_name(Protection p);

// Bytes an artifact is read from: a mapped file, a private copy or caller-owned memory.
// Handles and views share it; it is released with the last reference.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  // True for a file mapping: its pages may be dropped (madvise) and are read again from the
  // file on the next access. Copies and caller-owned memory are never advised.
  bool file_backed() const { return file_backed_; }
  Protection protection() const { return protection_; }
  // True once a read of a mapping hit a page past the end of its file (SIGBUS: the file was
  // truncated while mapped). Those pages now read as zeros: nothing computed from the source
  // since may be used. Never resets.
  virtual bool faulted() const { return false; }

 protected:
  bool file_backed_ = false;
  Protection protection_ = Protection::caller_memory;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Maps a regular file read-only (MAP_PRIVATE) and detects its Protection. invalid_argument
// for a path with an embedded NUL; io_error when it cannot be opened, is not a regular file
// (FIFO, directory, device, socket: refused without blocking), or cannot be sized or mapped.
Status map_file(const std::string& path, std::shared_ptr<const ByteSource>* out,
                std::string* message);

// Reads a regular file into private, read-only memory (Protection::copy) with bounded reads;
// the file can change afterwards without effect. Statuses as map_file's, and io_error when
// the file shrinks while it is read.
Status read_file(const std::string& path, std::shared_ptr<const ByteSource>* out,
                 std::string* message);

// Caller-owned memory, not copied: it must stay alive and unchanged while any artifact opened
// from it is in use.
std::shared_ptr<const ByteSource> borrow_memory(const void* data, size_t size);
// A private, read-only copy of data[0, size) (Protection::copy). Throws std::bad_alloc.
std::shared_ptr<const ByteSource> copy_memory(const void* data, size_t size);

enum class DType : uint8_t { packed, f32, f16, bf16 };
const char* dtype_name(DType d);

struct TensorInfo {
  std::string name, role;
  DType dtype = DType::f32;
  int rank = 0;
  int64_t shape[kArtifactMaxRank] = {};  // packed: {N, K}
  QuantFormat quant;                     // meaningful for dtype == packed only
  uint64_t offset = 0;                   // from the start of the data region
  uint64_t length = 0;                   // bytes
  int64_t layer = -1;                    // -1 for null
  int64_t expert = -1;                   // -1 for null
  Sha256Digest sha256{};
  int32_t block = -1;                    // index into expert_blocks(), -1 if not an expert's
};

struct ExpertBlockInfo {
  int64_t layer = 0, expert = 0;
  uint64_t offset = 0, length = 0;  // from the start of the data region
  Sha256Digest sha256{};
  uint32_t first_tensor = 0, end_tensor = 0;  // its tensors: tensors()[first_tensor, end_tensor)
};

// A verified tensor: its metadata and bytes (info->length of them, inside the source).
struct TensorView {
  const TensorInfo* info = nullptr;
  const uint8_t* data = nullptr;
};

struct OpenOptions {
  // Absent, or "sha256:" + the 64 lowercase hex digits of the root digest (parse_pin). An
  // empty string is a malformed pin, not "no pin".
  std::optional<std::string> pin;
  bool lazy = false;    // verify expert blocks on first use instead of at open
  bool copy = false;    // open_file reads the file into private memory (read_file) and
                        // open_memory copies the buffer: verified bytes cannot change later
  bool strict = false;  // open_file refuses a mapping with Protection::none (io_error)
};

// What a digest job of the verifier stands for (internal: names it in messages).
struct ArtifactJobRef {
  bool is_block;
  size_t index;
};

class Artifact {
 public:
  static Status open_file(const std::string& path, const OpenOptions& options,
                          std::unique_ptr<Artifact>* out, std::string* message);
  // `data` is borrowed (see borrow_memory).
  static Status open_memory(const void* data, size_t size, const OpenOptions& options,
                            std::unique_ptr<Artifact>* out, std::string* message);
  // Opens from a source as is (options.copy and options.strict apply to open_file and
  // open_memory, which make the source).
  static Status open(std::shared_ptr<const ByteSource> source, const OpenOptions& options,
                     std::unique_ptr<Artifact>* out, std::string* message);

  Artifact(const Artifact&) = delete;
  Artifact& operator=(const Artifact&) = delete;
  ~Artifact();

  const Sha256Digest& root_digest() const { return root_; }
  std::string pin() const { return "sha256:" + digest_hex(root_); }
  const uint8_t* manifest_data() const { return base_ + kArtifactHeaderBytes; }
  size_t manifest_size() const { return size_t(manifest_length_); }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t data_length() const { return data_length_; }
  bool lazy() const { return lazy_; }
  const std::shared_ptr<const ByteSource>& source() const { return src_; }
  Protection protection() const { return src_->protection(); }

  // Metadata (always available; the bytes are reached only through tensor()/tensor_at()).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::vector<ExpertBlockInfo>& expert_blocks() const { return blocks_; }
  const TensorInfo* find_tensor(std::string_view name) const;  // null if absent

  // A tensor's bytes. An expert tensor's block is verified first (lazy mode); on failure the
  // view is left empty. invalid_argument for an unknown name or index.
  Status tensor(std::string_view name, TensorView* out, std::string* message);
  Status tensor_at(size_t index, TensorView* out, std::string* message);

  // Verifies the block of (layer, expert) if not yet done (a no-op in full mode); the result,
  // success or failure, is cached. invalid_argument if there is no such block. Thread-safe.
  Status verify_expert(int64_t layer, int64_t expert, std::string* message);
  Status verify_block(size_t block, std::string* message);
  bool block_verified(size_t block) const;
  // Marks a verified block unverified again (its pages were released: the next use must hash
  // them again). A failed block stays failed. Thread-safe.
  void forget_block(size_t block);

 private:
  Artifact() = default;
  Status load(const OpenOptions& options, std::string* message);
  Status check_header(std::string* message);
  Status check_manifest(std::string* message);
  Status check_tensors(const void* doc_root, std::string* message);
  Status check_blocks(const void* doc_root, std::string* message);
  Status check_layout(std::string* message);
  Status check_block_padding(size_t block, std::string* message) const;
  Status check_block_digests(size_t block, std::string* message) const;
  Status check_padding(std::string* message) const;
  Status check_digests(std::string* message) const;
  void add_block_jobs(size_t block, std::vector<Sha256Job>* jobs,
                      std::vector<ArtifactJobRef>* refs) const;
  Status run_jobs(std::vector<Sha256Job>& jobs, const std::vector<ArtifactJobRef>& refs,
                  std::string* message) const;

  std::shared_ptr<const ByteSource> src_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint64_t manifest_length_ = 0, data_offset_ = 0, data_length_ = 0;
  Sha256Digest root_{};
  bool lazy_ = false;
  std::vector<TensorInfo> tensors_;
  std::vector<ExpertBlockInfo> blocks_;
  std::vector<uint32_t> by_name_;    // tensor indices sorted by name
  std::vector<uint32_t> by_expert_;  // block indices sorted by (layer, expert)

  // Lazy verification state per block: 0 unverified, 1 verified, 2 failed.
  std::unique_ptr<std::atomic<uint8_t>[]> block_state_;
  std::vector<Status> block_status_;     // guarded by mu_
  std::vector<std::string> block_error_;  // guarded by mu_
  // check_block_digests' jobs, reserved at open for the largest block; guarded by mu_.
  mutable std::vector<Sha256Job> block_jobs_;
  mutable std::vector<ArtifactJobRef> block_refs_;
  mutable std::mutex mu_;
};

}  // namespace fwa
