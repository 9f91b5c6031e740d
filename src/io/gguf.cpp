// GGUF reader and writer (see gguf.h for the layout). The reader is defensive: every length and count
// is checked against the bytes that remain, so a truncated or corrupt file gives a lora::Error naming
// the field and its byte offset instead of reading out of bounds or allocating wildly.
#include "io/gguf.h"

#include <cstring>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "io/file_writer.h"

namespace lora {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr int kMaxArrayDepth = 4;

// ggml type ids from ggml.h.
struct TypeMap { uint32_t ggml; DType dt; };
constexpr TypeMap kTypes[] = {
    {0, DTYPE_F32},   {1, DTYPE_F16},   {2, DTYPE_Q4_0},  {3, DTYPE_Q4_1},  {6, DTYPE_Q5_0},
    {7, DTYPE_Q5_1},  {8, DTYPE_Q8_0},  {12, DTYPE_Q4_K}, {13, DTYPE_Q5_K}, {14, DTYPE_Q6_K},
    {26, DTYPE_I32},  {27, DTYPE_I64},  {30, DTYPE_BF16},
};

const char* ggml_type_name(uint32_t t) {
  static const char* names[] = {"F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
                                "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS",
                                "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64",
                                "IQ1_M", "BF16"};
  return t < sizeof(names) / sizeof(names[0]) ? names[t] : "unknown";
}

class Reader {
 public:
  Reader(const std::string& path, const uint8_t* data, size_t size) : path_(path), p_(data), size_(size) {}
  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    fail_input(path_, fmt::format("{} at byte {}: {}", field, pos_, what),
               "the file is truncated or not a valid GGUF file; re-download or re-convert it");
  }
  void need(size_t n, const std::string& field) const {
    if (n > left()) fail(field, fmt::format("needs {} bytes but only {} remain", n, left()));
  }
  template <class T> T read(const std::string& field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_str(const std::string& field) {
    const uint64_t n = read<uint64_t>(field + " (string length)");
    need(n, field);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), size_t(n));
    pos_ += size_t(n);
    return s;
  }

 private:
  std::string path_;
  const uint8_t* p_;
  size_t size_;
  size_t pos_ = 0;
};

size_t scalar_size(GGUFType t) {
  switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
  }
}

GGUFValue read_value(Reader& r, GGUFType type, const std::string& key, int depth) {
  GGUFValue v;
  v.type = type;
  switch (type) {
    case GGUF_TYPE_UINT8: v.scalar = uint64_t(r.read<uint8_t>(key)); break;
    case GGUF_TYPE_INT8: v.scalar = int64_t(r.read<int8_t>(key)); break;
    case GGUF_TYPE_UINT16: v.scalar = uint64_t(r.read<uint16_t>(key)); break;
    case GGUF_TYPE_INT16: v.scalar = int64_t(r.read<int16_t>(key)); break;
    case GGUF_TYPE_UINT32: v.scalar = uint64_t(r.read<uint32_t>(key)); break;
    case GGUF_TYPE_INT32: v.scalar = int64_t(r.read<int32_t>(key)); break;
    case GGUF_TYPE_UINT64: v.scalar = r.read<uint64_t>(key); break;
    case GGUF_TYPE_INT64: v.scalar = r.read<int64_t>(key); break;
    case GGUF_TYPE_FLOAT32: v.scalar = double(r.read<float>(key)); break;
    case GGUF_TYPE_FLOAT64: v.scalar = r.read<double>(key); break;
    case GGUF_TYPE_BOOL: v.scalar = r.read<uint8_t>(key) != 0; break;
    case GGUF_TYPE_STRING: v.scalar = r.read_str(key); break;
    case GGUF_TYPE_ARRAY: {
      if (depth >= kMaxArrayDepth) r.fail(key, "arrays nested too deeply");
      const uint32_t et = r.read<uint32_t>(key + " (array type)");
      if (et > uint32_t(GGUF_TYPE_FLOAT64)) r.fail(key, fmt::format("unknown array element type {}", et));
      v.elem_type = GGUFType(et);
      const uint64_t n = r.read<uint64_t>(key + " (array length)");
      // Every element takes at least one byte (strings at least 8), so n is bounded by what remains.
      const size_t min_size = v.elem_type == GGUF_TYPE_STRING ? 8 : v.elem_type == GGUF_TYPE_ARRAY ? 12
                                                                                                : scalar_size(v.elem_type);
      if (n > r.left() / min_size) r.fail(key, fmt::format("array of {} elements does not fit the file", n));
      v.array.reserve(size_t(n));
      for (uint64_t i = 0; i < n; ++i) v.array.push_back(read_value(r, v.elem_type, key, depth + 1));
      break;
    }
    default: r.fail(key, fmt::format("unknown value type {}", uint32_t(type)));
  }
  return v;
}

