"""Fixtures for PEFT adapter import (tests/golden/test_peft_adapter.cpp): real PEFT adapters on the tiny random
Llama of tests/fixtures/golden/llama_untied, saved with PEFT's own save_pretrained, and PEFT's logits for
fixed ids. LoRA on q/v/down of the last layer and DoRA on q/k of both layers, B (and DoRA's magnitude) set to
random values so the adapters change the logits. Float32 on the CPU.

  python3 tools/gen_peft_fixtures.py     # writes tests/fixtures/peft/{lora,dora}/
Made with transformers 5.24, peft 0.21.2, torch 2.15 (CPU).
"""
import os, shutil

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


def make(name, cfg, seed):
    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(os.path.join(ROOT, "golden", "llama_untied"), torch_dtype=torch.float32)
    pm = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            if "lora_magnitude_vector" in n:
                p.mul_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
    out = os.path.join(ROOT, "peft", name)
    shutil.rmtree(out, ignore_errors=True)
    pm.save_pretrained(out)
    for f in os.listdir(out):
        if f not in ("adapter_model.safetensors", "adapter_config.json"):
            os.remove(os.path.join(out, f))
    ids = torch.tensor([[1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45]])
    with torch.no_grad():
        logits = pm(input_ids=ids).logits[0].float()
    save_file({"ids": ids[0].to(torch.int32).contiguous(), "logits": logits.contiguous()},
              os.path.join(ROOT, "peft", name + ".expected.safetensors"))


make("lora", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], layers_to_transform=[1],
                        task_type="CAUSAL_LM"), 1)
make("dora", LoraConfig(r=2, lora_alpha=5, target_modules=["q_proj", "k_proj"], use_dora=True, task_type="CAUSAL_LM"), 2)
print("wrote", os.path.join(ROOT, "peft"))
