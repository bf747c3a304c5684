// SPDX-License-Identifier: Apache-2.0
#include "artifact/reader.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>

#include "artifact/caps.h"
#include "artifact/json.h"

#if defined(__linux__)
#include <linux/fs.h>
// FS_VERITY_FL (linux/fs.h of 5.4+), as FS_IOC_GETFLAGS reports it.
#ifdef FS_VERITY_FL
constexpr int kFsVerityFlag = FS_VERITY_FL;
#else
constexpr int kFsVerityFlag = 0x00100000;
#endif
#endif

namespace fwa {

const uint8_t kArtifactMagic[8] = {0x89, 'F', 'W', 'A', 0x0D, 0x0A, 0x1A, 0x0A};

const char* status_name(Status s) {
  switch (s) {
    case Status::ok: return "ok";
    case Status::invalid_argument: return "invalid_argument";
    case Status::unsupported_format: return "unsupported_format";
    case Status::shape_mismatch: return "shape_mismatch";
    case Status::non_finite: return "non_finite";
    case Status::buffer_too_small: return "buffer_too_small";
    case Status::no_kernel: return "no_kernel";
    case Status::io_error: return "io_error";
    case Status::truncated: return "truncated";
    case Status::bad_magic: return "bad_magic";
    case Status::unsupported_version: return "unsupported_version";
    case Status::malformed: return "malformed";
    case Status::cap_exceeded: return "cap_exceeded";
    case Status::trailing_bytes: return "trailing_bytes";
    case Status::out_of_bounds: return "out_of_bounds";
    case Status::overlap: return "overlap";
    case Status::nonzero_padding: return "nonzero_padding";
    case Status::digest_mismatch: return "digest_mismatch";
    case Status::pin_mismatch: return "pin_mismatch";
    case Status::incompatible: return "incompatible";
    case Status::policy_malformed: return "policy_malformed";
    case Status::policy_unsatisfiable: return "policy_unsatisfiable";
    case Status::signature_malformed: return "signature_malformed";
    case Status::subject_mismatch: return "subject_mismatch";
    case Status::signature_invalid: return "signature_invalid";
    case Status::untrusted: return "untrusted";
    case Status::revoked: return "revoked";
    case Status::rollback: return "rollback";
    case Status::counter_unavailable: return "counter_unavailable";
    case Status::no_crypto: return "no_crypto";
  }
  return "unknown";
}

const char* dtype_name(DType d) {
  switch (d) {
    case DType::packed: return "packed";
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
  }
  return "?";
}

namespace {

using json::Type;
using json::Value;

uint16_t le16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t le32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
uint64_t le64(const uint8_t* p) { return uint64_t(le32(p)) | (uint64_t(le32(p + 4)) << 32); }

std::string num(uint64_t v) { return std::to_string(v); }

std::string hex_bytes(const uint8_t* p, size_t n) {
  std::string s;
  char b[4];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(b, sizeof b, i ? " %02x" : "%02x", p[i]);
    s += b;
  }
  return s;
}

std::string range(uint64_t a, uint64_t len) {
  return "[" + num(a) + ", " + num(a + len) + ")";
}

// Quoted for messages, shortened if long.
std::string quote(std::string_view s) {
  if (s.size() > 200) return "'" + std::string(s.substr(0, 200)) + "...'";
  return "'" + std::string(s) + "'";
}

Status fail(std::string* msg, Status st, std::string text) {
  if (msg) *msg = std::move(text);
  return st;
}

// First non-zero byte in p[0, n), or n.
size_t first_nonzero(const uint8_t* p, size_t n) {
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    uint64_t acc = 0;
    for (size_t j = 0; j < 64; j += 8) {
      uint64_t w;
      std::memcpy(&w, p + i + j, 8);
      acc |= w;
    }
    if (acc != 0) break;
  }
  for (; i < n; ++i) {
    if (p[i] != 0) return i;
  }
  return n;
}

// ---- SIGBUS: a mapped file truncated under the mapping.
// Live file mappings, in slots the signal handler reads without locks. A read past the end of
// a shrunk file raises SIGBUS; for an address inside a registered mapping the handler maps
// anonymous zero pages over the rest of that mapping, marks it faulted and returns, so the
// read completes (on zeros) and the runtime reports the fault instead of the process dying.
// Any other SIGBUS goes to the handler installed before ours (or the default action).
constexpr size_t kMaxMappings = 1024;

struct MappingSlot {
  std::atomic<bool> used{false};    // claimed by a MappedFile
  std::atomic<uintptr_t> begin{0};  // 0 while being set up or torn down
  std::atomic<uintptr_t> end{0};
  std::atomic<bool> faulted{false};
};

MappingSlot g_mappings[kMaxMappings];
struct sigaction g_previous_sigbus;
uintptr_t g_page_size = 4096;

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (MappingSlot& m : g_mappings) {
    const uintptr_t begin = m.begin.load(std::memory_order_acquire);
    if (begin == 0 || addr < begin || addr >= m.end.load(std::memory_order_relaxed)) continue;
    const uintptr_t page = addr & ~(g_page_size - 1);
    const uintptr_t end = m.end.load(std::memory_order_relaxed);
    // mmap is a plain system call on Linux: safe here in practice.
    if (mmap(reinterpret_cast<void*>(page), size_t(end - page), PROT_READ,
             MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != MAP_FAILED) {
      m.faulted.store(true, std::memory_order_release);
      errno = saved_errno;
      return;
    }
    break;
  }
  errno = saved_errno;
  const struct sigaction& prev = g_previous_sigbus;
  if (prev.sa_flags & SA_SIGINFO) {
    if (prev.sa_sigaction) prev.sa_sigaction(sig, info, context);
    return;
  }
  if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
    prev.sa_handler(sig);
    return;
  }
  // The default action: re-raised for a sent signal; a fault repeats on return, now fatal.
  signal(SIGBUS, SIG_DFL);
  if (info->si_code <= 0) raise(sig);
}

void install_sigbus_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    const long page = sysconf(_SC_PAGESIZE);
    if (page > 0) g_page_size = uintptr_t(page);
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigaction(SIGBUS, &sa, &g_previous_sigbus);
  });
}

MappingSlot* claim_mapping_slot(const void* map, size_t size) {
  for (MappingSlot& m : g_mappings) {
    bool expected = false;
    if (!m.used.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) continue;
    m.faulted.store(false, std::memory_order_relaxed);
    m.end.store(reinterpret_cast<uintptr_t>(map) + size, std::memory_order_relaxed);
    m.begin.store(reinterpret_cast<uintptr_t>(map), std::memory_order_release);
    return &m;
  }
  return nullptr;
}

class MappedFile : public ByteSource {
 public:
  MappedFile(void* map, size_t size, Protection protection, MappingSlot* slot)
      : map_(map), slot_(slot) {
    data_ = static_cast<const uint8_t*>(map);
    size_ = size;
    file_backed_ = true;
    protection_ = protection;
  }
  ~MappedFile() override {
    if (slot_) {
      slot_->begin.store(0, std::memory_order_release);
      slot_->used.store(false, std::memory_order_release);
    }
    if (map_) munmap(map_, size_);
  }
  bool faulted() const override {
    return slot_ && slot_->faulted.load(std::memory_order_acquire);
  }

 private:
  void* map_;
  MappingSlot* slot_;
};

class BorrowedMemory : public ByteSource {
 public:
  BorrowedMemory(const void* data, size_t size) {
    data_ = static_cast<const uint8_t*>(data);
    size_ = size;
    protection_ = Protection::caller_memory;
  }
};

// Private anonymous memory, page-aligned like a mapping (the tensors' alignment holds), made
// read-only once filled.
class PrivateCopy : public ByteSource {
 public:
  explicit PrivateCopy(size_t size) {
    protection_ = Protection::copy;
    size_ = size;
    if (size == 0) return;
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    map_ = static_cast<uint8_t*>(p);
    data_ = map_;
  }
  ~PrivateCopy() override {
    if (map_) munmap(map_, size_);
  }
  uint8_t* writable() { return map_; }
  void seal() {
    if (map_) mprotect(map_, size_, PROT_READ);
  }

 private:
  uint8_t* map_ = nullptr;
};

