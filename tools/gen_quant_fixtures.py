#!/usr/bin/env python3
"""Makes tests/fixtures/quant/*.json: oracle data for src/core/quant.{h,cpp} (tests/unit/test_quant.cpp).

For each llama.cpp block type (q4_0 q4_1 q5_0 q5_1 q8_0 q4_k q5_k q6_k) one JSON file with:
  "dequant": raw blocks ("blocks_b64") and gguf-py's dequantization of them ("floats_b64", f32 LE).
             The blocks are the quantized inputs below plus random-but-valid blocks (random bytes with
             finite fp16 scales), so every bit pattern of the packed fields is exercised.
  "quant":   input floats ("input_b64") and the expected quantized bytes ("blocks_b64"), with
             "oracle" naming who produced them:
               - gguf.quants (gguf-py's numpy port of ggml's quantize_row_*_ref) for q4_0..q8_0;
               - for q4_k/q5_k/q6_k, which gguf-py cannot quantize, the scalar float32 port of ggml's
                 quantize_row_q{4,5,6}_K_ref at the bottom of this file (every operation rounded to
                 f32 by numpy, no FMA). It is a second, independent transcription of the C reference,
                 not llama.cpp itself.
Plus smollm2.json: a few rows of two tensors of SmolLM2-135M-Instruct.Q4_1.gguf (absolute byte
offsets into the file and gguf-py's dequantization), when that file exists.

Libraries: gguf (gguf-py) 0.19.0, numpy 2.x. Rerun from the repository root:
    python3 tools/gen_quant_fixtures.py
The output is deterministic (fixed seed).
"""
import base64
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT
from gguf import quants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "quant")
SMOLLM2 = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

F = np.float32


def gguf_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:
        return "unknown"


# ---- input rows -----------------------------------------------------------------------------------

def input_rows(rng, block):
    """A list of float32 arrays, each `block` long, covering the awkward cases."""
    rows = []
    rows.append(rng.standard_normal(block))                          # plain
    rows.append(rng.standard_normal(block) * 1e-3)                    # small
    rows.append(rng.standard_normal(block) * 300.0)                   # large (fp16 d stays finite)
    rows.append(np.zeros(block))                                      # all zero
    rows.append(-np.abs(rng.standard_normal(block)) - 0.5)            # negative only
    rows.append(np.abs(rng.standard_normal(block)) + 2.0)             # positive only, offset
    r = rng.standard_normal(block) * 1e-2
    r[rng.integers(block)] = 50.0                                     # one spike: large dynamic range
    rows.append(r)
    rows.append(np.full(block, 0.75))                                 # constant
    rows.append((np.arange(block) % 17 - 8) * 0.25)                   # exact grid values, rounding ties
    rows.append(rng.standard_normal(block) * 2e-6)                    # fp16 subnormal scales
    r = rng.standard_normal(block)
    r[0] = -r[np.argmax(np.abs(r))] * 1.5                             # max-magnitude element negative
    rows.append(r)
    if block == 256:
        # super-blocks are 8x larger: keep the fixture small by dropping the rows the 32-blocks cover
        rows = [rows[i] for i in (0, 1, 3, 4, 6, 7, 9)]
        # sub-blocks with very different ranges: exercises the 6-bit scale/min packing (values >= 16)
        r = np.concatenate([rng.standard_normal(32) * s + o for s, o in
                            [(1, 0), (0.01, 0), (5, 3), (0.2, -1), (20, 0), (0, 0), (0.5, 10), (3, -30)]])
        rows.append(r)
        r = np.concatenate([rng.standard_normal(16) * (0.05 * (k + 1)) * (-1) ** k for k in range(16)])
        rows.append(r)
    return [np.asarray(r, dtype=np.float32) for r in rows]


# ---- random valid blocks --------------------------------------------------------------------------

def random_f16(rng, n, lo=-3.0, hi=3.0):
    # finite fp16 values spanning several binades, both signs
    v = np.sign(rng.standard_normal(n)) * 10.0 ** rng.uniform(lo, hi, n)
    return v.astype(np.float16).view(np.uint8).reshape(n, 2)


def random_blocks(rng, qtype, nblocks):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, size=(nblocks, size), dtype=np.uint8)
    # fp16 fields: d (+ m / dmin) — where they sit in each layout
    f16_at = {QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q5_0: [0], QT.Q5_1: [0, 2], QT.Q8_0: [0],
              QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208]}[qtype]
    for off in f16_at:
        b[:, off:off + 2] = random_f16(rng, nblocks, -4.0, 1.0)
    return b


