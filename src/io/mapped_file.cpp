// Memory-mapped files and small file helpers (atomic writes).
#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace lora {

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    fail_input(path, std::string("cannot open: ") + std::strerror(errno), "check the path");
  if (S_ISDIR(st.st_mode)) fail_input(path, "is a directory, expected a file");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_input(path, std::string("cannot open: ") + std::strerror(errno), "check the permissions");
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->size_ = size_t(st.st_size);
  if (f->size_ > 0) {
    void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    if (p == MAP_FAILED) fail_input(path, std::string("cannot memory-map: ") + std::strerror(err));
    f->data_ = static_cast<const uint8_t*>(p);
  } else {
    ::close(fd);
  }
  return f;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

std::string read_text_file(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    fail_input(path, std::string("cannot open: ") + std::strerror(errno), "check the path");
  if (S_ISDIR(st.st_mode)) fail_input(path, "is a directory, expected a file");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail_input(path, "cannot open for reading", "check the permissions");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool path_is_dir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_input(path, std::string("cannot create: ") + std::strerror(errno), "check that the folder exists and is writable");
  const char* p = static_cast<const char*>(data);
  size_t left = size;
  while (left > 0) {
    const ssize_t w = ::write(fd, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail_input(path, std::string("write failed: ") + std::strerror(err), "check free disk space");
    }
    p += w;
    left -= size_t(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail_input(path, std::string("write failed: ") + std::strerror(err), "check free disk space");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail_input(path, std::string("cannot rename the finished file into place: ") + std::strerror(err));
  }
}

}  // namespace lora
