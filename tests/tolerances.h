// Named tolerances used by the tests. Each is listed in docs/numerics.md with where it comes from;
// loosening one needs a comment saying why.
#pragma once

namespace lora::tol {

// CPU ops vs the double-precision reference (test_cpu_ops): |got - want| <= tol * (1 + |want|).
inline constexpr double kOpElementwise = 1e-6;   // a few f32 roundings per element (measured 1.6e-7)
inline constexpr double kOpLinear = 1e-4;        // f32 dots of up to 1000 terms, any order (measured 1.2e-5)
inline constexpr double kOpAttention = 2e-6;     // f32 softmax + weighted sum, <= 101 keys (measured 2e-7)
inline constexpr double kRopeInvFreqRel = 1e-6;  // relative; f32 inv_freq both sides (measured 1 ulp)
// llama.cpp block quantization round trips (test_quant), in units of the block's step d.
inline constexpr double kQuantRoundHalfStep = 0.5;       // round to nearest: half a step
inline constexpr double kQuantClampedStep = 1.0;         // Q4_0/Q5_0: the top code +2^(b-1) clamps to one less
inline constexpr double kQuantF16Rounding = 0x1p-11;     // relative rounding of d and m stored as fp16 (normal)
inline constexpr double kQuantF32Slack = 1e-5;           // f32 rounding of x/d, relative to the block's max |x|
// K-quants, relative to the super-block's max |x| (no closed form: scales are re-quantized to 6/8 bits).
inline constexpr double kQuantQ4KRoundTrip = 0.1;    // measured 0.072
inline constexpr double kQuantQ5KRoundTrip = 0.07;   // measured 0.050
inline constexpr double kQuantQ6KRoundTrip = 0.025;  // measured 0.016
// Whole-model logits vs transformers float32 (test_golden_llama): |got - want| <= tol * (1 + |want|).
inline constexpr double kGoldenLogits = 1e-4;      // f32 end to end, 2 layers, |logits| <= 6 (measured 1.4e-5)
inline constexpr double kGoldenLogitsBF16 = 0.25;  // bf16-rounded weights vs f32 weights (measured 0.08)
inline constexpr double kGoldenLogitsF16 = 0.05;   // f16-rounded weights vs f32 weights (measured 0.025)
}  // namespace lora::tol