const char* file_type_name(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

// An open regular file: the one way map_file and read_file open a path.
class RegularFile {
 public:
  ~RegularFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  Status open(const std::string& path, std::string* message) {
    if (path.find('\0') != std::string::npos)
      return fail(message, Status::invalid_argument,
                  "the path " + quote(path.substr(0, path.find('\0'))) +
                      "... contains a NUL character");
    // O_NONBLOCK: opening a FIFO or a device must not wait for a writer; refused below.
    fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd_ < 0)
      return fail(message, Status::io_error,
                  "cannot open " + quote(path) + ": " + std::strerror(errno));
    if (fstat(fd_, &st_) != 0)
      return fail(message, Status::io_error,
                  "cannot stat " + quote(path) + ": " + std::strerror(errno));
    if (!S_ISREG(st_.st_mode))
      return fail(message, Status::io_error,
                  quote(path) + " is " + file_type_name(st_.st_mode) +
                      ", not a regular file: only regular files are opened");
    if (uint64_t(st_.st_size) > uint64_t(SIZE_MAX) / 2)
      return fail(message, Status::io_error, quote(path) + " is too large to open");
    return Status::ok;
  }
  int fd() const { return fd_; }
  size_t size() const { return size_t(st_.st_size); }

 private:
  int fd_ = -1;
  struct stat st_ {};
};

// True when the file system of fd is read-only in its superblock: a read-only bind mount of a
// writable file system is not (the file stays writable through its other mounts). Reads the
// mount id from /proc/self/fdinfo and the super options from /proc/self/mountinfo.
bool superblock_read_only(int fd) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  FILE* f = std::fopen(path, "re");
  if (!f) return false;
  long mnt_id = -1;
  char line[512];
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "mnt_id: %ld", &mnt_id) == 1) break;
  std::fclose(f);
  if (mnt_id < 0) return false;
  f = std::fopen("/proc/self/mountinfo", "re");
  if (!f) return false;
  bool ro = false;
  std::string entry;
  while (std::fgets(line, sizeof line, f)) {
    entry += line;
    if (entry.back() != '\n' && !std::feof(f)) continue;  // a long line: read the rest
    long id = -1;
    if (std::sscanf(entry.c_str(), "%ld", &id) == 1 && id == mnt_id) {
      // "... - <fstype> <source> <super options>"
      const size_t sep = entry.find(" - ");
      if (sep != std::string::npos) {
        size_t p = sep + 3;
        for (int field = 0; field < 2 && p != std::string::npos; ++field) {
          p = entry.find(' ', p);
          if (p != std::string::npos) ++p;
        }
        ro = p != std::string::npos && entry.compare(p, 2, "ro") == 0 &&
             (p + 2 == entry.size() || entry[p + 2] == ',' || entry[p + 2] == '\n');
      }
      break;
    }
    entry.clear();
  }
  std::fclose(f);
  return ro;
}

// The protection in force for a mapping of the open regular file fd.
Protection detect_protection(int fd) {
#if defined(__linux__)
  int flags = 0;
  if (ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0) {
    if (flags & kFsVerityFlag) return Protection::fs_verity;
    if (flags & FS_IMMUTABLE_FL) return Protection::immutable;
  }
  struct statvfs vfs;
  if (fstatvfs(fd, &vfs) == 0 && (vfs.f_flag & ST_RDONLY) && superblock_read_only(fd))
    return Protection::read_only_mount;
#ifdef F_GET_SEALS
  const int seals = fcntl(fd, F_GET_SEALS);
  if (seals >= 0 && (seals & F_SEAL_WRITE) && (seals & F_SEAL_SHRINK))
    return Protection::memfd_sealed;
#endif
#else
  (void)fd;
#endif
  return Protection::none;
}

// ---- Manifest field helpers. `where` names the object for messages.

bool get_index(const Value& v, int64_t* out) {  // int in [0, 2^31)
  int64_t x;
  if (!v.get_int(&x) || x < 0 || x >= (int64_t(1) << 31)) return false;
  *out = x;
  return true;
}

bool get_u64(const Value& v, uint64_t* out) {
  int64_t x;
  if (!v.get_int(&x) || x < 0) return false;
  *out = uint64_t(x);
  return true;
}

bool get_digest(const Value& v, Sha256Digest* out) {
  const std::string_view raw = v.raw();
  // A canonical 64-hex-digit string has no escapes: the raw literal is quote + 64 + quote.
  return v.is(Type::string) && raw.size() == 66 &&
         parse_digest_hex(raw.data() + 1, 64, out);
}

// Checks that object `obj` has exactly the keys in `keys` (sorted or not), reporting the first
// unknown or missing one.
Status exact_keys(const Value& obj, const char* const* keys, size_t n, const std::string& where,
                  std::string* msg) {
  size_t found = 0;
  for (Value v = obj.first(); v.valid(); v = v.next()) {
    bool known = false;
    for (size_t i = 0; i < n && !known; ++i) known = v.key().string_equals(keys[i]);
    if (!known) {
      std::string k;
      v.key().get_string(&k);
      return fail(msg, Status::malformed, where + ": unknown key " + quote(k));
    }
    ++found;  // keys are unique (the parser rejects duplicates)
  }
  if (found != n) {
    for (size_t i = 0; i < n; ++i) {
      if (!obj.find(keys[i]).valid()) {
        return fail(msg, Status::malformed, where + ": missing key '" + keys[i] + "'");
      }
    }
  }
  return Status::ok;
}

std::string type_of(const Value& v) { return v.valid() ? json::type_name(v.type()) : "absent"; }

}  // namespace

const char* protection_name(Protection p) {
  switch (p) {
    case Protection::none: return "none";
    case Protection::copy: return "copy";
    case Protection::caller_memory: return "caller-memory";
    case Protection::fs_verity: return "fs-verity";
    case Protection::immutable: return "immutable";
    case Protection::read_only_mount: return "read-only-mount";
    case Protection::memfd_sealed: return "memfd-sealed";
  }
  return "unknown";
}

Status parse_pin(std::string_view text, Sha256Digest* out, std::string* message) {
  if (text.size() != 71 || text.compare(0, 7, "sha256:") != 0 ||
      !parse_digest_hex(text.data() + 7, 64, out)) {
    return fail(message, Status::invalid_argument,
                "pin must be 'sha256:' followed by 64 lowercase hex digits, got " +
                    quote(text) + (text.empty() ? " (an empty pin is not 'no pin')" : ""));
  }
  return Status::ok;
}

Status map_file(const std::string& path, std::shared_ptr<const ByteSource>* out,
                std::string* message) {
  try {
    RegularFile file;
    Status st = file.open(path, message);
    if (st != Status::ok) return st;
    const size_t size = file.size();
    const Protection protection = detect_protection(file.fd());
    void* map = nullptr;
    MappingSlot* slot = nullptr;
    if (size > 0) {
      install_sigbus_handler();
      map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, file.fd(), 0);
      if (map == MAP_FAILED)
        return fail(message, Status::io_error,
                    "cannot map " + quote(path) + ": " + std::strerror(errno));
      slot = claim_mapping_slot(map, size);
      if (!slot) {
        munmap(map, size);
        return fail(message, Status::io_error,
                    "cannot map " + quote(path) + ": " + num(kMaxMappings) +
                        " artifact files are mapped already");
      }
    }
    try {
      *out = std::make_shared<MappedFile>(map, size, protection, slot);
    } catch (...) {
      if (slot) {
        slot->begin.store(0, std::memory_order_release);
        slot->used.store(false, std::memory_order_release);
      }
      if (map) munmap(map, size);
      throw;
    }
    return Status::ok;  // the mapping outlives the descriptor
  } catch (const std::bad_alloc&) {
    return fail(message, Status::io_error, "out of memory");
  }
}

Status read_file(const std::string& path, std::shared_ptr<const ByteSource>* out,
                 std::string* message) {
  try {
    RegularFile file;
    Status st = file.open(path, message);
    if (st != Status::ok) return st;
    const size_t size = file.size();
    auto copy = std::make_shared<PrivateCopy>(size);
    // Bounded reads straight into the private pages: no mapping of the file is involved.
    constexpr size_t kChunk = size_t(8) << 20;
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::read(file.fd(), copy->writable() + done, std::min(kChunk, size - done));
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n < 0)
        return fail(message, Status::io_error,
                    "cannot read " + quote(path) + ": " + std::strerror(errno));
      if (n == 0)
        return fail(message, Status::io_error,
                    quote(path) + " shrank from " + num(size) + " to " + num(done) +
                        " bytes while it was read");
      done += size_t(n);
    }
    copy->seal();
    *out = std::move(copy);
    return Status::ok;
  } catch (const std::bad_alloc&) {
    return fail(message, Status::io_error, "out of memory for a private copy of " + quote(path));
  }
}

