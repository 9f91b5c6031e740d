#!/usr/bin/env python3
"""Makes the tokenizer test fixtures under tests/fixtures/tokenizer/ (test oracles; tests never run Python).

1. smollm2_cases.json: a varied corpus (English, code, numbers, whitespace runs, newlines, unicode,
   emoji, chat special tokens) and the ids the HF `tokenizers` library gives for SmolLM2-135M-Instruct.
   The reference tokenizer is built from the GGUF's own vocabulary and merges
   (models/SmolLM2-135M-Instruct.Q4_1.gguf, tokenizer.ggml.pre = "smollm") with SmolLM2's real
   pre-tokenizer, Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False,
   use_regex=True)], and the control tokens (token_type 3) as special added tokens. The script
   cross-checks it against transformers' own GGUF loader and, when the `llama_cpp` module is
   installed (pip install llama-cpp-python), against llama.cpp; it stops on any disagreement
   it cannot explain (see the notes it prints).
2. bytelevel_gpt2/tokenizer.json and bytelevel_llama3/tokenizer.json: tiny byte-level BPE
   tokenizers trained here with `tokenizers` on a few sentences (GPT-2 style: Digits + ByteLevel
   regex; Llama-3 style: Split with the Llama-3 regex + ByteLevel without regex, ignore_merges),
   plus bytelevel_cases.json with the ids that library gives for a corpus.

Made with: tokenizers 0.22.x, transformers 5.x, gguf 0.23 (printed at run time into the JSON).
Rerun:  python3 tools/gen_tokenizer_fixtures.py  [--models DIR]   (from the repository root)
"""
import argparse
import json
import os
import sys

import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer")

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CORPUS = [
    "Hello world",
    " Hello world",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure they'll say we've done it, but don't you think it's WE'LL and YOU'RE?",
    "12345",
    "3.14159",
    "pi = 3.14159265358979, e = 2.71828; 1,000,000 and 0x1F",
    "Call 555-0123 before 2024-12-31 at 10:30pm.",
    "   leading spaces",
    "trailing spaces   ",
    "many     spaces   between",
    "tabs\tand\t\tdouble tabs",
    "line one\nline two\n\nline four\n",
    "windows\r\nline endings\r\n",
    "\n\n\n",
    " ",
    "  ",
    "",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 40))",
    "for (int i = 0; i < n; ++i) { sum += x[i] * 2; }",
    "<html><body class=\"main\">Text &amp; more</body></html>",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber stra\u00dfe",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u6211\u7231\u5317\u4eac\u3002",
    "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "Emoji: \U0001f600\U0001f680 \U0001f999 \U0001f468\u200d\U0001f469\u200d\U0001f467 \u2764\ufe0f",
    "math: \u2211 x\u00b2 \u2264 \u221e, \u03b1\u03b2\u03b3",
    "\u201cSmart quotes\u201d and \u2018single\u2019 \u2014 dashes \u2013 ellipsis\u2026",
    "Don\u00e2\u20ac\u2122t mojibake \u00e2\u20ac\ufffd here",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nhi<|im_end|>",
    "text<|endoftext|>more text",
    "<|im_start|><|im_end|><|im_start|>",
    "a<|im_start|> b",
    "<|im_start |> not special",
    "CamelCaseIdentifier snake_case_name kebab-case-name",
    "URL: https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct?x=1&y=2#frag",
    "email@example.com (mailto) [link](http://a.b/c)",
    "$100.00 + 15% = $115.00!!!???",
    "   \n  \t  \n",
    "a\u00a0b non-breaking\u2009thin space",
]

TRAIN = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! Hello there, world. The world says hello.",
    "I'm here, you're there, we'll see, they've gone, it's done, I'd go.",
    "Numbers like 12345 and 3.14159 and 2024 appear in text 100 times.",
    "def main():\n    print('hello world')\n    return 0\n",
    "Tokenizers split text into pieces; byte-level BPE never needs an unknown token.",
    "Caf\u00e9 r\u00e9sum\u00e9 \u4f60\u597d \U0001f600 emoji and unicode text.",
    "    indented code\n\twith tabs\n\nand blank lines\r\n",
] * 3

BYTELEVEL_CORPUS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure it's done, WE'LL see.",
    "12345 and 3.14159",
    "In 2024, 100 times 12345; 10 100 1000",
    "def main():\n    return 42\n",
    "   spaces   and\ttabs\n\n",
    "unseen words: zebra quixotic",
    "Caf\u00e9 \u4f60\u597d \U0001f600\U0001f680 \u2764\ufe0f",
    "<s>bos written in text</s>",
    "<|im_start|>user\nhi<|im_end|>\n",
    "",
]


def versions():
    v = {"tokenizers": tokenizers.__version__}
    try:
        import transformers
        v["transformers"] = transformers.__version__
    except ImportError:
        pass
    try:
        from importlib.metadata import version
        v["gguf"] = version("gguf")
    except Exception:
        pass
    return v


def field_str(f, i):
    return bytes(f.parts[f.data[i]]).decode("utf-8")


