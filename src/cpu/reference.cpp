// Plain reference implementations of the op API (see reference.h). No SIMD, no threads, no BLAS;
// sums in double. Shapes are checked as in the fast backend.
#include "cpu/reference.h"

#include <cmath>
#include <vector>

#include "cpu/kernels.h"

namespace lora {

namespace {

double elem(const Tensor& t, int64_t i) { return double(cpu::load_f32(t.data, t.dtype, i)); }

class RefOps final : public Ops {
 public:
  Device device() const override { return DEVICE_CPU; }

  void embedding_fwd(const int32_t* ids, int64_t n, const Tensor& table, Tensor& out) override {
    const int64_t V = table.dim(0), C = table.dim(1);
    LORA_CHECK(out.numel() == n * C, "ref embedding: bad out");
    for (int64_t i = 0; i < n; ++i) {
      if (ids[i] < 0 || ids[i] >= V) fail_input("token ids", "token id out of range");
      for (int64_t c = 0; c < C; ++c) out.f32()[i * C + c] = float(elem(table, ids[i] * C + c));
    }
  }

  void rmsnorm_fwd(const Tensor& x, const Tensor& w, float eps, Tensor& y) override {
    const int64_t C = x.dim(-1), n = x.numel() / C;
    for (int64_t r = 0; r < n; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < C; ++i) ss += double(x.f32()[r * C + i]) * x.f32()[r * C + i];
      const double inv = 1.0 / std::sqrt(ss / double(C) + double(eps));
      for (int64_t i = 0; i < C; ++i) y.f32()[r * C + i] = float(x.f32()[r * C + i] * inv * elem(w, i));
    }
  }

  void linear_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) override {
    const int64_t out = w.dim(0), in = w.dim(1), n = x.numel() / in;
    LORA_CHECK(x.dim(-1) == in && y.numel() == n * out, "ref linear: bad shapes");
    for (int64_t r = 0; r < n; ++r)
      for (int64_t o = 0; o < out; ++o) {
        double s = (bias && bias->defined()) ? elem(*bias, o) : 0.0;
        for (int64_t i = 0; i < in; ++i) s += double(x.f32()[r * in + i]) * elem(w, o * in + i);
        y.f32()[r * out + o] = float(s);
      }
  }

  void rope_fwd(Tensor& x, const int32_t* pos, const RopeTable& rope) override {
    const int64_t N = x.dim(0), nh = x.dim(1), D = x.dim(2), half = D / 2;
    LORA_CHECK(D == rope.head_dim, "ref rope: bad head dim");
    for (int64_t t = 0; t < N; ++t)
      for (int64_t h = 0; h < nh; ++h)
        for (int64_t i = 0; i < half; ++i) {
          const double c = rope.cos[size_t(pos[t] * half + i)], s = rope.sin[size_t(pos[t] * half + i)];
          float* v = x.f32() + (t * nh + h) * D;
          const double a = v[i], b = v[i + half];
          v[i] = float(a * c - b * s);
          v[i + half] = float(b * c + a * s);
        }
  }

  void attention_fwd(const Tensor& q, const Tensor& k, const Tensor& v, int64_t pos0, Tensor& out) override {
    const int64_t T = q.dim(0), H = q.dim(1), D = q.dim(2), KV = k.dim(1);
    const double scale = 1.0 / std::sqrt(double(D));
    std::vector<double> p;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t kvh = h / (H / KV), n_keys = pos0 + t + 1;
        p.assign(size_t(n_keys), 0.0);
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < n_keys; ++j) {
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += double(q.f32()[(t * H + h) * D + d]) * k.f32()[(j * KV + kvh) * D + d];
          p[size_t(j)] = s * scale;
          mx = std::max(mx, p[size_t(j)]);
        }
        for (auto& e : p) sum += (e = std::exp(e - mx));
        for (int64_t d = 0; d < D; ++d) {
          double o = 0;
          for (int64_t j = 0; j < n_keys; ++j) o += p[size_t(j)] / sum * v.f32()[(j * KV + kvh) * D + d];
          out.f32()[(t * H + h) * D + d] = float(o);
        }
      }
  }

  void swiglu_fwd(const Tensor& gate, const Tensor& up, Tensor& out) override {
    for (int64_t i = 0; i < gate.numel(); ++i) {
      const double g = gate.f32()[i];
      out.f32()[i] = float(g / (1.0 + std::exp(-g)) * up.f32()[i]);
    }
  }

  void add_fwd(Tensor& y, const Tensor& x) override {
    for (int64_t i = 0; i < y.numel(); ++i) y.f32()[i] = float(double(y.f32()[i]) + x.f32()[i]);
  }
};

}  // namespace

Ops& reference_ops() {
  static RefOps ops;
  return ops;
}

}  // namespace lora
