// The GPU dequantizers (src/cuda/dequant.h) against the CPU's quant_dequantize_row, bit for bit: random
// rows (zero rows, zero blocks, large, tiny and subnormal-scale magnitudes, negatives, outliers) quantized
// on the CPU with quant_quantize_row for Q4_0..Q6_K, dequantized on the GPU to f32 (must equal the CPU's
// f32 bits) and to bf16 (must equal the CPU's f32 rounded to nearest even). Shapes cover one block, odd
// row counts, warp tiles (1024 elements) that cross rows and rows that span several tiles, row lengths
// 256..5632 with row counts that leave the last tile and the last CTA (8 tiles) part empty; sources
// 16-byte aligned (staged as whole uint4), 2-byte aligned and odd; outputs at unaligned addresses and
// with dst_ld > cols (the NaN-poisoned padding must stay untouched); the embedding gather with repeated
// and out-of-range ids; a 5632 x 2048 matrix; plain F32/F16/BF16 sources; bad arguments. The first
// mismatch is named (type, row, col, got, want). Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/quant.h"
#include "core/rng.h"
#include "cuda/check.h"
#include "cuda/dequant.h"
#include "cuda/device.h"
#include "cuda_test_util.h"

namespace lora {
namespace {

const DType kQuantTypes[] = {DTYPE_Q4_0, DTYPE_Q4_1, DTYPE_Q5_0, DTYPE_Q5_1,
                             DTYPE_Q8_0, DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K};

// (rows, cols): one block, odd row counts, tiles (2048 elements) that cross row ends, rows of more than
// one tile with a partial last tile.
std::vector<std::pair<int64_t, int64_t>> shapes_for(DType t) {
  if (dtype_block_elems(t) == 32) return {{1, 32}, {7, 96}, {33, 160}, {3, 2080}};
  return {{1, 256}, {5, 512}, {17, 768}, {3, 2304}};
}

// Device buffer of `bytes` (+ slack) whose payload starts `offset` bytes into the allocation.
struct DevBuf {
  void* base = nullptr;
  size_t offset = 0, bytes = 0;
  DevBuf(size_t n, size_t off = 0) : offset(off), bytes(n) { LORA_CUDA_CHECK(cudaMalloc(&base, n + off + 64)); }
  ~DevBuf() { (void)cudaFree(base); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void* p() const { return static_cast<uint8_t*>(base) + offset; }
  void upload(const void* host) const { LORA_CUDA_CHECK(cudaMemcpy(p(), host, bytes, cudaMemcpyHostToDevice)); }
  void fill(int byte) const { LORA_CUDA_CHECK(cudaMemset(base, byte, bytes + offset + 64)); }
  // Whether the bytes before the payload still hold `byte` (an output written below its start).
  bool prefix_holds(uint8_t byte) const {
    std::vector<uint8_t> h(offset);
    if (offset) LORA_CUDA_CHECK(cudaMemcpy(h.data(), base, offset, cudaMemcpyDeviceToHost));
    for (uint8_t b : h)
      if (b != byte) return false;
    return true;
  }
  // Payload plus the 64 guard bytes after it.
  std::vector<uint8_t> download_with_guard() const {
    std::vector<uint8_t> h(bytes + 64);
    LORA_CUDA_CHECK(cudaMemcpy(h.data(), p(), h.size(), cudaMemcpyDeviceToHost));
    return h;
  }
};

// A (rows, cols) matrix quantized on the CPU, with the CPU's dequantization.
struct Quantized {
  DType t;
  int64_t rows, cols;
  std::vector<uint8_t> bytes;  // rows of cols / block elements blocks, back to back
  std::vector<float> ref;      // (rows, cols) quant_dequantize_row
};

// Random data with the features that stress the formats: per-row magnitude classes (zero rows, ~1,
// ~500, ~0.02, 1e-4 (subnormal fp16 scales), 1e-6 (scales that flush to zero)), per-block factors
// 2^-4..2^4, zero blocks, sign changes and occasional 4x outliers. All finite and inside fp16 range
// (|x| <= 500 * 16 * 4 = 32000), as the quantizers require.
Quantized make_quantized(DType t, int64_t rows, int64_t cols, uint64_t seed) {
  const float kRowScale[] = {1.0f, 500.0f, 0.02f, 0.0f, 1e-4f, 1e-6f};
  const int64_t be = dtype_block_elems(t), row_bytes = dtype_nbytes(t, cols);
  Quantized q{t, rows, cols, std::vector<uint8_t>(size_t(rows * row_bytes)), std::vector<float>(size_t(rows * cols))};
  // Rows r0, r0 + step, ...: each row has its own random stream, so threads give the same data.
  auto fill_rows = [&](int64_t r0, int64_t step) {
    std::vector<float> x(static_cast<size_t>(cols));
    for (int64_t r = r0; r < rows; r += step) {
      Rng rng(seed, uint64_t(r));
      const float rs = kRowScale[(r + int64_t(seed)) % 6];
      for (int64_t b = 0; b < cols; b += be) {
        const bool zero_block = rng.below(10) == 0;
        const float bs = rs * float(1 << rng.below(9)) / 16.0f;
        for (int64_t j = 0; j < be && b + j < cols; ++j) {
          float v = (2.0f * rng.uniform() - 1.0f) * bs;
          if (rng.below(50) == 0) v *= 4.0f;
          x[size_t(b + j)] = zero_block ? 0.0f : v;
        }
      }
      quant_quantize_row(t, x.data(), q.bytes.data() + r * row_bytes, cols);
      quant_dequantize_row(t, q.bytes.data() + r * row_bytes, q.ref.data() + r * cols, cols);
    }
  };
  // The reference K-quant quantizers take ~3 s for 5632 x 2048 on one core.
  const int64_t n_threads = rows < 64 ? 1 : std::max<int64_t>(1, std::min<int64_t>(16, std::thread::hardware_concurrency()));
  std::vector<std::thread> threads;
  for (int64_t k = 1; k < n_threads; ++k) threads.emplace_back(fill_rows, k, n_threads);
  fill_rows(0, n_threads);
  for (auto& th : threads) th.join();
  return q;
}

std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%0*x", v > 0xffff ? 8 : 4, v);
  return buf;
}

std::string num(float v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", double(v));
  return buf;
}

std::string describe(const Quantized& q, const std::string& what) {
  return std::string(dtype_name(q.t)) + " (" + std::to_string(q.rows) + ", " + std::to_string(q.cols) + ") " + what;
}

// got (rows, cols) f32 with leading dimension ld vs want (rows, cols): bits equal. Returns the first
// mismatch as a message, empty when none.
std::string first_mismatch_f32(const float* got, int64_t ld, const float* want, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const float g = got[r * ld + c], w = want[r * cols + c];
      if (f32_to_bits(g) != f32_to_bits(w))
        return "row " + std::to_string(r) + " col " + std::to_string(c) + ": got " + num(g) + " (" + hex(f32_to_bits(g)) +
               ") want " + num(w) + " (" + hex(f32_to_bits(w)) + ")";
    }
  return "";
}

// got (rows, ld) bf16 vs want (rows, cols) f32 rounded to bf16; elements c >= cols of each row and the
// guard after the last row must still hold the poison 0xffff.
std::string first_mismatch_bf16(const uint16_t* got, int64_t ld, size_t guard_elems, const float* want, int64_t rows,
                                int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < ld; ++c) {
      const uint16_t g = got[r * ld + c];
      if (c >= cols) {
        if (g != 0xffff) return "padding row " + std::to_string(r) + " col " + std::to_string(c) + " overwritten";
        continue;
      }
      const float w = want[r * cols + c];
      const uint16_t wb = f32_to_bf16(w);
      if (g != wb)
        return "row " + std::to_string(r) + " col " + std::to_string(c) + ": got bf16 " + hex(g) + " (" +
               num(bf16_to_f32(g)) + ") want " + hex(wb) + " (f32 " + num(w) + ")";
    }
  for (size_t k = 0; k < guard_elems; ++k)
    if (got[size_t(rows * ld) + k] != 0xffff) return "guard element " + std::to_string(k) + " after the matrix written";
  return "";
}