def smollm2_reference(gguf_path):
    from gguf import GGUFReader
    r = GGUFReader(gguf_path)
    f = r.fields
    assert field_str(f["tokenizer.ggml.model"], 0) == "gpt2"
    assert field_str(f["tokenizer.ggml.pre"], 0) == "smollm"
    toks = [field_str(f["tokenizer.ggml.tokens"], i) for i in range(len(f["tokenizer.ggml.tokens"].data))]
    types = [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data]
    merges = [field_str(f["tokenizer.ggml.merges"], i) for i in range(len(f["tokenizer.ggml.merges"].data))]
    vocab = {t: i for i, t in enumerate(toks)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges])
    tk = Tokenizer(bpe)
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tk.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=True, normalized=False) for t, ty in zip(toks, types) if ty == 3]
    tk.add_special_tokens(specials)
    for t in specials:
        assert tk.token_to_id(t.content) == vocab[t.content]
    return tk


def cross_check_transformers(models_dir, name, ref_ids):
    try:
        from transformers import AutoTokenizer
        hf = AutoTokenizer.from_pretrained(models_dir, gguf_file=name)
    except Exception as e:  # optional oracle
        print(f"note: transformers GGUF loader unavailable: {e}")
        return
    diffs = [(t, ids, hf.encode(t, add_special_tokens=False)) for t, ids in zip(CORPUS, ref_ids)]
    diffs = [d for d in diffs if d[1] != d[2]]
    print(f"transformers GGUF loader: {len(CORPUS) - len(diffs)}/{len(CORPUS)} cases identical")
    for t, a, b in diffs:
        print(f"  differs on {t!r}\n    tokenizers: {a}\n    transformers: {b}")
    return diffs


def cross_check_llama_cpp(gguf_path, ref_ids):
    try:
        import llama_cpp
    except ImportError:
        print("note: llama_cpp not installed; skipped the llama.cpp cross-check")
        return None
    llm = llama_cpp.Llama(model_path=gguf_path, vocab_only=True, verbose=False)
    bad = 0
    for t, ids in zip(CORPUS, ref_ids):
        got = llm.tokenize(t.encode("utf-8"), add_bos=False, special=True)
        if got != ids:
            bad += 1
            print(f"  llama.cpp differs on {t!r}\n    tokenizers: {ids}\n    llama.cpp:  {got}")
    print(f"llama.cpp ({llama_cpp.__version__}): {len(CORPUS) - bad}/{len(CORPUS)} cases identical")
    return bad


def train_tiny(kind):
    tk = Tokenizer(models.BPE(ignore_merges=(kind == "llama3")))
    if kind == "gpt2":
        # Trained without the digit split so that digit merges exist, then encoded with it: the
        # expected ids then show whether Digits(individual_digits) is applied.
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(tokenizers.Regex(LLAMA3_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tk.decoder = decoders.ByteLevel()
    special = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=420, min_frequency=2, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(TRAIN, trainer=trainer)
    if kind == "gpt2":
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
        assert any(any(c.isdigit() for c in t) and len(t) > 1 for t in tk.get_vocab()), "want digit merges"
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tk.token_to_id("<s>"))])
    return tk


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.path.join(ROOT, "models"))
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)

    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf_path = os.path.join(args.models, name)
    ref = smollm2_reference(gguf_path)
    ids = [ref.encode(t, add_special_tokens=False).ids for t in CORPUS]
    for t, i in zip(CORPUS, ids):  # byte-level BPE round-trips exactly
        assert ref.decode(i, skip_special_tokens=False) == t, t
    cross_check_transformers(args.models, name, ids)
    bad = cross_check_llama_cpp(gguf_path, ids)
    if bad:
        sys.exit("llama.cpp disagrees with the tokenizers reference; not writing the fixture")
    with open(os.path.join(OUT, "smollm2_cases.json"), "w", encoding="utf-8") as fo:
        json.dump({"made_by": "tools/gen_tokenizer_fixtures.py", "versions": versions(),
                   "model": name, "add_special_tokens": False,
                   "cases": [{"text": t, "ids": i} for t, i in zip(CORPUS, ids)]},
                  fo, ensure_ascii=False, indent=0)
        fo.write("\n")

    cases = {}
    for kind in ("gpt2", "llama3"):
        tk = train_tiny(kind)
        d = os.path.join(OUT, f"bytelevel_{kind}")
        os.makedirs(d, exist_ok=True)
        tk.save(os.path.join(d, "tokenizer.json"))
        cases[kind] = [{"text": t, "ids": tk.encode(t, add_special_tokens=False).ids,
                        "ids_with_special": tk.encode(t, add_special_tokens=True).ids} for t in BYTELEVEL_CORPUS]
    with open(os.path.join(OUT, "bytelevel_cases.json"), "w", encoding="utf-8") as fo:
        json.dump({"made_by": "tools/gen_tokenizer_fixtures.py", "versions": versions(), "tokenizers": cases},
                  fo, ensure_ascii=False, indent=0)
        fo.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
