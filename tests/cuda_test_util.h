// Shared by the CUDA tests (tests/cuda/): skip a test with a message where no GPU is visible (CI, a
// laptop); the tests still compile everywhere the CUDA backend is built.
#pragma once
#include <gtest/gtest.h>

#include "cuda/device.h"

#define LORA_REQUIRE_CUDA()                                                                       \
  do {                                                                                            \
    if (::lora::cuda_device_count() == 0)                                                         \
      GTEST_SKIP() << "skipped: no CUDA device (cuda_device_count() == 0); run on a GPU machine"; \
  } while (0)
