// Adapter folders: weights round trip (bit-exact), validation of names and shapes with messages naming
// the file and tensor, adapter_config.json (sorted keys, explicit LoRA keys, mlx-lm's fields), the
// resume state, and fusing LoRA/DoRA/full adapters into a model copy. On the 2-layer golden model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/device_mem.h"
#include "core/error.h"
#include "core/rng.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "cpu/cpu_ops.h"
#include "model/llama.h"
#include "model/llama_train.h"
#include "model/model.h"
#include "test_util.h"
#include "tolerances.h"
#include "train/adapter_fuse.h"
#include "train/adapter_io.h"
#include "train/optimizer.h"
#include "train/train_config.h"

namespace lora {
namespace {

using nlohmann::json;

std::string tmp_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/lora_adapter_io_" + name;
  EXPECT_EQ(std::system(("rm -rf '" + d + "' && mkdir -p '" + d + "'").c_str()), 0);
  return d;
}

Model tiny() { return model_load(test::fixture("golden/llama_untied")); }

// Fills every trainable with distinct pseudo-random values (B is zero after creation).
void randomize(Adapter& a, uint64_t seed) {
  Rng r(seed);
  for (TrainParam& p : a.params)
    for (int64_t i = 0; i < p.value.t.numel(); ++i) p.value.t.f32()[i] = r.uniform() - 0.5f;
}

LoraConfig lora_cfg(FineTuneType t) {
  LoraConfig c;
  c.type = t;
  c.rank = 4;
  c.scale = 2.5;
  c.num_layers = 2;
  c.keys = {LIN_Q, LIN_V, LIN_DOWN};
  return c;
}

void write_config(const std::string& dir, const LoraConfig& c) {
  json j = train_defaults();
  j["fine_tune_type"] = fine_tune_type_name(c.type);
  j["num_layers"] = c.num_layers;
  TrainArgs a;
  a.lora = c;
  const std::string s = train_args_config_json(j, a);
  write_file_atomic(path_join(dir, kAdapterConfigFile), s.data(), s.size());
}

TEST(AdapterIo, SaveLoadRoundTripIsExact) {
  const Model m = tiny();
  for (FineTuneType t : {FT_LORA, FT_DORA, FT_FULL}) {
    SCOPED_TRACE(fine_tune_type_name(t));
    const std::string dir = tmp_dir(std::string("rt_") + fine_tune_type_name(t));
    Adapter a = adapter_create(m, lora_cfg(t), 3);
    randomize(a, 11);
    write_config(dir, a.cfg);
    adapter_save_weights(path_join(dir, kAdapterWeightsFile), a);
    // The file is mlx-lm's: fp32, {"format": "mlx"}, mlx-lm names.
    auto f = SafetensorsFile::open(path_join(dir, kAdapterWeightsFile));
    EXPECT_EQ(f->metadata().at("format"), "mlx");
    EXPECT_EQ(f->tensors().size(), a.params.size());
    if (t != FT_FULL) {
      const SafeTensorInfo* la = f->find("model.layers.1.self_attn.q_proj.lora_a");
      ASSERT_NE(la, nullptr);
      EXPECT_EQ(la->dtype, DTYPE_F32);
      EXPECT_EQ(la->shape, (std::vector<int64_t>{32, 4}));  // (in, r)
      const SafeTensorInfo* lb = f->find("model.layers.0.mlp.down_proj.lora_b");
      ASSERT_NE(lb, nullptr);
      EXPECT_EQ(lb->shape, (std::vector<int64_t>{4, 32}));  // (r, out)
      EXPECT_EQ(f->find("model.layers.0.self_attn.v_proj.m") != nullptr, t == FT_DORA);
    } else {
      EXPECT_NE(f->find("model.layers.1.mlp.up_proj.weight"), nullptr);
    }
    const Adapter b = adapter_load(dir, m);
    EXPECT_EQ(b.cfg.type, t);
    ASSERT_EQ(b.params.size(), a.params.size());
    for (size_t i = 0; i < a.params.size(); ++i) {
      EXPECT_EQ(b.params[i].name, a.params[i].name);
      EXPECT_EQ(std::memcmp(b.params[i].value.t.data, a.params[i].value.t.data, size_t(a.params[i].value.t.nbytes())), 0)
          << a.params[i].name;
    }
  }
}

TEST(AdapterIo, KeysInferredFromTensorsWhenConfigHasNone) {
  const Model m = tiny();
  const std::string dir = tmp_dir("nokeys");
  Adapter a = adapter_create(m, lora_cfg(FT_LORA), 3);
  adapter_save_weights(path_join(dir, kAdapterWeightsFile), a);
  const std::string cfg = R"({"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": {"rank": 4, "scale": 2.5, "dropout": 0.0}})";
  write_file_atomic(path_join(dir, kAdapterConfigFile), cfg.data(), cfg.size());
  const LoraConfig c = adapter_read_config(dir);
  EXPECT_EQ(c.keys, (std::vector<LinearKey>{LIN_Q, LIN_V, LIN_DOWN}));
  EXPECT_NO_THROW(adapter_load(dir, m));
}

TEST(AdapterIo, MismatchesNameTheFileAndTensor) {
  const Model m = tiny();
  const std::string dir = tmp_dir("bad");
  Adapter a = adapter_create(m, lora_cfg(FT_LORA), 3);
  write_config(dir, a.cfg);
  // A rank-8 file against a rank-4 config.
  LoraConfig c8 = lora_cfg(FT_LORA);
  c8.rank = 8;
  Adapter a8 = adapter_create(m, c8, 3);
  const std::string file = path_join(dir, kAdapterWeightsFile);
  adapter_save_weights(file, a8);
  try {
    adapter_load(dir, m);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(file), std::string::npos) << msg;
    EXPECT_NE(msg.find(".lora_a"), std::string::npos) << msg;
    EXPECT_NE(msg.find(", 8), the model needs ("), std::string::npos) << msg;
    EXPECT_FALSE(e.hint().empty());
  }
  // A tensor the adapter does not have (layer 5 of a 2-layer model).
  const float zero[4] = {0, 0, 0, 0};
  safetensors_write(file, {{"model.layers.5.self_attn.q_proj.lora_a", DTYPE_F32, {2, 2}, zero}}, {{"format", "mlx"}});
  try {
    adapter_load_weights(file, a, false);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.5.self_attn.q_proj.lora_a"), std::string::npos) << e.what();
  }
  // Missing tensors: an error for inference, a warning (values kept) for --resume-adapter-file.
  safetensors_write(file, {}, {{"format", "mlx"}});
  EXPECT_THROW(adapter_load_weights(file, a, true), Error);
  EXPECT_NO_THROW(adapter_load_weights(file, a, false));
  EXPECT_THROW(adapter_load(tmp_dir("empty"), m), Error);
}

