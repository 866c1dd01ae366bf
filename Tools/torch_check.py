#!/usr/bin/env python3
"""Checks mdl's loss and parameter gradients against PyTorch.

For each model the same network is built here from PyTorch's own layers (nn.Linear, nn.Conv2d,
nn.BatchNorm2d, nn.LayerNorm, nn.Embedding, F.scaled_dot_product_attention, F.gelu,
F.cross_entropy), so the check is independent of mdl's std library. Its parameters are
initialized randomly (fixed seed) in mdl's names and layouts, taken from `mdlc dump-ir`, and
written to W.safetensors (float32); a fixed random batch goes to B.safetensors. Then

    mdlc grad MODEL.mdl --weights W.safetensors --batch B.safetensors --out G.safetensors

computes the loss and every gradient with mdl's own autodiff in mdl's float64 reference
interpreter. PyTorch computes the same from the same float32 values, in float64 and in float32.
Each tensor must agree with the float64 result: relative error
max|g_mdl - g_torch| / max(max|g_torch|, 1e-8) <= 1e-4.

The float32 result is shown too ("f32 err") but does not decide: float32 rounding can change
discrete choices (which of two nearly equal values a max-pool window picks, so its whole gradient
moves to another pixel), and gradients that are zero in exact arithmetic (the key bias of
attention: softmax ignores a constant added to every score of a row) come out as float32 noise,
so a relative error against float32 can be large without anything being wrong.

Run through Tools/torch-check, which provides a Python with torch, numpy and safetensors.
"""

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-4
SEED = 1234

# ---------------------------------------------------------------------------------------------
# The models, from PyTorch's layers. Submodules carry the mdl member names, so `fc1.weight`
# of the torch module is `model.fc1.w` in mdl (see mdl_params below for the layouts).


def attention(layer, x, causal):
    """mdl's MultiHeadAttention.forward: separate q, k, v, o Linears, scores / sqrt(dim / heads)."""
    b, t, d = x.shape
    dh = d // layer.heads
    split = lambda y: y.reshape(b, t, layer.heads, dh).transpose(1, 2)  # [B, heads, T, dh]
    mixed = F.scaled_dot_product_attention(split(layer.q(x)), split(layer.k(x)), split(layer.v(x)),
                                           is_causal=causal)
    return layer.o(mixed.transpose(1, 2).reshape(b, t, d))


class MultiHeadAttention(nn.Module):
    def __init__(self, dim, heads, causal=False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x):
        return attention(self, x, self.causal)


class MLP(nn.Module):  # Models/mlp_mnist.mdl
    def __init__(self, hidden=128):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CNN(nn.Module):  # Models/cnn_mnist.mdl
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3)
        self.fc1, self.fc2 = nn.Linear(64 * 12 * 12, 128), nn.Linear(128, 10)

    def forward(self, x):
        img = x.reshape(-1, 1, 28, 28)
        h = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(img)))), 2)
        return self.fc2(F.relu(self.fc1(h.flatten(1))))


class ResidualBlock(nn.Module):  # Models/resnet_mnist.mdl
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=1e-5)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.has_proj = stride != 1 or cin != cout
        if self.has_proj:
            self.proj = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            self.proj_bn = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x):
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        skip = self.proj_bn(self.proj(x)) if self.has_proj else x
        return F.relu(h + skip)


class ResNet(nn.Module):
    def __init__(self, width=16, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width, eps=1e-5)
        self.stage1 = ResidualBlock(width, width)
        self.stage2 = ResidualBlock(width, 2 * width, stride=2)
        self.stage3 = ResidualBlock(2 * width, 4 * width, stride=2)
        self.head = nn.Linear(4 * width, classes)

    def forward(self, x):
        h = F.relu(self.stem_bn(self.stem(x.reshape(-1, 1, 28, 28))))
        features = self.stage3(self.stage2(self.stage1(h)))
        return self.head(features.mean(dim=(2, 3)))


class ViTBlock(nn.Module):  # Models/vit_mnist.mdl's Block
    def __init__(self, dim, heads, mlp_dim):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim, eps=1e-5), nn.LayerNorm(dim, eps=1e-5)
        self.attn = MultiHeadAttention(dim, heads)
        self.fc1, self.fc2 = nn.Linear(dim, mlp_dim), nn.Linear(mlp_dim, dim)

    def forward(self, x):
        h = x + self.attn(self.ln1(x))
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h))))