# ---- scalar float32 port of ggml's K-quant reference quantizers ------------------------------------

def nearest_int(v):
    t = np.array([F(v) + F(12582912.0)], dtype=np.float32).view(np.int32)[0]
    return int((int(t) & 0x007FFFFF) - 0x00400000)


def f16_round(v):
    return F(np.float16(F(v)))


def f16_bytes(v):
    return np.array([v], dtype=np.float32).astype(np.float16).view(np.uint8)


def make_qkx2_quants(n, nmax, x, weights, rmin, rdelta, nstep):
    L = [0] * n
    mn = x[0]
    mx = x[0]
    sum_w = weights[0]
    sum_x = F(sum_w * x[0])
    for i in range(1, n):
        if x[i] < mn: mn = x[i]
        if x[i] > mx: mx = x[i]
        w = weights[i]
        sum_w = F(sum_w + w)
        sum_x = F(sum_x + F(w * x[i]))
    if mn > 0: mn = F(0)
    if mx == mn:
        return F(0), [0] * n, F(-mn)
    iscale = F(F(nmax) / F(mx - mn))
    scale = F(F(1) / iscale)
    best_error = F(0)
    for i in range(n):
        l = nearest_int(F(iscale * F(x[i] - mn)))
        L[i] = max(0, min(nmax, l))
        diff = F(F(F(scale * F(L[i])) + mn) - x[i])
        diff = F(diff * diff)
        best_error = F(best_error + F(weights[i] * diff))
    for is_ in range(nstep + 1):
        iscale = F(F(F(F(rmin) + F(F(rdelta) * F(is_))) + F(nmax)) / F(mx - mn))
        sum_l = sum_l2 = sum_xl = F(0)
        Laux = [0] * n
        for i in range(n):
            l = nearest_int(F(iscale * F(x[i] - mn)))
            l = max(0, min(nmax, l))
            Laux[i] = l
            w = weights[i]
            fl = F(l)
            sum_l = F(sum_l + F(w * fl))
            sum_l2 = F(sum_l2 + F(F(w * fl) * fl))
            sum_xl = F(sum_xl + F(F(w * fl) * x[i]))
        D = F(F(sum_w * sum_l2) - F(sum_l * sum_l))
        if D > 0:
            this_scale = F(F(F(sum_w * sum_xl) - F(sum_x * sum_l)) / D)
            this_min = F(F(F(sum_l2 * sum_x) - F(sum_l * sum_xl)) / D)
            if this_min > 0:
                this_min = F(0)
                this_scale = F(sum_xl / sum_l2)
            cur = F(0)
            for i in range(n):
                diff = F(F(F(this_scale * F(Laux[i])) + this_min) - x[i])
                diff = F(diff * diff)
                cur = F(cur + F(weights[i] * diff))
            if cur < best_error:
                L = list(Laux)
                best_error = cur
                scale = this_scale
                mn = this_min
    return scale, L, F(-mn)


def scale_min_k4(j, q):
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


def quantize_k4_common(x, nmax, rmin, rdelta, nstep):
    """Returns (d_bytes, dmin_bytes, scales[12], L[256]) for Q4_K (nmax 15) / Q5_K (nmax 31)."""
    L = [0] * 256
    scales = [F(0)] * 8
    mins = [F(0)] * 8
    max_scale = F(0)
    max_min = F(0)
    for j in range(8):
        xs = [x[32 * j + l] for l in range(32)]
        sum_x2 = F(0)
        for v in xs:
            sum_x2 = F(sum_x2 + F(v * v))
        av_x = F(np.sqrt(F(sum_x2 / F(32))))
        weights = [F(av_x + F(abs(v))) for v in xs]
        scales[j], Lj, mins[j] = make_qkx2_quants(32, nmax, xs, weights, rmin, rdelta, nstep)
        L[32 * j:32 * j + 32] = Lj
        if scales[j] > max_scale: max_scale = scales[j]
        if mins[j] > max_min: max_min = mins[j]
    inv_scale = F(F(63) / max_scale) if max_scale > 0 else F(0)
    inv_min = F(F(63) / max_min) if max_min > 0 else F(0)
    sc = [0] * 12
    for j in range(8):
        ls = min(63, nearest_int(F(inv_scale * scales[j])) & 0xFF)
        lm = min(63, nearest_int(F(inv_min * mins[j])) & 0xFF)
        if j < 4:
            sc[j] = ls
            sc[j + 4] = lm
        else:
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4)
            sc[j - 4] |= (ls >> 4) << 6
            sc[j] |= (lm >> 4) << 6
    d_all = f16_round(F(max_scale / F(63)))
    dmin_all = f16_round(F(max_min / F(63)))
    for j in range(8):
        s, m = scale_min_k4(j, sc)
        d = F(d_all * F(s))
        if d == 0:
            continue
        dm = F(dmin_all * F(m))
        for ii in range(32):
            l = nearest_int(F(F(x[32 * j + ii] + dm) / d))
            L[32 * j + ii] = max(0, min(nmax, l))
    return (f16_bytes(F(max_scale / F(63))), f16_bytes(F(max_min / F(63))), sc, L)