std::shared_ptr<const ByteSource> borrow_memory(const void* data, size_t size) {
  return std::make_shared<BorrowedMemory>(data, size);
}

std::shared_ptr<const ByteSource> copy_memory(const void* data, size_t size) {
  auto copy = std::make_shared<PrivateCopy>(size);
  if (size) std::memcpy(copy->writable(), data, size);
  copy->seal();
  return copy;
}

Artifact::~Artifact() = default;

Status Artifact::open_file(const std::string& path, const OpenOptions& options,
                           std::unique_ptr<Artifact>* out, std::string* message) {
  Sha256Digest pin;
  if (options.pin) {  // a malformed pin fails before the file is touched
    const Status st = parse_pin(*options.pin, &pin, message);
    if (st != Status::ok) return st;
  }
  std::shared_ptr<const ByteSource> src;
  const Status st = options.copy ? read_file(path, &src, message) : map_file(path, &src, message);
  if (st != Status::ok) return st;
  if (options.strict && src->protection() == Protection::none) {
    return fail(message, Status::io_error,
                "unprotected mapping: " + quote(path) +
                    " can be written or truncated while mapped (no fs-verity, no immutable "
                    "flag, not on a read-only file system), so its verified bytes could change "
                    "after open: use copy=True (FWA_OPEN_COPY, --copy) or put the file on "
                    "read-only or verity-protected storage");
  }
  return open(std::move(src), options, out, message);
}

Status Artifact::open_memory(const void* data, size_t size, const OpenOptions& options,
                             std::unique_ptr<Artifact>* out, std::string* message) {
  if (data == nullptr && size != 0) {
    return fail(message, Status::invalid_argument, "null buffer with a non-zero size");
  }
  Sha256Digest pin;
  if (options.pin) {
    const Status st = parse_pin(*options.pin, &pin, message);
    if (st != Status::ok) return st;
  }
  std::shared_ptr<const ByteSource> src;
  try {
    src = options.copy ? copy_memory(data, size) : borrow_memory(data, size);
  } catch (const std::bad_alloc&) {
    return fail(message, Status::io_error, "out of memory");
  }
  return open(std::move(src), options, out, message);
}

Status Artifact::open(std::shared_ptr<const ByteSource> source, const OpenOptions& options,
                      std::unique_ptr<Artifact>* out, std::string* message) {
  if (message) message->clear();
  if (!source || !out) return fail(message, Status::invalid_argument, "null source or output");
  try {
    std::unique_ptr<Artifact> a(new Artifact());
    a->src_ = std::move(source);
    Status st = a->load(options, message);
    // Verified over zero pages after a SIGBUS: the file shrank while it was read.
    if (a->src_->faulted())
      st = fail(message, Status::io_error,
                "the artifact file was truncated while it was being verified (SIGBUS)");
    if (st != Status::ok) return st;
    *out = std::move(a);
    return Status::ok;
  } catch (const std::bad_alloc&) {
    return fail(message, Status::io_error, "out of memory while reading the artifact");
  } catch (...) {
    return fail(message, Status::io_error, "internal error while reading the artifact");
  }
}

Status Artifact::load(const OpenOptions& options, std::string* msg) {
  lazy_ = options.lazy;
  Sha256Digest pin{};
  const bool has_pin = options.pin.has_value();
  if (has_pin) {
    const Status st = parse_pin(*options.pin, &pin, msg);
    if (st != Status::ok) return st;
  }
  base_ = src_->data();
  size_ = src_->size();

  Status st = check_header(msg);
  if (st != Status::ok) return st;

  // Root digest and pin before anything reads the manifest's content.
  root_ = sha256(manifest_data(), manifest_size());
  if (has_pin && root_ != pin) {
    return fail(msg, Status::pin_mismatch,
                "root digest is sha256:" + digest_hex(root_) + ", the pin expects sha256:" +
                    digest_hex(pin));
  }
  Sha256Digest header_digest;
  std::memcpy(header_digest.data(), base_ + 48, 32);
  if (root_ != header_digest) {
    return fail(msg, Status::digest_mismatch,
                "manifest: the header's manifest_sha256 is " + digest_hex(header_digest) +
                    ", the manifest bytes hash to " + digest_hex(root_));
  }

  if ((st = check_manifest(msg)) != Status::ok) return st;
  if ((st = check_layout(msg)) != Status::ok) return st;

  const size_t nb = blocks_.size();
  block_state_.reset(new std::atomic<uint8_t>[nb]);
  for (size_t i = 0; i < nb; ++i) block_state_[i].store(0, std::memory_order_relaxed);
  block_status_.assign(nb, Status::ok);
  block_error_.assign(nb, std::string());
  // The digest jobs of the largest block, reused by every lazy verification (verify_block
  // allocates nothing: it runs inside the decode loop on an expert's first use).
  size_t most = 0;
  for (const ExpertBlockInfo& b : blocks_)
    most = std::max<size_t>(most, b.end_tensor - b.first_tensor);
  block_jobs_.reserve(most + 1);
  block_refs_.reserve(most + 1);

  if ((st = check_padding(msg)) != Status::ok) return st;
  if ((st = check_digests(msg)) != Status::ok) return st;
  if (!lazy_) {
    for (size_t i = 0; i < nb; ++i) block_state_[i].store(1, std::memory_order_release);
  }
  return Status::ok;
}

Status Artifact::check_header(std::string* msg) {
  const uint8_t* h = base_;
  if (size_ < kArtifactHeaderBytes) {
    return fail(msg, Status::truncated,
                "file has " + num(size_) + " bytes, shorter than the 128-byte header");
  }
  if (std::memcmp(h, kArtifactMagic, 8) != 0) {
    return fail(msg, Status::bad_magic,
                "header: magic is " + hex_bytes(h, 8) + ", expected " +
                    hex_bytes(kArtifactMagic, 8));
  }
  const uint16_t major = le16(h + 8), minor = le16(h + 10);
  if (major != kArtifactVersionMajor || minor > kArtifactVersionMinor) {
    return fail(msg, Status::unsupported_version,
                "header: format version " + num(major) + "." + num(minor) +
                    ", this reader implements 1.0 and 1.1");
  }
  const uint32_t flags = le32(h + 12);
  if (flags != 0) {
    return fail(msg, Status::malformed, "header: flags are " + num(flags) + ", expected 0");
  }
  for (size_t i = 80; i < 128; ++i) {
    if (h[i] != 0) {
      return fail(msg, Status::malformed,
                  "header: reserved byte " + num(i) + " is " + num(h[i]) + ", expected 0");
    }
  }
  manifest_length_ = le64(h + 16);
  data_offset_ = le64(h + 24);
  data_length_ = le64(h + 32);
  const uint64_t file_length = le64(h + 40);
  if (manifest_length_ > kArtifactMaxManifest) {
    return fail(msg, Status::cap_exceeded,
                "header: manifest_length " + num(manifest_length_) + " exceeds the cap of " +
                    num(kArtifactMaxManifest));
  }
  if (manifest_length_ < 2) {
    return fail(msg, Status::malformed,
                "header: manifest_length " + num(manifest_length_) + " is below 2");
  }
  const uint64_t want_data_offset =
      (kArtifactHeaderBytes + manifest_length_ + kArtifactDataAlign - 1) / kArtifactDataAlign *
      kArtifactDataAlign;
  if (data_offset_ != want_data_offset) {
    return fail(msg, Status::malformed,
                "header: data_offset is " + num(data_offset_) + ", expected " +
                    num(want_data_offset) + " (roundup(128 + manifest_length, 4096))");
  }
  if (data_length_ % kArtifactTensorAlign != 0) {
    return fail(msg, Status::malformed,
                "header: data_length " + num(data_length_) + " is not a multiple of 64");
  }
  uint64_t want_file_length;
  if (__builtin_add_overflow(data_offset_, data_length_, &want_file_length) ||
      file_length != want_file_length) {
    return fail(msg, Status::malformed,
                "header: file_length is " + num(file_length) +
                    ", expected data_offset + data_length = " +
                    (want_file_length >= data_offset_ ? num(want_file_length) : "(overflow)"));
  }
  if (size_ < file_length) {
    return fail(msg, Status::truncated,
                "file has " + num(size_) + " bytes, the header declares file_length " +
                    num(file_length));
  }
  if (size_ > file_length) {
    return fail(msg, Status::trailing_bytes,
                "file has " + num(size_) + " bytes, " + num(size_ - file_length) +
                    " after the declared file_length " + num(file_length));
  }
  return Status::ok;
}

