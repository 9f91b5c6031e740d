// Plain reference implementations of the op API (see reference.h). No SIMD, no threads, no BLAS;
// sums in double. Shapes are checked as in the fast backend. The backward ops are the textbook
// formulas written as loops (attention_bwd materializes the probabilities in double), so that the
// gradient checks (tests/unit/test_cpu_grad.cpp) test them against finite differences and the fast
// backward against them.
#include "cpu/reference.h"

#include <algorithm>
#include <cmath>
#include <string>
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

  void rmsnorm_bwd(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor* dw) override {
    const int64_t C = x.dim(-1), n = x.numel() / C;
    const float* X = x.f32();
    const float* G = dy.f32();
    for (int64_t r = 0; r < n; ++r) {
      double ss = 0, gx = 0;
      for (int64_t i = 0; i < C; ++i) {
        ss += double(X[r * C + i]) * X[r * C + i];
        gx += double(G[r * C + i]) * elem(w, i) * X[r * C + i];
      }
      const double inv = 1.0 / std::sqrt(ss / double(C) + double(eps));
      for (int64_t i = 0; i < C; ++i) {
        const double d = inv * G[r * C + i] * elem(w, i) - inv * inv * inv * gx / double(C) * X[r * C + i];
        dx.f32()[r * C + i] = float(double(dx.f32()[r * C + i]) + d);
        if (dw) dw->f32()[i] = float(double(dw->f32()[i]) + double(G[r * C + i]) * X[r * C + i] * inv);
      }
    }
  }

  void rope_bwd(Tensor& dx, const int32_t* pos, const RopeTable& rope) override {
    const int64_t N = dx.dim(0), nh = dx.dim(1), D = dx.dim(2), half = D / 2;
    for (int64_t t = 0; t < N; ++t)
      for (int64_t h = 0; h < nh; ++h)
        for (int64_t i = 0; i < half; ++i) {
          const double c = rope.cos[size_t(pos[t] * half + i)], s = rope.sin[size_t(pos[t] * half + i)];
          float* v = dx.f32() + (t * nh + h) * D;
          const double a = v[i], b = v[i + half];
          v[i] = float(a * c + b * s);
          v[i + half] = float(b * c - a * s);
        }
  }

  // Probabilities of one (row b, query t, head h) in double: p[j] for keys 0..t, and the log-sum-exp.
  static double probs(const Tensor& q, const Tensor& k, int64_t b, int64_t t, int64_t h, std::vector<double>& p) {
    const int64_t T = q.dim(1), H = q.dim(2), D = q.dim(3), KV = k.dim(2), kvh = h / (H / KV);
    const double scale = 1.0 / std::sqrt(double(D));
    p.assign(size_t(t + 1), 0.0);
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j <= t; ++j) {
      double s = 0;
      for (int64_t d = 0; d < D; ++d)
        s += double(q.f32()[((b * T + t) * H + h) * D + d]) * k.f32()[((b * T + j) * KV + kvh) * D + d];
      p[size_t(j)] = s * scale;
      mx = std::max(mx, p[size_t(j)]);
    }
    for (auto& e : p) sum += (e = std::exp(e - mx));
    for (auto& e : p) e /= sum;
    return mx + std::log(sum);
  }

  void attention_train_fwd(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse) override {
    const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), D = q.dim(3), KV = k.dim(2);
    std::vector<double> p;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h) {
          lse.f32()[(b * T + t) * H + h] = float(probs(q, k, b, t, h, p));
          const int64_t kvh = h / (H / KV);
          for (int64_t d = 0; d < D; ++d) {
            double o = 0;
            for (int64_t j = 0; j <= t; ++j) o += p[size_t(j)] * v.f32()[((b * T + j) * KV + kvh) * D + d];
            out.f32()[((b * T + t) * H + h) * D + d] = float(o);
          }
        }
  }

  void attention_bwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor&, const Tensor&,
                     const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv) override {
    const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), D = q.dim(3), KV = k.dim(2);
    const double scale = 1.0 / std::sqrt(double(D));
    std::vector<double> gq(size_t(q.numel()), 0.0), gk(size_t(k.numel()), 0.0), gv(size_t(k.numel()), 0.0);
    std::vector<double> p, dp;
    auto qi = [&](int64_t b, int64_t t, int64_t h, int64_t d) { return ((b * T + t) * H + h) * D + d; };
    auto ki = [&](int64_t b, int64_t t, int64_t h, int64_t d) { return ((b * T + t) * KV + h) * D + d; };
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h) {
          const int64_t g = h / (H / KV);
          probs(q, k, b, t, h, p);
          dp.assign(size_t(t + 1), 0.0);
          double dsum = 0;
          for (int64_t j = 0; j <= t; ++j) {
            for (int64_t d = 0; d < D; ++d) {
              const double go = dout.f32()[qi(b, t, h, d)];
              dp[size_t(j)] += go * v.f32()[ki(b, j, g, d)];
              gv[size_t(ki(b, j, g, d))] += p[size_t(j)] * go;
            }
            dsum += p[size_t(j)] * dp[size_t(j)];
          }
          for (int64_t j = 0; j <= t; ++j) {
            const double ds = p[size_t(j)] * (dp[size_t(j)] - dsum) * scale;
            for (int64_t d = 0; d < D; ++d) {
              gq[size_t(qi(b, t, h, d))] += ds * k.f32()[ki(b, j, g, d)];
              gk[size_t(ki(b, j, g, d))] += ds * q.f32()[qi(b, t, h, d)];
            }
          }
        }
    for (size_t i = 0; i < gq.size(); ++i) dq.f32()[i] = float(gq[i]);
    for (size_t i = 0; i < gk.size(); ++i) {
      dk.f32()[i] = float(gk[i]);
      dv.f32()[i] = float(gv[i]);
    }
  }

  void swiglu_bwd(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate, Tensor& dup) override {
    for (int64_t i = 0; i < gate.numel(); ++i) {
      const double g = gate.f32()[i], u = up.f32()[i], d = dout.f32()[i];
      const double s = 1.0 / (1.0 + std::exp(-g));
      dgate.f32()[i] = float(d * u * s * (1.0 + g * (1.0 - s)));
      dup.f32()[i] = float(d * g * s);
    }
  }

  // x as the adapter sees it: dropout applied (double).
  static double xdrop(const Tensor& x, const LoraOperand& lo, int64_t i) {
    if (lo.dropout == 0.0f) return x.f32()[i];
    return lora_dropout_keep(lo, i) ? double(x.f32()[i]) / (1.0 - double(lo.dropout)) : 0.0;
  }

  static void dora_denom(const Tensor& w, const LoraOperand& lo, std::vector<double>& den) {
    const int64_t out = w.dim(0), in = w.dim(1), r = lo.a.dim(1);
    den.assign(size_t(out), 0.0);
    for (int64_t o = 0; o < out; ++o) {
      double ss = 0;
      for (int64_t i = 0; i < in; ++i) {
        double d = 0;
        for (int64_t k = 0; k < r; ++k) d += double(lo.b.f32()[k * out + o]) * lo.a.f32()[i * r + k];
        const double a = elem(w, o * in + i) + double(lo.scale) * d;
        ss += a * a;
      }
      den[size_t(o)] = std::sqrt(ss);
    }
  }

  void linear_lora_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, const LoraOperand* lo, LoraSaved* saved,
                       Tensor& y) override {
    if (!lo) {
      linear_fwd(x, w, bias, y);
      return;
    }
    const int64_t out = w.dim(0), in = w.dim(1), n = x.numel() / in, r = lo->a.dim(1);
    std::vector<double> u(size_t(n * r), 0.0), den;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t k = 0; k < r; ++k)
        for (int64_t i = 0; i < in; ++i) u[size_t(t * r + k)] += xdrop(x, *lo, t * in + i) * lo->a.f32()[i * r + k];
    if (lo->is_dora()) dora_denom(w, *lo, den);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t o = 0; o < out; ++o) {
        double s = 0, z = 0;
        for (int64_t i = 0; i < in; ++i) s += double(x.f32()[t * in + i]) * elem(w, o * in + i);
        for (int64_t k = 0; k < r; ++k) z += u[size_t(t * r + k)] * lo->b.f32()[k * out + o];
        double yv = s + double(lo->scale) * z;
        if (lo->is_dora()) {
          if (saved && saved->ypre.defined()) saved->ypre.f32()[t * out + o] = float(yv);
          yv *= double(lo->m.f32()[o]) / den[size_t(o)];
        }
        if (bias && bias->defined()) yv += elem(*bias, o);
        y.f32()[t * out + o] = float(yv);
      }
    if (saved && saved->u.defined())
      for (size_t i = 0; i < u.size(); ++i) saved->u.f32()[i] = float(u[i]);
    if (saved && saved->denom.defined())
      for (int64_t o = 0; o < out; ++o) saved->denom.f32()[o] = float(den[size_t(o)]);
  }

  void linear_bwd(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, bool dx_accumulate, Tensor* dw,
                  Tensor* dbias, const LoraOperand* lo, const LoraSaved* saved) override {
    const int64_t out = w.dim(0), in = w.dim(1), n = x.numel() / in;
    std::vector<double> g(size_t(n * out));
    for (int64_t i = 0; i < n * out; ++i) g[size_t(i)] = dy.f32()[i];
    if (lo && lo->is_dora()) {
      for (int64_t t = 0; t < n; ++t)
        for (int64_t o = 0; o < out; ++o) {
          const double den = saved->denom.f32()[o];
          if (lo->dm.defined())
            lo->dm.f32()[o] = float(double(lo->dm.f32()[o]) +
                                    double(dy.f32()[t * out + o]) * saved->ypre.f32()[t * out + o] / den);
          g[size_t(t * out + o)] *= double(lo->m.f32()[o]) / den;
        }
    }
    const int64_t r = lo ? lo->a.dim(1) : 0;
    std::vector<double> gb(size_t(n * r), 0.0);
    if (lo)
      for (int64_t t = 0; t < n; ++t)
        for (int64_t k = 0; k < r; ++k)
          for (int64_t o = 0; o < out; ++o)
            gb[size_t(t * r + k)] += double(lo->scale) * g[size_t(t * out + o)] * lo->b.f32()[k * out + o];
    if (dx)
      for (int64_t t = 0; t < n; ++t)
        for (int64_t i = 0; i < in; ++i) {
          double s = dx_accumulate ? double(dx->f32()[t * in + i]) : 0.0;
          for (int64_t o = 0; o < out; ++o) s += g[size_t(t * out + o)] * elem(w, o * in + i);
          if (lo) {
            double z = 0;
            for (int64_t k = 0; k < r; ++k) z += gb[size_t(t * r + k)] * lo->a.f32()[i * r + k];
            if (lo->dropout > 0.0f)
              z = lora_dropout_keep(*lo, t * in + i) ? z / (1.0 - double(lo->dropout)) : 0.0;
            s += z;
          }
          dx->f32()[t * in + i] = float(s);
        }
    if (dw)
      for (int64_t o = 0; o < out; ++o)
        for (int64_t i = 0; i < in; ++i) {
          double s = dw->f32()[o * in + i];
          for (int64_t t = 0; t < n; ++t) s += g[size_t(t * out + o)] * x.f32()[t * in + i];
          dw->f32()[o * in + i] = float(s);
        }
    if (dbias && dbias->defined())
      for (int64_t o = 0; o < out; ++o) {
        double s = dbias->f32()[o];
        for (int64_t t = 0; t < n; ++t) s += g[size_t(t * out + o)];
        dbias->f32()[o] = float(s);
      }
    if (!lo) return;
    if (lo->db.defined())
      for (int64_t k = 0; k < r; ++k)
        for (int64_t o = 0; o < out; ++o) {
          double s = lo->db.f32()[k * out + o];
          for (int64_t t = 0; t < n; ++t)
            s += double(lo->scale) * double(saved->u.f32()[t * r + k]) * g[size_t(t * out + o)];
          lo->db.f32()[k * out + o] = float(s);
        }
    if (lo->da.defined())
      for (int64_t i = 0; i < in; ++i)
        for (int64_t k = 0; k < r; ++k) {
          double s = lo->da.f32()[i * r + k];
          for (int64_t t = 0; t < n; ++t) s += xdrop(x, *lo, t * in + i) * gb[size_t(t * r + k)];
          lo->da.f32()[i * r + k] = float(s);
        }
  }

  using Ops::xent_fwd_bwd;
  void optimizer_update(const OptimizerSlot* slots, int64_t n, const OptimizerStep& s) override {
    cpu::optimizer_update(slots, n, s);  // already plain fp32 loops: the reference is the same code
  }
  void xent_fwd_bwd(Tensor& logits, const int32_t* targets, const float* mask, const float* dscale_p, bool grad,
                    float* row_loss) override {
    const float dscale = *dscale_p;
    const int64_t V = logits.dim(-1), n = logits.numel() / V;
    for (int64_t i = 0; i < n; ++i) {
      float* row = logits.f32() + i * V;
      if (mask[i] != 0.0f && (targets[i] < 0 || targets[i] >= V)) fail_input("batch targets", "target out of range");
      if (mask[i] == 0.0f) {
        row_loss[i] = 0.0f;
        if (grad) std::fill(row, row + V, 0.0f);
        continue;
      }
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < V; ++j) mx = std::max(mx, double(row[j]));
      for (int64_t j = 0; j < V; ++j) sum += std::exp(double(row[j]) - mx);
      const double lse = mx + std::log(sum);
      row_loss[i] = float(double(mask[i]) * (lse - row[targets[i]]));
      if (grad) {
        const double c = double(mask[i]) * dscale;
        for (int64_t j = 0; j < V; ++j)
          row[j] = float((std::exp(double(row[j]) - lse) - (j == targets[i] ? 1.0 : 0.0)) * c);
      }
    }
  }
};

}  // namespace

Ops& reference_ops() {
  static RefOps ops;
  return ops;
}

}  // namespace lora
