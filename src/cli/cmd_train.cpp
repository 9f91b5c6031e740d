// `lora train`: mlx_lm.lora --train's flags and defaults (v0.28.1), resolved as mlx-lm does: defaults,
// then a YAML config (-c), then the flags actually given (CLI11's count(), so a flag set to its
// default still overrides the YAML). Plus ours: --lora-rank/--lora-scale/--lora-alpha/--lora-dropout/
// --lora-keys, --lr-schedule/--warmup, --grad-accumulation-steps, --epochs, --resume, --threads, --device.
// Prints mlx-lm's lines (Loading..., Trainable parameters, Starting training..., Iter N: ...) to
// stdout; warnings and the live progress bar go to stderr.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/error.h"
#include "io/chat_template.h"
#include "io/dataset.h"
#include "io/mapped_file.h"
#include "model/lora.h"
#include "train/adapter_io.h"
#include "train/schedule.h"
#include "train/train_config.h"
#include "train/trainer.h"

namespace lora::cli {

namespace {

struct TrainFlags {
  std::string model = "mlx_model", data = "data/", fine_tune_type = "lora", optimizer = "adam";
  std::string resume_adapter_file, adapter_path = "adapters", config, lora_keys, lr_schedule = "constant";
  std::string chat_template, quantize;
  bool train = false, mask_prompt = false, test = false, grad_checkpoint = false, resume = false;
  int64_t num_layers = 16, batch_size = 4, iters = 1000, epochs = 0, val_batches = 25, steps_per_report = 10;
  int64_t steps_per_eval = 200, save_every = 100, test_batches = 500, max_seq_length = 2048, grad_accumulation_steps = 1;
  int64_t seed = 0, lora_rank = 8, warmup = 0;
  double learning_rate = 1e-5, lora_scale = 20.0, lora_alpha = 160.0, lora_dropout = 0.0;
  int threads = 0;
  std::string device = "auto";
};

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    std::string t = s.substr(i, j - i);
    while (!t.empty() && t.front() == ' ') t.erase(t.begin());
    while (!t.empty() && t.back() == ' ') t.pop_back();
    if (!t.empty()) out.push_back(t);
    i = j + 1;
  }
  return out;
}

