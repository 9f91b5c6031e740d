#!/usr/bin/env python3
"""Makes tests/fixtures/load/smollm2_weights.json: oracle values for model_load on
SmolLM2-135M-Instruct.Q4_1.gguf (tests/unit/test_model_load.cpp).

For a few tensors (Q4_1 attn_q/attn_k/ffn_down of the first and last block, the Q8_0 token embedding,
an F32 norm) it stores sample elements of the weight as the Model must hold it: dequantized by
gguf-py to f32, shape (out, in), and for attn_q / attn_k with llama.cpp's converter permutation undone
(the converter did w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2); the inverse below is
written independently of the C++ loader, as reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2)).
Values are f32 bit patterns (uint32) so that the comparison can be exact.

Libraries: gguf (gguf-py) 0.19.0, numpy 2.x. Needs models/SmolLM2-135M-Instruct.Q4_1.gguf
(scripts/fetch-models.sh). Rerun from the repository root:
    python3 tools/gen_load_fixtures.py
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import quants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "tests", "fixtures", "load", "smollm2_weights.json")


def unpermute(w, n_head):
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def main():
    if not os.path.exists(MODEL):
        sys.exit(f"{MODEL} is absent; run scripts/fetch-models.sh first")
    r = gguf.GGUFReader(MODEL)
    n_head = int(r.fields["llama.attention.head_count"].contents())
    n_kv = int(r.fields["llama.attention.head_count_kv"].contents())
    by_name = {t.name: t for t in r.tensors}

    def weight(name):
        t = by_name[name]
        w = quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        ne = [int(x) for x in t.shape]  # ggml order, innermost first
        return w.reshape(list(reversed(ne))), t.tensor_type.name

    specs = [
        ("token_embd.weight", None, [0, 1, 2, 1000, 49151], [0, 1, 31, 32, 575]),
        ("output_norm.weight", None, None, [0, 1, 300, 575]),
        ("blk.0.attn_q.weight", n_head, [0, 1, 2, 31, 32, 33, 63, 64, 95, 575], [0, 1, 33, 575]),
        ("blk.0.attn_k.weight", n_kv, [0, 1, 31, 32, 33, 63, 64, 127, 191], [0, 2, 64, 575]),
        ("blk.29.attn_q.weight", n_head, [5, 40, 100, 300, 512], [7, 100, 574]),
        ("blk.29.attn_k.weight", n_kv, [0, 17, 32, 70, 150], [1, 63, 500]),
        ("blk.0.attn_v.weight", None, [0, 1, 100, 191], [0, 5, 575]),
        ("blk.29.ffn_down.weight", None, [0, 1, 575], [0, 31, 32, 1535]),
    ]
    out = {"model": os.path.basename(MODEL), "tensors": []}
    for name, heads, rows, cols in specs:
        w, tname = weight(name)
        if heads is not None:
            w = unpermute(w, heads)
        samples = []
        if w.ndim == 1:
            for c in cols:
                samples.append([0, c, int(np.float32(w[c]).view(np.uint32))])
        else:
            for rr in rows:
                for c in cols:
                    samples.append([rr, c, int(np.float32(w[rr, c]).view(np.uint32))])
        out["tensors"].append({"name": name, "type": tname, "shape": list(w.shape), "samples": samples})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