class ViT(nn.Module):
    def __init__(self, dim=64, depth=4, heads=4, mlp_dim=128, classes=10):
        super().__init__()
        self.embed = nn.Linear(49, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, 17, dim))
        self.blocks = nn.ModuleList(ViTBlock(dim, heads, mlp_dim) for _ in range(depth))
        self.ln = nn.LayerNorm(dim, eps=1e-5)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        b = x.shape[0]
        # 4x4 patches of 7x7 pixels, row-major: [B, patch row, pixel row, patch col, pixel col].
        patches = x.reshape(b, 4, 7, 4, 7).permute(0, 1, 3, 2, 4).reshape(b, 16, 49)
        h = torch.cat([self.cls.expand(b, 1, -1), self.embed(patches)], dim=1) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln(h[:, 0]))


class GPTBlock(nn.Module):  # Models/std/transformer.mdl's Block
    def __init__(self, dim, heads, mlp_ratio=4):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim, eps=1e-5), nn.LayerNorm(dim, eps=1e-5)
        self.attn = MultiHeadAttention(dim, heads, causal=True)
        self.fc, self.proj = nn.Linear(dim, dim * mlp_ratio), nn.Linear(dim * mlp_ratio, dim)

    def forward(self, x):
        h = x + self.attn(self.ln1(x))
        return h + self.proj(F.gelu(self.fc(self.ln2(h))))


class GPT(nn.Module):  # Models/std/transformer.mdl's GPT
    def __init__(self, vocab, context, layers, heads, dim):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(context, dim))
        self.blocks = nn.ModuleList(GPTBlock(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim, eps=1e-5)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens):
        h = self.tok(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))


def classify(logits, y):
    return F.cross_entropy(logits, y.long())


def next_token(logits, y):  # mean over every position, like std.nn's cross_entropy
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1).long())


# name: (constructor, loss, batch size, batch fields: name -> ("float", low, high) | ("int", low, high))
MNIST = {"x": ("float", 0.0, 1.0), "y": ("int", 0, 10)}
MODELS = {
    "mlp_mnist": (lambda: MLP(128), classify, 4, MNIST),
    "cnn_mnist": (CNN, classify, 4, MNIST),
    "resnet_mnist": (lambda: ResNet(16), classify, 4, MNIST),
    "vit_mnist": (lambda: ViT(64, 4, 4, 128), classify, 4, MNIST),
    "gpt_char": (lambda: GPT(96, 128, 4, 4, 128), next_token, 8, {"x": ("int", 0, 96), "y": ("int", 0, 96)}),
}

# ---------------------------------------------------------------------------------------------
# mdl names and layouts of the torch parameters.


def mdl_params(model, root="model"):
    """Returns {mdl name: (torch parameter, to_mdl, from_mdl)} covering every torch parameter once."""
    out = {}
    ident = (lambda t: t, lambda t: t)
    transposed = (lambda t: t.t(), lambda t: t.t())  # torch Linear weight is [out, in]; mdl's [in, out]
    for path, mod in model.named_modules():
        prefix = root + ("." + path if path else "")
        if isinstance(mod, nn.Linear):
            names = {"weight": ("w", transposed), "bias": ("b", ident)}
        elif isinstance(mod, nn.Conv2d):  # both [out, in, k, k]
            names = {"weight": ("w", ident), "bias": ("b", ident)}
        elif isinstance(mod, (nn.BatchNorm2d, nn.LayerNorm)):
            names = {"weight": ("gamma", ident), "bias": ("beta", ident)}
        elif isinstance(mod, nn.Embedding):
            names = {"weight": ("table", ident)}
        else:
            names = {}
        for pname, p in mod.named_parameters(recurse=False):
            mname, (to_mdl, from_mdl) = names.get(pname, (pname, ident))
            full = prefix + "." + mname
            assert full not in out, f"two torch parameters map to {full}"
            out[full] = (p, to_mdl, from_mdl)
    assert len({id(p) for p, _, _ in out.values()}) == len(list(model.parameters()))
    return out


# ---------------------------------------------------------------------------------------------
# mdlc


PARAM_RE = re.compile(r"^param @(\S+) : (\w+)\[([^\]]*)\] = (\w+)(?: \{(.*)\})?\s*$")
STEP_RE = re.compile(r"^func step @(\S+)\((.*)\) ->")
ARG_RE = re.compile(r"%b\.(\w+): (\w+)\[([^\]]*)\]")


def number(text):
    try:
        return float(text)
    except ValueError:
        return text


def dump_ir(mdlc, path):
    text = subprocess.run([mdlc, "dump-ir", path], check=True, capture_output=True, text=True).stdout
    params, fields = {}, None
    for line in text.splitlines():
        m = PARAM_RE.match(line)
        if m:
            name, dtype, dims, init, attrs = m.groups()
            shape = tuple(int(d) for d in dims.split(",")) if dims else ()
            attrs = dict(kv.split(" = ", 1) for kv in attrs.split(", ")) if attrs else {}
            params[name] = (dtype, shape, init, {k: number(v) for k, v in attrs.items()})
            continue
        m = STEP_RE.match(line)
        if m and fields is None:  # the first step function's batch arguments
            fields = {f: (dt, [d.strip() for d in dims.split(",")]) for f, dt, dims in ARG_RE.findall(m.group(2))}
    return params, fields or {}


