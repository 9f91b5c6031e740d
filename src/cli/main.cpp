// lora — the command-line entry point: the subcommand table. Only cli/ parses argv or calls exit().
// Errors: lora::Error (bad input) prints "error: ..." and a hint, exit code 1; internal errors print
// the failed check, exit code 1 as well (never an abort or a core dump).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "cli/common.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"lora — fine-tune (LoRA, DoRA, full) and run Llama-family models natively", "lora"};
  app.set_version_flag("--version", "lora 0.1.0");
  app.require_subcommand(1);
  app.option_defaults()->always_capture_default();
  app.get_formatter()->column_width(34);

  lora::cli::Action action;
  lora::cli::register_generate(app, action);
  lora::cli::register_chat(app, action);
  lora::cli::register_tokenize(app, action);
  lora::cli::register_init(app, action);
  lora::cli::register_data(app, action);
  lora::cli::register_train(app, action);
  lora::cli::register_fuse(app, action);
  lora::cli::register_convert(app, action);
  lora::cli::register_bench(app, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 1;
  }
  try {
    return action ? action() : 1;
  } catch (const lora::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.full().c_str());
    return 1;
  } catch (const lora::InternalError& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s\nThis is a bug in lora; please report it with the command line.\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\nhint: use a smaller model, a shorter --max-kv-size, or a machine with more memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
