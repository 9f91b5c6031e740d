// safetensors: u64 header length N, N bytes of JSON {name: {dtype, shape, data_offsets}, "__metadata__":
// {str: str}}, then the data. Read through a memory mapping (no copy); written atomically and streamed
// tensor by tensor to the temp file (memory: one tensor at most, for the sources that convert on the fly).
// SafetensorsSet opens a model folder: model.safetensors, or model.safetensors.index.json with shards.
#pragma once
#include <cstdint>
#include <functional>
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

// A tensor whose bytes are produced at write time: `fill` writes exactly dtype·shape bytes into `dst`
// (a scratch buffer reused across tensors). Lets a saver convert one tensor at a time.
struct SafeTensorSource {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data = nullptr;                 // either the bytes as they are ...
  std::function<void(void* dst)> fill;        // ... or a producer (used when data is null)
};
// The same layout as safetensors_write, streamed to the temp file tensor by tensor; on any failure
// (a throwing fill, disk full) the temp file is removed and nothing appears at `path`.
void safetensors_write_stream(const std::string& path, const std::vector<SafeTensorSource>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace lora