int run_train(const TrainFlags& f, const CLI::App& cmd) {
  using nlohmann::json;
  auto given = [&](const char* flag) { return cmd.count(flag) > 0; };
  apply_threads(f.threads);

  // 1. Defaults < YAML < flags given.
  json cfg = train_defaults();
  json yaml = json::object();
  if (given("--config")) {
    std::printf("Loading configuration file %s\n", f.config.c_str());
    yaml = yaml_file_to_json(f.config);
    train_args_merge(cfg, yaml, f.config);
    cfg["config"] = f.config;
  }
  json cli = json::object();
  if (given("--model")) cli["model"] = f.model;
  if (given("--data")) cli["data"] = f.data;
  if (given("--fine-tune-type")) cli["fine_tune_type"] = f.fine_tune_type;
  if (given("--optimizer")) cli["optimizer"] = f.optimizer;
  if (given("--mask-prompt")) cli["mask_prompt"] = true;
  if (given("--num-layers")) cli["num_layers"] = f.num_layers;
  if (given("--batch-size")) cli["batch_size"] = f.batch_size;
  if (given("--iters")) cli["iters"] = f.iters;
  if (given("--epochs")) cli["epochs"] = f.epochs;
  if (given("--val-batches")) cli["val_batches"] = f.val_batches;
  if (given("--learning-rate")) cli["learning_rate"] = f.learning_rate;
  if (given("--steps-per-report")) cli["steps_per_report"] = f.steps_per_report;
  if (given("--steps-per-eval")) cli["steps_per_eval"] = f.steps_per_eval;
  if (given("--resume-adapter-file")) cli["resume_adapter_file"] = f.resume_adapter_file;
  if (given("--adapter-path")) cli["adapter_path"] = f.adapter_path;
  if (given("--save-every")) cli["save_every"] = f.save_every;
  if (given("--test")) cli["test"] = true;
  if (given("--test-batches")) cli["test_batches"] = f.test_batches;
  if (given("--max-seq-length")) cli["max_seq_length"] = f.max_seq_length;
  if (given("--grad-checkpoint")) cli["grad_checkpoint"] = true;
  if (given("--grad-accumulation-steps")) cli["grad_accumulation_steps"] = f.grad_accumulation_steps;
  if (given("--seed")) cli["seed"] = f.seed;
  if (given("--quantize")) cli["quantize"] = f.quantize;
  json lp = json::object();
  if (given("--lora-rank")) lp["rank"] = f.lora_rank;
  if (given("--lora-scale")) lp["scale"] = f.lora_scale;
  if (given("--lora-dropout")) lp["dropout"] = f.lora_dropout;
  if (given("--lora-keys")) {
    json keys = json::array();
    for (const std::string& k : split_commas(f.lora_keys)) keys.push_back(k);
    if (keys.empty()) fail_input("--lora-keys", "is empty", "e.g. --lora-keys self_attn.q_proj,self_attn.v_proj");
    lp["keys"] = keys;
  }
  if (!lp.empty()) cli["lora_parameters"] = lp;
  train_args_merge(cfg, cli, "command line");
  cfg["train"] = true;  // `lora train` always trains (mlx-lm records --train here)
  if (given("--lora-alpha")) {
    if (given("--lora-scale")) fail_input("--lora-alpha", "was given together with --lora-scale", "give one: scale = alpha / rank");
    const json& r = cfg["lora_parameters"]["rank"];
    const double rank = r.is_number() ? r.get<double>() : 8.0;
    if (!(rank >= 1)) fail_input("--lora-rank", "must be at least 1", "");
    cfg["lora_parameters"]["scale"] = f.lora_alpha / rank;
  }
  const bool iters_given = given("--iters") || yaml.contains("iters");
  const bool epochs_given = (given("--epochs") || yaml.contains("epochs")) && !cfg["epochs"].is_null();
  if (iters_given && epochs_given)
    fail_input("--epochs", "was given together with --iters", "give one: --iters N counts optimizer steps, --epochs N passes over train.jsonl");
  TrainArgs args = train_args_parse(cfg);
  if (given("--warmup") && f.warmup < 0) fail_input("--warmup", "is negative", "give the number of warmup steps");

  // 2. Model, tokenizer, data.
  std::printf("Loading pretrained model\n");
  std::fflush(stdout);
  Backend backend = backend_open(f.device);
  if (backend.is_gpu()) std::printf("Device: %s\n", backend.description.c_str());
  Model model = model_load(args.model, backend_load_options(backend, args.quantize));
  auto tok = tokenizer_load(args.model);
  if (tok->vocab_size() > model.cfg.vocab)
    fail_input(args.model, fmt::format("the tokenizer has {} tokens but the model's vocabulary is {}", tok->vocab_size(), model.cfg.vocab),
               "the tokenizer files do not belong to these weights");
  std::printf("Loading datasets\n");
  std::fflush(stdout);
  DatasetOptions dopts;
  dopts.mask_prompt = args.mask_prompt;
  if (!f.chat_template.empty()) dopts.chat_template = chat_template_resolve(f.chat_template);
  DataSplits data = dataset_load_dir(args.data, *tok, dopts, /*need_train=*/true, /*need_test=*/args.test);
  const int64_t n_train = int64_t(data.train.examples.size());
  if (n_train < args.batch_size)
    fail_input("--batch-size", fmt::format("is {} but {}/train.jsonl has only {} examples", args.batch_size, args.data, n_train),
               "use a smaller --batch-size or add examples");
  if (data.valid && int64_t(data.valid->examples.size()) < args.batch_size && args.val_batches != 0)
    fail_input("--batch-size", fmt::format("is {} but {}/valid.jsonl has only {} examples", args.batch_size, args.data, data.valid->examples.size()),
               "use a smaller --batch-size, add validation examples, or --val-batches 0");
  if (args.test && int64_t(data.test->examples.size()) < args.batch_size)
    fail_input("--batch-size", fmt::format("is {} but {}/test.jsonl has only {} examples", args.batch_size, args.data, data.test->examples.size()),
               "use a smaller --batch-size or add test examples");

  // 3. Epochs -> iterations; schedule flags (written back so adapter_config.json records them).
  if (args.epochs > 0) {
    const int64_t per_epoch = n_train / args.batch_size;
    cfg["iters"] = (args.epochs * per_epoch + args.grad_accumulation_steps - 1) / args.grad_accumulation_steps;
  }
  if (given("--lr-schedule") || given("--warmup")) {
    const int64_t iters = cfg["iters"].get<int64_t>();
    if (f.warmup >= iters) fail_input("--warmup", fmt::format("{} steps is not below --iters {}", f.warmup, iters), "use fewer warmup steps");
    const LrSchedule s = schedule_from_flags(f.lr_schedule, args.learning_rate, f.warmup, iters);
    if (s.name.empty()) cfg["lr_schedule"] = nullptr;
    else cfg["lr_schedule"] = {{"name", s.name}, {"arguments", s.arguments}, {"warmup", s.warmup}, {"warmup_init", 0.0}};
  }
  args = train_args_parse(cfg);

  // 4. Trainables.
  std::printf("Training\n");
  if (args.lora.num_layers > model.cfg.n_layers)
    fail_input("--num-layers", fmt::format("is {} but the model has only {} layers", args.lora.num_layers, model.cfg.n_layers),
               fmt::format("use 1..{} (the last N blocks) or -1 for all", model.cfg.n_layers));
  Adapter adapter = adapter_create(model, args.lora, args.seed);
  if (args.resume_adapter_file) {
    std::printf("Loading fine-tuned weights from %s\n", args.resume_adapter_file->c_str());
    adapter_load_weights(*args.resume_adapter_file, adapter, model, /*require_all=*/false);
  }
  std::printf("%s\n", adapter_trainable_summary(model, adapter).c_str());
  std::fflush(stdout);
  make_dirs(args.adapter_path);
  const std::string cfg_text = train_args_config_json(cfg, args);
  write_file_atomic(path_join(args.adapter_path, kAdapterConfigFile), cfg_text.data(), cfg_text.size());

  // 5. Train, then test.
  TrainerOptions o;
  o.iters = args.iters;
  o.batch_size = args.batch_size;
  o.val_batches = args.val_batches;
  o.steps_per_report = args.steps_per_report;
  o.steps_per_eval = args.steps_per_eval;
  o.save_every = args.save_every;
  o.max_seq_length = args.max_seq_length;
  o.grad_accumulation_steps = args.grad_accumulation_steps;
  o.grad_checkpoint = args.grad_checkpoint;
  o.seed = args.seed;
  o.adapter_path = args.adapter_path;
  o.resume = f.resume;
  o.optimizer = args.optimizer;
  o.schedule = args.schedule;
  Ops& ops = *backend.ops;
  const Model placed = backend.place(model);  // the weights the backend computes on (a BF16 copy on a GPU)
  backend.place(adapter);
  o.peak_mem_bytes = [&backend] { return backend.peak_bytes(); };
  train_run(placed, adapter, ops, data.train.examples, data.valid ? &data.valid->examples : nullptr, o);
  if (args.test) {
    std::printf("Testing\n");
    std::fflush(stdout);
    const double loss = evaluate_loss(placed, adapter, ops, data.test->examples, args.batch_size, args.test_batches,
                                      args.max_seq_length, args.data + "/test.jsonl");
    std::printf("Test loss %s, Test ppl %s.\n", format_fixed3(loss).c_str(), format_fixed3(std::exp(loss)).c_str());
  }
  return 0;
}

}  // namespace

