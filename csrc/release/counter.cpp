// SPDX-License-Identifier: Apache-2.0
// The file counter store (dev boards, the CLI): "<decimal>\n" and nothing else, replaced
// atomically (temp file, fsync, rename, fsync of the directory), never lowered.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "release/release.h"

namespace fwa {
namespace release {
namespace {

std::string errno_text() { return std::strerror(errno); }

bool write_all(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t w = ::write(fd, s.data() + done, s.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    done += size_t(w);
  }
  return true;
}

std::string dir_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

Status file_counter_read(const std::string& path, uint64_t* value, std::string* message) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (message) *message = "counter file " + path + ": " + errno_text();
    return Status::counter_unavailable;
  }
  struct stat st;
  char buf[24];
  ssize_t n = -1;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    do n = ::read(fd, buf, sizeof buf); while (n < 0 && errno == EINTR);
  }
  ::close(fd);
  // "0\n" or a decimal without a leading zero, at most 2^53, then "\n": nothing else.
  bool ok = n >= 2 && n < 19 && buf[n - 1] == '\n' && !(buf[0] == '0' && n > 2);
  uint64_t v = 0;
  for (ssize_t i = 0; ok && i < n - 1; ++i) {
    ok = buf[i] >= '0' && buf[i] <= '9';
    v = v * 10 + uint64_t(buf[i] - '0');
  }
  if (!ok || v > uint64_t(kMaxVersion)) {
    if (message)
      *message = "counter file " + path + ": not a regular file holding a decimal value and "
                 "\"\\n\" only";
    return Status::counter_unavailable;
  }
  *value = v;
  return Status::ok;
}

static Status write_counter(const std::string& path, uint64_t value, bool create,
                            std::string* message) {
  const std::string text = std::to_string(value) + "\n";
  if (create) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      if (message) *message = "counter file " + path + ": cannot create it: " + errno_text();
      return errno == EEXIST ? Status::invalid_argument : Status::io_error;
    }
    const bool ok = write_all(fd, text) && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok) {
      ::unlink(path.c_str());
      if (message) *message = "counter file " + path + ": write failed: " + errno_text();
      return Status::io_error;
    }
  } else {
    const std::string tmp = path + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
      if (message) *message = "counter file " + tmp + ": " + errno_text();
      return Status::io_error;
    }
    const bool ok = write_all(fd, text) && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
      if (message) *message = "counter file " + path + ": replace failed: " + errno_text();
      ::unlink(tmp.c_str());
      return Status::io_error;
    }
  }
  const int dfd = ::open(dir_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0 || ::fsync(dfd) != 0) {
    if (dfd >= 0) ::close(dfd);
    if (message) *message = "counter file " + path + ": fsync of its directory failed";
    return Status::io_error;
  }
  ::close(dfd);
  return Status::ok;
}

Status file_counter_init(const std::string& path, uint64_t value, std::string* message) {
  if (value > uint64_t(kMaxVersion)) {
    if (message) *message = "counter value above 2^53";
    return Status::invalid_argument;
  }
  return write_counter(path, value, true, message);
}

Status file_counter_advance(const std::string& path, uint64_t value, std::string* message) {
  uint64_t current = 0;
  const Status st = file_counter_read(path, &current, message);
  if (st != Status::ok) return st;
  if (value < current) {
    if (message)
      *message = "counter file " + path + ": " + std::to_string(value) + " is below its value " +
                 std::to_string(current) + "; the counter never decreases";
    return Status::rollback;
  }
  if (value == current) return Status::ok;
  if (value > uint64_t(kMaxVersion)) {
    if (message) *message = "counter value above 2^53";
    return Status::invalid_argument;
  }
  return write_counter(path, value, false, message);
}

}  // namespace release
}  // namespace fwa