def initial_value(shape, init, attrs, gen):
    """The file's initializer, with constant ones perturbed so that no gradient is trivially symmetric."""
    if init == "uniform":
        lo, hi = attrs.get("low", -0.1), attrs.get("high", 0.1)
        return torch.rand(shape, generator=gen) * (hi - lo) + lo
    if init == "normal":
        return torch.randn(shape, generator=gen) * attrs.get("std", 1.0) + attrs.get("mean", 0.0)
    base = {"zeros": 0.0, "ones": 1.0, "full": attrs.get("value", 0.0)}.get(init, 0.0)
    return base + 0.1 * (torch.rand(shape, generator=gen) * 2 - 1)


def default_mdlc():
    if os.environ.get("MDLC"):
        return os.environ["MDLC"]
    found = [p for p in (os.path.join(ROOT, ".build", c, "mdlc") for c in ("release", "debug")) if os.path.exists(p)]
    return max(found, key=os.path.getmtime) if found else "mdlc"


# ---------------------------------------------------------------------------------------------


def torch_gradients(name, weights, batch, dtype):
    """PyTorch's loss and gradients (in mdl's names and layouts) at the given weights and batch."""
    ctor, loss_fn, _, _ = MODELS[name]
    model = ctor().to(dtype).train()
    mapping = mdl_params(model)
    with torch.no_grad():
        for n, (p, _, from_mdl) in mapping.items():
            p.copy_(from_mdl(torch.from_numpy(weights[n]).to(dtype)))
    x, y = (torch.from_numpy(batch[f].copy()) for f in ("x", "y"))
    loss = loss_fn(model(x.to(dtype) if x.is_floating_point() else x), y)
    loss.backward()
    grads = {n: to_mdl(p.grad).detach().double().numpy() for n, (p, to_mdl, _) in mapping.items()}
    return loss.detach().double().numpy(), grads


def relative_error(mine, theirs):
    return float(np.abs(mine - theirs).max(initial=0.0)) / max(float(np.abs(theirs).max(initial=0.0)), 1e-8)


