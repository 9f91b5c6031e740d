// --device for the subcommands: "auto" (the first GPU when this lora was built with CUDA and one is
// visible, else the CPU), "cpu", "cuda" or "cuda:N". A Backend owns the Ops it opened and knows how
// to place a model and an adapter on its device and how much device memory it has used.
#pragma once
#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "model/lora.h"
#include "model/model.h"
#include "ops/ops.h"

namespace lora::cli {

struct Backend {
  std::unique_ptr<Ops> owned;  // the CUDA backend (the CPU backend is a process-wide singleton)
  Ops* ops = nullptr;
  Device device = DEVICE_CPU;
  std::string description;  // "cpu (2 threads)" or "cuda:0 NVIDIA H100 80GB HBM3, sm_90, ..."

  // The model as the backend computes on it: the same Model on the CPU, a BF16 copy on a GPU.
  Model place(const Model& m) const;
  // Moves the adapter's trainables to the backend's device.
  void place(Adapter& a) const;
  // Peak memory in bytes: the process's peak RSS on the CPU, peak device memory allocated by lora on
  // a GPU (what torch.cuda.max_memory_allocated measures for PyTorch).
  int64_t peak_bytes() const;
  bool is_gpu() const { return device != DEVICE_CPU; }
};

// Adds --device to a subcommand.
void add_device_flag(CLI::App* cmd, std::string& device);
// Opens the backend named by --device. lora::Error for an unknown name, a missing GPU, or "cuda" in a
// build without CUDA.
Backend backend_open(const std::string& spec);
// The model load options that suit the backend (a GPU keeps BF16 on the host to avoid an f32 copy;
// quantized GGUF weights stay quantized on every backend), with `quantize` (DTYPE_F32 = none) applied at load.
ModelLoadOptions backend_load_options(const Backend& b, DType quantize = DTYPE_F32);
// --quantize's value ("" = none) as a quantized DType; lora::Error naming the flag for anything else.
DType parse_quantize_flag(const std::string& name);

}  // namespace lora::cli
