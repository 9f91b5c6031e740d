#!/usr/bin/env python3
"""Oracle for `lora convert --to gguf`: llama.cpp (llama-cpp-python) and gguf-py must read our GGUF exports.

For stories260K-hf (../shared) and a random tiny Llama with GQA (made with `lora init`, stories' tokenizer),
exports f32, f16, q8_0, q4_0 and q4_k, then for each file:
  - gguf-py's GGUFReader reads it (every tensor's type and shape);
  - llama.cpp loads it (logits_all=True), evaluates a prompt; its logits are compared with llama.cpp's on the
    f32 export (rel. L2 over all logits) and, for stories260K, on ../shared's original stories260K.gguf;
  - llama.cpp's greedy continuation equals ours (`lora generate --temp 0`) on the same file (required for
    f32, f16 and q8_0; for 4-bit types llama.cpp's CPU kernels quantize the activations to 8 bits, so a
    random model's near-ties may go the other way and a difference is only reported).
Prints one line per file. Exit 1 on a failed check.
Usage: tools/check_gguf_llamacpp.py [build-a/lora]   (tested with llama-cpp-python 0.3.36, gguf-py 0.19.0)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import gguf
import llama_cpp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("LORA_SHARED", os.path.join(ROOT, "..", "shared"))
LORA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "lora")
PROMPT = "Once upon a time, there was a little girl named Lily"
N_GEN = 24


def lora(*args):
    r = subprocess.run([LORA, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"lora {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def our_greedy(path):
    out = lora("generate", "--device", "cpu", "--model", path, "--prompt", PROMPT, "--ignore-chat-template",
               "--max-tokens", str(N_GEN), "--temp", "0", "--threads", "1")
    a, b = out.find("==========\n"), out.rfind("\n==========")
    return out[a + 11:b]


def llama_run(path):
    llm = llama_cpp.Llama(model_path=path, logits_all=True, verbose=False, n_ctx=256, seed=0)
    toks = llm.tokenize(PROMPT.encode(), add_bos=True)
    llm.eval(toks)
    logits = np.array(llm.scores[: len(toks)], dtype=np.float64)
    llm.reset()
    text = llm(PROMPT, max_tokens=N_GEN, temperature=0.0, top_k=1)["choices"][0]["text"]
    return toks, logits, text


def rel_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main():
    tmp = tempfile.mkdtemp(prefix="lora_gguf_oracle_")
    ok = True
    try:
        cfg_dir = os.path.join(tmp, "tiny_cfg")
        os.makedirs(cfg_dir)
        with open(os.path.join(cfg_dir, "config.json"), "w") as f:
            json.dump({"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
                       "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                       "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False}, f)
        shutil.copy(os.path.join(SHARED, "models/stories260K-hf/tokenizer.model"), cfg_dir)
        tiny = os.path.join(tmp, "tiny")
        lora("init", "--config", os.path.join(cfg_dir, "config.json"), "--out", tiny, "--dtype", "f32", "--seed", "5",
             "--std", "0.08")
        models = {"stories260K": os.path.join(SHARED, "models/stories260K-hf"), "tiny-gqa": tiny}
        for name, src in models.items():
            ref = None
            for kind in ["f32", "f16", "q8_0", "q4_0", "q4_k"]:
                out = os.path.join(tmp, f"{name}-{kind}.gguf")
                flag = ["--outtype", kind] if kind in ("f32", "f16") else ["--quantize", kind]
                lora("convert", "--model", src, "--to", "gguf", "--out", out, *flag)
                r = gguf.GGUFReader(out)
                types = sorted({t.tensor_type.name for t in r.tensors})
                toks, logits, text = llama_run(out)
                ours = our_greedy(out)
                line = f"{name:12s} {kind:5s} gguf-py: {len(r.tensors)} tensors {','.join(types)}"
                if kind == "f32":
                    ref = logits
                    if name == "stories260K":
                        _, orig, _ = llama_run(os.path.join(SHARED, "models/stories260K/stories260K.gguf"))
                        d = float(np.abs(logits - orig).max())
                        line += f" | vs original stories260K.gguf max|dlogit| {d:.3g}"
                        ok &= d == 0.0
                else:
                    line += f" | vs f32 export rel-L2 {rel_l2(logits, ref):.3g}"
                # llama-cpp-python drops bytes that are not whole UTF-8 characters, we print U+FFFD for them.
                same = text == ours.replace("\ufffd", "")
                ok &= same or kind in ("q4_0", "q4_k")  # 4-bit: the two engines' kernels may round differently
                line += f" | greedy {'==' if same else '!='} ours"
                if not same:
                    line += f"\n    llama.cpp: {text!r}\n    lora:      {ours!r}"
                print(line)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
