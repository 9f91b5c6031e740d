// safetensors: u64 header length N, N bytes of JSON {name: {dtype, shape, data_offsets}, "__metadata__":
// {str: str}}, then the data. Read through a memory mapping (no copy); written atomically.
// SafetensorsSet opens a model folder: model.safetensors, or model.safetensors.index.json with shards.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/mapped_file.h"

namespace lora {

struct SafeTensorInfo {
  std::string name;
  DType dtype = DTYPE_F32;
  std::vector<int64_t> shape;  // row-major, outermost first
  const void* data = nullptr;
  int64_t nbytes = 0;
  std::string file;  // which file it came from (for messages)
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Validates the header: JSON, dtypes, shapes against data_offsets, offsets inside the file.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  const std::string& path() const { return path_; }
  const std::map<std::string, SafeTensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafeTensorInfo* find(const std::string& name) const;

 private:
  std::string path_;
  std::map<std::string, SafeTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
  std::shared_ptr<MappedFile> map_;
};

class SafetensorsSet {
 public:
  // dir holds model.safetensors, or model.safetensors.index.json and its shards, or one *.safetensors.
  static SafetensorsSet open_dir(const std::string& dir);
  const SafeTensorInfo* find(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafeTensorInfo*> index_;
};

struct SafeTensorWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;  // must stay valid until the write returns
};
// Writes tensors (sorted by name, header padded to 8 bytes) atomically.
void safetensors_write(const std::string& path, const std::vector<SafeTensorWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace lora
