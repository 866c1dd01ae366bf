#!/usr/bin/env python3
"""Reference trajectories of torch.optim for mdl's optimizer tests.

For each case: a parameter vector and a sequence of gradients (fixed seed); torch.optim
(float64) applies them, optionally with gradient clipping and a learning-rate schedule built
from torch's own schedulers; the parameter after every update is recorded. The Swift test
(OptimizerTests) runs the same updates through mdl's front end, autodiff, optimizer lowering
and the reference interpreter, and compares. Run it with a Python that has torch:

    Tools/optim-reference.py > Tests/MDLTests/Inputs/Optimizers/torch.json
"""
import json
import math

import torch

torch.manual_seed(0)
N, STEPS = 6, 5
W0 = torch.randn(N, dtype=torch.float64).tolist()
GRADS = [torch.randn(N, dtype=torch.float64).tolist() for _ in range(STEPS)]


def run(opt_name, hyper, clip=None, schedule=None):
    w = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    kw = dict(hyper)
    if "nesterov" in kw:
        kw["nesterov"] = bool(kw["nesterov"])
    if opt_name in ("adam", "adamw"):
        kw["betas"] = (kw.pop("beta1", 0.9), kw.pop("beta2", 0.999))
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}[opt_name]([w], **kw)
    sched = None
    if schedule:
        kind, args = schedule
        if kind == "step_lr":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=int(args["every"]), gamma=args["gamma"])
        elif kind == "cosine_lr":
            warm = int(args.get("warmup", 0))
            cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS - warm, eta_min=args.get("min_lr", 0.0))
            if warm:
                lin = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warm, end_factor=1.0, total_iters=warm - 1)
                sched = torch.optim.lr_scheduler.SequentialLR(opt, [lin, cos], milestones=[warm])
            else:
                sched = cos
        elif kind == "onecycle_lr":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args["max_lr"], total_steps=STEPS,
                                                        pct_start=args.get("pct_start", 0.3), cycle_momentum=False)
    trajectory = []
    for g in GRADS:
        opt.zero_grad()
        w.grad = torch.tensor(g, dtype=torch.float64)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([w], clip)
        opt.step()
        if sched:
            sched.step()
        trajectory.append(w.detach().tolist())
    return trajectory


CASES = [
    ("sgd", {"lr": 0.1}, None, None),
    ("sgd", {"lr": 0.1, "momentum": 0.9}, None, None),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": 1, "weight_decay": 0.01}, None, None),
    ("adam", {"lr": 0.01}, None, None),
    ("adam", {"lr": 0.01, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6, "weight_decay": 0.1}, None, None),
    ("adamw", {"lr": 0.01, "weight_decay": 0.05}, None, None),
    ("rmsprop", {"lr": 0.01}, None, None),
    ("rmsprop", {"lr": 0.01, "alpha": 0.9, "momentum": 0.5, "weight_decay": 0.01}, None, None),
    ("adagrad", {"lr": 0.1}, None, None),
    ("adagrad", {"lr": 0.1, "eps": 1e-6, "weight_decay": 0.01}, None, None),
    ("sgd", {"lr": 0.1, "momentum": 0.5}, 0.5, None),
    ("adam", {"lr": 0.01}, 1.0, None),
    ("sgd", {"lr": 0.1}, None, ("step_lr", {"every": 2, "gamma": 0.5})),
    ("adam", {"lr": 0.01}, None, ("cosine_lr", {})),
    ("adam", {"lr": 0.01}, None, ("cosine_lr", {"warmup": 2, "min_lr": 0.001})),
    ("sgd", {"lr": 0.1}, None, ("onecycle_lr", {"max_lr": 0.5, "pct_start": 0.4})),
]

cases = []
for name, hyper, clip, schedule in CASES:
    cases.append({"optimizer": name, "hyper": hyper, "clip_norm": clip,
                  "schedule": schedule[0] if schedule else None, "schedule_args": schedule[1] if schedule else {},
                  "trajectory": run(name, hyper, clip, schedule)})
print(json.dumps({"torch": torch.__version__, "total_steps": STEPS, "w0": W0, "grads": GRADS, "cases": cases}, indent=1))
