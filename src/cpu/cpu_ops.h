// The CPU backend of the op API (ops/ops.h): fp32 compute, OpenMP loops, OpenBLAS GEMM (cpu/gemm.cpp
// only), hand-written AVX2 matrix-vector products for bf16/f16/f32 weights at batch 1.
#pragma once
#include "ops/ops.h"

namespace lora {

// The process-wide CPU backend.
Ops& cpu_ops();

}  // namespace lora
