// --device handling (cli/backend.h).
#include "cli/backend.h"

#include <fmt/format.h>
#include <omp.h>

#include "core/error.h"
#include "core/quant.h"
#include "core/log.h"
#include "cpu/cpu_ops.h"
#ifdef LORA_HAVE_CUDA
#include "cuda/cuda_ops.h"
#include "cuda/device.h"
#endif

namespace lora::cli {

void add_device_flag(CLI::App* cmd, std::string& device) {
  cmd->add_option("--device", device, "Where to compute: auto (a GPU when there is one), cpu, cuda or cuda:N")
      ->default_str("auto");
}

Backend backend_open(const std::string& spec) {
  Backend b;
  const std::string s = spec.empty() ? "auto" : spec;
  int index = 0;
  bool want_cuda = false;
  if (s == "cpu") {
  } else if (s == "cuda" || s == "gpu") {
    want_cuda = true;
  } else if (s.rfind("cuda:", 0) == 0) {
    want_cuda = true;
    try {
      size_t used = 0;
      index = std::stoi(s.substr(5), &used);
      if (used != s.size() - 5 || index < 0) throw std::invalid_argument(s);
    } catch (const std::exception&) {
      fail_input("--device", fmt::format("'{}' is not a device", s), "use auto, cpu, cuda or cuda:N (N = 0, 1, ...)");
    }
  } else if (s != "auto") {
    fail_input("--device", fmt::format("'{}' is not a device", s), "use auto, cpu, cuda or cuda:N");
  }
#ifdef LORA_HAVE_CUDA
  if (want_cuda || (s == "auto" && cuda_device_count() > 0)) {
    if (cuda_device_count() == 0)
      fail_input("--device", fmt::format("{} was asked for but no CUDA GPU is visible", s),
                 "check nvidia-smi and CUDA_VISIBLE_DEVICES, or use --device cpu");
    b.owned = cuda_ops_create(index);
    b.ops = b.owned.get();
    b.device = DEVICE_CUDA;
    b.description = cuda_device_describe(*cuda_ops_device(*b.ops));
    return b;
  }
#else
  if (want_cuda)
    fail_input("--device", fmt::format("{} was asked for but this lora was built without CUDA", s),
               "rebuild on a machine with the CUDA toolkit (nvcc), or use --device cpu");
#endif
  b.ops = &cpu_ops();
  b.device = DEVICE_CPU;
  b.description = fmt::format("cpu ({} threads)", omp_get_max_threads());
  return b;
}

ModelLoadOptions backend_load_options(const Backend& b, DType quantize) {
  ModelLoadOptions o;
  if (b.is_gpu()) o.compute_dtype = DTYPE_BF16;
  o.keep_quantized = true;
  o.quantize = quantize;
  return o;
}

DType parse_quantize_flag(const std::string& name) {
  if (name.empty()) return DTYPE_F32;
  DType t;
  if (!dtype_from_name(name, &t) || !dtype_is_quant(t) || !quant_can_quantize(t))
    fail_input("--quantize " + name, "is not a quantization type",
               "use q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k or q6_k (a quantized GGUF needs none)");
  return t;
}

Model Backend::place(const Model& m) const {
  if (!is_gpu()) return m;
  const int64_t D = m.cfg.head_dim;
  if (D != 8 && D != 16 && D != 64 && D != 128)
    fail_input(m.source + ": head_dim", fmt::format("is {}; the CUDA backend's attention supports 8, 16, 64 and 128", D),
               "use --device cpu for this model");
  return model_to_device(m, device, DTYPE_BF16);
}

void Backend::place(Adapter& a) const {
  if (is_gpu()) adapter_to_device(a, device);
}

int64_t Backend::peak_bytes() const {
#ifdef LORA_HAVE_CUDA
  if (is_gpu()) return cuda_ops_peak_bytes(*ops);
#endif
  return int64_t(peak_rss_bytes());
}

}  // namespace lora::cli
