// model_to_device (model/model.h): a copy of a Model's weights in a backend's memory. Linear weights
// and the embedding table take `weight_type` (BF16 for the GPU: what its GEMMs read); norm weights and
// biases stay F32 (they are small and the kernels read any float type). Host-side conversion happens
// one tensor at a time, so the extra host memory is one tensor's worth. A tied lm_head stays an alias.
// Quantized weights (QLoRA) are copied as their blocks; the backend dequantizes them per call.
#include <algorithm>
#include <map>
#include <vector>

#include "core/device_mem.h"
#include "core/error.h"
#include "model/model.h"

namespace lora {

namespace {

struct Uploader {
  Device dev;
  Model& out;
  std::map<const void*, Tensor> done;  // host data -> device tensor (aliases uploaded once)

  Tensor put(const Tensor& t, DType type) {
    if (!t.defined()) return t;
    if (dtype_is_quant(t.dtype)) type = t.dtype;  // quantized blocks go up as they are (QLoRA)
    if (auto it = done.find(t.data); it != done.end() && it->second.dtype == type) return it->second;
    LORA_CHECK(t.is_contiguous() && t.device == DEVICE_CPU, "model_to_device: {} must be a contiguous host tensor",
               t.shape_str());
    const int64_t n = t.numel();
    std::shared_ptr<void> mem = device_alloc(dev, size_t(dtype_nbytes(type, n)));
    Tensor d = t;
    d.data = mem.get();
    d.dtype = type;
    d.device = dev;
    if (t.dtype == type) {
      device_copy(d.data, dev, t.data, DEVICE_CPU, size_t(t.nbytes()));
    } else {
      // Convert in slabs of rows so that the host staging stays small.
      const int64_t cols = t.ndim > 1 ? t.shape[size_t(t.ndim - 1)] : n;
      const int64_t rows = n / cols;
      const int64_t slab = std::max<int64_t>(1, (int64_t(1) << 22) / std::max<int64_t>(cols, 1));
      std::vector<float> f32(size_t(std::min(rows, slab) * cols));
      std::vector<char> conv(size_t(dtype_nbytes(type, std::min(rows, slab) * cols)));
      const int64_t src_es = dtype_nbytes(t.dtype, 1), dst_es = dtype_nbytes(type, 1);
      for (int64_t r0 = 0; r0 < rows; r0 += slab) {
        const int64_t nr = std::min(slab, rows - r0), ne = nr * cols;
        dtype_convert_to_f32(t.dtype, static_cast<const char*>(t.data) + r0 * cols * src_es, f32.data(), ne);
        dtype_convert_from_f32(type, f32.data(), conv.data(), ne);
        device_copy(static_cast<char*>(d.data) + r0 * cols * dst_es, dev, conv.data(), DEVICE_CPU,
                    size_t(ne * dst_es));
      }
    }
    out.storage.push_back(mem);
    done[t.data] = d;
    return d;
  }
};

}  // namespace

Model model_to_device(const Model& m, Device dev, DType weight_type) {
  if (dev == DEVICE_CPU) return m;
  Model out;
  out.cfg = m.cfg;
  out.source = m.source;
  Uploader up{dev, out, {}};
  out.tok_embd = up.put(m.tok_embd, weight_type);
  out.layers.resize(m.layers.size());
  for (size_t i = 0; i < m.layers.size(); ++i) {
    const LayerWeights& s = m.layers[i];
    LayerWeights& d = out.layers[i];
    d.attn_norm = up.put(s.attn_norm, DTYPE_F32);
    d.ffn_norm = up.put(s.ffn_norm, DTYPE_F32);
    d.bq = up.put(s.bq, DTYPE_F32);
    d.bk = up.put(s.bk, DTYPE_F32);
    d.bv = up.put(s.bv, DTYPE_F32);
    d.wq = up.put(s.wq, weight_type);
    d.wk = up.put(s.wk, weight_type);
    d.wv = up.put(s.wv, weight_type);
    d.wo = up.put(s.wo, weight_type);
    d.w_gate = up.put(s.w_gate, weight_type);
    d.w_up = up.put(s.w_up, weight_type);
    d.w_down = up.put(s.w_down, weight_type);
  }
  out.out_norm = up.put(m.out_norm, DTYPE_F32);
  out.lm_head = up.put(m.lm_head, weight_type);
  return out;
}

}  // namespace lora