class CudaDequant : public ::testing::Test {
 protected:
  void SetUp() override {
    LORA_REQUIRE_CUDA();
    dev_ = cuda_device_open(0);
    cuda_device_use(*dev_);
  }
  void sync() { LORA_CUDA_CHECK(cudaStreamSynchronize(dev_->stream)); }

  // GPU f32 dequantization of q with the source at byte offset src_off and the output at float offset
  // dst_off of their allocations; checks bits and the guard after the output.
  void check_f32(const Quantized& q, size_t src_off, size_t dst_off) {
    const std::string what = describe(q, "f32, src offset " + std::to_string(src_off) + ", dst offset " +
                                             std::to_string(dst_off));
    DevBuf src(q.bytes.size(), src_off);
    src.upload(q.bytes.data());
    DevBuf dst(size_t(q.rows * q.cols) * 4, dst_off * 4);
    dst.fill(0xff);
    cuda_dequantize_f32(q.t, src.p(), static_cast<float*>(dst.p()), q.rows, q.cols, dev_->stream);
    sync();
    const std::vector<uint8_t> h = dst.download_with_guard();
    std::vector<float> got(h.size() / 4);
    std::memcpy(got.data(), h.data(), got.size() * 4);
    const std::string m = first_mismatch_f32(got.data(), q.cols, q.ref.data(), q.rows, q.cols);
    EXPECT_TRUE(m.empty()) << what << ": " << m;
    EXPECT_TRUE(dst.prefix_holds(0xff)) << what << ": written before the output's start";
    for (size_t k = size_t(q.rows * q.cols); k < got.size(); ++k)
      if (f32_to_bits(got[k]) != 0xffffffffu) {
        ADD_FAILURE() << what << ": guard after the output written at +" << k - size_t(q.rows * q.cols);
        break;
      }
  }

