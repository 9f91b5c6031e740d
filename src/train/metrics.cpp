// metrics.jsonl writing/reading and the loss.svg plot (see metrics.h).
#include "train/metrics.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/mapped_file.h"

namespace lora {

namespace {

std::string num(const std::optional<double>& v) {
  if (!v || !std::isfinite(*v)) return "null";
  return fmt::format("{:.17g}", *v);
}
std::string num(double v) { return num(std::optional<double>(v)); }

std::string xml_escape(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (c == '<') r += "&lt;";
    else if (c == '>') r += "&gt;";
    else if (c == '&') r += "&amp;";
    else if (c == '"') r += "&quot;";
    else r += c;
  }
  return r;
}

}  // namespace

std::string metrics_line(const MetricsRecord& r) {
  return fmt::format(
      "{{\"type\": \"{}\", \"iter\": {}, \"train_loss\": {}, \"val_loss\": {}, \"learning_rate\": {}, "
      "\"iterations_per_sec\": {}, \"tokens_per_sec\": {}, \"trained_tokens\": {}, \"peak_mem_gb\": {}, "
      "\"elapsed_s\": {}, \"val_time_s\": {}}}",
      r.kind, r.iter, num(r.train_loss), num(r.val_loss), num(r.learning_rate), num(r.iterations_per_sec),
      num(r.tokens_per_sec), r.trained_tokens, num(r.peak_mem_gb), num(r.elapsed_s), num(r.val_time_s));
}

MetricsWriter::MetricsWriter(const std::string& path, int64_t keep_upto) : path_(path) {
  std::string kept;
  if (keep_upto >= 0 && path_exists(path)) {
    const std::string text = read_text_file(path);
    size_t i = 0;
    while (i < text.size()) {
      size_t j = text.find('\n', i);
      if (j == std::string::npos) j = text.size();
      const std::string line = text.substr(i, j - i);
      i = j + 1;
      auto obj = nlohmann::json::parse(line, nullptr, false);
      if (obj.is_discarded() || !obj.is_object() || !obj.contains("iter") || !obj["iter"].is_number_integer()) continue;
      if (obj["iter"].get<int64_t>() <= keep_upto) kept += line + "\n";
    }
  }
  write_file_atomic(path, kept.data(), kept.size());
  f_ = std::fopen(path.c_str(), "ab");
  if (!f_) fail_input(path, std::string("cannot open for writing: ") + std::strerror(errno), "check the adapter folder's permissions");
}

MetricsWriter::~MetricsWriter() {
  if (f_) std::fclose(f_);
}

void MetricsWriter::write(const MetricsRecord& r) {
  const std::string line = metrics_line(r) + "\n";
  std::fwrite(line.data(), 1, line.size(), f_);
  std::fflush(f_);
}

void metrics_read_losses(const std::string& path, std::vector<LossPoint>* train, std::vector<LossPoint>* val) {
  train->clear();
  val->clear();
  if (!path_exists(path)) return;
  const std::string text = read_text_file(path);
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find('\n', i);
    if (j == std::string::npos) j = text.size();
    auto obj = nlohmann::json::parse(text.substr(i, j - i), nullptr, false);
    i = j + 1;
    if (obj.is_discarded() || !obj.is_object() || !obj.contains("iter") || !obj["iter"].is_number_integer()) continue;
    const int64_t it = obj["iter"].get<int64_t>();
    if (obj.contains("train_loss") && obj["train_loss"].is_number()) train->push_back({it, obj["train_loss"].get<double>()});
    if (obj.contains("val_loss") && obj["val_loss"].is_number()) val->push_back({it, obj["val_loss"].get<double>()});
  }
  auto by_iter = [](const LossPoint& a, const LossPoint& b) { return a.iter < b.iter; };
  std::stable_sort(train->begin(), train->end(), by_iter);
  std::stable_sort(val->begin(), val->end(), by_iter);
}

namespace {

// Ticks at 1/2/5 × 10^k covering [lo, hi] with about n intervals.
std::vector<double> nice_ticks(double lo, double hi, int n) {
  std::vector<double> t;
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / n;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  double step = p;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= raw) {
      step = m * p;
      break;
    }
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) t.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  return t;
}