void register_train(CLI::App& app, Action& action) {
  auto f = std::make_shared<TrainFlags>();
  auto* cmd = app.add_subcommand("train", "Fine-tune with LoRA, DoRA or full fine-tuning (mlx_lm.lora --train's flags)");
  cmd->add_option("--model,-m", f->model, "Model: a Hugging Face folder or a .gguf file");
  cmd->add_flag("--train", f->train, "Accepted for mlx-lm compatibility (`lora train` always trains)");
  cmd->add_option("--data", f->data, "Folder with train.jsonl, valid.jsonl and test.jsonl");
  cmd->add_option("--fine-tune-type", f->fine_tune_type, "lora, dora or full")->check(CLI::IsMember({"lora", "dora", "full"}));
  cmd->add_option("--optimizer", f->optimizer, "adam, adamw or sgd (MLX's semantics)");
  cmd->add_flag("--mask-prompt", f->mask_prompt, "Train only on the completion / last message (chat and completions data)");
  cmd->add_option("--num-layers", f->num_layers, "Number of blocks to fine-tune, counted from the last (-1 = all)");
  cmd->add_option("--batch-size", f->batch_size, "Minibatch size");
  cmd->add_option("--iters", f->iters, "Iterations (optimizer steps) to train for; with --resume, the total");
  cmd->add_option("--epochs", f->epochs, "Train for this many passes over train.jsonl instead of --iters");
  cmd->add_option("--val-batches", f->val_batches, "Validation batches (-1 = the whole validation set, 0 = none)");
  cmd->add_option("--learning-rate", f->learning_rate, "Learning rate");
  cmd->add_option("--steps-per-report", f->steps_per_report, "Iterations between training loss reports");
  cmd->add_option("--steps-per-eval", f->steps_per_eval, "Iterations between validations");
  cmd->add_option("--resume-adapter-file", f->resume_adapter_file, "Start from the weights of this adapter: adapters.safetensors (or its mlx-lm folder), a PEFT folder or adapter_model.safetensors, or a GGUF-LoRA .gguf");
  cmd->add_option("--adapter-path", f->adapter_path, "Folder for adapters.safetensors, adapter_config.json, checkpoints and metrics");
  cmd->add_option("--save-every", f->save_every, "Save a checkpoint every N iterations");
  cmd->add_flag("--test", f->test, "Evaluate on test.jsonl after training");
  cmd->add_option("--test-batches", f->test_batches, "Test batches (-1 = the whole test set)");
  cmd->add_option("--max-seq-length", f->max_seq_length, "Longest sequence in tokens (longer ones are truncated)");
  cmd->add_option("--config,-c", f->config, "YAML configuration file (mlx-lm's keys; flags given override it)");
  cmd->add_flag("--grad-checkpoint", f->grad_checkpoint, "Recompute activations in backward to save memory");
  cmd->add_option("--grad-accumulation-steps", f->grad_accumulation_steps, "Micro-batches per optimizer step");
  cmd->add_option("--seed", f->seed, "Seed for data order, LoRA initialisation and dropout");
  cmd->add_option("--lora-rank", f->lora_rank, "LoRA rank (lora_parameters.rank)");
  cmd->add_option("--lora-scale", f->lora_scale, "LoRA scale (lora_parameters.scale)");
  cmd->add_option("--lora-alpha", f->lora_alpha, "LoRA alpha: sets the scale to alpha / rank (PEFT's convention)");
  cmd->add_option("--lora-dropout", f->lora_dropout, "LoRA dropout probability");
  cmd->add_option("--lora-keys", f->lora_keys, "Comma-separated layers to adapt (default self_attn.q_proj,self_attn.v_proj)");
  cmd->add_option("--lr-schedule", f->lr_schedule, "cosine, linear (decay to 0 at the last iteration) or constant")
      ->check(CLI::IsMember({"cosine", "linear", "constant"}));
  cmd->add_option("--warmup", f->warmup, "Linear warmup steps from 0 to the learning rate");
  cmd->add_flag("--resume", f->resume, "Continue from the newest checkpoint in --adapter-path (optimizer state included)");
  cmd->add_option("--chat-template", f->chat_template, "Override the chat template for chat/completions data (name or Jinja file)");
  cmd->add_option("--threads,-t", f->threads, "CPU threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  add_device_flag(cmd, f->device);
  cmd->add_option("--quantize", f->quantize,
                  "QLoRA: quantize the base's weights at load (q8_0, q4_0, q4_k, ...; llama.cpp's blocks). A quantized "
                  "GGUF base trains as it is without this");
  cmd->callback([f, cmd, &action] { action = [f, cmd] { return run_train(*f, *cmd); }; });
}

}  // namespace lora::cli
