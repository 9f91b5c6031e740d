// The CUDA backend of the op API (ops/ops.h). One CudaOps per device context (cuda/device.h): every op
// is queued on that context's stream. Activations are f32 in device memory (the same contract as the
// CPU backend); weights are BF16 (model_to_device) or F32 (full fine-tuning's trainable copies).
// Linear layers: the f32 input is rounded to bf16 once (a conversion kernel into scratch) and the GEMM
// runs on the tensor cores through cuBLASLt with fp32 accumulation; F32 weights take the exact f32 GEMM.
// The LoRA/DoRA path (rank r, fp32 parameters) uses exact f32 GEMMs. Scratch buffers grow to the
// largest call once (the first step) and are reused after: steady-state steps allocate nothing.
#pragma once
#include <memory>

#include "cuda/device.h"
#include "ops/ops.h"

namespace lora {

// Opens device `index`, registers the CUDA memory functions (core/device_mem.h) for DEVICE_CUDA, and
// returns its backend. lora::Error when there is no such device.
std::unique_ptr<Ops> cuda_ops_create(int index = 0);

// The device context behind a CUDA backend (for reports: name, memory), or nullptr for another backend.
CudaDevice* cuda_ops_device(Ops& ops);

// Peak bytes of device memory allocated by lora (weights, adapter, optimizer state, arenas, scratch)
// since the backend was created or the last reset: what torch.cuda.max_memory_allocated reports for
// PyTorch (the CUDA context and cuBLASLt's workspace are not counted).
int64_t cuda_ops_peak_bytes(Ops& ops);
void cuda_ops_reset_peak(Ops& ops);

}  // namespace lora
