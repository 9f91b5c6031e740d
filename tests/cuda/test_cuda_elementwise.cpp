// The CUDA element-wise kernels (src/cuda/kernels.h: embedding, rmsnorm fwd/bwd, rope fwd/bwd, swiglu
// fwd/bwd, add) against the double-precision reference backend (cpu/reference.h) on the same inputs,
// over odd widths (1, 31, 32, 33, 2049 columns) and several rows, every weight dtype, in-place aliasing
// and the documented out-of-range behaviour. Without a GPU every test skips with a message.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "cpu/reference.h"
#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda/kernels.h"
#include "ops/ops.h"
#include "cuda_test_util.h"
#include "tolerances.h"

namespace lora {
namespace {


const int64_t kCols[] = {1, 31, 32, 33, 2049};
const int64_t kRows[] = {1, 3, 7};
const DType kWeightTypes[] = {DTYPE_F32, DTYPE_BF16, DTYPE_F16};

// Device copy of a host array, freed on scope exit.
struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DevBuf(size_t n) : bytes(n) { LORA_CUDA_CHECK(cudaMalloc(&p, n < 1 ? 1 : n)); }
  DevBuf(const void* host, size_t n) : DevBuf(n) {
    if (n) LORA_CUDA_CHECK(cudaMemcpy(p, host, n, cudaMemcpyHostToDevice));
  }
  explicit DevBuf(const Tensor& t) : DevBuf(t.data, size_t(t.nbytes())) {}
  ~DevBuf() { (void)cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  float* f() const { return static_cast<float*>(p); }
  template <class T> const T* as() const { return static_cast<const T*>(p); }
  // Device -> a new host f32 tensor of `like`'s shape.
  OwnedTensor download(const Tensor& like) const {
    OwnedTensor t = tensor_alloc(DTYPE_F32, like.shape.data(), like.ndim);
    LORA_CUDA_CHECK(cudaMemcpy(t.t.data, p, size_t(t.t.nbytes()), cudaMemcpyDeviceToHost));
    return t;
  }
};

// Uniform in [lo, hi) stored as `dt` (rounded to dt first, so both sides see exactly the same numbers).
OwnedTensor random_tensor(Rng& rng, DType dt, std::initializer_list<int64_t> shape, float lo = -1, float hi = 1) {
  OwnedTensor t = tensor_alloc(dt, shape);
  std::vector<float> v(size_t(t.t.numel()));
  for (auto& x : v) x = lo + (hi - lo) * rng.uniform();
  dtype_convert_from_f32(dt, v.data(), t.t.data, int64_t(v.size()));
  return t;
}

OwnedTensor copy_of(const Tensor& src) {
  OwnedTensor t = tensor_alloc(src.dtype, src.shape.data(), src.ndim);
  std::memcpy(t.t.data, src.data, size_t(src.nbytes()));
  return t;
}

// |got - want| <= tol · (1 + |want|) elementwise; returns the largest such scaled error.
double expect_close(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  EXPECT_EQ(got.numel(), want.numel()) << what;
  double worst = 0;
  int reported = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double g = got.f32()[i], w = want.f32()[i];
    const double err = std::abs(g - w) / (1.0 + std::abs(w));
    worst = std::max(worst, std::isnan(err) ? INFINITY : err);
    if (!(err <= tol) && reported++ < 5) ADD_FAILURE() << what << ": [" << i << "] got " << g << " want " << w;
  }
  return worst;
}

// |got - want| <= tol · max |want| (a gradient, like tests/unit/test_cpu_grad); returns err / max|want|.
double expect_close_grad(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  double scale = 1e-30, worst = 0;
  for (int64_t i = 0; i < want.numel(); ++i) scale = std::max(scale, double(std::abs(want.f32()[i])));
  int reported = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double err = std::abs(double(got.f32()[i]) - want.f32()[i]) / scale;
    worst = std::max(worst, std::isnan(err) ? INFINITY : err);
    if (!(err <= tol) && reported++ < 5)
      ADD_FAILURE() << what << ": [" << i << "] got " << got.f32()[i] << " want " << want.f32()[i];
  }
  return worst;
}

