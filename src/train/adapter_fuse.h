// Applying a trained adapter for inference by fusing it into a copy of the affected weights, so the
// inference session runs the result unchanged (as mlx-lm's fuse):
//   LoRA  W' = W + scale · Bᵀ Aᵀ                       (out, in)
//   DoRA  W' = m / ||W + scale·BᵀAᵀ||_row · (W + scale·BᵀAᵀ), bias unchanged
//   full  the adapter's fp32 copies replace the blocks' weights
// The fused weights are fp32 (also over a quantized base: its adapted linears are dequantized, the others
// stay in their blocks); everything else is shared with the base model.
#pragma once
#include "model/lora.h"
#include "model/model.h"

namespace lora {

Model adapter_fuse(const Model& m, const Adapter& a);

}  // namespace lora