std::string tick_label(double v, double step) {
  if (step >= 1 && std::fabs(v) < 1e15) return fmt::format("{}", int64_t(std::llround(v)));
  const int dec = std::clamp(int(std::ceil(-std::log10(step))), 0, 6);
  return fmt::format("{:.{}f}", v, dec);
}

}  // namespace

std::string loss_svg(const std::vector<LossPoint>& train, const std::vector<LossPoint>& val, const std::string& title) {
  const double W = 720, H = 440, L = 72, R = 24, T = 44, B = 64;
  const double pw = W - L - R, ph = H - T - B;
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (const auto* v : {&train, &val})
    for (const LossPoint& p : *v) {
      if (!std::isfinite(p.loss)) continue;
      x0 = std::min(x0, double(p.iter)), x1 = std::max(x1, double(p.iter));
      y0 = std::min(y0, p.loss), y1 = std::max(y1, p.loss);
    }
  if (x0 > x1) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (x1 - x0 < 1) x0 = std::max(0.0, x0 - 1), x1 = x1 + 1;
  if (y1 - y0 < 1e-6) y0 -= 0.5, y1 += 0.5;
  const double pad = (y1 - y0) * 0.06;
  y0 -= pad, y1 += pad;
  auto X = [&](double x) { return L + (x - x0) / (x1 - x0) * pw; };
  auto Y = [&](double y) { return T + (1 - (y - y0) / (y1 - y0)) * ph; };

  std::string s;
  s += fmt::format("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
                   "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n",
                   W, H, W, H);
  s += fmt::format("<rect width=\"{}\" height=\"{}\" fill=\"white\"/>\n", W, H);
  s += fmt::format("<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n", L + pw / 2, xml_escape(title));
  // Grid and ticks.
  const auto xt = nice_ticks(x0, x1, 8), yt = nice_ticks(y0, y1, 6);
  const double xs = xt.size() > 1 ? xt[1] - xt[0] : 1, ys = yt.size() > 1 ? yt[1] - yt[0] : 1;
  for (double v : xt) {
    if (v < x0 - 1e-9 || v > x1 + 1e-9) continue;
    s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#e6e6e6\"/>\n", X(v), T, T + ph);
    s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"black\"/>\n", X(v), T + ph, T + ph + 5);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", X(v), T + ph + 19, tick_label(v, xs));
  }
  for (double v : yt) {
    if (v < y0 - 1e-12 || v > y1 + 1e-12) continue;
    s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" stroke=\"#e6e6e6\"/>\n", L, Y(v), L + pw);
    s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" stroke=\"black\"/>\n", L - 5, Y(v), L);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", L - 8, Y(v) + 4, tick_label(v, ys));
  }
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/>\n", L, T, pw, ph);
  s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">Iteration</text>\n", L + pw / 2, H - 18);
  s += fmt::format("<text x=\"18\" y=\"{0}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {0})\">Loss</text>\n", T + ph / 2);
  // Curves.
  auto curve = [&](const std::vector<LossPoint>& pts, const char* color, bool markers) {
    std::string pl;
    for (const LossPoint& p : pts)
      if (std::isfinite(p.loss)) pl += fmt::format("{:.1f},{:.1f} ", X(double(p.iter)), Y(p.loss));
    if (pl.empty()) return;
    s += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n", color, pl);
    if (markers)
      for (const LossPoint& p : pts)
        if (std::isfinite(p.loss))
          s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.5\" fill=\"{}\"/>\n", X(double(p.iter)), Y(p.loss), color);
  };
  curve(train, "#1f77b4", train.size() == 1);
  curve(val, "#ff7f0e", true);
  // Legend.
  const double lx = L + pw - 150, ly = T + 12;
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"140\" height=\"46\" fill=\"white\" stroke=\"#999\"/>\n", lx, ly);
  s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n", lx + 10, ly + 15, lx + 36, ly + 15);
  s += fmt::format("<text x=\"{}\" y=\"{}\">Train loss</text>\n", lx + 44, ly + 19);
  s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#ff7f0e\" stroke-width=\"2\"/>\n", lx + 10, ly + 33, lx + 36, ly + 33);
  s += fmt::format("<circle cx=\"{}\" cy=\"{}\" r=\"3.5\" fill=\"#ff7f0e\"/>\n", lx + 23, ly + 33);
  s += fmt::format("<text x=\"{}\" y=\"{}\">Validation loss</text>\n", lx + 44, ly + 37);
  s += "</svg>\n";
  return s;
}

}  // namespace lora
