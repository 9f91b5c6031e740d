// GGUF (llama.cpp's model file format, v2 and v3): reading metadata and tensor infos, with tensor data
// memory-mapped; writing (atomic, streamed tensor by tensor: io/file_writer.h). Layout: magic "GGUF", u32 version, u64 n_tensors, u64 n_kv, the kv
// pairs, the tensor infos (name, n_dims, ne[] innermost first, ggml type, offset), padding to
// general.alignment (default 32), then the data. Every parse error is a lora::Error naming the file,
// the field and the byte offset; nothing reads past the end of the file.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/dtype.h"
#include "io/mapped_file.h"

namespace lora {

enum class GGUFType : uint32_t {
  GGUF_TYPE_UINT8 = 0, GGUF_TYPE_INT8 = 1, GGUF_TYPE_UINT16 = 2, GGUF_TYPE_INT16 = 3,
  GGUF_TYPE_UINT32 = 4, GGUF_TYPE_INT32 = 5, GGUF_TYPE_FLOAT32 = 6, GGUF_TYPE_BOOL = 7,
  GGUF_TYPE_STRING = 8, GGUF_TYPE_ARRAY = 9, GGUF_TYPE_UINT64 = 10, GGUF_TYPE_INT64 = 11,
  GGUF_TYPE_FLOAT64 = 12,
};
using enum GGUFType;

// One metadata value. Scalars are widened (integers to int64/uint64, floats to double); arrays keep
// their element type and hold scalars or strings.
struct GGUFValue {
  GGUFType type = GGUF_TYPE_UINT8;
  GGUFType elem_type = GGUF_TYPE_UINT8;  // for arrays
  std::variant<int64_t, uint64_t, double, bool, std::string> scalar;
  std::vector<GGUFValue> array;  // arrays of scalars/strings (nested arrays allowed)
};

// ggml type ids (ggml.h) <-> our DType. Returns false for types we do not support.
bool gguf_type_to_dtype(uint32_t ggml_type, DType* out);
uint32_t gguf_dtype_to_type(DType t);

struct GGUFTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the innermost (contiguous) dimension
  DType dtype = DTYPE_F32;
  uint64_t offset = 0;        // relative to the data section
  const void* data = nullptr; // into the mapping
  int64_t nbytes = 0;
  int64_t numel() const;
};

class GGUFFile {
 public:
  // Opens and validates: header, every kv, every tensor info (type known, shape sane, data in range).
  static std::shared_ptr<GGUFFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  const std::map<std::string, GGUFValue>& kv() const { return kv_; }
  const std::vector<GGUFTensorInfo>& tensors() const { return tensors_; }
  const GGUFTensorInfo* find_tensor(const std::string& name) const;

  const GGUFValue* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }
  // Typed getters: error (naming the file and the key) if present with the wrong type; `def` if absent.
  std::string get_str(const std::string& key, const std::string& def = {}) const;
  int64_t get_int(const std::string& key, int64_t def) const;
  double get_float(const std::string& key, double def) const;
  bool get_bool(const std::string& key, bool def) const;
  // Required variants: error naming the key when absent.
  std::string req_str(const std::string& key) const;
  int64_t req_int(const std::string& key) const;
  std::vector<std::string> get_str_array(const std::string& key) const;  // empty if absent
  std::vector<double> get_float_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;

  std::shared_ptr<MappedFile> mapping() const { return map_; }

 private:
  std::string path_;
  uint32_t version_ = 0;
  std::map<std::string, GGUFValue> kv_;
  std::vector<GGUFTensorInfo> tensors_;
  std::shared_ptr<MappedFile> map_;
};

// Whether the file at path starts with GGUF's magic "GGUF" (false for folders and unreadable files).
bool gguf_has_magic(const std::string& path);

// Writer: collects kv pairs and tensors, then writes v3 atomically (temp file + rename), streaming the
// header and then one tensor at a time; a failure (disk full, a throwing fill) leaves no file behind.
class GGUFWriter {
 public:
  void set_str(const std::string& key, const std::string& v);
  void set_u32(const std::string& key, uint32_t v);
  void set_i32(const std::string& key, int32_t v);
  void set_f32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_str_array(const std::string& key, const std::vector<std::string>& v);
  void set_f32_array(const std::string& key, const std::vector<float>& v);
  void set_i32_array(const std::string& key, const std::vector<int32_t>& v);
  void set_value(const std::string& key, const GGUFValue& v);
  // ne in ggml order (innermost first). The bytes are copied at write time, so `data` must stay valid.
  void add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& ne, const void* data);
  // A tensor whose bytes are produced at write time: fill(dst) writes its dtype_nbytes bytes into a
  // scratch buffer reused across tensors (so at most one converted tensor is held in memory).
  void add_tensor_fill(const std::string& name, DType dtype, const std::vector<int64_t>& ne,
                       std::function<void(void* dst)> fill);
  void write(const std::string& path, uint32_t alignment = 32) const;
  size_t n_tensors() const { return tensors_.size(); }

 private:
  std::vector<std::pair<std::string, GGUFValue>> kv_;
  struct T { std::string name; DType dtype; std::vector<int64_t> ne; const void* data; std::function<void(void*)> fill; };
  std::vector<T> tensors_;
};

}  // namespace lora