const char* type_name(GGUFType t) {
  switch (t) {
    case GGUF_TYPE_STRING: return "string";
    case GGUF_TYPE_ARRAY: return "array";
    case GGUF_TYPE_BOOL: return "bool";
    case GGUF_TYPE_FLOAT32: case GGUF_TYPE_FLOAT64: return "float";
    default: return "integer";
  }
}

bool is_int(GGUFType t) {
  return t != GGUF_TYPE_STRING && t != GGUF_TYPE_ARRAY && t != GGUF_TYPE_BOOL && t != GGUF_TYPE_FLOAT32 &&
         t != GGUF_TYPE_FLOAT64;
}

int64_t as_int(const GGUFValue& v) {
  if (auto* i = std::get_if<int64_t>(&v.scalar)) return *i;
  if (auto* u = std::get_if<uint64_t>(&v.scalar)) return int64_t(*u);
  return 0;
}

}  // namespace

bool gguf_type_to_dtype(uint32_t ggml_type, DType* out) {
  for (const auto& m : kTypes)
    if (m.ggml == ggml_type) {
      *out = m.dt;
      return true;
    }
  return false;
}

uint32_t gguf_dtype_to_type(DType t) {
  for (const auto& m : kTypes)
    if (m.dt == t) return m.ggml;
  LORA_CHECK(false, "dtype {} has no GGUF type", dtype_name(t));
  return 0;
}

int64_t GGUFTensorInfo::numel() const {
  int64_t n = 1;
  for (auto d : ne) n *= d;
  return n;
}

std::shared_ptr<GGUFFile> GGUFFile::open(const std::string& path) {
  auto map = MappedFile::open(path);
  Reader r(path, map->data(), map->size());
  auto f = std::make_shared<GGUFFile>();
  f->path_ = path;
  f->map_ = map;
  if (map->size() < 4 || r.read<uint32_t>("magic") != kMagic)
    fail_input(path, "not a GGUF file (the first four bytes are not \"GGUF\")",
               "pass a .gguf model file or a Hugging Face model folder");
  f->version_ = r.read<uint32_t>("version");
  if (f->version_ != 2 && f->version_ != 3)
    fail_input(path, fmt::format("GGUF version {} is not supported (only 2 and 3)", f->version_),
               f->version_ == 1 ? "re-convert the model with a current llama.cpp" : "the file may be big-endian or corrupt");
  const uint64_t n_tensors = r.read<uint64_t>("tensor count");
  const uint64_t n_kv = r.read<uint64_t>("metadata count");
  if (n_kv > r.left() / 13) r.fail("metadata count", fmt::format("{} entries cannot fit the file", n_kv));
  if (n_tensors > r.left() / 24) r.fail("tensor count", fmt::format("{} tensors cannot fit the file", n_tensors));

  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = r.read_str(fmt::format("metadata key #{}", i));
    const uint32_t t = r.read<uint32_t>(key + " (type)");
    if (t > uint32_t(GGUF_TYPE_FLOAT64)) r.fail(key, fmt::format("unknown value type {}", t));
    f->kv_[key] = read_value(r, GGUFType(t), key, 0);
  }

  uint64_t alignment = 32;
  if (const GGUFValue* a = f->find("general.alignment")) {
    alignment = uint64_t(as_int(*a));
    if (!is_int(a->type) || alignment == 0 || (alignment & (alignment - 1)) != 0)
      fail_input(path, "general.alignment: must be a power of two", "the file is corrupt");
  }

  f->tensors_.reserve(size_t(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GGUFTensorInfo ti;
    ti.name = r.read_str(fmt::format("tensor #{} name", i));
    const uint32_t nd = r.read<uint32_t>(ti.name + " (n_dims)");
    if (nd == 0 || nd > 4) r.fail(ti.name, fmt::format("n_dims {} (expected 1 to 4)", nd));
    int64_t numel = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      const int64_t ne = r.read<int64_t>(ti.name + " (shape)");
      if (ne <= 0 || ne > (int64_t(1) << 40) || numel > (int64_t(1) << 50) / ne)
        r.fail(ti.name, fmt::format("invalid dimension {}", ne));
      numel *= ne;
      ti.ne.push_back(ne);
    }
    const uint32_t gt = r.read<uint32_t>(ti.name + " (type)");
    if (!gguf_type_to_dtype(gt, &ti.dtype))
      fail_input(path, fmt::format("tensor {}: ggml type {} ({}) is not supported", ti.name, gt, ggml_type_name(gt)),
                 "supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K; re-quantize the model to one of these");
    if (ti.ne[0] % dtype_block_elems(ti.dtype) != 0)
      r.fail(ti.name, fmt::format("row length {} is not a multiple of the {} block size", ti.ne[0], dtype_name(ti.dtype)));
    ti.nbytes = dtype_nbytes(ti.dtype, numel);
    ti.offset = r.read<uint64_t>(ti.name + " (offset)");
    f->tensors_.push_back(std::move(ti));
  }

  const uint64_t data_start = (r.pos() + alignment - 1) / alignment * alignment;
  for (auto& ti : f->tensors_) {
    if (data_start > map->size() || ti.offset > map->size() - data_start ||
        uint64_t(ti.nbytes) > map->size() - data_start - ti.offset)
      fail_input(path, fmt::format("tensor {}: its data ({} bytes at offset {}) lies beyond the end of the file ({} bytes)",
                                   ti.name, ti.nbytes, data_start + ti.offset, map->size()),
                 "the file is truncated; re-download it");
    ti.data = map->data() + data_start + ti.offset;
  }
  return f;
}