def check(name, mdlc, workdir, rows):
    """Checks one model; appends table rows and returns (problems, torch seconds, mdlc seconds)."""
    ctor, _, batch, field_spec = MODELS[name]
    path = os.path.join(ROOT, "Models", name + ".mdl")
    problems = []
    ir_params, ir_fields = dump_ir(mdlc, path)

    # The torch model's parameters against the file's, by name and shape.
    mapping = mdl_params(ctor())
    for n in sorted(set(ir_params) - set(mapping)):
        problems.append(f"mdl param {n} has no torch tensor")
    for n in sorted(set(mapping) - set(ir_params)):
        problems.append(f"torch tensor {n} is not an mdl param")

    # Weights: random (fixed seed), in mdl's layout, by mdl name.
    gen = torch.Generator().manual_seed(SEED)
    weights = {}
    for n, (dtype, shape, init, attrs) in ir_params.items():
        if n not in mapping:
            continue
        p, to_mdl, _ = mapping[n]
        if tuple(to_mdl(p).shape) != shape or dtype != "f32":
            problems.append(f"{n}: torch gives f32{list(to_mdl(p).shape)}, mdl declares {dtype}{list(shape)}")
            continue
        weights[n] = initial_value(shape, init, attrs, gen).float().numpy().copy()

    # Batch: named like the step function's %b.* arguments.
    batch_np = {}
    if set(ir_fields) != set(field_spec):
        problems.append(f"batch fields: mdl has {sorted(ir_fields)}, this check expects {sorted(field_spec)}")
    for f, (kind, lo, hi) in field_spec.items():
        dtype, dims = ir_fields.get(f, ("f32" if kind == "float" else "i32", ["B"]))
        shape = [batch if d == "B" else int(d) for d in dims]
        want = "f32" if kind == "float" else "i32"
        if dtype != want:
            problems.append(f"batch field {f} is {dtype} in mdl, this check expects {want}")
        if kind == "float":
            batch_np[f] = (torch.rand(shape, generator=gen) * (hi - lo) + lo).numpy().astype(np.float32)
        else:
            batch_np[f] = torch.randint(lo, hi, shape, generator=gen, dtype=torch.int32).numpy()
    if problems:
        return problems, 0.0, 0.0

    t0 = time.time()
    loss64, grads64 = torch_gradients(name, weights, batch_np, torch.float64)
    loss32, grads32 = torch_gradients(name, weights, batch_np, torch.float32)
    t_torch = time.time() - t0

    # mdl: its own autodiff in the float64 reference interpreter.
    wf, bf, gf = (os.path.join(workdir, f"{name}.{k}.safetensors") for k in ("W", "B", "G"))
    save_file(weights, wf)
    save_file(batch_np, bf)
    t1 = time.time()
    cmd = [mdlc, "grad", path, "--weights", wf, "--batch", bf, "--out", gf]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    t_mdl = time.time() - t1
    if proc.returncode != 0:
        problems.append(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return problems, t_torch, t_mdl
    got = load_file(gf)

    def compare(label, mine, ref64, ref32):
        if mine is None:
            rows.append((name, label, list(ref64.shape), float(np.abs(ref64).max(initial=0.0)), float("nan"), float("nan"), "MISSING"))
            problems.append(f"{label}: missing from mdl's output")
            return
        mine = np.asarray(mine, dtype=np.float64)
        if mine.shape != ref64.shape:
            rows.append((name, label, list(mine.shape), float("nan"), float("nan"), float("nan"), "SHAPE"))
            problems.append(f"{label}: mdl gives shape {list(mine.shape)}, torch {list(ref64.shape)}")
            return
        err = relative_error(mine, ref64)
        ok = err <= TOLERANCE and bool(np.all(np.isfinite(mine)))
        rows.append((name, label, list(ref64.shape), float(np.abs(ref64).max(initial=0.0)), err,
                     relative_error(mine, ref32), "OK" if ok else "FAIL"))
        if not ok:
            problems.append(f"{label}: relative error {err:.3g}")

    compare("loss", got.get("loss"), loss64, loss32)
    for n in ir_params:
        compare("grad." + n, got.get("grad." + n), grads64[n], grads32[n])
    for k in sorted(set(got) - {"loss"} - {"grad." + n for n in ir_params}):
        problems.append(f"mdl wrote a tensor no torch parameter matches: {k}")
        rows.append((name, k, list(got[k].shape), float("nan"), float("nan"), float("nan"), "EXTRA"))
    return problems, t_torch, t_mdl

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", metavar="MODEL", help=f"models to check (default: all of {', '.join(MODELS)})")
    ap.add_argument("--mdlc", default=default_mdlc(), help="the mdlc binary (default: $MDLC or the newest .build/*/mdlc)")
    ap.add_argument("--keep", metavar="DIR", help="write the W/B/G safetensors files into DIR and keep them")
    ap.add_argument("-q", "--quiet", action="store_true", help="list only the losses and the tensors that fail")
    args = ap.parse_args()
    names = args.models or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    workdir = args.keep or tempfile.mkdtemp(prefix="torch-check-")
    os.makedirs(workdir, exist_ok=True)
    summaries, failed = [], False
    print(f"mdlc: {args.mdlc}; torch {torch.__version__}; tolerance {TOLERANCE:g} (relative, against float64 torch)")
    print(f"{'model':<13} {'tensor':<42} {'shape':<14} {'max|g|':>9} {'rel err':>9} {'f32 err':>9}  status")
    for name in names:
        rows = []
        try:
            problems, t_torch, t_mdl = check(name, args.mdlc, workdir, rows)
        except (OSError, subprocess.CalledProcessError) as e:
            detail = getattr(e, "stderr", None) or ""
            problems, t_torch, t_mdl = [f"{e} {detail}".strip()], 0.0, 0.0
        for r in rows:
            if not args.quiet or r[6] != "OK" or r[1] == "loss":
                print(f"{r[0]:<13} {r[1]:<42} {str(r[2]).replace(' ', ''):<14} {r[3]:>9.2e} {r[4]:>9.2e} {r[5]:>9.2e}  {r[6]}")
        worst = max((r[4] for r in rows if math.isfinite(r[4])), default=float("nan"))
        worst32 = max((r[5] for r in rows if math.isfinite(r[5])), default=float("nan"))
        n_ok = sum(r[6] == "OK" for r in rows)
        line = (f"{name}: {'FAIL' if problems else 'OK'}: {n_ok}/{len(rows)} tensors agree "
                f"(worst rel err {worst:.1e}; vs float32 torch {worst32:.1e}); "
                f"torch {t_torch:.1f}s, mdlc grad {t_mdl:.1f}s")
        print(line)
        for p in problems:
            print(f"  {name}: {p}")
        summaries.append(line)
        failed |= bool(problems)
    print("\n".join(["", "summary:"] + ["  " + s for s in summaries]))
    if os.listdir(workdir) and (args.keep or failed):
        print(f"files in {workdir}")
    elif not args.keep:
        for f in os.listdir(workdir):
            os.remove(os.path.join(workdir, f))
        os.rmdir(workdir)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
