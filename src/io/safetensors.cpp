// safetensors reading (memory-mapped, validated) and writing (atomic, streamed tensor by tensor through
// io/file_writer.h: a failed write leaves no file).
// Format: u64 little-endian header length N, N bytes of UTF-8 JSON, then the data section. The JSON maps
// each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data
// section) plus an optional "__metadata__" {str: str}. Everything a corrupt file could lie about (the
// header length, the JSON, dtypes, shapes, offsets) is checked before any tensor data is touched, so a
// bad file is a lora::Error naming the path and the tensor, never an out-of-bounds read.
#include "io/safetensors.h"

#include <dirent.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "io/file_writer.h"

namespace lora {

namespace {

using json = nlohmann::json;

// A header longer than this is certainly corrupt (real ones are a few hundred KB at most).
constexpr uint64_t kMaxHeaderBytes = uint64_t(100) << 20;

struct DTypeName {
  const char* name;
  DType dtype;
};
// The safetensors dtype strings we read. Others (F64, I8, U8, BOOL, F8_*) are rejected by name.
constexpr DTypeName kDTypes[] = {
    {"F32", DTYPE_F32}, {"F16", DTYPE_F16}, {"BF16", DTYPE_BF16}, {"I32", DTYPE_I32}, {"I64", DTYPE_I64},
};

bool st_dtype_from_name(const std::string& s, DType* out) {
  for (const auto& d : kDTypes)
    if (s == d.name) {
      *out = d.dtype;
      return true;
    }
  return false;
}

const char* st_dtype_name(DType t) {
  for (const auto& d : kDTypes)
    if (d.dtype == t) return d.name;
  return nullptr;
}

int64_t st_elem_bytes(DType t) { return dtype_block_bytes(t); }  // plain types: one element per block

std::string join_dir(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

}  // namespace

int64_t SafeTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto map = MappedFile::open(path);
  const uint8_t* base = map->data();
  const uint64_t size = map->size();
  const std::string hint = "the file is corrupt or truncated; download or export it again";
  if (size < 8) fail_input(path, fmt::format("file is {} bytes, too short for a safetensors header", size), hint);

  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(base[i]) << (8 * i);  // little-endian u64
  if (n > kMaxHeaderBytes || n > size - 8)
    fail_input(path + ": header length",
               fmt::format("{} bytes, but the file has only {} bytes after the length field", n, size - 8),
               n > kMaxHeaderBytes ? "this is not a safetensors file" : hint);
  const char* hdr = reinterpret_cast<const char*>(base + 8);
  const uint64_t data_size = size - 8 - n;
  const uint8_t* data = base + 8 + n;

  json j;
  try {
    j = json::parse(hdr, hdr + n);
  } catch (const json::exception& e) {
    fail_input(path + ": header", std::string("invalid JSON: ") + e.what(), hint);
  }
  if (!j.is_object()) fail_input(path + ": header", "expected a JSON object", hint);

  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_ = map;

  // (begin, end, name) of every tensor, to check that no two overlap.
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    const std::string where = path + ": " + name;
    if (name == "__metadata__") {
      if (!v.is_object()) fail_input(where, "expected an object of strings", hint);
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail_input(where + "." + m.key(), "metadata values must be strings", hint);
        f->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) fail_input(where, "expected an object {dtype, shape, data_offsets}", hint);
    if (!v.contains("dtype") || !v["dtype"].is_string()) fail_input(where + ": dtype", "missing or not a string", hint);
    if (!v.contains("shape") || !v["shape"].is_array()) fail_input(where + ": shape", "missing or not an array", hint);
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
      fail_input(where + ": data_offsets", "missing or not a [begin, end] pair", hint);

    SafeTensorInfo info;
    info.name = name;
    info.file = path;
    const std::string dt = v["dtype"].get<std::string>();
    if (!st_dtype_from_name(dt, &info.dtype))
      fail_input(where + ": dtype", fmt::format("unsupported dtype \"{}\"", dt),
                 "supported: F32, F16, BF16 (and I32/I64 for integer buffers); convert the weights to one of "
                 "these");