TEST(AdapterIo, ConfigJsonIsSortedWithMlxFields) {
  json j = train_defaults();
  j["model"] = "m";
  j["train"] = true;
  TrainArgs a = train_args_parse(j);
  a.lora.keys = {LIN_Q, LIN_K, LIN_DOWN};
  const std::string s = train_args_config_json(j, a);
  const json back = json::parse(s);
  for (const char* k : {"adapter_path", "batch_size", "data", "fine_tune_type", "grad_checkpoint", "iters", "learning_rate",
                        "lora_parameters", "lr_schedule", "mask_prompt", "max_seq_length", "model", "num_layers", "optimizer",
                        "optimizer_config", "resume_adapter_file", "save_every", "seed", "steps_per_eval", "steps_per_report",
                        "test", "test_batches", "train", "val_batches"})
    EXPECT_TRUE(back.contains(k)) << k;
  EXPECT_EQ(back["lora_parameters"]["keys"], json({"self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj"}));
  EXPECT_EQ(back["lora_parameters"]["rank"], 8);
  EXPECT_EQ(back["lora_parameters"]["scale"], 20.0);
  EXPECT_EQ(back["num_layers"], 16);
  // Sorted keys, indent 4, as Python's json.dump(sort_keys order, indent=4).
  EXPECT_EQ(s.substr(0, 27), "{\n    \"adapter_path\": \"adap");
  EXPECT_LT(s.find("\"batch_size\""), s.find("\"iters\""));
  EXPECT_LT(s.find("\"lora_parameters\""), s.find("\"model\""));
  EXPECT_NE(s.find("\"learning_rate\": 1e-05"), std::string::npos);
  // Full fine-tuning writes lora_parameters: null (as mlx-lm).
  a.lora.type = FT_FULL;
  EXPECT_TRUE(json::parse(train_args_config_json(j, a))["lora_parameters"].is_null());
}