void expect_equal(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.numel(), want.numel()) << what;
  int reported = 0;
  for (int64_t i = 0; i < got.numel(); ++i)
    if (!(got.f32()[i] == want.f32()[i]) && reported++ < 5)
      ADD_FAILURE() << what << ": [" << i << "] got " << got.f32()[i] << " want " << want.f32()[i];
}

std::string sz(int64_t n, int64_t c) { return "(" + std::to_string(n) + ", " + std::to_string(c) + ")"; }

class CudaElementwise : public ::testing::Test {
 protected:
  void SetUp() override {
    LORA_REQUIRE_CUDA();
    dev_ = cuda_device_open(0);
    cuda_device_use(*dev_);
  }
  void TearDown() override {
    if (!measured_.empty()) std::printf("  measured: %s\n", measured_.c_str());
  }
  void note(const char* what, double v) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s%s %.3g", measured_.empty() ? "" : ", ", what, v);
    measured_ += buf;
  }
  cudaStream_t stream() const { return dev_->stream; }
  std::unique_ptr<CudaDevice> dev_;
  std::string measured_;
};

TEST_F(CudaElementwise, EmbeddingEveryTableDtypeIsExact) {
  Rng rng(1);
  const int64_t V = 50;
  for (DType dt : kWeightTypes)
    for (int64_t C : kCols) {
      OwnedTensor table = random_tensor(rng, dt, {V, C});
      std::vector<int32_t> ids = {0, 49, 7, 7, 23, 1, 48, 0, 31};
      const int64_t n = int64_t(ids.size());
      OwnedTensor want = tensor_alloc(DTYPE_F32, {n, C});
      reference_ops().embedding_fwd(ids.data(), n, table.t, want.t);
      DevBuf d_ids(ids.data(), ids.size() * 4), d_table(table.t), d_out(size_t(n * C) * 4);
      cuda_embedding_fwd(d_ids.as<int32_t>(), n, d_table.p, dt, V, C, d_out.f(), stream());
      cuda_device_sync(*dev_);
      expect_equal(d_out.download(want.t).t, want.t, std::string("embedding ") + dtype_name(dt) + sz(n, C));
    }
}

TEST_F(CudaElementwise, EmbeddingOutOfRangeIdGivesAZeroRow) {
  // The caller validates ids on the host; on the device a bad id must still not read out of bounds.
  Rng rng(2);
  const int64_t V = 5, C = 33;
  OwnedTensor table = random_tensor(rng, DTYPE_F32, {V, C}, 1.0f, 2.0f);  // no zeros in the table
  const std::vector<int32_t> ids = {-1, 4, 5, 1 << 30};
  DevBuf d_ids(ids.data(), ids.size() * 4), d_table(table.t), d_out(ids.size() * C * 4);
  cuda_embedding_fwd(d_ids.as<int32_t>(), int64_t(ids.size()), d_table.p, DTYPE_F32, V, C, d_out.f(), stream());
  cuda_device_sync(*dev_);
  OwnedTensor got = d_out.download(tensor_view(nullptr, DTYPE_F32, {int64_t(ids.size()), C}));
  for (int64_t i = 0; i < C; ++i) {
    EXPECT_EQ(got.t.f32()[0 * C + i], 0.0f);
    EXPECT_EQ(got.t.f32()[1 * C + i], table.t.f32()[4 * C + i]);
    EXPECT_EQ(got.t.f32()[2 * C + i], 0.0f);
    EXPECT_EQ(got.t.f32()[3 * C + i], 0.0f);
  }
}