    // Bound the element count as we multiply, so that a lying shape cannot overflow; whether the
    // bytes are really there is checked against data_offsets below.
    const uint64_t max_elems = (uint64_t(1) << 62) / uint64_t(st_elem_bytes(info.dtype));
    uint64_t numel = 1;
    bool has_zero = false;
    for (const json& d : v["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        fail_input(where + ": shape", fmt::format("{} is not a non-negative integer", d.dump()), hint);
      const uint64_t dim = d.get<uint64_t>();
      if (dim == 0) has_zero = true;
      info.shape.push_back(int64_t(dim));
      if (!has_zero) {
        if (dim > max_elems || numel > max_elems / std::max<uint64_t>(dim, 1)) {
          fail_input(where + ": shape", fmt::format("{} has too many elements", v["shape"].dump()), hint);
        }
        numel *= dim;
      }
    }
    if (has_zero) numel = 0;
    if (info.shape.size() > size_t(4))
      fail_input(where + ": shape", fmt::format("{} dimensions; at most 4 are supported", info.shape.size()));

    const json& off = v["data_offsets"];
    if (!off[0].is_number_integer() || !off[1].is_number_integer() || off[0].get<int64_t>() < 0 ||
        off[1].get<int64_t>() < 0)
      fail_input(where + ": data_offsets", fmt::format("{} are not non-negative integers", off.dump()), hint);
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end)
      fail_input(where + ": data_offsets", fmt::format("begin {} is after end {}", begin, end), hint);
    if (end > data_size)
      fail_input(where + ": data_offsets",
                 fmt::format("end {} is past the end of the data ({} bytes)", end, data_size), hint);
    const uint64_t want = numel * uint64_t(st_elem_bytes(info.dtype));
    if (end - begin != want)
      fail_input(where + ": data_offsets",
                 fmt::format("holds {} bytes but dtype {} and shape {} need {}", end - begin, dt, v["shape"].dump(),
                             want),
                 hint);
    info.data = data + begin;
    info.nbytes = int64_t(want);
    ranges.emplace_back(begin, end, name);
    f->tensors_.emplace(name, std::move(info));
  }

  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    const auto& [b0, e0, n0] = ranges[i - 1];
    const auto& [b1, e1, n1] = ranges[i];
    (void)b0;
    (void)e1;
    if (b1 < e0)
      fail_input(path + ": " + n1 + ": data_offsets",
                 fmt::format("overlaps the data of \"{}\" (bytes {}..{})", n0, b0, e0), hint);
  }
  return f;
}

const SafeTensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

SafetensorsSet SafetensorsSet::open_dir(const std::string& dir) {
  if (!path_exists(dir)) fail_input(dir, "no such folder", "check the model path");
  if (!path_is_dir(dir)) fail_input(dir, "is not a folder", "pass the folder that holds the .safetensors files");
  SafetensorsSet s;
  s.dir_ = dir;

  auto add_file = [&s](const std::string& path) {
    auto f = SafetensorsFile::open(path);
    for (const auto& [name, info] : f->tensors()) {
      auto [it, inserted] = s.index_.emplace(name, &info);
      if (!inserted)
        fail_input(path + ": " + name, fmt::format("also present in {}", it->second->file),
                   "a tensor must be in exactly one file of the folder");
    }
    s.files_.push_back(std::move(f));
  };

  const std::string index_path = join_dir(dir, "model.safetensors.index.json");
  const std::string single = join_dir(dir, "model.safetensors");
  if (path_exists(index_path)) {
    json j;
    try {
      j = json::parse(read_text_file(index_path));
    } catch (const json::exception& e) {
      fail_input(index_path, std::string("invalid JSON: ") + e.what(), "the index file is corrupt");
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      fail_input(index_path + ": weight_map", "missing or not an object", "the index file is corrupt");
    std::map<std::string, std::string> weight_map;  // tensor -> shard
    std::set<std::string> shards;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        fail_input(index_path + ": weight_map." + it.key(), "expected a file name", "the index file is corrupt");
      const std::string shard = it.value().get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "..")
        fail_input(index_path + ": weight_map." + it.key(), fmt::format("\"{}\" is not a file name", shard),
                   "shards must sit in the same folder as the index");
      weight_map[it.key()] = shard;
      shards.insert(shard);
    }
    for (const auto& shard : shards) {
      const std::string p = join_dir(dir, shard);
      if (!path_exists(p))
        fail_input(p, "listed in model.safetensors.index.json but missing", "download all the shards");
      add_file(p);
    }
    for (const auto& [name, shard] : weight_map) {
      auto it = s.index_.find(name);
      if (it == s.index_.end() || it->second->file != join_dir(dir, shard))
        fail_input(join_dir(dir, shard) + ": " + name, "listed in model.safetensors.index.json but not in this shard",
                   "the index and the shards disagree; download them again");
    }
  } else if (path_exists(single)) {
    add_file(single);
  } else {
    // No canonical name: take the folder's one *.safetensors file, or its "model-0000K-of-0000N" shards.
    std::vector<std::string> all;
    if (DIR* d = ::opendir(dir.c_str())) {
      while (dirent* e = ::readdir(d)) {
        const std::string n = e->d_name;
        if (n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0) all.push_back(n);
      }
      ::closedir(d);
    }
    std::sort(all.begin(), all.end());
    std::vector<std::string> pick;
    if (all.size() == 1) {
      pick = all;
    } else {
      for (const auto& n : all)
        if (n.rfind("model-", 0) == 0 && n.find("-of-") != std::string::npos) pick.push_back(n);
    }
    if (pick.empty()) {
      if (all.empty())
        fail_input(dir, "no .safetensors file in this folder",
                   "expected model.safetensors or model.safetensors.index.json with its shards");
      std::string list;
      for (const auto& n : all) list += (list.empty() ? "" : ", ") + n;
      fail_input(dir, fmt::format("several .safetensors files ({}) and no model.safetensors.index.json", list),
                 "keep one model file in the folder, or add the index");
    }
    for (const auto& n : pick) add_file(join_dir(dir, n));
  }
  return s;
}

