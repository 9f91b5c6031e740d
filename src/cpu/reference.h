// The reference backend: every op of ops/ops.h as the plainest loops we can write, accumulating in
// double. Slow; it exists so that tests can check the fast CPU (and later CUDA) kernels against it
// (tests/unit/test_cpu_ops.cpp), and so a whole model can be run through obviously-correct code.
#pragma once
#include "ops/ops.h"

namespace lora {

Ops& reference_ops();

}  // namespace lora