namespace {

// §3.8: the sizes the config and the tokenizer declare, checked before anything allocates for
// them (the model binder and the tokenizer trust these caps). Only integers are compared here;
// the types and lower bounds are the binder's and the tokenizer's to check.
Status check_declared_sizes(const Value& root, std::string* msg) {
  const Value config = root.find("config");
  for (const ConfigCap& c : kConfigCaps) {
    int64_t v;
    if (config.find(c.key).get_int(&v) && v > c.max) {
      return fail(msg, Status::cap_exceeded,
                  std::string("manifest: config.") + c.key + " = " + std::to_string(v) +
                      " exceeds the cap of " + std::to_string(c.max));
    }
  }
  const Value tok = root.find("tokenizer");
  auto too_many = [&](const Value& v, size_t cap, const char* field) {
    const size_t n = v.size();
    if (n <= cap) return false;
    fail(msg, Status::cap_exceeded,
         std::string("manifest: tokenizer.") + field + " has " + num(n) +
             " entries, the cap is " + num(cap));
    return true;
  };
  auto id_too_large = [&](const Value& v, const char* field) {
    int64_t id;
    if (!v.get_int(&id) || id < kMaxTokenId) return false;
    fail(msg, Status::cap_exceeded,
         std::string("manifest: tokenizer.") + field + " holds token id " +
             std::to_string(id) + ", ids must be below the cap of " +
             std::to_string(kMaxTokenId));
    return true;
  };
  const Value model = tok.find("model");
  const Value vocab = model.find("vocab");
  if (vocab.is(Type::object)) {
    if (too_many(vocab, kMaxVocabEntries, "model.vocab")) return Status::cap_exceeded;
    for (Value v = vocab.first(); v.valid(); v = v.next()) {
      if (id_too_large(v, "model.vocab")) return Status::cap_exceeded;
    }
  }
  const Value merges = model.find("merges");
  if (merges.is(Type::array) && too_many(merges, kMaxMerges, "model.merges")) {
    return Status::cap_exceeded;
  }
  const Value added = tok.find("added_tokens");
  if (added.is(Type::array)) {
    if (too_many(added, kMaxAddedTokens, "added_tokens")) return Status::cap_exceeded;
    for (Value a = added.first(); a.valid(); a = a.next()) {
      if (id_too_large(a.find("id"), "added_tokens")) return Status::cap_exceeded;
    }
  }
  return Status::ok;
}

// §3.9 (format 1.1): the generation metadata, in the spec's order.
Status check_generation(const Value& root, std::string* msg) {
  const Value g = root.find("generation");
  if (!g.is(Type::object)) {
    return fail(msg, Status::malformed,
                "manifest: generation must be an object, got " + type_of(g));
  }
  static const char* const kKeys[] = {"bos_token_id", "chat_template", "eos_token_ids",
                                      "pad_token_id", "sources"};
  Status st = exact_keys(g, kKeys, 5, "manifest: generation", msg);
  if (st != Status::ok) return st;
  int64_t vocab;
  if (!root.find("config").find("vocab_size").get_int(&vocab)) {
    return fail(msg, Status::malformed,
                "manifest: generation needs config.vocab_size, an integer, to check its token "
                "ids");
  }
  auto token_id = [&](const Value& v, const std::string& what, int64_t* out) {
    if (!v.get_int(out)) {
      return fail(msg, Status::malformed,
                  "manifest: generation." + what + " must be an integer, got " + type_of(v));
    }
    if (*out < 0 || *out >= vocab) {
      return fail(msg, Status::malformed,
                  "manifest: generation." + what + " = " + std::to_string(*out) +
                      " is outside [0, vocab_size " + std::to_string(vocab) + ")");
    }
    return Status::ok;
  };
  int64_t id;
  const Value bos = g.find("bos_token_id");
  if (!bos.is(Type::null) && (st = token_id(bos, "bos_token_id", &id)) != Status::ok) return st;
  const Value tmpl = g.find("chat_template");
  if (!tmpl.is(Type::null)) {
    std::string text;
    if (!tmpl.get_string(&text)) {
      return fail(msg, Status::malformed,
                  "manifest: generation.chat_template must be a string or null, got " +
                      type_of(tmpl));
    }
    if (text.empty()) {
      return fail(msg, Status::malformed,
                  "manifest: generation.chat_template is empty (null states no template)");
    }
    if (text.size() > kMaxChatTemplate) {
      return fail(msg, Status::cap_exceeded,
                  "manifest: generation.chat_template has " + num(text.size()) +
                      " bytes, the cap is " + num(kMaxChatTemplate));
    }
  }
  const Value eos = g.find("eos_token_ids");
  if (!eos.is(Type::array)) {
    return fail(msg, Status::malformed,
                "manifest: generation.eos_token_ids must be an array, got " + type_of(eos));
  }
  if (eos.size() == 0) {
    return fail(msg, Status::malformed, "manifest: generation.eos_token_ids is empty");
  }
  if (eos.size() > kMaxEosIds) {
    return fail(msg, Status::cap_exceeded,
                "manifest: generation.eos_token_ids has " + num(eos.size()) +
                    " entries, the cap is " + num(kMaxEosIds));
  }
  int64_t prev = -1;
  size_t i = 0;
  for (Value v = eos.first(); v.valid(); v = v.next(), ++i) {
    if ((st = token_id(v, "eos_token_ids[" + num(i) + "]", &id)) != Status::ok) return st;
    if (id <= prev) {
      return fail(msg, Status::malformed,
                  "manifest: generation.eos_token_ids must be strictly increasing, [" + num(i) +
                      "] = " + std::to_string(id) + " follows " + std::to_string(prev));
    }
    prev = id;
  }
  const Value pad = g.find("pad_token_id");
  if (!pad.is(Type::null) && (st = token_id(pad, "pad_token_id", &id)) != Status::ok) return st;
  const Value src = g.find("sources");
  if (!src.is(Type::object)) {
    return fail(msg, Status::malformed,
                "manifest: generation.sources must be an object, got " + type_of(src));
  }
  static const char* const kSources[] = {"chat_template.jinja", "generation_config.json",
                                         "tokenizer_config.json"};
  if ((st = exact_keys(src, kSources, 3, "manifest: generation.sources", msg)) != Status::ok) {
    return st;
  }
  for (const char* k : kSources) {
    const Value v = src.find(k);
    Sha256Digest d;
    if (!v.is(Type::null) && !get_digest(v, &d)) {
      return fail(msg, Status::malformed,
                  std::string("manifest: generation.sources['") + k +
                      "'] must be null or 64 lowercase hex digits");
    }
  }
  return Status::ok;
}

}  // namespace