TEST_F(CudaElementwise, RmsnormFwdEveryWeightDtype) {
  Rng rng(3);
  double worst = 0;
  for (DType dt : kWeightTypes)
    for (int64_t n : kRows)
      for (int64_t C : kCols)
        for (float eps : {1e-5f, 0.25f}) {
          OwnedTensor x = random_tensor(rng, DTYPE_F32, {n, C}, -2, 2);
          OwnedTensor w = random_tensor(rng, dt, {C}, 0.5f, 1.5f);
          OwnedTensor want = tensor_alloc(DTYPE_F32, {n, C});
          reference_ops().rmsnorm_fwd(x.t, w.t, eps, want.t);
          DevBuf d_x(x.t), d_w(w.t), d_y(size_t(n * C) * 4);
          cuda_rmsnorm_fwd(d_x.f(), d_w.p, dt, n, C, eps, d_y.f(), stream());
          // In place (y aliases x) must give the same numbers.
          cuda_rmsnorm_fwd(d_x.f(), d_w.p, dt, n, C, eps, d_x.f(), stream());
          cuda_device_sync(*dev_);
          const std::string what = std::string("rmsnorm ") + dtype_name(dt) + sz(n, C);
          OwnedTensor got = d_y.download(want.t);
          worst = std::max(worst, expect_close(got.t, want.t, tol::kCudaRmsnorm, what));
          expect_equal(d_x.download(want.t).t, got.t, what + " in place");
        }
  note("rmsnorm_fwd max |err|/(1+|want|)", worst);
}

TEST_F(CudaElementwise, RmsnormBwdAccumulatesDxAndDw) {
  Rng rng(4);
  double worst_dx = 0, worst_dw = 0;
  for (DType dt : kWeightTypes)
    for (int64_t n : {int64_t(1), int64_t(7), int64_t(301)})
      for (int64_t C : kCols) {
        const float eps = 1e-5f;
        OwnedTensor x = random_tensor(rng, DTYPE_F32, {n, C}, -2, 2);
        OwnedTensor w = random_tensor(rng, dt, {C}, 0.5f, 1.5f);
        OwnedTensor dy = random_tensor(rng, DTYPE_F32, {n, C});
        OwnedTensor dx = random_tensor(rng, DTYPE_F32, {n, C});  // accumulated into
        OwnedTensor dw = random_tensor(rng, DTYPE_F32, {C});
        DevBuf d_x(x.t), d_w(w.t), d_dy(dy.t), d_dx(dx.t), d_dw(dw.t), d_dx2(dx.t);
        cuda_rmsnorm_bwd(d_x.f(), d_w.p, dt, n, C, eps, d_dy.f(), d_dx.f(), d_dw.f(), stream());
        cuda_rmsnorm_bwd(d_x.f(), d_w.p, dt, n, C, eps, d_dy.f(), d_dx2.f(), nullptr, stream());  // no dw
        cuda_device_sync(*dev_);
        reference_ops().rmsnorm_bwd(x.t, w.t, eps, dy.t, dx.t, &dw.t);
        const std::string what = std::string("rmsnorm_bwd ") + dtype_name(dt) + sz(n, C);
        OwnedTensor got_dx = d_dx.download(dx.t);
        worst_dx = std::max(worst_dx, expect_close_grad(got_dx.t, dx.t, tol::kCudaRmsnormBwd, what + " dx"));
        worst_dw = std::max(worst_dw, expect_close_grad(d_dw.download(dw.t).t, dw.t, tol::kCudaRmsnormBwd, what + " dw"));
        expect_equal(d_dx2.download(dx.t).t, got_dx.t, what + " dx without dw");
      }
  note("rmsnorm_bwd dx max |err|/max|want|", worst_dx);
  note("dw", worst_dw);
}

TEST_F(CudaElementwise, RopeFwdAndBwd) {
  Rng rng(5);
  const int64_t max_pos = 64;
  double worst = 0;
  for (int64_t D : {int64_t(2), int64_t(64), int64_t(66), int64_t(128)}) {
    const RopeTable rope = rope_table_make(D, max_pos, 10000.0, nullptr);
    DevBuf d_cos(rope.cos.data(), rope.cos.size() * 4), d_sin(rope.sin.data(), rope.sin.size() * 4);
    for (int64_t n : kRows)
      for (int64_t nh : {int64_t(1), int64_t(3), int64_t(32)})
        for (bool bwd : {false, true}) {
          OwnedTensor x = random_tensor(rng, DTYPE_F32, {n, nh, D}, -2, 2);
          std::vector<int32_t> pos(static_cast<size_t>(n));
          for (int64_t t = 0; t < n; ++t) pos[size_t(t)] = int32_t((t * 37 + 11) % max_pos);
          pos.back() = int32_t(max_pos - 1);
          DevBuf d_x(x.t), d_pos(pos.data(), pos.size() * 4);
          (bwd ? cuda_rope_bwd : cuda_rope_fwd)(d_x.f(), d_pos.as<int32_t>(), n, nh, D, d_cos.as<float>(),
                                                d_sin.as<float>(), max_pos, stream());
          cuda_device_sync(*dev_);
          OwnedTensor want = copy_of(x.t);
          if (bwd)
            reference_ops().rope_bwd(want.t, pos.data(), rope);
          else
            reference_ops().rope_fwd(want.t, pos.data(), rope);
          const std::string what = std::string(bwd ? "rope_bwd " : "rope_fwd ") + "n=" + std::to_string(n) +
                                   " nh=" + std::to_string(nh) + " D=" + std::to_string(D);
          worst = std::max(worst, expect_close(d_x.download(x.t).t, want.t, tol::kCudaElementwise, what));
        }
  }
  note("rope max |err|/(1+|want|)", worst);
}

