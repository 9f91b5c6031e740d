// Acceptance test on a real instruction-tuned model: SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to
// f32 at load). For a few chat prompts, our prompt ids (chat template + tokenizer from the GGUF), our
// first-step logits and our greedy generation (argmax, CPU backend) must equal what transformers does in
// float32 on the same dequantized weights (tests/fixtures/smollm2/greedy.json, made by
// tools/gen_smollm2_greedy.py). A generated id may differ from the reference only at a step where the
// reference's top-1/top-2 margin is below tol::kSmolLM2NearTie (f32 summation order can flip a near-tie);
// comparison stops there and the test says so. Skips when the model has not been fetched.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "cpu/cpu_ops.h"
#include "infer/generate.h"
#include "infer/sampler.h"
#include "io/tokenizer.h"
#include "model/llama.h"
#include "model/model.h"
#include "test_util.h"
#include "tolerances.h"

namespace lora {
namespace {

struct StepRef {
  int32_t top1 = 0;
  double top1_logit = 0;
  double margin = 0;  // reference top-1 minus top-2 logit
};

struct Case {
  std::string system, prompt;
  std::vector<int32_t> prompt_ids, generated_ids;
  std::vector<StepRef> steps;
  std::vector<int32_t> first_ids;  // top-50 ids of the first step, best first
  std::vector<double> first_logits;
};

struct Fixture {
  std::vector<Case> cases;
  std::vector<int32_t> stop_ids;
  int64_t max_new = 0;
};

const Fixture& fixture() {
  static const Fixture fx = [] {
    Fixture f;
    std::ifstream in(test::fixture("smollm2/greedy.json"));
    LORA_CHECK(in.good(), "missing tests/fixtures/smollm2/greedy.json (run tools/gen_smollm2_greedy.py)");
    const auto j = nlohmann::json::parse(in);
    f.max_new = j.at("max_new_tokens").get<int64_t>();
    f.stop_ids = j.at("stop_ids").get<std::vector<int32_t>>();
    for (const auto& c : j.at("cases")) {
      Case k;
      k.system = c.at("system").get<std::string>();
      k.prompt = c.at("prompt").get<std::string>();
      k.prompt_ids = c.at("prompt_ids").get<std::vector<int32_t>>();
      k.generated_ids = c.at("generated_ids").get<std::vector<int32_t>>();
      for (const auto& s : c.at("steps"))
        k.steps.push_back({s.at("top1").get<int32_t>(), s.at("top1_logit").get<double>(), s.at("margin").get<double>()});
      k.first_ids = c.at("first_step_top").at("ids").get<std::vector<int32_t>>();
      k.first_logits = c.at("first_step_top").at("logits").get<std::vector<double>>();
      LORA_CHECK(k.steps.size() == k.generated_ids.size(), "fixture: steps and generated_ids differ in length");
      f.cases.push_back(std::move(k));
    }
    return f;
  }();
  return fx;
}

// The model is ~0.5 GB as f32: load it once for all tests in this file.
const Model& smollm2() {
  static const Model m = model_load(test::smollm2_gguf());
  return m;
}
const Tokenizer& smollm2_tokenizer() {
  static const std::unique_ptr<Tokenizer> t = tokenizer_load(test::smollm2_gguf());
  return *t;
}

// Relative-to-one error as everywhere in the golden tests: |got - want| / (1 + |want|).
double rel_err(double got, double want) { return std::fabs(got - want) / (1.0 + std::fabs(want)); }

TEST(SmolLM2Greedy, FixtureIsNotEmpty) {
  LORA_REQUIRE_SMOLLM2();
  // Guards against an emptied greedy.json making the loops below vacuous.
  ASSERT_GE(fixture().cases.size(), 4u);
  for (const auto& c : fixture().cases) {
    EXPECT_FALSE(c.prompt_ids.empty());
    EXPECT_GE(c.generated_ids.size(), 5u);
  }
}

// Our chat template rendering + tokenizer (both from the GGUF) give transformers' prompt ids.
TEST(SmolLM2Greedy, PromptIdsMatchTransformers) {
  LORA_REQUIRE_SMOLLM2();
  const Tokenizer& tok = smollm2_tokenizer();
  ASSERT_FALSE(tok.chat_template.empty()) << "the GGUF's tokenizer.chat_template was not loaded";
  for (const auto& c : fixture().cases) {
    SCOPED_TRACE("prompt: " + c.prompt);
    PromptOptions o;
    o.system_prompt = c.system;
    EXPECT_EQ(prompt_tokens(tok, c.prompt, o), c.prompt_ids);
  }
}

// The last prompt position's logits (one prefill) agree with transformers' on its top-50 ids.
TEST(SmolLM2Greedy, FirstStepLogitsMatchTransformers) {
  LORA_REQUIRE_SMOLLM2();
  const Model& m = smollm2();
  const int64_t V = m.cfg.vocab;
  double worst = 0;
  for (const auto& c : fixture().cases) {
    SCOPED_TRACE("prompt: " + c.prompt);
    LlamaSession sess(m, cpu_ops(), 256);
    std::vector<float> logits(static_cast<size_t>(V));  // (V)
    sess.forward(c.prompt_ids.data(), int64_t(c.prompt_ids.size()), logits.data());
    double case_worst = 0, case_abs = 0;
    for (size_t i = 0; i < c.first_ids.size(); ++i) {
      const double got = logits[static_cast<size_t>(c.first_ids[i])];
      case_worst = std::max(case_worst, rel_err(got, c.first_logits[i]));
      case_abs = std::max(case_abs, std::fabs(got - c.first_logits[i]));
      EXPECT_LE(rel_err(got, c.first_logits[i]), tol::kSmolLM2Logits)
          << "id " << c.first_ids[i] << ": got " << got << ", transformers " << c.first_logits[i];
    }
    EXPECT_EQ(argmax(logits.data(), V), c.first_ids[0]);
    worst = std::max(worst, case_worst);
    std::cout << "[ smollm2  ] first-step top-50 logits, max |diff|/(1+|ref|) = " << case_worst << ", max |diff| = " << case_abs
              << "  (" << c.prompt
              << ")\n";
  }
  std::cout << "[ smollm2  ] first-step logits: worst " << worst << " (tolerance " << tol::kSmolLM2Logits << ")\n";
}

// Greedy decoding (prefill, then one token at a time: the matvec path) equals transformers' ids.
TEST(SmolLM2Greedy, GreedyGenerationMatchesTransformers) {
  LORA_REQUIRE_SMOLLM2();
  const Model& m = smollm2();
  const Tokenizer& tok = smollm2_tokenizer();
  const Fixture& fx = fixture();
  const int64_t V = m.cfg.vocab;
  for (const auto& c : fx.cases) {
    SCOPED_TRACE("prompt: " + c.prompt);
    LlamaSession sess(m, cpu_ops(), 256);
    std::vector<float> logits(static_cast<size_t>(V));  // (V)
    sess.forward(c.prompt_ids.data(), int64_t(c.prompt_ids.size()), logits.data());
    std::vector<int32_t> got;
    double worst_top1 = 0;  // our logit of the reference's top-1 id vs its value, over matched steps
    std::string note = "exact";
    for (size_t step = 0; step < c.generated_ids.size(); ++step) {
      const StepRef& ref = c.steps[step];
      worst_top1 = std::max(worst_top1, rel_err(logits[static_cast<size_t>(ref.top1)], ref.top1_logit));
      const int32_t id = argmax(logits.data(), V);
      if (id != c.generated_ids[step]) {
        if (ref.margin < tol::kSmolLM2NearTie) {
          note = "near-tie at step " + std::to_string(step) + " (reference margin " + std::to_string(ref.margin) +
                 "): ours " + std::to_string(id) + ", transformers " + std::to_string(c.generated_ids[step]) +
                 "; compared up to there";
          break;
        }
        ADD_FAILURE() << "step " << step << ": we chose " << id << " (" << tok.token_bytes(id) << "), transformers "
                      << c.generated_ids[step] << " (" << tok.token_bytes(c.generated_ids[step])
                      << ") with a top-1/top-2 margin of " << ref.margin << "; our logits there: "
                      << logits[static_cast<size_t>(id)] << " vs " << logits[static_cast<size_t>(c.generated_ids[step])];
        note = "MISMATCH at step " + std::to_string(step);
        break;
      }
      got.push_back(id);
      const bool stop = std::find(fx.stop_ids.begin(), fx.stop_ids.end(), id) != fx.stop_ids.end();
      if (stop || int64_t(got.size()) == fx.max_new) break;
      sess.forward(&id, 1, logits.data());
    }
    if (note == "exact") {
      EXPECT_EQ(got, c.generated_ids);
    }
    EXPECT_LE(worst_top1, tol::kSmolLM2Logits);
    std::cout << "[ smollm2  ] " << c.prompt << ": " << got.size() << "/" << c.generated_ids.size()
              << " ids equal, " << note << "; top-1 logit max |diff|/(1+|ref|) = " << worst_top1 << "\n"
              << "             reply: " << tok.decode(got) << "\n";
  }
}

}  // namespace
}  // namespace lora
