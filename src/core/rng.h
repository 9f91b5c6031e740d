// Counter-based RNG (Philox-4x32-10): the value at (seed, counter) is a pure function, so the CPU and
// the GPU produce the same streams, and a checkpoint only needs (seed, counter) to resume exactly.
#pragma once
#include <array>
#include <cstdint>

namespace lora {

// Four 32-bit random words for (key, counter).
std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter_hi, uint64_t counter_lo);

class Rng {
 public:
  explicit Rng(uint64_t seed = 0, uint64_t stream = 0) : seed_(seed), stream_(stream) {}
  uint32_t next_u32();
  uint64_t next_u64();
  // Uniform in [0, 1) with 24 random bits (exactly representable in f32).
  float uniform();
  // Uniform integer in [0, n).
  uint64_t below(uint64_t n);
  double uniform_double();  // 53 random bits
  uint64_t counter() const { return counter_; }
  void set_counter(uint64_t c) { counter_ = c; have_ = 0; }
  uint64_t seed() const { return seed_; }

 private:
  uint64_t seed_, stream_;
  uint64_t counter_ = 0;
  std::array<uint32_t, 4> block_{};
  int have_ = 0;
};

}  // namespace lora