TEST_F(CudaElementwise, RopeOutOfRangePositionLeavesTheRow) {
  const int64_t D = 8, nh = 2, max_pos = 4;
  const RopeTable rope = rope_table_make(D, max_pos, 10000.0, nullptr);
  Rng rng(6);
  OwnedTensor x = random_tensor(rng, DTYPE_F32, {3, nh, D});
  const std::vector<int32_t> pos = {-1, 3, 4};
  DevBuf d_x(x.t), d_pos(pos.data(), pos.size() * 4), d_cos(rope.cos.data(), rope.cos.size() * 4),
      d_sin(rope.sin.data(), rope.sin.size() * 4);
  cuda_rope_fwd(d_x.f(), d_pos.as<int32_t>(), 3, nh, D, d_cos.as<float>(), d_sin.as<float>(), max_pos, stream());
  cuda_device_sync(*dev_);
  OwnedTensor got = d_x.download(x.t);
  OwnedTensor mid = tensor_alloc(DTYPE_F32, {1, nh, D});
  std::memcpy(mid.t.data, x.t.f32() + nh * D, size_t(nh * D) * 4);
  reference_ops().rope_fwd(mid.t, &pos[1], rope);
  for (int64_t i = 0; i < nh * D; ++i) {
    EXPECT_EQ(got.t.f32()[i], x.t.f32()[i]);                              // pos -1: unchanged
    EXPECT_NEAR(got.t.f32()[nh * D + i], mid.t.f32()[i], 1e-5);           // pos 3: rotated
    EXPECT_EQ(got.t.f32()[2 * nh * D + i], x.t.f32()[2 * nh * D + i]);    // pos 4: unchanged
  }
  EXPECT_NE(got.t.f32()[nh * D], x.t.f32()[nh * D]);  // the rotation did something
}

