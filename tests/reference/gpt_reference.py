#!/usr/bin/python3
"""Generates DIR/gpt_ref.safetensors: a small GPT computed by PyTorch in
float64, the ground truth that sparta's C++ test (sparta_reference_tests)
compares its float32 forward, backward and AdamW training against.

Usage: gpt_reference.py --out DIR

Model: V=61, d=32, L=2, n_head=2 (D=16), T=context=16, B=3; the architecture,
parameter names and optimizer are bench/common_torch_gpt.py's (= sparta's).
Parameters are drawn from torch.manual_seed(0) with a larger spread than
sparta's init so every path matters (attention far from uniform, LayerNorm
affine terms and biases non-trivial):
    wte, linear weights  normal(0, 0.1); qkv weights normal(0, 0.25)
    biases               normal(0, 0.05)
    LayerNorm            weight 1 + 0.1 normal, bias 0.05 normal
then rounded to float32 (p.float().double()) so that the F32 file and the
float64 computation start from identical weights.

File contents (float tensors F32, integer tensors I32), in this order:
    <param>                every parameter under its own name, sparta's order
    tokens, targets        (B, T)  targets[b, t] = tokens of position t + 1
    logits                 (B, T, V)
    loss                   (1,)    mean cross-entropy over all B*T positions
    logits_bf16_autocast   (B, T, V) the float32 model under torch.autocast(cpu, bfloat16)
    loss_bf16_autocast     (1,)    its loss
    grad.<param>           gradient of `loss`
    adamw_losses           (10,)   loss before each of 10 AdamW steps on the same batch
    adamw_lrs              (10,)   learning rate used by each step
    adamw_grad_norms       (10,)   global gradient norm before clipping, per step
    after.<param>          parameters after the 10 steps
__metadata__ holds every hyper-parameter as a string.

Before writing, the script checks its own PyTorch model against an independent
NumPy implementation written straight from the equations (logits, loss), its
gradients against central finite differences, and torch.optim.AdamW plus the
schedule against a hand-written AdamW; after writing, it parses the file back
with its own reader and compares every tensor. Any mismatch is an assertion
error (non-zero exit).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from common_torch_gpt import GPT, GPTConfig, TrainHParams, lr_at, make_optimizer, train_step  # noqa: E402

CFG = GPTConfig(vocab_size=61, context=16, n_layer=2, n_head=2, d_model=32)
BATCH = 3
HP = TrainHParams(lr=3e-3, warmup=3, total_steps=10, weight_decay=0.1, grad_clip=1.0,
                  beta1=0.9, beta2=0.95, eps=1e-8, min_lr_ratio=0.1)
SEED = 0
FILE_NAME = "gpt_ref.safetensors"


# ---------------------------------------------------------------- safetensors

_DTYPES = {"F32": (np.dtype("<f4"), 4), "I32": (np.dtype("<i4"), 4), "F64": (np.dtype("<f8"), 8),
           "I64": (np.dtype("<i8"), 8)}


def write_safetensors(path: Path, tensors: list[tuple[str, np.ndarray]], metadata: dict[str, str]) -> None:
    """Writes `tensors` back to back in the given order; the JSON header is
    space-padded so that its length is a multiple of 8."""
    header: dict[str, object] = {}
    blobs = []
    offset = 0
    for name, arr in tensors:
        if name in header or name == "__metadata__" or not name:
            raise ValueError(f"write_safetensors: bad or duplicate tensor name {name!r}")
        kind = {np.dtype("float32"): "F32", np.dtype("int32"): "I32",
                np.dtype("float64"): "F64", np.dtype("int64"): "I64"}.get(arr.dtype)
        if kind is None:
            raise ValueError(f"write_safetensors: tensor {name!r} has unsupported dtype {arr.dtype}")
        data = np.ascontiguousarray(arr, dtype=_DTYPES[kind][0]).tobytes()
        header[name] = {"dtype": kind, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = dict(metadata)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str], list[str]]:
    """Parses and validates a safetensors file: returns (tensors, metadata, names in file order)."""
    raw = path.read_bytes()
    if len(raw) < 8:
        raise ValueError(f"{path}: file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header length {n} exceeds file size {len(raw)}")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    metadata = header.pop("__metadata__", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"{path}: __metadata__ must map strings to strings")
    order = sorted(header, key=lambda k: header[k]["data_offsets"][0])
    tensors = {}
    expect_begin = 0
    for name in order:
        entry = header[name]
        if set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{path}: tensor {name!r} entry has keys {sorted(entry)}")
        dt, size = _DTYPES[entry["dtype"]]
        begin, end = entry["data_offsets"]
        need = size * math.prod(entry["shape"])
        if begin != expect_begin or end - begin != need:
            raise ValueError(f"{path}: tensor {name!r} data_offsets [{begin}, {end}) do not tile the data "
                             f"region (expected begin {expect_begin}, {need} bytes)")
        tensors[name] = np.frombuffer(data[begin:end], dtype=dt).reshape(entry["shape"])
        expect_begin = end
    if expect_begin != len(data):
        raise ValueError(f"{path}: {len(data) - expect_begin} trailing bytes after the last tensor")
    return tensors, metadata, order


# ------------------------------------------------- independent NumPy reference

def numpy_logits(params: dict[str, np.ndarray], tokens: np.ndarray) -> np.ndarray:
    """The model written straight from the equations, one sequence and one
    query at a time, sharing no code with common_torch_gpt. tokens (B, T) -> (B, T, V)."""
    d, H, D, L = CFG.d_model, CFG.n_head, CFG.head_dim, CFG.n_layer

    def layernorm(x, w, b):
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + CFG.ln_eps) * w + b

    def gelu_tanh(x):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))

    def rope(vec, pos):
        out = np.empty_like(vec)
        for i in range(D // 2):
            angle = pos * CFG.rope_base ** (-2.0 * i / D)
            c, s = math.cos(angle), math.sin(angle)
            out[i] = vec[i] * c - vec[i + D // 2] * s
            out[i + D // 2] = vec[i + D // 2] * c + vec[i] * s
        return out

    out = []
    for seq in tokens:
        T = len(seq)
        x = params["wte"][seq].copy()                                   # (T, d)
        for l in range(L):
            p = lambda n: params[f"h.{l}.{n}"]                          # noqa: E731
            a = layernorm(x, p("ln1.weight"), p("ln1.bias"))
            qkv = a @ p("attn.qkv.weight").T + p("attn.qkv.bias")       # (T, 3d)
            att = np.zeros((T, d))
            for h in range(H):
                q = [rope(qkv[t, h * D:(h + 1) * D], t) for t in range(T)]
                k = [rope(qkv[t, d + h * D:d + (h + 1) * D], t) for t in range(T)]
                v = qkv[:, 2 * d + h * D:2 * d + (h + 1) * D]
                for t in range(T):
                    s = np.array([q[t] @ k[j] / math.sqrt(D) for j in range(t + 1)])
                    w = np.exp(s - s.max())
                    w /= w.sum()
                    att[t, h * D:(h + 1) * D] = w @ v[:t + 1]
            x = x + att @ p("attn.proj.weight").T + p("attn.proj.bias")
            m = layernorm(x, p("ln2.weight"), p("ln2.bias"))
            m = gelu_tanh(m @ p("mlp.fc.weight").T + p("mlp.fc.bias"))
            x = x + m @ p("mlp.proj.weight").T + p("mlp.proj.bias")
        out.append(layernorm(x, params["ln_f.weight"], params["ln_f.bias"]) @ params["wte"].T)
    return np.stack(out)


def numpy_loss(logits: np.ndarray, targets: np.ndarray) -> float:
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(-np.take_along_axis(logp, targets[..., None], axis=-1).mean())


def numpy_adamw(params: dict[str, np.ndarray], grad_fn, steps: int) -> dict[str, np.ndarray]:
    """AdamW + global-norm clipping + warmup/cosine schedule from the formulas;
    grad_fn(params) -> {name: gradient}."""
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    for s in range(steps):
        if s < HP.warmup:
            lr = HP.lr * (s + 1) / HP.warmup
        else:
            frac = min((s - HP.warmup) / max(1, HP.total_steps - HP.warmup), 1.0)
            lr_min = HP.min_lr_ratio * HP.lr
            lr = lr_min + 0.5 * (HP.lr - lr_min) * (1 + math.cos(math.pi * frac))
        g = grad_fn(p)
        norm = math.sqrt(sum(float((x ** 2).sum()) for x in g.values()))
        scale = min(1.0, HP.grad_clip / (norm + 1e-6))    # clip_grad_norm_'s formula
        t = s + 1
        for k in p:
            gk = g[k] * scale
            if p[k].ndim == 2:
                p[k] *= 1.0 - lr * HP.weight_decay
            m[k] = HP.beta1 * m[k] + (1 - HP.beta1) * gk
            v2[k] = HP.beta2 * v2[k] + (1 - HP.beta2) * gk * gk
            mhat = m[k] / (1 - HP.beta1 ** t)
            vhat = v2[k] / (1 - HP.beta2 ** t)
            p[k] -= lr * mhat / (np.sqrt(vhat) + HP.eps)
    return p


# ------------------------------------------------------------------- main

def random_params(model: GPT) -> None:
    torch.manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln" in name or name.startswith("ln_f."):
                if name.endswith(".weight"):
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                else:
                    p.copy_(0.05 * torch.randn_like(p))
            elif p.dim() == 2:
                std = 0.25 if name.endswith("attn.qkv.weight") else 0.1
                p.copy_(std * torch.randn_like(p))
            else:
                p.copy_(0.05 * torch.randn_like(p))
            # Round to float32 so the F32 file holds exactly the float64 start point.
            p.copy_(p.float().double())


def check_close(what: str, got, want, rtol: float, atol: float) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    err = np.abs(got - want)
    bad = err > atol + rtol * np.abs(want)
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {bad.size} values differ, max abs error "
                           f"{err.max():.3e} (rtol {rtol}, atol {atol})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder to write gpt_ref.safetensors into")
    args = ap.parse_args()
    t_start = time.perf_counter()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    model = GPT(CFG, dtype=torch.float64)
    random_params(model)
    names = [n for n, _ in model.named_parameters()]
    start = {n: p.detach().clone() for n, p in model.named_parameters()}

    gen = torch.Generator().manual_seed(SEED + 1)
    seq = torch.randint(0, CFG.vocab_size, (BATCH, CFG.context + 1), generator=gen)
    tokens, targets = seq[:, :-1].contiguous(), seq[:, 1:].contiguous()

    # Forward + backward of the mean loss.
    logits = model(tokens)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, CFG.vocab_size), targets.reshape(-1))
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}

    # Check 1: an independent NumPy implementation of the equations.
    np_params = {n: t.numpy() for n, t in start.items()}
    ref_logits = numpy_logits(np_params, tokens.numpy())
    check_close("logits vs NumPy reference", logits.detach().numpy(), ref_logits, rtol=1e-11, atol=1e-11)
    check_close("loss vs NumPy reference", float(loss), numpy_loss(ref_logits, targets.numpy()), 1e-12, 1e-12)
    # Attention must be far from uniform, or masking/RoPE/scale bugs could hide:
    # some query at position >= 4 of layer 0 must put more than half its weight on one key.
    with torch.no_grad():
        a = model.h[0].ln1(model.wte[tokens])
        q, k, _ = model.h[0].attn.qkv(a).split(CFG.d_model, dim=-1)
        q = q.view(BATCH, CFG.context, CFG.n_head, CFG.head_dim).transpose(1, 2)
        k = k.view(BATCH, CFG.context, CFG.n_head, CFG.head_dim).transpose(1, 2)
        s = (q @ k.transpose(-2, -1)) / math.sqrt(CFG.head_dim)
        s = s.masked_fill(model.causal_mask, float("-inf")).softmax(-1)
        peak = float(s[:, :, 4:, :].max())
    assert peak > 0.5, f"attention too uniform for a meaningful test (max weight {peak:.3f})"

    # Check 2: gradients against central finite differences on a few entries per tensor.
    rng = np.random.default_rng(SEED)
    with torch.no_grad():
        for n, p in model.named_parameters():
            flat = p.view(-1)
            for idx in rng.choice(flat.numel(), size=min(3, flat.numel()), replace=False):
                h = 1e-6
                orig = float(flat[idx])
                flat[idx] = orig + h
                lp = float(model.loss(tokens, targets))
                flat[idx] = orig - h
                lm = float(model.loss(tokens, targets))
                flat[idx] = orig
                fd = (lp - lm) / (2 * h)
                check_close(f"grad.{n}[{idx}] vs finite difference", float(grads[n].view(-1)[idx]), fd, 1e-5, 1e-8)

    # 10 AdamW steps on the same batch.
    opt = make_optimizer(model, HP)
    losses, lrs, norms = [], [], []
    for step in range(HP.total_steps):
        l, g, lr = train_step(model, opt, HP, step, tokens, targets)
        losses.append(l)
        norms.append(g)
        lrs.append(lr)
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert losses[-1] < losses[0], f"AdamW did not reduce the loss: {losses}"
    assert norms[0] > HP.grad_clip, f"first gradient norm {norms[0]} does not exercise clipping"

    # Check 3: torch.optim.AdamW + schedule + clipping against the hand-written AdamW.
    def grad_fn(np_p):
        m = GPT(CFG, dtype=torch.float64)
        with torch.no_grad():
            for n, p in m.named_parameters():
                p.copy_(torch.from_numpy(np_p[n]))
        m.loss(tokens, targets).backward()
        return {n: p.grad.numpy().copy() for n, p in m.named_parameters()}

    manual = numpy_adamw(np_params, grad_fn, HP.total_steps)
    for n in names:
        check_close(f"after.{n} vs hand-written AdamW", after[n].numpy(), manual[n], 1e-9, 1e-12)
    for s, lr in enumerate(lrs):
        assert math.isclose(lr, lr_at(s, HP)), (s, lr)

    # The same model in float32 under PyTorch's BF16 autocast (its linear
    # layers, attention products and LM head in BF16): what sparta's bf16
    # precision is compared with, besides the float64 truth.
    model32 = GPT(CFG, dtype=torch.float32)
    with torch.no_grad():
        for n, p in model32.named_parameters():
            p.copy_(start[n].float())
    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits_ac = model32(tokens)
        loss_ac = torch.nn.functional.cross_entropy(logits_ac.float().reshape(-1, CFG.vocab_size),
                                                    targets.reshape(-1))
    ac_err = float((logits_ac.double() - logits).abs().max())
    # Autocast must have changed the numbers (or the comparison tests nothing)
    # yet stay near the truth.
    assert 1e-4 < ac_err < 0.5, f"BF16 autocast logits differ from float64 by {ac_err}"

    f32 = lambda t: t.detach().numpy().astype(np.float32)  # noqa: E731
    i32 = lambda t: t.numpy().astype(np.int32)             # noqa: E731
    tensors: list[tuple[str, np.ndarray]] = [(n, f32(start[n])) for n in names]
    tensors += [("tokens", i32(tokens)), ("targets", i32(targets)),
                ("logits", f32(logits)), ("loss", np.array([float(loss)], dtype=np.float32)),
                ("logits_bf16_autocast", f32(logits_ac.float())),
                ("loss_bf16_autocast", np.array([float(loss_ac)], dtype=np.float32))]
    tensors += [(f"grad.{n}", f32(grads[n])) for n in names]
    tensors += [("adamw_losses", np.array(losses, dtype=np.float32)),
                ("adamw_lrs", np.array(lrs, dtype=np.float32)),
                ("adamw_grad_norms", np.array(norms, dtype=np.float32))]
    tensors += [(f"after.{n}", f32(after[n])) for n in names]
    metadata = {
        "n_layer": str(CFG.n_layer), "n_head": str(CFG.n_head), "d_model": str(CFG.d_model),
        "context": str(CFG.context), "vocab_size": str(CFG.vocab_size), "batch": str(BATCH),
        "lr": repr(HP.lr), "warmup": str(HP.warmup), "steps": str(HP.total_steps),
        "weight_decay": repr(HP.weight_decay), "grad_clip": repr(HP.grad_clip),
        "beta1": repr(HP.beta1), "beta2": repr(HP.beta2), "eps": repr(HP.eps),
        "min_lr_ratio": repr(HP.min_lr_ratio), "rope_base": repr(CFG.rope_base), "ln_eps": repr(CFG.ln_eps),
        "seed": str(SEED), "compute_dtype": "float64",
        "generator": "tests/reference/gpt_reference.py (PyTorch " + torch.__version__ + ")",
    }

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / FILE_NAME
    write_safetensors(path, tensors, metadata)

    # The file must parse back to exactly what was written, in order.
    back, back_meta, order = read_safetensors(path)
    assert order == [n for n, _ in tensors], "tensor order changed on read-back"
    assert back_meta == metadata, "metadata changed on read-back"
    for n, arr in tensors:
        assert back[n].dtype == arr.dtype and back[n].shape == arr.shape, f"{n}: dtype/shape changed on read-back"
        assert np.array_equal(back[n], arr), f"{n}: values changed on read-back"

    print(f"gpt_reference: wrote {path} ({path.stat().st_size} bytes, {len(tensors)} tensors); "
          f"loss {float(loss):.6f}, AdamW losses {losses[0]:.4f} -> {losses[-1]:.4f}, "
          f"{time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
