// Read-only memory-mapped file. Errors (missing file, directory, unreadable) are lora::Error naming
// the path.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace lora {

class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Whole file into a string; lora::Error naming the path if it cannot be read.
std::string read_text_file(const std::string& path);
bool path_exists(const std::string& path);
bool path_is_dir(const std::string& path);
// Writes via "<path>.tmp.<pid>" then rename(), so readers never see a half-written file.
void write_file_atomic(const std::string& path, const void* data, size_t size);

}  // namespace lora
