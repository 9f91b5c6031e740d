#!/usr/bin/env python3
"""Makes tests/fixtures/train/schedules.json and tests/fixtures/train/optimizers.json: learning-rate
schedules as mlx-lm's build_schedule builds them, and Adam/AdamW/SGD updates, computed with the
installed MLX (mlx 0.32.4 on CPU, mlx-lm 0.28.1's tuner.utils.build_schedule) as the oracle for
tests/unit/test_schedule.cpp and tests/unit/test_optimizer.cpp.

Rerun: python3 tools/gen_schedule_fixtures.py   (writes both files; a few KB each)
"""
import json
import os

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx_lm.tuner.utils import build_schedule

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "train")


def schedules():
    configs = [
        {"name": "cosine_decay", "arguments": [1e-5, 100]},
        {"name": "cosine_decay", "arguments": [1e-3, 40, 1e-5]},
        {"name": "cosine_decay", "arguments": [2e-4, 50], "warmup": 10},
        {"name": "cosine_decay", "arguments": [2e-4, 50, 1e-6], "warmup": 5, "warmup_init": 1e-7},
        {"name": "linear_schedule", "arguments": [1e-3, 0.0, 30]},
        {"name": "linear_schedule", "arguments": [1e-4, 1e-4, 1], "warmup": 8},
        {"name": "exponential_decay", "arguments": [1e-2, 0.9]},
        {"name": "exponential_decay", "arguments": [5e-3, 0.95], "warmup": 3, "warmup_init": 1e-4},
        {"name": "step_decay", "arguments": [1e-1, 0.9, 10]},
    ]
    cases = []
    steps = list(range(0, 70))
    for c in configs:
        fn = build_schedule(c)
        vals = [float(np.array(fn(mx.array(s, mx.uint64)), dtype=np.float32)) for s in steps]
        cases.append({"config": c, "steps": steps, "values": vals})
    return {"generator": "tools/gen_schedule_fixtures.py", "mlx": mx.__version__, "cases": cases}


def optimizers():
    rng = np.random.default_rng(7)
    shapes = [(3, 4), (5,)]
    w0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    n_steps = 6
    grads = [[(rng.standard_normal(s) * 10.0 ** rng.uniform(-4, 0)).astype(np.float32) for s in shapes] for _ in range(n_steps)]
    configs = [
        ("adam", {}, optim.Adam),
        ("adam", {"betas": [0.8, 0.99], "eps": 1e-6}, optim.Adam),
        ("adam", {"bias_correction": True}, optim.Adam),
        ("adamw", {}, optim.AdamW),
        ("adamw", {"weight_decay": 0.1}, optim.AdamW),
        ("sgd", {}, optim.SGD),
        ("sgd", {"momentum": 0.9, "weight_decay": 0.01}, optim.SGD),
        ("sgd", {"momentum": 0.9, "dampening": 0.1}, optim.SGD),
        ("sgd", {"momentum": 0.5, "nesterov": True}, optim.SGD),
    ]
    cases = []
    for name, kw, cls in configs:
        lr = 1e-2
        opt = cls(learning_rate=lr, **kw)
        params = {"p0": mx.array(w0[0]), "p1": mx.array(w0[1])}
        traj = []
        for s in range(n_steps):
            g = {"p0": mx.array(grads[s][0]), "p1": mx.array(grads[s][1])}
            params = opt.apply_gradients(g, params)
            mx.eval(params)
            traj.append([np.array(params["p0"]).ravel().tolist(), np.array(params["p1"]).ravel().tolist()])
        cases.append({"optimizer": name, "options": kw, "learning_rate": lr, "weights": traj})
    return {
        "generator": "tools/gen_schedule_fixtures.py",
        "mlx": mx.__version__,
        "shapes": [list(s) for s in shapes],
        "w0": [w.ravel().tolist() for w in w0],
        "grads": [[g.ravel().tolist() for g in gs] for gs in grads],
        "cases": cases,
    }


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "schedules.json"), "w") as f:
        json.dump(schedules(), f)
    with open(os.path.join(OUT, "optimizers.json"), "w") as f:
        json.dump(optimizers(), f)
