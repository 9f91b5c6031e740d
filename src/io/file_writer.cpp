// AtomicFileWriter (io/file_writer.h).
#include "io/file_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace lora {

namespace {
constexpr size_t kBufBytes = size_t(4) << 20;  // 4 MiB: few syscalls, bounded memory
}

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)) {
  tmp_ = path_ + ".tmp." + std::to_string(::getpid());
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0)
    fail_input(path_, std::string("cannot create: ") + std::strerror(errno), "check that the folder exists and is writable");
  buf_.resize(kBufBytes);
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) {  // not committed: an error unwound past us
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFileWriter::fail(const std::string& what, int err) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_.c_str());
  fail_input(path_, what + ": " + std::strerror(err), "check free disk space and the file size limit; nothing was written");
}

void AtomicFileWriter::flush() {
  const char* p = buf_.data();
  size_t left = used_;
  while (left > 0) {
    const ssize_t w = ::write(fd_, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("write failed", errno);
    }
    if (w == 0) fail("write failed", ENOSPC);
    p += w;
    left -= size_t(w);
  }
  used_ = 0;
}

void AtomicFileWriter::write(const void* data, size_t n) {
  LORA_CHECK(fd_ >= 0, "AtomicFileWriter: write after commit or failure ({})", path_);
  const char* p = static_cast<const char*>(data);
  offset_ += n;
  while (n > 0) {
    const size_t k = std::min(n, buf_.size() - used_);
    std::memcpy(buf_.data() + used_, p, k);
    used_ += k;
    p += k;
    n -= k;
    if (used_ == buf_.size()) flush();
  }
}

void AtomicFileWriter::write_zeros(size_t n) {
  static const char zeros[256] = {};
  while (n > 0) {
    const size_t k = std::min(n, sizeof(zeros));
    write(zeros, k);
    n -= k;
  }
}

void AtomicFileWriter::commit() {
  LORA_CHECK(fd_ >= 0, "AtomicFileWriter: commit twice or after failure ({})", path_);
  flush();
  if (::fsync(fd_) != 0 && errno != EINVAL) fail("write failed", errno);  // EINVAL: a special file (tests)
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    fail_input(path_, std::string("write failed: ") + std::strerror(err), "check free disk space");
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    fail_input(path_, std::string("cannot rename the finished file into place: ") + std::strerror(err),
               "check the path and its permissions");
  }
}

}  // namespace lora