Status Artifact::check_manifest(std::string* msg) {
  json::Document doc;
  json::Limits lim;  // the spec's caps are the defaults
  std::string jerr;
  Status st = doc.parse(manifest_data(), manifest_size(), lim, &jerr);
  if (st != Status::ok) return fail(msg, st, "manifest: " + jerr);
  const Value root = doc.root();
  if (!root.is(Type::object)) {
    return fail(msg, Status::malformed, "manifest: the top-level value must be an object");
  }

  // requires (§3.2): checked before the rest of the schema.
  const Value req = root.find("requires");
  if (!req.valid()) return fail(msg, Status::malformed, "manifest: missing key 'requires'");
  if (!req.is(Type::object)) {
    return fail(msg, Status::malformed, "manifest: 'requires' must be an object");
  }
  for (Value v = req.first(); v.valid(); v = v.next()) {
    if (v.key().string_equals("endianness")) {
      if (!v.is(Type::string)) {
        return fail(msg, Status::malformed, "manifest: requires.endianness must be a string");
      }
      if (!v.string_equals("little")) {
        return fail(msg, Status::incompatible,
                    "manifest: requires endianness " + std::string(v.raw()) +
                        ", this reader implements \"little\"");
      }
    } else if (v.key().string_equals("kernel_layout")) {
      int64_t layout;
      if (!v.get_int(&layout)) {
        return fail(msg, Status::malformed,
                    "manifest: requires.kernel_layout must be an integer");
      }
      if (layout != 1) {
        return fail(msg, Status::incompatible,
                    "manifest: requires kernel_layout " + std::to_string(layout) +
                        ", this reader implements 1");
      }
    } else {
      return fail(msg, Status::incompatible,
                  "manifest: requires " + std::string(v.key().raw()) +
                      ", which this reader does not implement");
    }
  }
  for (const char* k : {"endianness", "kernel_layout"}) {
    if (!req.find(k).valid()) {
      return fail(msg, Status::malformed, std::string("manifest: requires.") + k + " is missing");
    }
  }

  // The header's minor version decides the key set: 1.1 adds "generation" (§3.9).
  const bool v11 = le16(base_ + 10) >= 1;
  static const char* const kTop10[] = {"config",   "data_length", "evidence",      "expert_blocks",
                                       "format",   "format_version", "model_card", "provenance",
                                       "requires", "sbom",        "sections",      "tensors",
                                       "tokenizer"};
  static const char* const kTop11[] = {"config",     "data_length", "evidence",
                                       "expert_blocks", "format",   "format_version",
                                       "generation", "model_card",  "provenance",
                                       "requires",   "sbom",        "sections",
                                       "tensors",    "tokenizer"};
  if ((st = v11 ? exact_keys(root, kTop11, 14, "manifest", msg)
                : exact_keys(root, kTop10, 13, "manifest", msg)) != Status::ok) {
    return st;
  }

  if (!root.find("format").string_equals("fwassist.artifact")) {
    return fail(msg, Status::malformed,
                "manifest: format is " + std::string(root.find("format").raw()) +
                    ", expected \"fwassist.artifact\"");
  }
  {
    const Value fv = root.find("format_version");
    int64_t ma = -1, mi = -1;
    const bool ok = fv.is(Type::array) && fv.size() == 2 && fv.first().get_int(&ma) &&
                    fv.first().next().get_int(&mi) && ma == kArtifactVersionMajor &&
                    mi == le16(base_ + 10);
    if (!ok) {
      return fail(msg, Status::malformed,
                  "manifest: format_version is " + std::string(fv.raw().substr(0, 64)) +
                      ", the header says [" + num(le16(base_ + 8)) + "," +
                      num(le16(base_ + 10)) + "]");
    }
  }
  {
    uint64_t dl;
    if (!get_u64(root.find("data_length"), &dl) || dl != data_length_) {
      return fail(msg, Status::malformed,
                  "manifest: data_length is " +
                      std::string(root.find("data_length").raw().substr(0, 64)) +
                      ", the header says " + num(data_length_));
    }
  }
  for (const char* k : {"config", "provenance", "sbom", "evidence", "model_card"}) {
    const Value v = root.find(k);
    if (!v.is(Type::object)) {
      return fail(msg, Status::malformed,
                  std::string("manifest: ") + k + " must be an object, got " + type_of(v));
    }
  }
  if (!root.find("config").find("architecture").is(Type::string)) {
    return fail(msg, Status::malformed, "manifest: config.architecture must be a string");
  }
  {
    const Value t = root.find("tokenizer");
    if (!t.is(Type::object) && !t.is(Type::null)) {
      return fail(msg, Status::malformed,
                  "manifest: tokenizer must be an object or null, got " + type_of(t));
    }
  }
  {
    const Value kl = root.find("model_card").find("known_limitations");
    bool ok = kl.is(Type::array) && kl.size() > 0;
    for (Value v = kl.first(); ok && v.valid(); v = v.next()) {
      ok = v.is(Type::string) && v.raw().size() > 2;  // "" is the only 2-byte literal
    }
    if (!ok) {
      return fail(msg, Status::malformed,
                  "manifest: model_card.known_limitations must be a non-empty array of "
                  "non-empty strings");
    }
  }
  if ((st = check_declared_sizes(root, msg)) != Status::ok) return st;
  if (v11 && (st = check_generation(root, msg)) != Status::ok) return st;
  {
    const Value secs = root.find("sections");
    if (!secs.is(Type::object)) {
      return fail(msg, Status::malformed, "manifest: sections must be an object");
    }
    static const char* const kSections10[] = {"config",     "evidence", "expert_blocks",
                                              "model_card", "provenance", "sbom",
                                              "tensors",    "tokenizer"};
    static const char* const kSections11[] = {"config",     "evidence",   "expert_blocks",
                                              "generation", "model_card", "provenance",
                                              "sbom",       "tensors",    "tokenizer"};
    const char* const* kSections = v11 ? kSections11 : kSections10;
    const size_t n_sections = v11 ? 9 : 8;
    if ((st = exact_keys(secs, kSections, n_sections, "manifest: sections", msg)) != Status::ok) {
      return st;
    }
    for (size_t s = 0; s < n_sections; ++s) {
      const char* k = kSections[s];
      Sha256Digest want;
      if (!get_digest(secs.find(k), &want)) {
        return fail(msg, Status::malformed,
                    std::string("manifest: sections.") + k +
                        " must be 64 lowercase hex digits");
      }
      // The manifest is canonical, so a value's bytes are its canonical JSON.
      const std::string_view raw = root.find(k).raw();
      const Sha256Digest got = sha256(raw.data(), raw.size());
      if (got != want) {
        return fail(msg, Status::digest_mismatch,
                    std::string("manifest: section '") + k + "': sections says " +
                        digest_hex(want) + ", its canonical JSON hashes to " + digest_hex(got));
      }
    }
  }
  if ((st = check_tensors(&root, msg)) != Status::ok) return st;
  return check_blocks(&root, msg);
}

