"""The PyTorch and JAX versions of Tools/bench's models, timed one framework per process.

    python peers.py FRAMEWORK BENCH --steps N --warmup W --threads T

FRAMEWORK is torch (eager), torch.compile or jax (the whole step under jax.jit, optax Adam).
Prints one JSON object (the keys of an mdl binary's `bench --json`, plus compile_s and
version). The models match Tools/bench-models/*.mdl layer for layer: the same shapes, the
same initial distributions (weights uniform(+-1/sqrt(fan_in)), biases zero, embeddings
N(0, 1), positions N(0, 0.02), LayerNorm 1/0, eps 1e-5), exact-erf GELU, Adam(lr 1e-3,
betas 0.9/0.999, eps 1e-8), float32, random data of the same distributions (x uniform in
[0, 1), labels or tokens uniform), one fixed batch for every step as in `BIN bench`.
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import numpy as np

VOCAB, CONTEXT, LAYERS, HEADS, DIM = 65, 64, 4, 4, 128
BATCH = {"xor": 4, "mlp64": 64, "mlp256": 256, "cnn": 64, "gpt": 32}


def make_batch(bench, batch, seed=0):
    rng = np.random.default_rng(seed)
    if bench == "xor":
        x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
        return x, np.array([0, 1, 1, 0], np.float32)
    if bench == "gpt":
        return (rng.integers(0, VOCAB, (batch, CONTEXT)).astype(np.int32),
                rng.integers(0, VOCAB, (batch, CONTEXT)).astype(np.int32))
    return rng.random((batch, 784), dtype=np.float32), rng.integers(0, 10, batch).astype(np.int32)


def stats(times_ms):
    s = sorted(times_ms)
    q = lambda p: float(np.quantile(np.array(s), p))
    return {"median_ms": q(0.5), "p10_ms": q(0.1), "p90_ms": q(0.9), "min_ms": s[0], "max_ms": s[-1],
            "mean_ms": float(np.mean(s))}


# ---- PyTorch ---------------------------------------------------------------------------------

def torch_model(bench):
    import torch
    from torch import nn
    import torch.nn.functional as F

    def init(m):
        for mod in m.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                fan_in = mod.weight[0].numel()
                nn.init.uniform_(mod.weight, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
                nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.Embedding):
                nn.init.normal_(mod.weight, 0.0, 1.0)
        return m

    if bench == "xor":
        net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1), nn.Flatten(0))
        return init(net), F.binary_cross_entropy_with_logits
    if bench in ("mlp64", "mlp256"):
        net = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
        return init(net), F.cross_entropy
    if bench == "cnn":
        net = nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
                            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 12 * 12, 128), nn.ReLU(), nn.Linear(128, 10))
        return init(net), F.cross_entropy

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
            self.q, self.k, self.v, self.o = (nn.Linear(DIM, DIM) for _ in range(4))
            self.fc, self.proj = nn.Linear(DIM, 4 * DIM), nn.Linear(4 * DIM, DIM)

        def forward(self, x):
            B, T, C = x.shape
            y = self.ln1(x)
            heads = lambda t: t.view(B, T, HEADS, C // HEADS).transpose(1, 2)
            a = F.scaled_dot_product_attention(heads(self.q(y)), heads(self.k(y)), heads(self.v(y)), is_causal=True)
            x = x + self.o(a.transpose(1, 2).reshape(B, T, C))
            return x + self.proj(F.gelu(self.fc(self.ln2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(VOCAB, DIM)
            self.pos = nn.Parameter(torch.randn(CONTEXT, DIM) * 0.02)
            self.blocks = nn.Sequential(*[Block() for _ in range(LAYERS)])
            self.ln_f = nn.LayerNorm(DIM)
            self.head = nn.Linear(DIM, VOCAB)

        def forward(self, tokens):
            h = self.tok(tokens) + self.pos[: tokens.shape[1]]
            return self.head(self.ln_f(self.blocks(h)))

    return init(GPT()), lambda logits, y: F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))


def run_torch(bench, batch, steps, warmup, threads, compiled):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net, loss_fn = torch_model(bench)
    x, y = make_batch(bench, batch)
    x = torch.from_numpy(x)
    y = torch.from_numpy(y).long() if y.dtype == np.int32 else torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    fwd = torch.compile(net) if compiled else net

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(fwd(x), y)
        loss.backward()
        opt.step()
        return loss

    t0 = time.perf_counter()
    first = step().item()
    first_s = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"first_loss": first, "last_loss": loss.item(), "times_ms": times,
            "compile_s": first_s if compiled else None, "first_step_s": first_s,
            "version": "torch " + torch.__version__}


# ---- JAX -------------------------------------------------------------------------------------

def jax_model(bench, key):
    import jax
    import jax.numpy as jnp
    import optax

    keys = iter(jax.random.split(key, 64))

    def linear(n_in, n_out):
        lim = 1 / math.sqrt(n_in)
        return {"w": jax.random.uniform(next(keys), (n_in, n_out), jnp.float32, -lim, lim), "b": jnp.zeros(n_out)}

    def conv(c_in, c_out, k):
        lim = 1 / math.sqrt(c_in * k * k)
        return {"w": jax.random.uniform(next(keys), (c_out, c_in, k, k), jnp.float32, -lim, lim), "b": jnp.zeros(c_out)}

    lin = lambda p, x: x @ p["w"] + p["b"]
    ce = lambda logits, y: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    if bench == "xor":
        params = {"fc1": linear(2, 8), "fc2": linear(8, 1)}

        def loss(p, x, y):
            return optax.sigmoid_binary_cross_entropy(lin(p["fc2"], jnp.tanh(lin(p["fc1"], x)))[:, 0], y).mean()
        return params, loss
    if bench in ("mlp64", "mlp256"):
        params = {"fc1": linear(784, 128), "fc2": linear(128, 128), "fc3": linear(128, 10)}

        def loss(p, x, y):
            h = jax.nn.relu(lin(p["fc2"], jax.nn.relu(lin(p["fc1"], x))))
            return ce(lin(p["fc3"], h), y)
        return params, loss
    if bench == "cnn":
        params = {"conv1": conv(1, 32, 3), "conv2": conv(32, 64, 3), "fc1": linear(64 * 12 * 12, 128), "fc2": linear(128, 10)}

        def cv(p, x):
            y = jax.lax.conv_general_dilated(x, p["w"], (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))
            return y + p["b"][None, :, None, None]

        def loss(p, x, y):
            img = x.reshape(-1, 1, 28, 28)
            h = jax.nn.relu(cv(p["conv2"], jax.nn.relu(cv(p["conv1"], img))))
            h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
            h = jax.nn.relu(lin(p["fc1"], h.reshape(h.shape[0], -1)))
            return ce(lin(p["fc2"], h), y)
        return params, loss

    ln = lambda: {"g": jnp.ones(DIM), "b": jnp.zeros(DIM)}

    def layer_norm(p, x):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) * jax.lax.rsqrt(v + 1e-5) * p["g"] + p["b"]

    params = {
        "tok": jax.random.normal(next(keys), (VOCAB, DIM), jnp.float32),
        "pos": 0.02 * jax.random.normal(next(keys), (CONTEXT, DIM), jnp.float32),
        "blocks": [{"ln1": ln(), "q": linear(DIM, DIM), "k": linear(DIM, DIM), "v": linear(DIM, DIM),
                    "o": linear(DIM, DIM), "ln2": ln(), "fc": linear(DIM, 4 * DIM), "proj": linear(4 * DIM, DIM)}
                   for _ in range(LAYERS)],
        "ln_f": ln(), "head": linear(DIM, VOCAB),
    }

    def block(p, x):
        B, T, C = x.shape
        dh = C // HEADS
        y = layer_norm(p["ln1"], x)
        heads = lambda t: t.reshape(B, T, HEADS, dh).transpose(0, 2, 1, 3)
        q, k, v = heads(lin(p["q"], y)), heads(lin(p["k"], y)), heads(lin(p["v"], y))
        scores = (q @ k.transpose(0, 1, 3, 2)) * (1 / math.sqrt(dh))
        allowed = jnp.arange(T)[None, :] <= jnp.arange(T)[:, None]
        a = jax.nn.softmax(jnp.where(allowed, scores, -1e9), axis=-1) @ v
        x = x + lin(p["o"], a.transpose(0, 2, 1, 3).reshape(B, T, C))
        return x + lin(p["proj"], jax.nn.gelu(lin(p["fc"], layer_norm(p["ln2"], x)), approximate=False))

    def loss(p, tokens, y):
        h = p["tok"][tokens] + p["pos"][: tokens.shape[1]]
        for bp in p["blocks"]:
            h = block(bp, h)
        return ce(lin(p["head"], layer_norm(p["ln_f"], h)), y)
    return params, loss


def run_jax(bench, batch, steps, warmup, threads):
    import jax
    import optax
    params, loss_fn = jax_model(bench, jax.random.PRNGKey(0))
    opt = optax.adam(1e-3)
    state = opt.init(params)
    x, y = (jax.device_put(a) for a in make_batch(bench, batch))

    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    t0 = time.perf_counter()
    params, state, loss = step(params, state, x, y)
    loss.block_until_ready()
    compile_s = time.perf_counter() - t0
    first = float(loss)
    for _ in range(warmup):
        params, state, loss = step(params, state, x, y)
    jax.block_until_ready((params, state, loss))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        params, state, loss = step(params, state, x, y)
        jax.block_until_ready((params, state, loss))
        times.append((time.perf_counter() - t0) * 1e3)
    return {"first_loss": first, "last_loss": float(loss), "times_ms": times, "compile_s": compile_s,
            "first_step_s": compile_s, "version": "jax %s (jaxlib %s), optax %s" % (
                jax.__version__, __import__("jaxlib").__version__, optax.__version__)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("framework", choices=["torch", "torch.compile", "jax"])
    ap.add_argument("bench", choices=sorted(BATCH))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    batch = BATCH[a.bench]
    if a.framework == "jax":
        r = run_jax(a.bench, batch, a.steps, a.warmup, a.threads)
    else:
        r = run_torch(a.bench, batch, a.steps, a.warmup, a.threads, a.framework == "torch.compile")
    r.update(stats(r["times_ms"]))
    r.update({"framework": a.framework, "bench": a.bench, "batch": batch, "threads": a.threads, "steps": a.steps,
              "warmup": a.warmup, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0})
    json.dump(r, sys.stdout)
    print()


if __name__ == "__main__":
    main()