def quantize_q4_k_block(x):
    d, dmin, sc, L = quantize_k4_common(x, 15, -1.0, 0.1, 20)
    qs = []
    for j in range(0, 256, 64):
        qs += [L[j + l] | (L[j + l + 32] << 4) for l in range(32)]
    return np.concatenate([d, dmin, np.array(sc + qs, dtype=np.uint8)])


def quantize_q5_k_block(x):
    d, dmin, sc, L = quantize_k4_common(x, 31, -0.5, 0.1, 15)
    qh = [0] * 32
    ql = []
    m1, m2 = 1, 2
    for n in range(0, 256, 64):
        for j in range(32):
            l1 = L[n + j]
            if l1 > 15:
                l1 -= 16
                qh[j] |= m1
            l2 = L[n + j + 32]
            if l2 > 15:
                l2 -= 16
                qh[j] |= m2
            ql.append(l1 | (l2 << 4))
        m1 <<= 2
        m2 <<= 2
    return np.concatenate([d, dmin, np.array(sc + qh + ql, dtype=np.uint8)])


def make_qx_quants(n, nmax, x):
    mx = F(0)
    amax = F(0)
    for v in x:
        if abs(v) > amax:
            amax = F(abs(v))
            mx = v
    if amax < F(1e-15):
        return F(0), [0] * n
    iscale = F(F(-nmax) / mx)
    L = [0] * n
    sumlx = suml2 = F(0)
    for i in range(n):
        l = max(-nmax, min(nmax - 1, nearest_int(F(iscale * x[i]))))
        L[i] = l + nmax
        w = F(x[i] * x[i])
        sumlx = F(sumlx + F(F(w * x[i]) * F(l)))
        suml2 = F(suml2 + F(F(w * F(l)) * F(l)))
    scale = F(sumlx / suml2) if suml2 != 0 else F(0)
    best = F(scale * sumlx)
    for is_ in range(-9, 10):
        if is_ == 0:
            continue
        iscale = F(-F(F(nmax) + F(F(0.1) * F(is_))) / mx)
        sumlx = suml2 = F(0)
        for i in range(n):
            l = max(-nmax, min(nmax - 1, nearest_int(F(iscale * x[i]))))
            w = F(x[i] * x[i])
            sumlx = F(sumlx + F(F(w * x[i]) * F(l)))
            suml2 = F(suml2 + F(F(w * F(l)) * F(l)))
        if suml2 > 0 and F(sumlx * sumlx) > F(best * suml2):
            for i in range(n):
                L[i] = nmax + max(-nmax, min(nmax - 1, nearest_int(F(iscale * x[i]))))
            scale = F(sumlx / suml2)
            best = F(scale * sumlx)
    return scale, L


def quantize_q6_k_block(x):
    L = [0] * 256
    scales = [F(0)] * 16
    max_scale = F(0)
    max_abs_scale = F(0)
    for ib in range(16):
        scales[ib], L[16 * ib:16 * ib + 16] = make_qx_quants(16, 32, x[16 * ib:16 * ib + 16])
        if abs(scales[ib]) > max_abs_scale:
            max_abs_scale = F(abs(scales[ib]))
            max_scale = scales[ib]
    if max_abs_scale < F(1e-15):
        return np.zeros(210, dtype=np.uint8)
    iscale = F(F(-128) / max_scale)
    d_bytes = f16_bytes(F(F(1) / iscale))
    d_all = f16_round(F(F(1) / iscale))
    sc = [min(127, nearest_int(F(iscale * scales[ib]))) for ib in range(16)]
    for j in range(16):
        d = F(d_all * F(sc[j]))
        if d == 0:
            continue
        for ii in range(16):
            l = max(-32, min(31, nearest_int(F(x[16 * j + ii] / d))))
            L[16 * j + ii] = l + 32
    ql = [0] * 128
    qh = [0] * 64
    for h, j in enumerate(range(0, 256, 128)):
        for l in range(32):
            q1, q2, q3, q4 = (L[j + l] & 0xF, L[j + l + 32] & 0xF, L[j + l + 64] & 0xF, L[j + l + 96] & 0xF)
            ql[64 * h + l] = q1 | (q3 << 4)
            ql[64 * h + l + 32] = q2 | (q4 << 4)
            qh[32 * h + l] = ((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4)
                              | ((L[j + l + 96] >> 4) << 6))
    return np.concatenate([np.array(ql + qh, dtype=np.uint8), np.array(sc, dtype=np.int8).view(np.uint8),
                           d_bytes])


