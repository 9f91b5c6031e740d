// `lora convert --model IN --to gguf|hf --out OUT`: model conversion (not implemented yet).
#include "cli/convert.h"
#include "core/error.h"

namespace lora::cli {

int run_convert_model(const ConvertFlags& f) {
  fail_input("--adapter-path", "is required: converting models is not implemented yet",
             "pass --adapter-path to convert an adapter");
}

}  // namespace lora::cli
