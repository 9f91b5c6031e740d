// CUDA device queries (the CUDA backend proper lands with the CUDA issue).
#pragma once

namespace lora::cuda {
int device_count();
}
