// Adam / AdamW / SGD against MLX's own updates (tests/fixtures/train/optimizers.json, made by
// tools/gen_schedule_fixtures.py with mlx 0.32.4): six steps on two tensors for each configuration.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"
#include "tolerances.h"
#include "train/optimizer.h"

namespace lora {
namespace {

using nlohmann::json;

json load_fixture(const std::string& name) {
  std::ifstream f(test::fixture("train/" + name));
  std::stringstream ss;
  ss << f.rdbuf();
  return json::parse(ss.str());
}

TrainParam make_param(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& v) {
  TrainParam p;
  p.name = name;
  p.value = tensor_alloc(DTYPE_F32, shape.data(), int(shape.size()));
  p.grad = tensor_alloc(DTYPE_F32, shape.data(), int(shape.size()));
  std::copy(v.begin(), v.end(), p.value.t.f32());
  return p;
}

OptimizerConfig config_of(const json& c) {
  OptimizerKind k;
  EXPECT_TRUE(optimizer_kind_from_name(c["optimizer"].get<std::string>(), &k));
  OptimizerConfig cfg = optimizer_defaults(k);
  for (const auto& [key, v] : c["options"].items()) {
    if (key == "betas") cfg.beta1 = v[0].get<double>(), cfg.beta2 = v[1].get<double>();
    else if (key == "eps") cfg.eps = v.get<double>();
    else if (key == "bias_correction") cfg.bias_correction = v.get<bool>();
    else if (key == "weight_decay") cfg.weight_decay = v.get<double>();
    else if (key == "momentum") cfg.momentum = v.get<double>();
    else if (key == "dampening") cfg.dampening = v.get<double>();
    else if (key == "nesterov") cfg.nesterov = v.get<bool>();
    else ADD_FAILURE() << "unknown option " << key;
  }
  return cfg;
}

TEST(Optimizer, MatchesMlx) {
  const json fx = load_fixture("optimizers.json");
  const auto shapes = fx["shapes"].get<std::vector<std::vector<int64_t>>>();
  const auto w0 = fx["w0"].get<std::vector<std::vector<float>>>();
  const auto grads = fx["grads"].get<std::vector<std::vector<std::vector<float>>>>();
  int n_cases = 0;
  for (const json& c : fx["cases"]) {
    SCOPED_TRACE(c["optimizer"].dump() + " " + c["options"].dump());
    Adapter a;
    a.params.push_back(make_param("p0", shapes[0], w0[0]));
    a.params.push_back(make_param("p1", shapes[1], w0[1]));
    Optimizer opt(config_of(c), a);
    const float lr = float(c["learning_rate"].get<double>());
    for (size_t s = 0; s < grads.size(); ++s) {
      for (size_t i = 0; i < 2; ++i) std::copy(grads[s][i].begin(), grads[s][i].end(), a.params[i].grad.t.f32());
      opt.update(a, lr);
      for (size_t i = 0; i < 2; ++i) {
        const auto want = c["weights"][s][i].get<std::vector<float>>();
        for (size_t j = 0; j < want.size(); ++j) {
          const double got = a.params[i].value.t.f32()[j];
          const double err = std::fabs(got - want[j]) / (1.0 + std::fabs(want[j]));
          EXPECT_LE(err, tol::kOptimizerVsMlx) << "step " << s + 1 << " tensor " << i << " [" << j << "]: " << got << " vs " << want[j];
        }
      }
    }
    EXPECT_EQ(opt.step(), int64_t(grads.size()));
    ++n_cases;
  }
  EXPECT_EQ(n_cases, 9);
}

TEST(Optimizer, StateTensorsPerKind) {
  Adapter a;
  a.params.push_back(make_param("x", {2, 3}, {1, 2, 3, 4, 5, 6}));
  Optimizer adam(optimizer_defaults(OPT_ADAM), a);
  auto st = adam.state_tensors();
  ASSERT_EQ(st.size(), 2u);
  EXPECT_EQ(st[0].name, "m.x");
  EXPECT_EQ(st[1].name, "v.x");
  EXPECT_EQ(st[0].t.numel(), 6);
  Optimizer sgd(optimizer_defaults(OPT_SGD), a);
  EXPECT_TRUE(sgd.state_tensors().empty());  // plain SGD keeps no state
  OptimizerConfig mom = optimizer_defaults(OPT_SGD);
  mom.momentum = 0.9;
  Optimizer sgdm(mom, a);
  ASSERT_EQ(sgdm.state_tensors().size(), 1u);
  EXPECT_EQ(sgdm.state_tensors()[0].name, "v.x");
}

TEST(Optimizer, Defaults) {
  EXPECT_DOUBLE_EQ(optimizer_defaults(OPT_ADAMW).weight_decay, 0.01);
  EXPECT_DOUBLE_EQ(optimizer_defaults(OPT_ADAM).weight_decay, 0.0);
  EXPECT_DOUBLE_EQ(optimizer_defaults(OPT_ADAM).beta1, 0.9);
  EXPECT_DOUBLE_EQ(optimizer_defaults(OPT_ADAM).beta2, 0.999);
  EXPECT_DOUBLE_EQ(optimizer_defaults(OPT_ADAM).eps, 1e-8);
  OptimizerKind k;
  EXPECT_FALSE(optimizer_kind_from_name("adafactor", &k));
}

}  // namespace
}  // namespace lora