const SafeTensorInfo* SafetensorsSet::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

std::vector<std::string> SafetensorsSet::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& kv : index_) out.push_back(kv.first);
  return out;
}

void safetensors_write(const std::string& path, const std::vector<SafeTensorWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<SafeTensorSource> src;
  src.reserve(tensors.size());
  for (const auto& t : tensors) src.push_back({t.name, t.dtype, t.shape, t.data, {}});
  safetensors_write_stream(path, src, metadata);
}

void safetensors_write_stream(const std::string& path, const std::vector<SafeTensorSource>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<const SafeTensorSource*> order;
  order.reserve(tensors.size());
  for (const auto& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->name < b->name; });

  // Header: "__metadata__" first (as the Python library writes it), then tensors in name order with
  // their data laid out back to back in the same order.
  std::string hdr = "{";
  if (!metadata.empty()) hdr += "\"__metadata__\":" + json(metadata).dump();
  uint64_t offset = 0;
  std::vector<uint64_t> sizes;
  for (size_t i = 0; i < order.size(); ++i) {
    const SafeTensorSource& t = *order[i];
    const char* dt = st_dtype_name(t.dtype);
    if (!dt) fail_input(path + ": " + t.name, fmt::format("dtype {} cannot be stored in safetensors", dtype_name(t.dtype)),
                        "convert it to F32, F16 or BF16 first");
    if (t.name.empty() || t.name == "__metadata__") fail_input(path, fmt::format("invalid tensor name \"{}\"", t.name));
    if (i > 0 && order[i - 1]->name == t.name) fail_input(path + ": " + t.name, "tensor name given twice");
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      LORA_CHECK(d >= 0, "safetensors_write: negative dimension in {}", t.name);
      numel *= d;
    }
    const uint64_t nb = uint64_t(numel) * uint64_t(st_elem_bytes(t.dtype));
    LORA_CHECK(nb == 0 || t.data != nullptr || t.fill, "safetensors_write: {} has no data", t.name);
    // Keys in the order the Python library writes them (nlohmann would sort them), so that a file we
    // rewrite from one it made comes out byte-identical.
    if (hdr.size() > 1) hdr += ",";
    hdr += json(t.name).dump() + ":{\"dtype\":\"" + dt + "\",\"shape\":" + json(t.shape).dump() +
           ",\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + nb) + "]}";
    offset += nb;
    sizes.push_back(nb);
  }
  hdr += "}";
  while ((8 + hdr.size()) % 8 != 0) hdr += ' ';  // pad so the data section starts 8-byte aligned

  AtomicFileWriter w(path);  // removes its temp file if anything below throws
  uint8_t len[8];
  const uint64_t n = hdr.size();
  for (int i = 0; i < 8; ++i) len[i] = uint8_t((n >> (8 * i)) & 0xff);
  w.write(len, 8);
  w.write(hdr.data(), hdr.size());
  std::vector<uint8_t> scratch;
  for (size_t i = 0; i < order.size(); ++i) {
    if (!sizes[i]) continue;
    if (order[i]->data) {
      w.write(order[i]->data, sizes[i]);
    } else {
      scratch.resize(size_t(sizes[i]));
      order[i]->fill(scratch.data());
      w.write(scratch.data(), sizes[i]);
    }
  }
  w.commit();
}

}  // namespace lora