TEST(AdapterIo, TrainStateRoundTrip) {
  const Model m = tiny();
  const std::string dir = tmp_dir("state");
  Adapter a = adapter_create(m, lora_cfg(FT_LORA), 3);
  for (TrainParam& p : a.params)
    for (int64_t i = 0; i < p.grad.t.numel(); ++i) p.grad.t.f32()[i] = 0.01f * float(i % 7) - 0.02f;
  Optimizer opt(optimizer_defaults(OPT_ADAMW), a);
  opt.update(a, 1e-3f);
  opt.update(a, 1e-3f);
  TrainState s;
  s.iteration = 7;
  s.optimizer_step = opt.step();
  s.seed = 42;
  s.optimizer = "adamw";
  s.fine_tune_type = "lora";
  s.batch_size = 3;
  s.trained_tokens = 1234;
  s.report_loss_sum = 1.0 / 3.0;
  s.report_steps = 2;
  adapter_save_weights(path_join(dir, adapter_checkpoint_name(7)), a);
  train_state_save(dir, s, opt);
  adapter_save_weights(path_join(dir, adapter_checkpoint_name(9)), a);  // no state beside it: not resumable
  EXPECT_EQ(train_state_latest(dir), std::optional<int64_t>(7));
  EXPECT_EQ(train_state_latest(tmp_dir("nostate")), std::nullopt);

  Optimizer opt2(optimizer_defaults(OPT_ADAMW), a);
  const TrainState r = train_state_load(dir, 7, opt2);
  EXPECT_EQ(r.iteration, 7);
  EXPECT_EQ(r.seed, 42u);
  EXPECT_EQ(r.trained_tokens, 1234);
  EXPECT_EQ(r.report_loss_sum, 1.0 / 3.0);  // exact through JSON
  EXPECT_EQ(opt2.step(), 2);
  auto s1 = opt.state_tensors(), s2 = opt2.state_tensors();
  ASSERT_EQ(s1.size(), s2.size());
  for (size_t i = 0; i < s1.size(); ++i) EXPECT_EQ(tensor_read_f32(s1[i].t), tensor_read_f32(s2[i].t)) << s1[i].name;
  // Another optimizer kind cannot take this state.
  Optimizer sgd(optimizer_defaults(OPT_SGD), a);
  EXPECT_THROW(train_state_load(dir, 7, sgd), Error);
}

