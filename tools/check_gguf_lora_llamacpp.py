"""Checks our GGUF-LoRA export against llama.cpp itself (llama-cpp-python) on stories260K (../shared):

 1. A random PEFT LoRA adapter (numpy, B non-zero, all seven targets, rank 4, alpha 10) for stories260K-hf:
    PEFT's logits (transformers + PeftModel, f32) vs llama.cpp's with our `lora convert --to gguf` of it on
    stories260K.gguf. An independent oracle of the export: names, shapes, alpha and the Q/K permutation of B.
 2. The same adapter: greedy text of `lora generate --temp 0 --adapter-path OURS.gguf` vs llama.cpp's greedy
    completion with that file (both on stories260K.gguf).
 3. The gguf-py fixtures (tests/fixtures/gguf_lora, written as convert_lora_to_gguf.py does): converted by us to
    mlx-lm and back to GGUF-LoRA (F32 factors), llama.cpp's logits with our file vs the fixture's expected logits
    (llama.cpp's with the original, or with its F32 twin for the Q8_0/F16 ones): 0 expected.
 4. Only with CONVERT_LORA_TO_GGUF=path/to/llama.cpp/convert_lora_to_gguf.py: llama.cpp's own converter on the
    adapter of 1 (--outtype f32) vs ours: the same tensor names, types, shapes and bytes, and the same alpha.
The other direction (our import of llama.cpp-layout files gives llama.cpp's logits) is test_gguf_adapter.

  python3 tools/check_gguf_lora_llamacpp.py [path/to/lora]    # prints every number; exit 1 over the limits
"""
import json, os, subprocess, sys, tempfile

import numpy as np
import llama_cpp
from safetensors.numpy import load_file, save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
LORA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "lora")
SHARED = os.environ.get("LORA_SHARED", os.path.join(ROOT, "..", "shared"))
BASE_GGUF = os.path.join(SHARED, "models", "stories260K", "stories260K.gguf")
BASE_HF = os.path.join(SHARED, "models", "stories260K-hf")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "gguf_lora")
IDS = [1, 403, 407, 261, 378, 280, 263, 281, 354, 285, 268, 300]
PROMPT = "Once upon a time"


def llama(lora_path):
    return llama_cpp.Llama(model_path=BASE_GGUF, lora_path=lora_path, n_ctx=128, n_batch=128, logits_all=True,
                           type_k=0, type_v=0, flash_attn=False, n_threads=1, verbose=False, seed=0)


def llama_logits(lora_path, ids=IDS):
    llm = llama(lora_path)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def lora(*args):
    r = subprocess.run([LORA, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"lora {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def write_peft(dirname, rank=4, alpha=10.0, seed=4):
    cfg = json.load(open(os.path.join(BASE_HF, "config.json")))
    C, F, H, KV, L = (cfg[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                                       "num_hidden_layers"))
    D = C // H
    shapes = {"self_attn.q_proj": (H * D, C), "self_attn.k_proj": (KV * D, C), "self_attn.v_proj": (KV * D, C),
              "self_attn.o_proj": (C, H * D), "mlp.gate_proj": (F, C), "mlp.up_proj": (F, C), "mlp.down_proj": (C, F)}
    rng = np.random.default_rng(seed)
    t = {}
    for i in range(L):
        for k, (out, inp) in shapes.items():
            p = f"base_model.model.model.layers.{i}.{k}"
            t[p + ".lora_A.weight"] = (rng.uniform(-1, 1, (rank, inp)) / np.sqrt(inp)).astype(np.float32)
            t[p + ".lora_B.weight"] = (rng.standard_normal((out, rank)) * 0.3).astype(np.float32)
    os.makedirs(dirname, exist_ok=True)
    save_file(t, os.path.join(dirname, "adapter_model.safetensors"), metadata={"format": "pt"})
    json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0,
               "target_modules": [k.split(".")[1] for k in shapes], "bias": "none", "use_dora": False,
               "use_rslora": False, "fan_in_fan_out": False, "base_model_name_or_path": BASE_HF},
              open(os.path.join(dirname, "adapter_config.json"), "w"), indent=2)