K_PORT = {QT.Q4_K: quantize_q4_k_block, QT.Q5_K: quantize_q5_k_block, QT.Q6_K: quantize_q6_k_block}


# ---- writing ----------------------------------------------------------------------------------------

def b64(a):
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def make_type(rng, qtype, name):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    x = np.concatenate(input_rows(rng, block)).astype(np.float32)
    if qtype in K_PORT:
        q = np.stack([K_PORT[qtype]([F(v) for v in x[i:i + block]]) for i in range(0, x.size, block)])
        oracle = "tools/gen_quant_fixtures.py scalar float32 port of ggml quantize_row_%s_ref" % name
    else:
        q = quants.quantize(x.reshape(-1, block), qtype).reshape(-1, size)
        oracle = "gguf.quants.quantize (gguf-py %s)" % gguf_version()
    assert q.dtype == np.uint8 and q.shape[1] == size
    n_random = 2 if block == 256 else 16
    blocks = np.concatenate([q, random_blocks(rng, qtype, n_random)])
    deq = quants.dequantize(blocks.reshape(-1), qtype).astype(np.float32).reshape(-1)
    assert deq.size == blocks.shape[0] * block and np.all(np.isfinite(deq))
    doc = {
        "type": name,
        "block_elems": block,
        "block_bytes": size,
        "dequant": {"n": int(deq.size), "blocks_b64": b64(blocks), "floats_b64": b64(deq),
                    "oracle": "gguf.quants.dequantize (gguf-py %s)" % gguf_version()},
        "quant": {"n": int(x.size), "input_b64": b64(x), "blocks_b64": b64(q), "oracle": oracle},
    }
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def make_smollm2():
    if not os.path.exists(SMOLLM2):
        print("skipping smollm2.json: %s is absent" % SMOLLM2, file=sys.stderr)
        return
    r = gguf.GGUFReader(SMOLLM2)
    picks = [("token_embd.weight", [0, 49151]), ("blk.0.attn_k.weight", [0, 191]),
             ("blk.29.ffn_down.weight", [575])]
    out = []
    for name, rows in picks:
        t = next(t for t in r.tensors if t.name == name)
        ne0 = int(t.shape[0])
        block, size = gguf.GGML_QUANT_SIZES[t.tensor_type]
        row_bytes = ne0 // block * size
        raw = np.asarray(t.data).reshape(-1, row_bytes)
        for row in rows:
            deq = quants.dequantize(raw[row], t.tensor_type).astype(np.float32)
            out.append({"tensor": name, "type": t.tensor_type.name.lower(), "ne": [int(v) for v in t.shape],
                        "row": row, "file_offset": int(t.data_offset) + row * row_bytes,
                        "row_bytes": row_bytes, "head_b64": b64(raw[row][:16]), "floats_b64": b64(deq)})
    doc = {"file": "SmolLM2-135M-Instruct.Q4_1.gguf", "size": os.path.getsize(SMOLLM2), "rows": out,
           "oracle": "gguf.GGUFReader + gguf.quants.dequantize (gguf-py %s)" % gguf_version()}
    with open(os.path.join(OUT, "smollm2.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240611)
    for qtype, name in [(QT.Q4_0, "q4_0"), (QT.Q4_1, "q4_1"), (QT.Q5_0, "q5_0"), (QT.Q5_1, "q5_1"),
                        (QT.Q8_0, "q8_0"), (QT.Q4_K, "q4_k"), (QT.Q5_K, "q5_k"), (QT.Q6_K, "q6_k")]:
        make_type(rng, qtype, name)
    make_smollm2()


if __name__ == "__main__":
    main()
