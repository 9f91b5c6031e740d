"""PEFT parity, the peer's half: transformers + PEFT on a random Llama, written for our test to replay.

Makes OUT/model (an HF folder: config.json + model.safetensors, bf16, random weights as transformers
initialises them), OUT/adapter (our mlx-layout adapter: adapters.safetensors + adapter_config.json) holding
the exact LoRA initialisation PEFT uses here (A as PEFT draws it, B random too so the adapter changes the
logits from the first step), OUT/expected.safetensors with the batches, PEFT's logits for batch 0 and the
losses of every optimizer step (torch Adam, which bias-corrects: our `bias_correction` Adam), and prints a
JSON summary. tests/cuda/test_cuda_peft_parity.cpp (LORA_PEFT_PARITY_DIR=OUT) loads the same files
and compares. scripts/gpu-check.sh runs both on the GPU machine:

  python3 tools/peft_parity.py --out /tmp/parity                    # TinyLlama shape, CUDA, bf16
  python3 tools/peft_parity.py --out /tmp/parity --shape tiny --device cpu --dtype float32   # quick local check

Versions used for the committed numbers: see docs/numerics.md (transformers 5.17 / PEFT 0.21 / torch 2.11
on the GPU machine).
"""
import argparse, json, os

import torch


def config(shape):
    from transformers import LlamaConfig
    if shape == "tinyllama":
        return LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                           num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                           rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1,
                           eos_token_id=2)
    return LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1,
                       eos_token_id=2)


def check_export(a):
    """Our PEFT export, loaded by PEFT itself, must give our logits (bf16 tolerance 0.25 scaled, f32 1e-4)."""
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM
    from peft import PeftModel
    dtype = getattr(torch, a.dtype)
    model = LlamaForCausalLM.from_pretrained(os.path.join(a.out, "model"), dtype=dtype).to(a.device)
    pm = PeftModel.from_pretrained(model, os.path.join(a.out, "ours_peft")).to(a.device)
    pm.eval()
    exp = load_file(os.path.join(a.out, "expected.safetensors"))
    ours = load_file(os.path.join(a.out, "ours_logits.safetensors"))["logits"]
    with torch.no_grad():
        logits = pm(input_ids=exp["inputs"][0].long().to(a.device)).logits.float().cpu()
    m = exp["mask"][0] > 0
    d = ((logits - ours).abs() / (1 + ours.abs()))[m].max().item()
    tol = 0.25 if a.dtype == "bfloat16" else 1e-4
    print(json.dumps({"peft_check_export": a.out, "max_scaled_logit_diff": d, "tolerance": tol}))
    raise SystemExit(0 if d <= tol else 1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--check-export", action="store_true",
                   help="after test_cuda_peft_parity: load OUT/ours_peft (our trained adapter in PEFT's layout) with "
                        "PeftModel.from_pretrained and compare PEFT's logits of batch 0 with OUT/ours_logits.safetensors")
    p.add_argument("--shape", choices=["tinyllama", "tiny"], default="tinyllama")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=89)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--scale", type=float, default=20.0)
    p.add_argument("--num-layers", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    if a.check_export:
        return check_export(a)

    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(a.seed)
    dtype = getattr(torch, a.dtype)
    cfg = config(a.shape)
    cfg.torch_dtype = dtype
    with torch.device(a.device):
        model = LlamaForCausalLM(cfg).to(dtype)
    model.config.use_cache = False
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(os.path.join(a.out, "model"), safe_serialization=True)

    L = cfg.num_hidden_layers
    layers = list(range(max(0, L - a.num_layers), L))
    lcfg = LoraConfig(r=a.rank, lora_alpha=a.scale * a.rank, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                      bias="none", task_type="CAUSAL_LM", layers_to_transform=layers)
    model = get_peft_model(model, lcfg)
    g = torch.Generator(device="cpu").manual_seed(a.seed + 1)
    adapter = {}
    for name, mod in model.named_modules():
        if not hasattr(mod, "lora_A") or "default" not in mod.lora_A:
            continue
        with torch.no_grad():
            B = mod.lora_B["default"].weight  # (out, r)
            B.copy_(torch.randn(B.shape, generator=g) * 0.02)
        # name: base_model.model.model.layers.{i}.self_attn.q_proj
        key = name.split("base_model.model.", 1)[1]
        A = mod.lora_A["default"].weight.detach().float().cpu()  # (r, in)
        adapter[key + ".lora_a"] = A.t().contiguous()                 # mlx: (in, r)
        adapter[key + ".lora_b"] = B.detach().float().cpu().t().contiguous()  # mlx: (r, out)
    adir = os.path.join(a.out, "adapter")
    os.makedirs(adir, exist_ok=True)
    save_file(adapter, os.path.join(adir, "adapters.safetensors"), metadata={"format": "mlx"})
    with open(os.path.join(adir, "adapter_config.json"), "w") as f:
        json.dump({"fine_tune_type": "lora", "num_layers": min(a.num_layers, L),
                   "lora_parameters": {"rank": a.rank, "scale": a.scale, "dropout": 0.0,
                                       "keys": ["self_attn.q_proj", "self_attn.v_proj"]}}, f, indent=2)

    # Batches: random ids, ragged lengths (the last row shorter), padding masked out.
    B_, T = a.batch_size, a.seq_len
    inputs = torch.randint(3, cfg.vocab_size, (a.steps, B_, T + 1), generator=g)
    lens = torch.full((a.steps, B_), T + 1)
    lens[:, -1] = (T + 1) * 2 // 3
    exp = {"inputs": inputs[:, :, :-1].to(torch.int32).contiguous(), "targets": inputs[:, :, 1:].to(torch.int32).contiguous()}
    mask = (torch.arange(T)[None, None, :] < (lens[:, :, None] - 1)).float()
    exp["mask"] = mask.contiguous()

    model.train()
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=a.lr)

    def run(step, want_logits=False):
        ids = inputs[step, :, :-1].clone()
        labels = inputs[step, :, 1:].clone()
        labels[mask[step] == 0] = -100
        ids = ids.to(a.device)
        out = model(input_ids=ids)
        logits = out.logits.float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).to(a.device),
                                                 ignore_index=-100)
        return loss, (logits.detach().cpu() if want_logits else None)

    with torch.no_grad():
        _, logits0 = run(0, True)
    exp["logits0"] = logits0.contiguous()
    losses = []
    for s in range(a.steps):
        loss, _ = run(s)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    exp["losses"] = torch.tensor(losses, dtype=torch.float64).float()
    # PEFT's trained adapter in its own layout (our test imports it) and its logits of batch 0 after training.
    model.save_pretrained(os.path.join(a.out, "peft_trained"), safe_serialization=True)
    model.eval()
    with torch.no_grad():
        _, logits_t = run(0, True)
    exp["logits_trained"] = logits_t.contiguous()
    import transformers, peft
    meta = {"lr": repr(a.lr), "steps": str(a.steps), "dtype": a.dtype, "device": a.device, "shape": a.shape,
            "versions": f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}",
            "losses": json.dumps(losses)}
    save_file(exp, os.path.join(a.out, "expected.safetensors"), metadata=meta)
    print(json.dumps({"peft_parity": a.out, "losses": losses, "device": str(a.device),
                      "gpu": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "cpu"}))


if __name__ == "__main__":
    main()