def peft_logits(dirname, ids=IDS):
    import torch
    from peft import PeftModel
    from transformers import LlamaForCausalLM
    pm = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(BASE_HF, torch_dtype=torch.float32), dirname)
    with torch.no_grad():
        return pm(input_ids=torch.tensor([ids])).logits[0].numpy()


def rel(a, b):
    return float((np.abs(a - b) / (1 + np.abs(b))).max())


def main():
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        peft, ours = os.path.join(tmp, "peft"), os.path.join(tmp, "ours.gguf")
        write_peft(peft)
        lora("convert", "--model", BASE_GGUF, "--adapter-path", peft, "--to", "gguf", "--out", ours)
        want, got, base = peft_logits(peft), llama_logits(ours), llama_logits(None)
        d = rel(got, want)
        print(f"1. PEFT logits vs llama.cpp with our GGUF export: max |d|/(1+|want|) = {d:.2e} "
              f"(the adapter moves the logits by {np.abs(want - base).max():.2f})")
        ok &= d <= 1e-4

        llm = llama(ours)
        theirs = llm.create_completion(PROMPT, max_tokens=40, temperature=0.0, top_k=1)["choices"][0]["text"]
        out = lora("generate", "--device", "cpu", "--temp", "0", "--model", BASE_GGUF, "--adapter-path", ours,
                   "--prompt", PROMPT, "--ignore-chat-template", "--max-tokens", "40", "--threads", "1")
        mine = "\n".join(l for l in out.splitlines() if l.strip("=") != "")  # drop the ========== separators
        same = mine.strip() == (PROMPT + theirs).strip() or mine.strip() == theirs.strip()
        print(f"2. greedy text, ours vs llama.cpp with our GGUF export: {'equal' if same else 'DIFFERENT'}\n"
              f"   ours:      {mine.strip()!r}\n   llama.cpp: {theirs.strip()!r}")
        ok &= same

        for name in ["lora_f32", "lora_q8_0", "lora_noalpha"]:
            src = os.path.join(FIXTURES, name + ".gguf")
            mlx, back = os.path.join(tmp, name + "_mlx"), os.path.join(tmp, name + "_back.gguf")
            lora("convert", "--model", BASE_GGUF, "--adapter-path", src, "--to", "mlx", "--out", mlx)
            lora("convert", "--model", BASE_GGUF, "--adapter-path", mlx, "--to", "gguf", "--out", back)
            orig = load_file(os.path.join(FIXTURES, name + ".expected.safetensors"))["logits"]
            d = float(np.abs(llama_logits(back) - orig).max())
            print(f"3. {name}: llama.cpp logits with our re-export vs with the gguf-py original: max |d| = {d:.2e}")
            ok &= d == 0
        conv = os.environ.get("CONVERT_LORA_TO_GGUF")
        if conv:
            theirs = os.path.join(tmp, "theirs.gguf")
            env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(conv), "gguf-py"))
            subprocess.run([sys.executable, conv, "--base", BASE_HF, "--outtype", "f32", "--outfile", theirs, peft],
                           check=True, capture_output=True, cwd=os.path.dirname(conv), env=env)
            import gguf
            ta = {t.name: t for t in gguf.GGUFReader(theirs).tensors}
            tb = {t.name: t for t in gguf.GGUFReader(ours).tensors}
            differ = [n for n in ta if n not in tb or ta[n].tensor_type != tb[n].tensor_type
                      or list(ta[n].shape) != list(tb[n].shape) or not np.array_equal(ta[n].data, tb[n].data)]
            alpha = [float(gguf.GGUFReader(f).fields["adapter.lora.alpha"].parts[-1][0]) for f in (theirs, ours)]
            print(f"4. convert_lora_to_gguf.py vs ours: {len(ta)} vs {len(tb)} tensors, {len(differ)} differ; "
                  f"alpha {alpha[0]} vs {alpha[1]}")
            ok &= not differ and len(ta) == len(tb) and alpha[0] == alpha[1]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