  // GPU bf16 dequantization into a (rows, ld) buffer at element offset dst_off, poisoned with 0xffff.
  void check_bf16(const Quantized& q, int64_t ld, size_t dst_off, size_t src_off = 0) {
    const std::string what = describe(q, "bf16, dst_ld " + std::to_string(ld) + ", dst offset " +
                                             std::to_string(dst_off) + ", src offset " + std::to_string(src_off));
    DevBuf src(q.bytes.size(), src_off);
    src.upload(q.bytes.data());
    DevBuf dst(size_t(q.rows * ld) * 2, dst_off * 2);
    dst.fill(0xff);
    cuda_dequantize_bf16(q.t, src.p(), static_cast<__nv_bfloat16*>(dst.p()), q.rows, q.cols, ld, dev_->stream);
    sync();
    const std::vector<uint8_t> h = dst.download_with_guard();
    std::vector<uint16_t> got(h.size() / 2);
    std::memcpy(got.data(), h.data(), got.size() * 2);
    const std::string m = first_mismatch_bf16(got.data(), ld, got.size() - size_t(q.rows * ld), q.ref.data(), q.rows,
                                              q.cols);
    EXPECT_TRUE(m.empty()) << what << ": " << m;
    EXPECT_TRUE(dst.prefix_holds(0xff)) << what << ": written before the output's start";
  }

  std::unique_ptr<CudaDevice> dev_;
};

// The reference itself must be finite, or a bit comparison would test NaN propagation instead.
void expect_finite(const Quantized& q) {
  for (size_t i = 0; i < q.ref.size(); ++i)
    if (!std::isfinite(q.ref[i])) {
      ADD_FAILURE() << describe(q, "CPU reference not finite at ") << i;
      return;
    }
}

TEST_F(CudaDequant, F32BitExactAllTypesShapesAndSourceAlignments) {
  uint64_t seed = 1;
  for (DType t : kQuantTypes)
    for (auto [rows, cols] : shapes_for(t)) {
      const Quantized q = make_quantized(t, rows, cols, seed++);
      expect_finite(q);
      for (size_t src_off : {0, 1, 2, 6, 13}) check_f32(q, src_off, 0);
      check_f32(q, 0, 1);  // output not 16-byte aligned: the scalar store path
      check_f32(q, 7, 3);
    }
}

