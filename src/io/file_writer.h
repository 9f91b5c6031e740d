// AtomicFileWriter: streams bytes into "<path>.tmp.<pid>" and renames that onto `path` at commit(), so a
// reader never sees a half-written file and a failure never leaves one behind. Every write, the final
// fsync and close are checked; any error (disk full, file size limit, I/O error) removes the temp file and
// throws lora::Error naming `path`. Destroying the writer without commit() (an exception on the way)
// removes the temp file too. Memory: one fixed buffer, whatever the file size.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lora {

class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t n);
  void write_zeros(size_t n);
  uint64_t offset() const { return offset_; }  // bytes written so far
  // Flushes, fsyncs, closes and renames into place. No further writes.
  void commit();
  const std::string& temp_path() const { return tmp_; }

 private:
  void flush();
  [[noreturn]] void fail(const std::string& what, int err);
  std::string path_, tmp_;
  int fd_ = -1;
  std::vector<char> buf_;
  size_t used_ = 0;
  uint64_t offset_ = 0;
};

}  // namespace lora
