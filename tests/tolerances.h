// Named tolerances used by the tests. Each is listed in docs/numerics.md with where it comes from;
// loosening one needs a comment saying why.
#pragma once

namespace lora::tol {

// CPU ops vs the double-precision reference (test_cpu_ops): |got - want| <= tol * (1 + |want|).
inline constexpr double kOpElementwise = 1e-6;   // a few f32 roundings per element (measured 1.6e-7)
inline constexpr double kOpLinear = 1e-4;        // f32 dots of up to ~2000 terms, any order (measured 1.2e-5; 1.9e-5 at 2048 terms)
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
// Gradient checks (test_cpu_grad, test_lora): |got - want| <= tol · (max |want| + small).
inline constexpr double kGradCheckFD = 1e-3;     // reference backward vs central differences, h = 1e-2 (measured 1.2e-4)
inline constexpr double kGradFastVsRef = 1e-5;   // fast CPU backward vs the double reference backward (measured 4.6e-7)
inline constexpr double kGradModelFD = 2e-3;     // whole-model LoRA/DoRA/full grads vs central differences (measured 3.0e-4)
inline constexpr double kGradModelFastVsRef = 1e-4;  // whole-model grads, CPU vs reference backend (measured 4.3e-6)
// Training (test_optimizer, test_schedule): our fp32 updates vs MLX's on CPU.
inline constexpr double kOptimizerVsMlx = 1e-7;  // |Δw| <= tol·(1+|w|) after 1..6 steps, same fp32 op order (measured 2.1e-8)
inline constexpr double kScheduleVsMlx = 1e-6;   // |Δlr| <= tol·init: fp32 cos/pow on both sides, libm vs MLX's
// Training golden vs transformers + PEFT and mlx-lm (test_golden_train), f32 on both sides.
inline constexpr double kGoldenTrainLoss = 2e-6;  // relative, mean masked CE (measured 2.6e-7)
inline constexpr double kGoldenTrainGrad = 5e-5;  // |Δ| / max |want| per adapter tensor (measured 6.4e-6)
inline constexpr double kAdapterFuse = 1e-5;     // fused W' = W + s·BᵀAᵀ (DoRA: row-rescaled) in f32 vs double, |W| <= 1, rank 4
// SmolLM2-135M-Instruct (Q4_1 dequantized to f32) vs transformers f32 (test_smollm2_greedy).
inline constexpr double kSmolLM2Logits = 1e-5;    // |got - want| <= tol * (1 + |want|); 30 layers of f32 sums (measured 1.3e-6)
inline constexpr double kSmolLM2NearTie = 1e-3;   // logit units: a greedy step whose reference top-1/top-2 margin is below this may flip
inline constexpr double kFusedVsAdapterLogits = 1e-4;  // fused-weight inference vs the training forward with the adapter, same form as kGoldenLogits
// Several MLX-Adam steps vs mlx-lm's trainer and PEFT + MLX-semantics Adam (test_golden_steps), f32.
inline constexpr double kGoldenStepsLoss = 1e-5;    // relative, every step's mean masked loss (measured 1.4e-6)
inline constexpr double kGoldenStepsParams = 3e-4;  // final adapter, |Δ| / max |want| per tensor (measured 7.1e-5)
// CUDA GEMM (test_cuda_gemm) vs a double reference on the same (bf16-exact or f32) inputs:
// |got - want| <= tol · (|alpha|·sqrt(K)·max|A|·max|B| + |beta|·max|C0|).
inline constexpr double kCudaGemmAccum = 1e-5;    // fp32 accumulation order only (bf16 products are exact in fp32); measured 3.6e-6 (H200, K = 2048)
inline constexpr double kCudaGemmBF16Out = 0x1p-7;  // extra, × (|alpha·AB| + |beta·C0|): up to two bf16 roundings (u = 2^-8 each)
// CUDA attention forward (test_cuda_attention) vs the double reference attention_fwd on the same f32 inputs
// (q, k in [-2, 2], v in [-1, 1]): |got - want| <= tol (absolute; out is a convex combination of |v| <= 1).
inline constexpr double kCudaAttention = 1e-5;  // f32 dots of <= 128 terms, online softmax over <= 8192 keys; measured 9.2e-7 (H200, D = 128)
// CUDA element-wise kernels (test_cuda_elementwise) vs the double reference backend on the same inputs.
inline constexpr double kCudaRmsnorm = 1e-6;      // |got - want| <= tol·(1+|want|); f32 block sums of <= 2049 squares (measured 1.5e-7, H200)
inline constexpr double kCudaRmsnormBwd = 1e-5;   // |got - want| <= tol·max|want| (dx, dw); f32 row and column sums (measured 3.2e-6 dx, 6.1e-7 dw, H200)
inline constexpr double kCudaElementwise = 2e-6;  // rope fwd/bwd, swiglu fwd/bwd: tol·(1+|want|); a few f32 roundings (measured 4.1e-7, H200)
// CUDA training kernels (test_cuda_train_kernels) vs host oracles on the same inputs. The "emulated" numbers
// replay the kernels' f32/double operation order on the host; the H200 run gave the same (xent loss 5.3e-8,
// grad 3.3e-6, optimizer bit-equal to the CPU's now that neither contracts to FMA, DoRA norm 4.9e-8).
inline constexpr double kCudaXentLoss = 1e-6;        // row_loss vs double: tol·(1+|want|); f32 exps summed in double, loss rounded to f32 (emulated 5.3e-8)
inline constexpr double kCudaXentGrad = 1e-5;        // dlogits vs double: tol·|mask·dscale|; float(lse) rounding, <= |lse|·2^-24 ≈ 4e-6 at |lse| ≈ 110 (emulated 3.3e-6)
inline constexpr double kCudaOptimizerVsCpu = 1e-6;  // 3 steps vs lora::Optimizer (FMA-contracted host loop): tol·(1+|x|) for w, m, v (measured 1.5e-7 for the kernel's formula on the host)
inline constexpr double kCudaDoraDenom = 1e-5;       // DoRA row norm vs double: tol·||(|W| + |s|·Σ|A·B|)||; f32 rank-r dots, r <= 2048 (emulated 5e-8)
inline constexpr double kCudaColSum = 0x1p-22;       // dm / col_sum_acc vs the CPU's double sums: tol·(|acc0| + Σ|terms|); two f32 roundings
// CUDA training attention (test_cuda_attention_train) vs the double reference on the same f32 inputs (q, k in
// [-2, 2], v, dout in [-1, 1]). Forward: out |Δ| <= tol (absolute, out is a convex combination of |v| <= 1),
// lse |Δ| <= tol·(1+|lse|). Backward: |Δ| <= tol·max|want| per tensor (dq, dk, dv).
inline constexpr double kCudaAttnTrainFwd = 1e-5;  // the inference kernels (kCudaAttention) plus m + logf(l); measured 1.0e-6 out, 5.3e-7 lse (CPU emulation)
inline constexpr double kCudaAttnBwd = 5e-5;       // f32 tiles, P from f32 lse, dP - delta cancels; measured 3.4e-6 (CPU emulation of the kernels, T = 2), ~1e-6 typical
// The whole model on the GPU (test_cuda_model). F32 weights on the device run exact f32 GEMMs: the CPU golden
// tolerances apply. BF16 weights (the production path) also round each GEMM's activation input to bf16
// (8 bits of mantissa, 2^-9 relative), against the f32 PEFT fixture. Measured on an H200 (numbers beside each).
inline constexpr double kCudaBf16Logits = 0.25;  // same form as kGoldenLogitsBF16 (measured 0.13 LoRA, 0.05 DoRA, H200)
inline constexpr double kCudaBf16Loss = 2e-2;    // relative, mean masked CE (measured 1.4e-3, H200)
inline constexpr double kCudaBf16Grad = 0.3;     // |Δ| / max |want| per adapter tensor (measured 0.12 LoRA, 0.09 DoRA, H200)
// Adam steps on the GPU vs the same steps on the CPU backend (F32 weights): different summation orders only.
inline constexpr double kCudaStepsLoss = 1e-5;    // relative, every step's loss (as kGoldenStepsLoss)
inline constexpr double kCudaStepsParams = 3e-4;  // final params |Δ| / max |want| (as kGoldenStepsParams)
// PEFT parity (test_cuda_peft_parity, tools/peft_parity.py): the same bf16 model file and LoRA initialisation in
// transformers + PEFT (bf16 activations, fp32 adapter) and in ours (f32 activations, bf16 GEMM inputs), 22 layers.
inline constexpr double kPeftParityLogitsBf16 = 0.25;  // |Δ| / (1 + |want|), logits of batch 0; as kGoldenLogitsBF16 (measured 0.097, H200)
inline constexpr double kPeftParityLossBf16 = 2e-3;    // relative, each of 10 Adam steps' loss (measured 3.5e-4, H200)
// Graph-friendly decode attention (test_cuda_attention_decode): cuda_attention_decode vs the reference is held to
// kCudaAttention; against cuda_attention_fwd on the same inputs (the keys split differently) |Δ| <= tol absolute.
inline constexpr double kCudaAttnDecodeVsFwd = 1e-5;  // two f32 evaluations each ~1e-6 from the double; measured 1.2e-7 (CPU emulation; 6.6e-7 vs the double)
// QLoRA on the CPU (test_qlora_ops): linear forward/backward with quantized weights (dequantized a panel at a time)
// vs the same op on the exactly dequantized f32 weights: the same products, summed in different blockings.
inline constexpr double kQuantLinearVsF32 = 1e-5;  // |Δ| / max |want|; measured ~1e-7
// GGUF-LoRA adapters written by gguf-py as convert_lora_to_gguf.py does (test_gguf_adapter): our fused f32 logits
// vs llama.cpp's (llama-cpp-python 0.3.36, CPU, F32 KV cache) with the adapter applied as x·A·B beside W, stories260K.
inline constexpr double kGgufLoraVsLlamaCpp = 2e-4;  // |Δ| / (1 + |want|); fused W + s·BA vs x·A·B beside W, |logits| <= 25 (measured 5.0e-5 F32, 1.5e-5 Q8_0/F16 vs the F32 twin)
// QLoRA on the GPU (test_cuda_qlora): quantized weights dequantized to bf16 per chunk vs the BF16 path on
// bf16(dequantized) weights, i.e. identical GEMM operands; only a weight split into several chunks changes the
// GEMM shapes (and so possibly cuBLASLt's algorithm and summation order).
inline constexpr double kCudaQuantVsBf16 = 1e-5;  // relative (losses; |Δ| / max |want| for tensors)
// QLoRA end to end (test_qlora_cli): stories260K, 30 Adam steps at lr 1e-3 on 40 quotes, base quantized at load vs f32.
inline constexpr double kQloraValLoss = 0.05;  // relative, first and last validation loss (measured 0.3% / 1.9% for q8_0, 0.3% / 0.1% for q4_k at 40 steps)
// GGUF export with --quantize (test_model_gguf_save): logits of 12 tokens from the quantized export vs the f32
// model, ||Δ||₂ / ||want||₂ over all logits; a random f32 Llama (width 256, 2 layers, std 0.05, GQA 4/2) and stories260K.
inline constexpr double kGgufExportQ8_0Logits = 0.04;  // measured 0.0185 (random), 0.0069 (stories260K)
inline constexpr double kGgufExportQ4Logits = 0.4;     // Q4_0 / Q4_K: measured 0.28 / 0.21 (random), 0.12 / 0.065 (stories260K)
}  // namespace lora::tol