const GGUFTensorInfo* GGUFFile::find_tensor(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

const GGUFValue* GGUFFile::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

namespace {
[[noreturn]] void wrong_type(const std::string& path, const std::string& key, const GGUFValue& v, const char* want) {
  fail_input(path, fmt::format("{}: expected {}, found {}", key, want, type_name(v.type)), "the file's metadata is malformed");
}
}  // namespace

std::string GGUFFile::get_str(const std::string& key, const std::string& def) const {
  const GGUFValue* v = find(key);
  if (!v) return def;
  if (v->type != GGUF_TYPE_STRING) wrong_type(path_, key, *v, "string");
  return std::get<std::string>(v->scalar);
}

int64_t GGUFFile::get_int(const std::string& key, int64_t def) const {
  const GGUFValue* v = find(key);
  if (!v) return def;
  if (!is_int(v->type)) wrong_type(path_, key, *v, "integer");
  return as_int(*v);
}

double GGUFFile::get_float(const std::string& key, double def) const {
  const GGUFValue* v = find(key);
  if (!v) return def;
  if (auto* d = std::get_if<double>(&v->scalar)) return *d;
  if (is_int(v->type)) return double(as_int(*v));
  wrong_type(path_, key, *v, "float");
}

bool GGUFFile::get_bool(const std::string& key, bool def) const {
  const GGUFValue* v = find(key);
  if (!v) return def;
  if (v->type != GGUF_TYPE_BOOL) wrong_type(path_, key, *v, "bool");
  return std::get<bool>(v->scalar);
}

std::string GGUFFile::req_str(const std::string& key) const {
  if (!has(key)) fail_input(path_, key + ": missing", "this GGUF file lacks required metadata; re-convert it with llama.cpp");
  return get_str(key);
}

int64_t GGUFFile::req_int(const std::string& key) const {
  if (!has(key)) fail_input(path_, key + ": missing", "this GGUF file lacks required metadata; re-convert it with llama.cpp");
  return get_int(key, 0);
}

std::vector<std::string> GGUFFile::get_str_array(const std::string& key) const {
  std::vector<std::string> out;
  const GGUFValue* v = find(key);
  if (!v) return out;
  if (v->type != GGUF_TYPE_ARRAY || v->elem_type != GGUF_TYPE_STRING) wrong_type(path_, key, *v, "array of strings");
  out.reserve(v->array.size());
  for (const auto& e : v->array) out.push_back(std::get<std::string>(e.scalar));
  return out;
}

std::vector<double> GGUFFile::get_float_array(const std::string& key) const {
  std::vector<double> out;
  const GGUFValue* v = find(key);
  if (!v) return out;
  if (v->type != GGUF_TYPE_ARRAY || v->elem_type == GGUF_TYPE_STRING || v->elem_type == GGUF_TYPE_ARRAY)
    wrong_type(path_, key, *v, "array of numbers");
  out.reserve(v->array.size());
  for (const auto& e : v->array) {
    if (auto* d = std::get_if<double>(&e.scalar)) out.push_back(*d);
    else if (auto* b = std::get_if<bool>(&e.scalar)) out.push_back(*b);
    else out.push_back(double(as_int(e)));
  }
  return out;
}

std::vector<int64_t> GGUFFile::get_int_array(const std::string& key) const {
  std::vector<int64_t> out;
  const GGUFValue* v = find(key);
  if (!v) return out;
  if (v->type != GGUF_TYPE_ARRAY || !is_int(v->elem_type)) wrong_type(path_, key, *v, "array of integers");
  out.reserve(v->array.size());
  for (const auto& e : v->array) out.push_back(as_int(e));
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Writer

namespace {
GGUFValue make_scalar(GGUFType t, std::variant<int64_t, uint64_t, double, bool, std::string> s) {
  GGUFValue v;
  v.type = t;
  v.scalar = std::move(s);
  return v;
}

void put_bytes(std::string& out, const void* p, size_t n) { out.append(static_cast<const char*>(p), n); }
template <class T> void put(std::string& out, T v) { put_bytes(out, &v, sizeof(T)); }
void put_str(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}

void put_value(std::string& out, const GGUFValue& v) {
  auto i = [&] { return as_int(v); };
  switch (v.type) {
    case GGUF_TYPE_UINT8: put<uint8_t>(out, uint8_t(i())); break;
    case GGUF_TYPE_INT8: put<int8_t>(out, int8_t(i())); break;
    case GGUF_TYPE_UINT16: put<uint16_t>(out, uint16_t(i())); break;
    case GGUF_TYPE_INT16: put<int16_t>(out, int16_t(i())); break;
    case GGUF_TYPE_UINT32: put<uint32_t>(out, uint32_t(i())); break;
    case GGUF_TYPE_INT32: put<int32_t>(out, int32_t(i())); break;
    case GGUF_TYPE_UINT64: put<uint64_t>(out, uint64_t(i())); break;
    case GGUF_TYPE_INT64: put<int64_t>(out, i()); break;
    case GGUF_TYPE_FLOAT32: put<float>(out, float(std::get<double>(v.scalar))); break;
    case GGUF_TYPE_FLOAT64: put<double>(out, std::get<double>(v.scalar)); break;
    case GGUF_TYPE_BOOL: put<uint8_t>(out, std::get<bool>(v.scalar) ? 1 : 0); break;
    case GGUF_TYPE_STRING: put_str(out, std::get<std::string>(v.scalar)); break;
    case GGUF_TYPE_ARRAY:
      put<uint32_t>(out, uint32_t(v.elem_type));
      put<uint64_t>(out, v.array.size());
      for (const auto& e : v.array) put_value(out, e);
      break;
  }
}
}  // namespace

void GGUFWriter::set_value(const std::string& key, const GGUFValue& v) {
  for (auto& kv : kv_)
    if (kv.first == key) {
      kv.second = v;
      return;
    }
  kv_.emplace_back(key, v);
}
void GGUFWriter::set_str(const std::string& key, const std::string& v) { set_value(key, make_scalar(GGUF_TYPE_STRING, v)); }
void GGUFWriter::set_u32(const std::string& key, uint32_t v) { set_value(key, make_scalar(GGUF_TYPE_UINT32, uint64_t(v))); }
void GGUFWriter::set_i32(const std::string& key, int32_t v) { set_value(key, make_scalar(GGUF_TYPE_INT32, int64_t(v))); }
void GGUFWriter::set_f32(const std::string& key, float v) { set_value(key, make_scalar(GGUF_TYPE_FLOAT32, double(v))); }
void GGUFWriter::set_bool(const std::string& key, bool v) { set_value(key, make_scalar(GGUF_TYPE_BOOL, v)); }

void GGUFWriter::set_str_array(const std::string& key, const std::vector<std::string>& v) {
  GGUFValue a;
  a.type = GGUF_TYPE_ARRAY;
  a.elem_type = GGUF_TYPE_STRING;
  for (const auto& s : v) a.array.push_back(make_scalar(GGUF_TYPE_STRING, s));
  set_value(key, a);
}
void GGUFWriter::set_f32_array(const std::string& key, const std::vector<float>& v) {
  GGUFValue a;
  a.type = GGUF_TYPE_ARRAY;
  a.elem_type = GGUF_TYPE_FLOAT32;
  for (float x : v) a.array.push_back(make_scalar(GGUF_TYPE_FLOAT32, double(x)));
  set_value(key, a);
}
void GGUFWriter::set_i32_array(const std::string& key, const std::vector<int32_t>& v) {
  GGUFValue a;
  a.type = GGUF_TYPE_ARRAY;
  a.elem_type = GGUF_TYPE_INT32;
  for (int32_t x : v) a.array.push_back(make_scalar(GGUF_TYPE_INT32, int64_t(x)));
  set_value(key, a);
}

void GGUFWriter::add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& ne, const void* data) {
  tensors_.push_back({name, dtype, ne, data, {}});
}

void GGUFWriter::add_tensor_fill(const std::string& name, DType dtype, const std::vector<int64_t>& ne,
                                 std::function<void(void* dst)> fill) {
  tensors_.push_back({name, dtype, ne, nullptr, std::move(fill)});
}

void GGUFWriter::write(const std::string& path, uint32_t alignment) const {
  std::string out;
  put<uint32_t>(out, kMagic);
  put<uint32_t>(out, 3);
  put<uint64_t>(out, tensors_.size());
  const bool has_align = alignment != 32;
  put<uint64_t>(out, kv_.size() + (has_align ? 1 : 0));
  if (has_align) {
    put_str(out, "general.alignment");
    put<uint32_t>(out, uint32_t(GGUF_TYPE_UINT32));
    put<uint32_t>(out, alignment);
  }
  for (const auto& [k, v] : kv_) {
    put_str(out, k);
    put<uint32_t>(out, uint32_t(v.type));
    put_value(out, v);
  }
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const auto& t : tensors_) {
    put_str(out, t.name);
    put<uint32_t>(out, uint32_t(t.ne.size()));
    int64_t n = 1;
    for (auto d : t.ne) {
      put<int64_t>(out, d);
      n *= d;
    }
    put<uint32_t>(out, gguf_dtype_to_type(t.dtype));
    put<uint64_t>(out, offset);
    offsets.push_back(offset);
    offset += (uint64_t(dtype_nbytes(t.dtype, n)) + alignment - 1) / alignment * alignment;
  }
  out.resize((out.size() + alignment - 1) / alignment * alignment, '\0');
  // The header is small (kv + infos); the data streams tensor by tensor, each padded to the alignment.
  AtomicFileWriter w(path);
  w.write(out.data(), out.size());
  std::vector<uint8_t> scratch;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const T& t = tensors_[i];
    int64_t n = 1;
    for (auto d : t.ne) n *= d;
    const size_t nb = size_t(dtype_nbytes(t.dtype, n));
    LORA_CHECK(w.offset() - out.size() == offsets[i], "GGUFWriter: {} lands at the wrong offset", t.name);
    if (t.data) {
      w.write(t.data, nb);
    } else {
      LORA_CHECK(bool(t.fill), "GGUFWriter: {} has no data", t.name);
      scratch.resize(nb);
      t.fill(scratch.data());
      w.write(scratch.data(), nb);
    }
    w.write_zeros((nb + alignment - 1) / alignment * alignment - nb);
  }
  w.commit();
}

bool gguf_has_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char m[4] = {};
  return in && in.read(m, 4) && std::memcmp(m, "GGUF", 4) == 0;
}

}  // namespace lora