TEST_F(CudaDequant, Bf16RoundsTheCpuValuesAndKeepsThePadding) {
  uint64_t seed = 100;
  for (DType t : kQuantTypes)
    for (auto [rows, cols] : shapes_for(t)) {
      const Quantized q = make_quantized(t, rows, cols, seed++);
      check_bf16(q, cols, 0);        // 16-byte stores
      check_bf16(q, cols + 8, 0);    // 16-byte stores, padding
      check_bf16(q, cols + 3, 0);    // ld % 8 != 0: scalar stores
      check_bf16(q, cols, 1);        // dst not 16-byte aligned: scalar stores
      check_bf16(q, cols + 24, 0, 5);  // unaligned source and padding together
    }
}

TEST_F(CudaDequant, EmbeddingGathersRowsWithRepeatsAndZeroesBadIds) {
  const std::vector<int32_t> ids = {3, 0, 12, 3, 3, 7, -1, 13, 12, 5, 1, 100000, 3};
  const int64_t V = 13, n = int64_t(ids.size());
  DevBuf d_ids(ids.size() * 4);
  d_ids.upload(ids.data());
  uint64_t seed = 200;
  for (DType t : kQuantTypes)
    for (int64_t cols : {dtype_block_elems(t) * 3, dtype_block_elems(t) == 32 ? int64_t(2080) : int64_t(2304)})
      for (size_t src_off : {0, 3}) {
        const Quantized q = make_quantized(t, V, cols, seed++);
        const std::string what = describe(q, "embedding, src offset " + std::to_string(src_off));
        DevBuf table(q.bytes.size(), src_off);
        table.upload(q.bytes.data());
        DevBuf out(size_t(n * cols) * 4);
        out.fill(0xff);
        cuda_embedding_quant(t, table.p(), V, cols, static_cast<const int32_t*>(d_ids.p()), n,
                             static_cast<float*>(out.p()), dev_->stream);
        sync();
        std::vector<float> want(size_t(n * cols), 0.0f);
        for (int64_t i = 0; i < n; ++i)
          if (ids[size_t(i)] >= 0 && ids[size_t(i)] < V)
            std::memcpy(&want[size_t(i * cols)], &q.ref[size_t(ids[size_t(i)] * cols)], size_t(cols) * 4);
        const std::vector<uint8_t> h = out.download_with_guard();
        std::vector<float> got(h.size() / 4);
        std::memcpy(got.data(), h.data(), got.size() * 4);
        const std::string m = first_mismatch_f32(got.data(), cols, want.data(), n, cols);
        EXPECT_TRUE(m.empty()) << what << ": out " << m;
        for (size_t k = size_t(n * cols); k < got.size(); ++k)
          if (f32_to_bits(got[k]) != 0xffffffffu) {
            ADD_FAILURE() << what << ": guard after the output written";
            break;
          }
      }
}

// The kernel's warp tiles (32 blocks of 32 or 4 super-blocks of 256) over TinyLlama's row lengths and
// others, row counts that leave the last tile and the last CTA (8 warps) part empty or exactly full
// (64 x 2048), sources whose tiles stage as whole uint4 (offset 0, 16), with a 2-byte or odd head, and
// outputs with dst_ld == cols (flat addressing), dst_ld > cols (row/col addressing) and scalar stores.
TEST_F(CudaDequant, WarpTilesOverRowLengthsRowCountsAndAlignments) {
  uint64_t seed = 500;
  for (DType t : kQuantTypes) {
    std::vector<std::pair<int64_t, int64_t>> shapes;
    if (dtype_block_elems(t) == 32)
      shapes = {{1, 32}, {3, 5632}, {37, 1056}, {64, 2048}, {5, 288}, {11, 160}};
    else
      shapes = {{1, 256}, {3, 5632}, {37, 2304}, {64, 2048}, {5, 1280}, {9, 256}};
    for (auto [rows, cols] : shapes) {
      const Quantized q = make_quantized(t, rows, cols, seed++);
      for (size_t src_off : {0, 16, 2, 7}) check_bf16(q, cols, 0, src_off);
      check_bf16(q, cols + 8, 0, 16);
      check_bf16(q, cols + 264, 8, 3);  // dst 16-byte aligned at element 8, vector stores, padding
      check_bf16(q, cols + 1, 0, 0);    // ld % 8 != 0: scalar stores
      check_f32(q, 16, 0);
      check_f32(q, 5, 2);
    }
  }
}