// W' rows as the fused model holds them vs W + scale·BᵀAᵀ computed here in double.
TEST(AdapterFuse, LoraDoraFullWeights) {
  const Model m = tiny();
  for (FineTuneType t : {FT_LORA, FT_DORA, FT_FULL}) {
    SCOPED_TRACE(fine_tune_type_name(t));
    Adapter a = adapter_create(m, lora_cfg(t), 5);
    randomize(a, 17);
    const Model f = adapter_fuse(m, a);
    if (t == FT_FULL) {
      EXPECT_EQ(f.layers[1].w_up.data, a.full[1].w_up.data);
      EXPECT_EQ(f.layers[0].wq.data, a.full[0].wq.data);
      continue;
    }
    EXPECT_EQ(f.layers[1].wk.data, m.layers[1].wk.data);  // not adapted: shared
    const LoraLinear& ll = *a.lora[1][LIN_Q];
    const Tensor& w = m.layers[1].wq;  // (out, in) f32
    const Tensor& fw = f.layers[1].wq;
    ASSERT_EQ(fw.dtype, DTYPE_F32);
    const int64_t out = w.dim(0), in = w.dim(1), r = ll.a.dim(1);
    double worst = 0;
    for (int64_t o = 0; o < out; ++o) {
      std::vector<double> row(static_cast<size_t>(in));
      double nrm = 0;
      for (int64_t i = 0; i < in; ++i) {
        double d = 0;
        for (int64_t k = 0; k < r; ++k) d += double(ll.b.f32()[k * out + o]) * ll.a.f32()[i * r + k];
        row[i] = w.f32()[o * in + i] + a.cfg.scale * d;
        nrm += row[i] * row[i];
      }
      const double g = t == FT_DORA ? ll.m.f32()[o] / std::sqrt(nrm) : 1.0;
      for (int64_t i = 0; i < in; ++i) worst = std::max(worst, std::fabs(fw.f32()[o * in + i] - g * row[i]));
    }
    EXPECT_LE(worst, tol::kAdapterFuse);
  }
}

// The fused model run by the inference session gives the logits the training forward gives with the
// adapter applied (so generate --adapter-path sees what training optimised).
TEST(AdapterFuse, InferenceLogitsMatchTrainingForward) {
  const Model m = tiny();
  const std::vector<int32_t> toks{1, 5, 9, 22, 40, 3, 17, 60, 11, 2, 33, 7};
  const int64_t T = int64_t(toks.size()), V = m.cfg.vocab;
  for (FineTuneType t : {FT_LORA, FT_DORA, FT_FULL}) {
    SCOPED_TRACE(fine_tune_type_name(t));
    Adapter a = adapter_create(m, lora_cfg(t), 5);
    Rng r(23);
    for (TrainParam& p : a.params)  // a small random perturbation of every trainable
      for (int64_t i = 0; i < p.value.t.numel(); ++i) p.value.t.f32()[i] += 0.05f * (r.uniform() - 0.5f);
    std::vector<float> want(size_t(T * V)), got(size_t(T * V));
    std::vector<int32_t> targets(toks.begin() + 1, toks.end());
    targets.push_back(0);
    std::vector<float> mask(size_t(T), 1.0f);
    TrainSessionOptions so;
    so.max_batch = 1;
    so.max_len = T;
    TrainSession ts(m, a, cpu_ops(), so);
    ts.logits(TrainBatchView{1, T, toks.data(), targets.data(), mask.data()}, want.data());
    const Model f = adapter_fuse(m, a);
    LlamaSession ls(f, cpu_ops(), 64);
    ls.forward(toks.data(), T, got.data(), /*all_logits=*/true);
    double worst = 0, moved = 0;
    std::vector<float> base(size_t(T * V));
    LlamaSession lb(m, cpu_ops(), 64);
    lb.forward(toks.data(), T, base.data(), true);
    for (size_t i = 0; i < want.size(); ++i) {
      worst = std::max(worst, std::fabs(double(got[i]) - want[i]) / (1.0 + std::fabs(want[i])));
      moved = std::max(moved, std::fabs(double(base[i]) - want[i]));
    }
    EXPECT_LE(worst, tol::kFusedVsAdapterLogits);
    EXPECT_GT(moved, 100 * tol::kFusedVsAdapterLogits);  // the adapter does change the logits
  }
}

}  // namespace
}  // namespace lora
