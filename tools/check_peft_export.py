"""Checks that our PEFT export loads in PEFT and gives PEFT's own logits: takes the PEFT fixtures
(tests/fixtures/peft/{lora,dora}, written by PEFT), converts each to mlx-lm's layout and back to PEFT's with
`lora convert`, loads the result with PeftModel.from_pretrained on the tiny fixture model and compares its
logits with the fixture's (written by PEFT from the original adapter).

  python3 tools/check_peft_export.py [path/to/lora]      # prints the max |difference| per adapter
"""
import os, subprocess, sys, tempfile

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(__file__), "..")
LORA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "lora")
MODEL = os.path.join(ROOT, "tests", "fixtures", "golden", "llama_untied")
worst = 0.0
with tempfile.TemporaryDirectory() as tmp:
    for n in ["lora", "dora"]:
        src = os.path.join(ROOT, "tests", "fixtures", "peft", n)
        mlx, peft = os.path.join(tmp, n + "_mlx"), os.path.join(tmp, n + "_peft")
        subprocess.run([LORA, "convert", "--model", MODEL, "--adapter-path", src, "--to", "mlx", "--out", mlx], check=True)
        subprocess.run([LORA, "convert", "--model", MODEL, "--adapter-path", mlx, "--to", "peft", "--out", peft], check=True)
        pm = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(MODEL, torch_dtype=torch.float32), peft)
        exp = load_file(os.path.join(ROOT, "tests", "fixtures", "peft", n + ".expected.safetensors"))
        with torch.no_grad():
            d = (pm(input_ids=exp["ids"].long()[None]).logits[0] - exp["logits"]).abs().max().item()
        print(f"{n}: max |logits of our export in PEFT - PEFT's original| = {d:.3g}")
        worst = max(worst, d)
sys.exit(0 if worst <= 1e-5 else 1)
