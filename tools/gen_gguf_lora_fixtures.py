"""Writes tests/fixtures/gguf_lora/: GGUF-LoRA adapters for stories260K written with gguf-py the way llama.cpp's
convert_lora_to_gguf.py writes them, and llama.cpp's own logits with each adapter applied (llama-cpp-python).

Each adapter starts as PEFT-style factors A (r, in), B (out, r) (random, B non-zero) and is written like the
converter does: general.architecture "llama", general.type "adapter", adapter.type "lora", adapter.lora.alpha
(f32), tensors blk.{i}.{attn_q,...}.weight.lora_a = A (ggml ne [in, r]) and .lora_b = B (ne [r, out]), with the
rows of attn_q's / attn_k's B permuted as LlamaModel.permute does (n_head / n_head_kv: HF's rotate-half rows to
llama.cpp's interleaved pairs). Variants:
  lora_f32     rank 4, alpha 8, all seven targets, blocks 2..4, F32 (the converter's default --outtype)
  lora_q8_0    rank 2, alpha 3, q/k/v/o, every block, --outtype q8_0: Q8_0 where a row is whole 32-blocks
               (lora_a of the attention, in = 64), else F16 (the converter's fallback; every lora_b, r = 2)
  lora_noalpha rank 3, no adapter.lora.alpha (llama.cpp then uses scale 1), q/v of the last block, F16
Beside each NAME.gguf, NAME.expected.safetensors holds `ids` (12 token ids, int32) and llama.cpp's `logits`
(12, 512) for them on ../shared/models/stories260K/stories260K.gguf (CPU, F32 KV cache, no flash attention). For
the Q8_0/F16 variants the logits are llama.cpp's with an F32 twin of the file (every factor dequantized by gguf-py):
ggml multiplies Q8_0/F16 weights with activations rounded to Q8_0/F16, a rounding of its own that moves its logits
(printed when this runs) and that a reader of the file's values should not be held to.

  python3 tools/gen_gguf_lora_fixtures.py      # needs numpy, gguf (gguf-py), llama-cpp-python, safetensors
"""
import json, os, sys

import numpy as np
import gguf
import llama_cpp
from safetensors.numpy import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHARED = os.environ.get("LORA_SHARED", os.path.join(ROOT, "..", "shared"))
BASE_GGUF = os.path.join(SHARED, "models", "stories260K", "stories260K.gguf")
BASE_HF = os.path.join(SHARED, "models", "stories260K-hf", "config.json")
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf_lora")
IDS = np.array([1, 403, 407, 261, 378, 280, 263, 281, 354, 285, 268, 300], dtype=np.int32)

cfg = json.load(open(BASE_HF))
C, F, H, KV = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
D = C // H
L = cfg["num_hidden_layers"]
# GGUF key -> (out, in, heads to permute B's rows with, or 0)
SHAPES = {"attn_q": (H * D, C, H), "attn_k": (KV * D, C, KV), "attn_v": (KV * D, C, 0), "attn_output": (C, H * D, 0),
          "ffn_gate": (F, C, 0), "ffn_up": (F, C, 0), "ffn_down": (C, F, 0)}


def permute(w, n_head):
    # convert_hf_to_gguf's LlamaModel.permute on the rows of w (a LoraTorchTensor permutes only B's rows)
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_adapter(name, rank, alpha, keys, layers, outtype, seed):
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(os.path.join(OUT, name + ".gguf"), "llama")
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    if alpha is not None:
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for i in layers:
        for k in keys:
            out, inp, heads = SHAPES[k]
            A = (rng.uniform(-1, 1, (rank, inp)) / np.sqrt(inp)).astype(np.float32)  # PEFT lora_A (r, in)
            B = (rng.standard_normal((out, rank)) * 0.5).astype(np.float32)         # PEFT lora_B (out, r)
            if heads:
                B = permute(B, heads)
            for suffix, t in ((".lora_a", A), (".lora_b", B)):
                tname = f"blk.{i}.{k}.weight{suffix}"
                if outtype == "f32":
                    w.add_tensor(tname, t)
                elif outtype == "f16" or t.shape[-1] % 32 != 0:  # the converter falls back to F16 when Q8_0 cannot hold a row
                    w.add_tensor(tname, t.astype(np.float16))
                else:
                    q = gguf.quants.quantize(t, gguf.GGMLQuantizationType.Q8_0)
                    w.add_tensor(tname, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def f32_twin(src, dst):
    # The same adapter with every factor dequantized to F32 by gguf-py: llama.cpp multiplies Q8_0/F16 factors
    # with activations rounded to Q8_0/F16 (ggml's vec_dot types), which is ggml's rounding, not the file's values.
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, "llama")
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    if gguf.Keys.Adapter.LORA_ALPHA in r.fields:
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(r.fields[gguf.Keys.Adapter.LORA_ALPHA].parts[-1][0]))
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape)]
        w.add_tensor(t.name, gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_cpp_logits(lora_path):
    llm = llama_cpp.Llama(model_path=BASE_GGUF, lora_path=lora_path, n_ctx=64, n_batch=64, logits_all=True,
                          type_k=0, type_v=0, flash_attn=False, n_threads=1, verbose=False, seed=0)
    llm.reset()
    llm.eval(IDS.tolist())
    return np.array(llm.scores[: len(IDS)], dtype=np.float32)


def main():
    os.makedirs(OUT, exist_ok=True)
    variants = [
        ("lora_f32", 4, 8.0, list(SHAPES), range(2, L), "f32", 1),
        ("lora_q8_0", 2, 3.0, ["attn_q", "attn_k", "attn_v", "attn_output"], range(L), "q8_0", 2),
        ("lora_noalpha", 3, None, ["attn_q", "attn_v"], [L - 1], "f16", 3),
    ]
    base = llama_cpp_logits(None)
    for name, rank, alpha, keys, layers, outtype, seed in variants:
        path = os.path.join(OUT, name + ".gguf")
        write_adapter(name, rank, alpha, keys, layers, outtype, seed)
        as_stored = llama_cpp_logits(path)
        logits = as_stored
        if outtype != "f32":
            twin = os.path.join(OUT, name + ".f32twin.gguf")
            f32_twin(path, twin)
            logits = llama_cpp_logits(twin)
            os.remove(twin)
        save_file({"ids": IDS, "logits": logits}, os.path.join(OUT, name + ".expected.safetensors"))
        print(f"{name}: llama.cpp logits moved by {np.abs(logits - base).max():.3f} from the base's; "
              f"ggml's activation rounding for {outtype} factors moves them by {np.abs(as_stored - logits).max():.2e}")


if __name__ == "__main__":
    sys.exit(main())