Status Artifact::check_tensors(const void* root_ptr, std::string* msg) {
  const Value& root = *static_cast<const Value*>(root_ptr);
  const Value arr = root.find("tensors");
  if (!arr.is(Type::array)) return fail(msg, Status::malformed, "manifest: tensors must be an array");
  const size_t count = arr.size();
  if (count > kArtifactMaxTensors) {
    return fail(msg, Status::cap_exceeded,
                "manifest: " + num(count) + " tensors, the cap is " + num(kArtifactMaxTensors));
  }
  tensors_.reserve(count);
  static const char* const kKeys[] = {"dtype", "expert", "layer", "length", "name",
                                      "offset", "quant", "role", "sha256", "shape"};
  size_t i = 0;
  for (Value e = arr.first(); e.valid(); e = e.next(), ++i) {
    std::string where = "tensor #" + num(i);
    if (!e.is(Type::object)) return fail(msg, Status::malformed, where + ": must be an object");
    Status st = exact_keys(e, kKeys, 10, where, msg);
    if (st != Status::ok) return st;
    TensorInfo t;
    if (!e.find("name").get_string(&t.name) || t.name.empty()) {
      return fail(msg, Status::malformed, where + ": name must be a non-empty string");
    }
    where = "tensor " + quote(t.name);
    if (!e.find("role").get_string(&t.role) || t.role.empty()) {
      return fail(msg, Status::malformed, where + ": role must be a non-empty string");
    }
    for (const char* k : {"layer", "expert"}) {
      const Value v = e.find(k);
      int64_t x = -1;
      if (!v.is(Type::null) && !get_index(v, &x)) {
        return fail(msg, Status::malformed,
                    where + ": " + k + " must be null or an integer in [0, 2^31), got " +
                        std::string(v.raw().substr(0, 64)));
      }
      (k[0] == 'l' ? t.layer : t.expert) = x;
    }
    if (t.expert >= 0 && t.layer < 0) {
      return fail(msg, Status::malformed, where + ": an expert tensor needs a layer");
    }
    const Value dt = e.find("dtype");
    if (dt.string_equals("packed")) {
      t.dtype = DType::packed;
    } else if (dt.string_equals("f32")) {
      t.dtype = DType::f32;
    } else if (dt.string_equals("f16")) {
      t.dtype = DType::f16;
    } else if (dt.string_equals("bf16")) {
      t.dtype = DType::bf16;
    } else {
      return fail(msg, Status::malformed,
                  where + ": dtype is " + std::string(dt.raw().substr(0, 64)) +
                      ", expected \"packed\", \"f32\", \"f16\" or \"bf16\"");
    }
    const Value shape = e.find("shape");
    if (!shape.is(Type::array)) return fail(msg, Status::malformed, where + ": shape must be an array");
    const size_t rank = shape.size();
    if (rank == 0) return fail(msg, Status::malformed, where + ": shape is empty (rank 0)");
    if (rank > size_t(kArtifactMaxRank)) {
      return fail(msg, Status::cap_exceeded,
                  where + ": rank " + num(rank) + " exceeds the cap of 4");
    }
    t.rank = int(rank);
    int r = 0;
    for (Value d = shape.first(); d.valid(); d = d.next(), ++r) {
      int64_t x;
      if (!d.get_int(&x)) return fail(msg, Status::malformed, where + ": shape holds a non-integer");
      if (x < 1) {
        return fail(msg, Status::malformed,
                    where + ": dimension " + std::to_string(r) + " is " + std::to_string(x) +
                        ", must be >= 1");
      }
      if (x > kArtifactMaxDim) {
        return fail(msg, Status::cap_exceeded,
                    where + ": dimension " + std::to_string(r) + " is " + std::to_string(x) +
                        ", the cap is 2^31");
      }
      t.shape[r] = x;
    }
    const Value q = e.find("quant");
    uint64_t want_len = 0;
    if (t.dtype == DType::packed) {
      if (t.rank != 2) {
        return fail(msg, Status::malformed, where + ": a packed tensor has shape [N, K]");
      }
      if (!q.is(Type::object)) {
        return fail(msg, Status::malformed, where + ": quant must be an object for dtype packed");
      }
      static const char* const kQ[] = {"bits", "block", "scale", "zero_points"};
      if ((st = exact_keys(q, kQ, 4, where + ": quant", msg)) != Status::ok) return st;
      int64_t bits, block;
      bool zp;
      if (!q.find("bits").get_int(&bits) || !q.find("block").get_int(&block) ||
          !q.find("zero_points").get_bool(&zp) || !q.find("scale").is(Type::string)) {
        return fail(msg, Status::malformed,
                    where + ": quant needs integer bits and block, boolean zero_points and a "
                            "string scale");
      }
      const Value sc = q.find("scale");
      ScaleType scale_type;
      if (sc.string_equals("f16")) {
        scale_type = ScaleType::f16;
      } else if (sc.string_equals("f32")) {
        scale_type = ScaleType::f32;
      } else {
        return fail(msg, Status::incompatible,
                    where + ": quant scale " + std::string(sc.raw().substr(0, 64)) +
                        " is not supported (\"f16\" or \"f32\")");
      }
      if (bits < 0 || bits > 64 || block < 0 || block > 65536) {
        bits = bits < 0 || bits > 64 ? -1 : bits;  // keep the int conversion below defined
        block = block < 0 || block > 65536 ? -1 : block;
      }
      t.quant = QuantFormat{int(bits), int(block), zp, scale_type};
      if (!is_supported_format(t.quant)) {
        return fail(msg, Status::incompatible,
                    where + ": quant bits=" + std::string(q.find("bits").raw()) +
                        " block=" + std::string(q.find("block").raw()) +
                        " is not supported (bits 2, 3, 4 or 8; block 32, 64 or 128)");
      }
      PackedLayout L;
      if (packed_layout(t.quant, t.shape[0], t.shape[1], &L) != Status::ok) {
        return fail(msg, Status::malformed, where + ": no packed layout for this shape");
      }
      want_len = L.total_bytes;
    } else {
      if (!q.is(Type::null)) {
        return fail(msg, Status::malformed,
                    where + ": quant must be null for dtype " + dtype_name(t.dtype));
      }
      uint64_t n = t.dtype == DType::f32 ? 4 : 2;
      for (int d = 0; d < t.rank; ++d) {
        if (__builtin_mul_overflow(n, uint64_t(t.shape[d]), &n)) {
          return fail(msg, Status::malformed, where + ": byte size of the shape overflows");
        }
      }
      want_len = n;
    }
    if (!get_u64(e.find("offset"), &t.offset) || !get_u64(e.find("length"), &t.length)) {
      return fail(msg, Status::malformed,
                  where + ": offset and length must be non-negative integers");
    }
    if (t.length != want_len) {
      return fail(msg, Status::malformed,
                  where + ": length is " + num(t.length) + ", dtype, shape and quant give " +
                      num(want_len));
    }
    if (t.offset % kArtifactTensorAlign != 0) {
      return fail(msg, Status::malformed,
                  where + ": offset " + num(t.offset) + " is not a multiple of 64");
    }
    uint64_t end;
    if (__builtin_add_overflow(t.offset, t.length, &end) || end > data_length_) {
      return fail(msg, Status::out_of_bounds,
                  where + ": bytes [" + num(t.offset) + ", offset + " + num(t.length) +
                      ") lie outside the data region of " + num(data_length_) + " bytes");
    }
    if (!get_digest(e.find("sha256"), &t.sha256)) {
      return fail(msg, Status::malformed, where + ": sha256 must be 64 lowercase hex digits");
    }
    if (!tensors_.empty()) {
      const TensorInfo& p = tensors_.back();
      if (t.offset < p.offset) {
        return fail(msg, Status::malformed,
                    where + ": tensors are not sorted by offset (" + num(t.offset) +
                        " after tensor " + quote(p.name) + " at " + num(p.offset) + ")");
      }
      if (t.offset < p.offset + p.length) {
        return fail(msg, Status::overlap,
                    where + " " + range(t.offset, t.length) + " overlaps tensor " +
                        quote(p.name) + " " + range(p.offset, p.length));
      }
    }
    tensors_.push_back(std::move(t));
  }
  by_name_.resize(tensors_.size());
  for (size_t k = 0; k < by_name_.size(); ++k) by_name_[k] = uint32_t(k);
  std::sort(by_name_.begin(), by_name_.end(),
            [&](uint32_t a, uint32_t b) { return tensors_[a].name < tensors_[b].name; });
  for (size_t k = 1; k < by_name_.size(); ++k) {
    if (tensors_[by_name_[k]].name == tensors_[by_name_[k - 1]].name) {
      return fail(msg, Status::malformed,
                  "tensor " + quote(tensors_[by_name_[k]].name) + ": duplicate name");
    }
  }
  return Status::ok;
}

Status Artifact::check_blocks(const void* root_ptr, std::string* msg) {
  const Value& root = *static_cast<const Value*>(root_ptr);
  const Value arr = root.find("expert_blocks");
  if (!arr.is(Type::array)) {
    return fail(msg, Status::malformed, "manifest: expert_blocks must be an array");
  }
  const size_t count = arr.size();
  if (count > kArtifactMaxExpertBlocks) {
    return fail(msg, Status::cap_exceeded,
                "manifest: " + num(count) + " expert blocks, the cap is " +
                    num(kArtifactMaxExpertBlocks));
  }
  blocks_.reserve(count);
  static const char* const kKeys[] = {"expert", "layer", "length", "offset", "sha256"};
  size_t i = 0;
  for (Value e = arr.first(); e.valid(); e = e.next(), ++i) {
    std::string where = "expert block #" + num(i);
    if (!e.is(Type::object)) return fail(msg, Status::malformed, where + ": must be an object");
    Status st = exact_keys(e, kKeys, 5, where, msg);
    if (st != Status::ok) return st;
    ExpertBlockInfo b;
    if (!get_index(e.find("layer"), &b.layer) || !get_index(e.find("expert"), &b.expert)) {
      return fail(msg, Status::malformed,
                  where + ": layer and expert must be integers in [0, 2^31)");
    }
    where = "expert block (layer " + std::to_string(b.layer) + ", expert " +
            std::to_string(b.expert) + ")";
    if (!get_u64(e.find("offset"), &b.offset) || !get_u64(e.find("length"), &b.length)) {
      return fail(msg, Status::malformed,
                  where + ": offset and length must be non-negative integers");
    }
    if (b.offset % kArtifactDataAlign != 0 || b.length % kArtifactDataAlign != 0 ||
        b.length == 0) {
      return fail(msg, Status::malformed,
                  where + ": offset " + num(b.offset) + " and length " + num(b.length) +
                      " must be multiples of 4096, the length non-zero");
    }
    uint64_t end;
    if (__builtin_add_overflow(b.offset, b.length, &end) || end > data_length_) {
      return fail(msg, Status::out_of_bounds,
                  where + ": bytes [" + num(b.offset) + ", offset + " + num(b.length) +
                      ") lie outside the data region of " + num(data_length_) + " bytes");
    }
    if (!get_digest(e.find("sha256"), &b.sha256)) {
      return fail(msg, Status::malformed, where + ": sha256 must be 64 lowercase hex digits");
    }
    if (!blocks_.empty()) {
      const ExpertBlockInfo& p = blocks_.back();
      if (b.offset < p.offset) {
        return fail(msg, Status::malformed,
                    where + ": expert blocks are not sorted by offset");
      }
      if (b.offset < p.offset + p.length) {
        return fail(msg, Status::overlap,
                    where + " " + range(b.offset, b.length) + " overlaps expert block (layer " +
                        std::to_string(p.layer) + ", expert " + std::to_string(p.expert) +
                        ") " + range(p.offset, p.length));
      }
    }
    blocks_.push_back(b);
  }
  by_expert_.resize(blocks_.size());
  for (size_t k = 0; k < by_expert_.size(); ++k) by_expert_[k] = uint32_t(k);
  auto key_less = [&](uint32_t a, uint32_t b) {
    return blocks_[a].layer != blocks_[b].layer ? blocks_[a].layer < blocks_[b].layer
                                                : blocks_[a].expert < blocks_[b].expert;
  };
  std::sort(by_expert_.begin(), by_expert_.end(), key_less);
  for (size_t k = 1; k < by_expert_.size(); ++k) {
    const ExpertBlockInfo& a = blocks_[by_expert_[k - 1]];
    const ExpertBlockInfo& b = blocks_[by_expert_[k]];
    if (a.layer == b.layer && a.expert == b.expert) {
      return fail(msg, Status::malformed,
                  "expert block (layer " + std::to_string(a.layer) + ", expert " +
                      std::to_string(a.expert) + "): listed twice");
    }
  }
  return Status::ok;
}

