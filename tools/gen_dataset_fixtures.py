#!/usr/bin/env python3
"""Makes tests/fixtures/data/tinyllama_expected.json: the token ids and loss offsets that mlx-lm
(v0.28.1, mlx_lm/tuner/datasets.py) computes for tests/fixtures/data/{text,completions,chat}.jsonl
with TinyLlama-1.1B-Chat's tokenizer, with and without --mask-prompt.

mlx-lm's rules, reproduced here with transformers alone (mlx does not run on Linux):
  text:        ids = tokenizer.encode(text) (BOS added as the tokenizer config says); EOS appended
               when the last id is not EOS; offset 0.
  completions: ids = apply_chat_template([user: prompt, assistant: completion]);
               mask: offset = len(apply_chat_template([user: prompt], add_generation_prompt=True)).
  chat:        ids = apply_chat_template(messages);
               mask: offset = len(apply_chat_template(messages[:-1], add_generation_prompt=True)).
apply_chat_template(tokenize=True) renders and then tokenizes with add_special_tokens=False; we do
the same two steps explicitly: render with transformers (tokenize=False), then encode with the
`tokenizers` library on tokenizer.json. Why not transformers 5's own encoder: it rebuilds TinyLlama's
tokenizer as LlamaTokenizer with legacy=False (no "▁" after a special token: "</s>\n" -> [2, 13]),
whereas transformers 4.x, which mlx-lm 0.28.1 ran on, used tokenizer.json as it is unless from_slow=True
("</s>\n" -> [2, 29871, 13]), which is what the tokenizers library gives.

Versions used: transformers 5.24.0, tokenizers 0.23.3, Python 3.11.
Rerun: python3 tools/gen_dataset_fixtures.py   (from the repository root; needs ../shared)
"""
import json
import os

from tokenizers import Tokenizer
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "..", "shared", "models", "TinyLlama-1.1B-Chat-v1.0")
DATA = os.path.join(ROOT, "tests", "fixtures", "data")

tok = AutoTokenizer.from_pretrained(MODEL)  # for the chat template and the special tokens
enc = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
EOS = enc.token_to_id("</s>")


def chat_ids(messages, add_generation_prompt=False):
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return enc.encode(text, add_special_tokens=False).ids


def records(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


out = {"text": [], "completions": [], "chat": []}
for r in records("text.jsonl"):
    ids = enc.encode(r["text"], add_special_tokens=True).ids  # tokenizer.json's post-processor adds BOS
    if ids[-1] != EOS:
        ids.append(EOS)
    out["text"].append({"ids": ids, "offset": 0})
for r in records("completions.jsonl"):
    full = [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]
    out["completions"].append({"ids": chat_ids(full), "mask_offset": len(chat_ids(full[:1], True))})
for r in records("chat.jsonl"):
    m = r["messages"]
    out["chat"].append({"ids": chat_ids(m), "mask_offset": len(chat_ids(m[:-1], True))})

with open(os.path.join(DATA, "tinyllama_expected.json"), "w") as f:
    # One record per line: small and readable in a diff.
    f.write("{\n" + ",\n".join(
        json.dumps(k) + ": [\n  " + ",\n  ".join(json.dumps(r) for r in v) + "\n]" for k, v in out.items()) + "\n}\n")
print("wrote", os.path.join(DATA, "tinyllama_expected.json"))