TEST_F(CudaElementwise, SwigluFwdBwdAndAdd) {
  Rng rng(7);
  double worst_fwd = 0, worst_bwd = 0;
  for (int64_t n : kRows)
    for (int64_t F : kCols) {
      const std::string what = sz(n, F);
      OwnedTensor gate = random_tensor(rng, DTYPE_F32, {n, F}, -10, 10);  // reaches the sigmoid's tails
      OwnedTensor up = random_tensor(rng, DTYPE_F32, {n, F}, -2, 2);
      OwnedTensor dout = random_tensor(rng, DTYPE_F32, {n, F});
      DevBuf d_g(gate.t), d_u(up.t), d_o(size_t(n * F) * 4), d_do(dout.t), d_dg(size_t(n * F) * 4),
          d_du(size_t(n * F) * 4);
      cuda_swiglu_fwd(d_g.f(), d_u.f(), d_o.f(), n * F, stream());
      cuda_swiglu_bwd(d_g.f(), d_u.f(), d_do.f(), d_dg.f(), d_du.f(), n * F, stream());
      cuda_device_sync(*dev_);
      OwnedTensor want = tensor_alloc(DTYPE_F32, {n, F}), want_dg = tensor_alloc(DTYPE_F32, {n, F}),
                  want_du = tensor_alloc(DTYPE_F32, {n, F});
      reference_ops().swiglu_fwd(gate.t, up.t, want.t);
      reference_ops().swiglu_bwd(gate.t, up.t, dout.t, want_dg.t, want_du.t);
      OwnedTensor got = d_o.download(want.t);
      worst_fwd = std::max(worst_fwd, expect_close(got.t, want.t, tol::kCudaElementwise, "swiglu_fwd " + what));
      worst_bwd = std::max(worst_bwd, expect_close(d_dg.download(want.t).t, want_dg.t, tol::kCudaElementwise,
                                                   "swiglu_bwd dgate " + what));
      worst_bwd = std::max(worst_bwd, expect_close(d_du.download(want.t).t, want_du.t, tol::kCudaElementwise,
                                                   "swiglu_bwd dup " + what));

      // Aliased: out = gate for the forward, then dgate = gate and dup = up for the backward.
      DevBuf a_g(gate.t), a_u(up.t), b_g(gate.t), b_u(up.t);
      cuda_swiglu_fwd(a_g.f(), a_u.f(), a_g.f(), n * F, stream());
      cuda_swiglu_bwd(b_g.f(), b_u.f(), d_do.f(), b_g.f(), b_u.f(), n * F, stream());
      cuda_device_sync(*dev_);
      expect_equal(a_g.download(want.t).t, got.t, "swiglu_fwd in place " + what);
      expect_equal(b_g.download(want.t).t, d_dg.download(want.t).t, "swiglu_bwd dgate in place " + what);
      expect_equal(b_u.download(want.t).t, d_du.download(want.t).t, "swiglu_bwd dup in place " + what);

      // add: y += x, exact in f32 on both sides.
      OwnedTensor y = random_tensor(rng, DTYPE_F32, {n, F});
      DevBuf d_y(y.t);
      cuda_add_fwd(d_y.f(), d_u.f(), n * F, stream());
      cuda_device_sync(*dev_);
      reference_ops().add_fwd(y.t, up.t);
      expect_equal(d_y.download(y.t).t, y.t, "add " + what);
    }
  note("swiglu_fwd max |err|/(1+|want|)", worst_fwd);
  note("swiglu_bwd", worst_bwd);
}

TEST_F(CudaElementwise, AddPastTheGridStrideLimit) {
  // 65536 blocks of 256 threads cover 2^24 elements per pass; 2^24 + 33 makes the loop wrap.
  const int64_t n = (int64_t(1) << 24) + 33;
  std::vector<float> y(static_cast<size_t>(n)), x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    y[size_t(i)] = float(i % 1000);
    x[size_t(i)] = float(i % 7) + 0.5f;
  }
  DevBuf d_y(y.data(), y.size() * 4), d_x(x.data(), x.size() * 4);
  cuda_add_fwd(d_y.f(), d_x.f(), n, stream());
  cuda_device_sync(*dev_);
  std::vector<float> got(static_cast<size_t>(n));
  LORA_CUDA_CHECK(cudaMemcpy(got.data(), d_y.p, got.size() * 4, cudaMemcpyDeviceToHost));
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i)
    if (got[size_t(i)] != y[size_t(i)] + x[size_t(i)] && bad++ < 5) ADD_FAILURE() << "add [" << i << "]";
  EXPECT_EQ(bad, 0);
}

TEST_F(CudaElementwise, BadDtypeOrSizeIsAnInternalError) {
  DevBuf buf(1024);
  EXPECT_THROW(cuda_rmsnorm_fwd(buf.f(), buf.p, DTYPE_Q4_0, 1, 32, 1e-5f, buf.f(), stream()), InternalError);
  EXPECT_THROW(cuda_embedding_fwd(buf.as<int32_t>(), 1, buf.p, DTYPE_I32, 4, 4, buf.f(), stream()), InternalError);
  EXPECT_THROW(cuda_add_fwd(buf.f(), buf.f(), -1, stream()), InternalError);
  // Empty sizes launch nothing and succeed.
  cuda_swiglu_fwd(buf.f(), buf.f(), buf.f(), 0, stream());
  cuda_rmsnorm_fwd(buf.f(), buf.p, DTYPE_F32, 0, 32, 1e-5f, buf.f(), stream());
  cuda_device_sync(*dev_);
}

}  // namespace
}  // namespace lora