// Every expert tensor inside its own block; no other tensor touches a block (§3.5).
Status Artifact::check_layout(std::string* msg) {
  auto find_block = [&](int64_t layer, int64_t expert) -> int64_t {
    size_t lo = 0, hi = by_expert_.size();
    while (lo < hi) {
      const size_t mid = (lo + hi) / 2;
      const ExpertBlockInfo& b = blocks_[by_expert_[mid]];
      if (b.layer < layer || (b.layer == layer && b.expert < expert)) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    if (lo < by_expert_.size() && blocks_[by_expert_[lo]].layer == layer &&
        blocks_[by_expert_[lo]].expert == expert) {
      return by_expert_[lo];
    }
    return -1;
  };
  for (TensorInfo& t : tensors_) {
    const uint64_t t_end = t.offset + t.length;
    if (t.expert >= 0) {
      const int64_t bi = find_block(t.layer, t.expert);
      if (bi < 0) {
        return fail(msg, Status::malformed,
                    "tensor " + quote(t.name) + " (layer " + std::to_string(t.layer) +
                        ", expert " + std::to_string(t.expert) + ") has no expert block");
      }
      const ExpertBlockInfo& b = blocks_[size_t(bi)];
      if (t.offset < b.offset || t_end > b.offset + b.length) {
        return fail(msg, Status::out_of_bounds,
                    "tensor " + quote(t.name) + " " + range(t.offset, t.length) +
                        " is not inside its expert block (layer " + std::to_string(b.layer) +
                        ", expert " + std::to_string(b.expert) + ") " +
                        range(b.offset, b.length));
      }
      t.block = int32_t(bi);
    } else {
      // The only block that can intersect: the last one starting before the tensor's end.
      auto it = std::lower_bound(blocks_.begin(), blocks_.end(), t_end,
                                 [](const ExpertBlockInfo& b, uint64_t v) { return b.offset < v; });
      if (it != blocks_.begin()) {
        const ExpertBlockInfo& b = *(it - 1);
        if (b.offset + b.length > t.offset) {
          return fail(msg, Status::overlap,
                      "tensor " + quote(t.name) + " " + range(t.offset, t.length) +
                          " overlaps expert block (layer " + std::to_string(b.layer) +
                          ", expert " + std::to_string(b.expert) + ") " +
                          range(b.offset, b.length));
        }
      }
    }
  }
  // The tensors of a block are the contiguous run of the table inside its range.
  for (ExpertBlockInfo& b : blocks_) {
    auto first = std::lower_bound(tensors_.begin(), tensors_.end(), b.offset,
                                  [](const TensorInfo& t, uint64_t v) { return t.offset < v; });
    auto last = std::lower_bound(first, tensors_.end(), b.offset + b.length,
                                 [](const TensorInfo& t, uint64_t v) { return t.offset < v; });
    b.first_tensor = uint32_t(first - tensors_.begin());
    b.end_tensor = uint32_t(last - tensors_.begin());
  }
  return Status::ok;
}

namespace {

std::string byte_hex(uint8_t v) {
  char b[8];
  std::snprintf(b, sizeof b, "0x%02x", v);
  return b;
}

std::string block_name(const ExpertBlockInfo& b) {
  return "expert block (layer " + std::to_string(b.layer) + ", expert " +
         std::to_string(b.expert) + ")";
}

// A region of the data region in offset order: a tensor, or a whole expert block.
struct Region {
  bool is_block;
  size_t index;
};

// Non-expert tensors and expert blocks, merged in offset order.
std::vector<Region> top_regions(const std::vector<TensorInfo>& ts,
                                const std::vector<ExpertBlockInfo>& bs) {
  std::vector<Region> out;
  out.reserve(ts.size() + bs.size());
  size_t bi = 0;
  for (size_t ti = 0; ti < ts.size(); ++ti) {
    if (ts[ti].block >= 0) continue;
    while (bi < bs.size() && bs[bi].offset < ts[ti].offset) out.push_back({true, bi++});
    out.push_back({false, ti});
  }
  while (bi < bs.size()) out.push_back({true, bi++});
  return out;
}

}  // namespace

// Checks that data[from, to) (offsets in the data region) is zero; `after` names what precedes.
template <typename After>
static Status zero_gap(const uint8_t* data, uint64_t data_offset, uint64_t from, uint64_t to,
                       After after, std::string* msg) {
  if (to <= from) return Status::ok;
  const size_t i = first_nonzero(data + from, size_t(to - from));
  if (i == size_t(to - from)) return Status::ok;
  return fail(msg, Status::nonzero_padding,
              "padding byte at file offset " + num(data_offset + from + i) + " (data offset " +
                  num(from + i) + ", " + after() + ") is " + byte_hex(data[from + i]) +
                  ", padding must be zero");
}

Status Artifact::check_padding(std::string* msg) const {
  // Between the manifest and the data region.
  const uint64_t mend = kArtifactHeaderBytes + manifest_length_;
  const size_t i = first_nonzero(base_ + mend, size_t(data_offset_ - mend));
  if (i != size_t(data_offset_ - mend)) {
    return fail(msg, Status::nonzero_padding,
                "padding byte at file offset " + num(mend + i) +
                    " (between the manifest and the data region) is " + byte_hex(base_[mend + i]) +
                    ", padding must be zero");
  }
  // The data region outside every tensor. In lazy mode an expert block counts as one region:
  // its inside is checked by verify_block.
  const uint8_t* data = base_ + data_offset_;
  std::vector<Region> regions;
  if (lazy_) {
    regions = top_regions(tensors_, blocks_);
  } else {
    regions.reserve(tensors_.size());
    for (size_t t = 0; t < tensors_.size(); ++t) regions.push_back({false, t});
  }
  uint64_t pos = 0;
  const Region* prev = nullptr;
  auto after = [&]() -> std::string {
    if (!prev) return "at the start of the data region";
    return "after " + (prev->is_block ? block_name(blocks_[prev->index])
                                      : "tensor " + quote(tensors_[prev->index].name));
  };
  Status st;
  for (const Region& r : regions) {
    const uint64_t start = r.is_block ? blocks_[r.index].offset : tensors_[r.index].offset;
    const uint64_t len = r.is_block ? blocks_[r.index].length : tensors_[r.index].length;
    if ((st = zero_gap(data, data_offset_, pos, start, after, msg)) != Status::ok) return st;
    pos = start + len;
    prev = &r;
  }
  return zero_gap(data, data_offset_, pos, data_length_, after, msg);
}

Status Artifact::check_block_padding(size_t block, std::string* msg) const {
  const ExpertBlockInfo& b = blocks_[block];
  const uint8_t* data = base_ + data_offset_;
  uint64_t pos = b.offset;
  const TensorInfo* prev = nullptr;
  auto after = [&]() -> std::string {
    return prev ? "after tensor " + quote(prev->name) : "at the start of " + block_name(b);
  };
  Status st;
  for (uint32_t ti = b.first_tensor; ti < b.end_tensor; ++ti) {
    const TensorInfo& t = tensors_[ti];
    if ((st = zero_gap(data, data_offset_, pos, t.offset, after, msg)) != Status::ok) return st;
    pos = t.offset + t.length;
    prev = &t;
  }
  return zero_gap(data, data_offset_, pos, b.offset + b.length, after, msg);
}

namespace {

std::string describe(const std::vector<TensorInfo>& ts, const std::vector<ExpertBlockInfo>& bs,
                     const ArtifactJobRef& r, const Sha256Job& j) {
  std::string s;
  if (r.is_block) {
    const ExpertBlockInfo& b = bs[r.index];
    s = "expert block (layer " + std::to_string(b.layer) + ", expert " +
        std::to_string(b.expert) + ") at data offset " + num(b.offset) + ", " +
        num(b.length) + " bytes";
  } else {
    const TensorInfo& t = ts[r.index];
    s = "tensor " + quote(t.name) + " at data offset " + num(t.offset) + ", " +
        num(t.length) + " bytes";
    if (t.block >= 0) {
      s += " (expert block of layer " + std::to_string(t.layer) + ", expert " +
           std::to_string(t.expert) + ")";
    }
  }
  return s + ": sha256 expected " + digest_hex(j.expected) + ", got " + digest_hex(j.got);
}

}  // namespace

namespace {

void add_job(std::vector<Sha256Job>* jobs, std::vector<ArtifactJobRef>* refs, const uint8_t* data,
             uint64_t offset, uint64_t length, const Sha256Digest& expected, bool is_block,
             size_t index) {
  Sha256Job j;
  j.data = data + offset;
  j.size = size_t(length);
  j.expected = expected;
  jobs->push_back(j);
  refs->push_back({is_block, index});
}

}  // namespace

// A block's jobs: its tensors, then the block itself (so a changed weight is reported by the
// name of its tensor).
void Artifact::add_block_jobs(size_t block, std::vector<Sha256Job>* jobs,
                              std::vector<ArtifactJobRef>* refs) const {
  const ExpertBlockInfo& b = blocks_[block];
  const uint8_t* data = base_ + data_offset_;
  for (uint32_t ti = b.first_tensor; ti < b.end_tensor; ++ti) {
    const TensorInfo& t = tensors_[ti];
    add_job(jobs, refs, data, t.offset, t.length, t.sha256, false, ti);
  }
  add_job(jobs, refs, data, b.offset, b.length, b.sha256, true, block);
}

Status Artifact::run_jobs(std::vector<Sha256Job>& jobs, const std::vector<ArtifactJobRef>& refs,
                          std::string* msg) const {
  const size_t bad = sha256_verify_batch(jobs.data(), jobs.size());
  if (bad < jobs.size()) {
    return fail(msg, Status::digest_mismatch, describe(tensors_, blocks_, refs[bad], jobs[bad]));
  }
  return Status::ok;
}

Status Artifact::check_digests(std::string* msg) const {
  // Full mode: every block's padding before any digest (§5 order).
  if (!lazy_) {
    for (size_t b = 0; b < blocks_.size(); ++b) {
      const Status st = check_block_padding(b, msg);
      if (st != Status::ok) return st;
    }
  }
  // In offset order: non-expert tensors and, unless lazy, expert blocks.
  std::vector<Sha256Job> jobs;
  std::vector<ArtifactJobRef> refs;
  jobs.reserve(tensors_.size() + blocks_.size());
  refs.reserve(tensors_.size() + blocks_.size());
  const uint8_t* data = base_ + data_offset_;
  for (const Region& r : top_regions(tensors_, blocks_)) {
    if (r.is_block) {
      if (!lazy_) add_block_jobs(r.index, &jobs, &refs);
    } else {
      const TensorInfo& t = tensors_[r.index];
      add_job(&jobs, &refs, data, t.offset, t.length, t.sha256, false, r.index);
    }
  }
  return run_jobs(jobs, refs, msg);
}

// Caller holds mu_: the job arrays reserved at open for the largest block are reused.
Status Artifact::check_block_digests(size_t block, std::string* msg) const {
  block_jobs_.clear();
  block_refs_.clear();
  add_block_jobs(block, &block_jobs_, &block_refs_);
  return run_jobs(block_jobs_, block_refs_, msg);
}

const TensorInfo* Artifact::find_tensor(std::string_view name) const {
  auto it = std::lower_bound(by_name_.begin(), by_name_.end(), name,
                             [&](uint32_t i, std::string_view n) { return tensors_[i].name < n; });
  if (it == by_name_.end() || tensors_[*it].name != name) return nullptr;
  return &tensors_[*it];
}

bool Artifact::block_verified(size_t block) const {
  return block < blocks_.size() && block_state_[block].load(std::memory_order_acquire) == 1;
}

void Artifact::forget_block(size_t block) {
  if (block >= blocks_.size()) return;
  std::lock_guard<std::mutex> lock(mu_);
  uint8_t verified = 1;
  block_state_[block].compare_exchange_strong(verified, 0, std::memory_order_acq_rel);
}

Status Artifact::verify_block(size_t block, std::string* msg) {
  if (msg) msg->clear();
  if (block >= blocks_.size()) {
    try {
      return fail(msg, Status::invalid_argument,
                  "expert block index " + num(block) + " out of range");
    } catch (...) {
      return Status::invalid_argument;
    }
  }
  if (block_state_[block].load(std::memory_order_acquire) == 1) return Status::ok;
  try {
    std::lock_guard<std::mutex> lock(mu_);
    const uint8_t s = block_state_[block].load(std::memory_order_relaxed);
    if (s == 1) return Status::ok;
    if (s == 2) return fail(msg, block_status_[block], block_error_[block]);
    std::string m;
    Status st = check_block_padding(block, &m);
    if (st == Status::ok) st = check_block_digests(block, &m);
    if (st == Status::ok) {
      block_state_[block].store(1, std::memory_order_release);
      return Status::ok;
    }
    block_status_[block] = st;
    block_error_[block] = m;
    block_state_[block].store(2, std::memory_order_release);
    return fail(msg, st, std::move(m));
  } catch (const std::bad_alloc&) {
    return fail(msg, Status::io_error, "out of memory while verifying an expert block");
  } catch (...) {
    return fail(msg, Status::io_error, "internal error while verifying an expert block");
  }
}

Status Artifact::verify_expert(int64_t layer, int64_t expert, std::string* msg) {
  if (msg) msg->clear();
  size_t lo = 0, hi = by_expert_.size();
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    const ExpertBlockInfo& b = blocks_[by_expert_[mid]];
    if (b.layer == layer && b.expert == expert) return verify_block(by_expert_[mid], msg);
    if (b.layer < layer || (b.layer == layer && b.expert < expert)) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  try {
    return fail(msg, Status::invalid_argument,
                "no expert block for layer " + std::to_string(layer) + ", expert " +
                    std::to_string(expert));
  } catch (...) {
    return Status::invalid_argument;
  }
}

Status Artifact::tensor_at(size_t index, TensorView* out, std::string* msg) {
  if (msg) msg->clear();
  if (out) *out = TensorView();
  if (!out || index >= tensors_.size()) {
    try {
      return fail(msg, Status::invalid_argument, "tensor index " + num(index) + " out of range");
    } catch (...) {
      return Status::invalid_argument;
    }
  }
  const TensorInfo& t = tensors_[index];
  if (t.block >= 0) {
    const Status st = verify_block(size_t(t.block), msg);
    if (st != Status::ok) return st;
  }
  out->info = &t;
  out->data = base_ + data_offset_ + t.offset;
  return Status::ok;
}

Status Artifact::tensor(std::string_view name, TensorView* out, std::string* msg) {
  const TensorInfo* t = find_tensor(name);
  if (!t) {
    if (out) *out = TensorView();
    try {
      return fail(msg, Status::invalid_argument, "no tensor named " + quote(name));
    } catch (...) {
      return Status::invalid_argument;
    }
  }
  return tensor_at(size_t(t - tensors_.data()), out, msg);
}

}  // namespace fwa
