// Learning-rate schedules against MLX (tests/fixtures/train/schedules.json, made by
// tools/gen_schedule_fixtures.py through mlx-lm 0.28.1's build_schedule), plus our flag schedules.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "test_util.h"
#include "tolerances.h"
#include "train/schedule.h"

namespace lora {
namespace {

using nlohmann::json;

TEST(Schedule, MatchesMlxBuildSchedule) {
  std::ifstream f(test::fixture("train/schedules.json"));
  std::stringstream ss;
  ss << f.rdbuf();
  const json fx = json::parse(ss.str());
  int n = 0;
  for (const json& c : fx["cases"]) {
    SCOPED_TRACE(c["config"].dump());
    LrSchedule s;
    s.name = c["config"]["name"];
    s.arguments = c["config"]["arguments"].get<std::vector<double>>();
    s.warmup = c["config"].value("warmup", 0);
    s.warmup_init = c["config"].value("warmup_init", 0.0);
    schedule_check(s, "lr_schedule");
    const auto steps = c["steps"].get<std::vector<int64_t>>();
    const auto want = c["values"].get<std::vector<double>>();
    for (size_t i = 0; i < steps.size(); ++i) {
      const double got = schedule_value(s, steps[i]);
      EXPECT_LE(std::fabs(got - want[i]), tol::kScheduleVsMlx * std::fabs(s.arguments[0]))
          << "step " << steps[i] << ": " << got << " vs " << want[i];
    }
    ++n;
  }
  EXPECT_EQ(n, 9);
}

TEST(Schedule, ConstantAndWarmupFromFlags) {
  const LrSchedule c = schedule_from_flags("constant", 1e-4, 0, 100);
  EXPECT_TRUE(c.name.empty());
  EXPECT_FLOAT_EQ(schedule_value(c, 0), 1e-4f);
  EXPECT_FLOAT_EQ(schedule_value(c, 99), 1e-4f);
  const LrSchedule w = schedule_from_flags("constant", 1e-4, 10, 100);
  EXPECT_FLOAT_EQ(schedule_value(w, 0), 0.0f);
  EXPECT_FLOAT_EQ(schedule_value(w, 5), 5e-5f);
  EXPECT_FLOAT_EQ(schedule_value(w, 10), 1e-4f);
  EXPECT_FLOAT_EQ(schedule_value(w, 60), 1e-4f);
}

TEST(Schedule, CosineFromFlagsDecaysToZeroAtTheEnd) {
  const int64_t total = 50;
  const LrSchedule s = schedule_from_flags("cosine", 1e-3, 0, total);
  EXPECT_FLOAT_EQ(schedule_value(s, 0), 1e-3f);
  EXPECT_NEAR(schedule_value(s, total), 0.0, 1e-9);
  float prev = 1;
  for (int64_t i = 0; i < total; ++i) {
    const float v = schedule_value(s, i);
    EXPECT_LE(v, prev);
    prev = v;
  }
  const LrSchedule lw = schedule_from_flags("linear", 1e-3, 5, total);
  EXPECT_FLOAT_EQ(schedule_value(lw, 5), 1e-3f);  // end of warmup: the peak
  EXPECT_LT(schedule_value(lw, 30), 1e-3f);
  EXPECT_THROW(schedule_from_flags("onecycle", 1e-3, 0, 10), Error);
}

TEST(Schedule, CheckRejectsBadConfigs) {
  LrSchedule s;
  s.name = "cosine_decay";
  s.arguments = {1e-3};
  EXPECT_THROW(schedule_check(s, "lr_schedule"), Error);
  s.arguments = {1e-3, 0};
  EXPECT_THROW(schedule_check(s, "lr_schedule"), Error);
  s.arguments = {1e-3, 10};
  EXPECT_NO_THROW(schedule_check(s, "lr_schedule"));
  s.name = "warmup_cosine";
  EXPECT_THROW(schedule_check(s, "lr_schedule"), Error);
  try {
    LrSchedule b;
    b.name = "linear_schedule";
    b.arguments = {1.0, 2.0};
    schedule_check(b, "lr_schedule");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lr_schedule: arguments"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lora