// TinyLlama's largest FFN weight: many tiles, every CTA of a full grid busy.
TEST_F(CudaDequant, LargeMatrix5632x2048) {
  const int64_t rows = 5632, cols = 2048;
  uint64_t seed = 300;
  for (DType t : kQuantTypes) {
    const Quantized q = make_quantized(t, rows, cols, seed++);
    check_bf16(q, cols, 0);
    check_f32(q, 0, 0);
  }
}

TEST_F(CudaDequant, PlainSourceTypes) {
  uint64_t seed = 400;
  for (DType t : {DTYPE_F32, DTYPE_F16, DTYPE_BF16})
    for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{7, 33}, {3, 2049}, {1, 1}}) {
      const Quantized q = make_quantized(t, rows, cols, seed++);
      check_f32(q, 0, 0);
      check_f32(q, 2, 1);
      check_bf16(q, cols, 0);
      check_bf16(q, cols + 5, 1);
    }
  // Gather from an F16 table, one bad id.
  const Quantized q = make_quantized(DTYPE_F16, 5, 40, seed);
  const std::vector<int32_t> ids = {4, 4, 0, 5, 2};
  DevBuf d_ids(ids.size() * 4), table(q.bytes.size()), out(ids.size() * 40 * 4);
  d_ids.upload(ids.data());
  table.upload(q.bytes.data());
  cuda_embedding_quant(DTYPE_F16, table.p(), 5, 40, static_cast<const int32_t*>(d_ids.p()), int64_t(ids.size()),
                       static_cast<float*>(out.p()), dev_->stream);
  sync();
  std::vector<float> got(ids.size() * 40), want(ids.size() * 40, 0.0f);
  LORA_CUDA_CHECK(cudaMemcpy(got.data(), out.p(), got.size() * 4, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 5) std::memcpy(&want[i * 40], &q.ref[size_t(ids[i]) * 40], 40 * 4);
  const std::string m = first_mismatch_f32(got.data(), 40, want.data(), int64_t(ids.size()), 40);
  EXPECT_TRUE(m.empty()) << "F16 embedding: " << m;
}

TEST_F(CudaDequant, BadArgumentsThrowAndEmptyLaunchesNothing) {
  DevBuf src(4096), dst(4096);
  auto* d = static_cast<__nv_bfloat16*>(dst.p());
  auto* f = static_cast<float*>(dst.p());
  EXPECT_FALSE(cuda_dequant_supported(DTYPE_I32));
  EXPECT_TRUE(cuda_dequant_supported(DTYPE_Q6_K));
  EXPECT_THROW(cuda_dequantize_bf16(DTYPE_I32, src.p(), d, 1, 32, 32, dev_->stream), InternalError);
  EXPECT_THROW(cuda_dequantize_f32(DTYPE_I64, src.p(), f, 1, 32, dev_->stream), InternalError);
  EXPECT_THROW(cuda_dequantize_bf16(DTYPE_Q4_K, src.p(), d, 1, 96, 96, dev_->stream), InternalError);  // 96 % 256
  EXPECT_THROW(cuda_dequantize_bf16(DTYPE_Q8_0, src.p(), d, 2, 64, 32, dev_->stream), InternalError);  // ld < cols
  EXPECT_THROW(cuda_dequantize_f32(DTYPE_Q8_0, src.p(), f, -1, 32, dev_->stream), InternalError);
  EXPECT_THROW(cuda_embedding_quant(DTYPE_Q4_0, src.p(), 4, 32, nullptr, 3, f, dev_->stream), InternalError);
  dst.fill(0xff);
  cuda_dequantize_bf16(DTYPE_Q4_0, src.p(), d, 0, 32, 32, dev_->stream);
  cuda_dequantize_f32(DTYPE_Q4_K, src.p(), f, 3, 0, dev_->stream);
  cuda_embedding_quant(DTYPE_Q8_0, src.p(), 4, 32, nullptr, 0, f, dev_->stream);
  sync();
  const std::vector<uint8_t> h = dst.download_with_guard();
  for (uint8_t b : h) ASSERT_EQ(b, 0xff) << "an empty launch wrote output";
}

}  // namespace
}  // namespace lora
