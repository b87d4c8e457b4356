"""The PyTorch twin of sparta's GPT, shared by bench_gpt.py, torch_quality.py
and tests/reference/gpt_reference.py.

Pre-LayerNorm GPT with RoPE and a tied output head; parameter names, shapes
and order are exactly sparta's (docs/checkpoint-format.md):

    wte                       (V, d)    token embedding and output head (tied)
    h.{i}.ln1.weight/bias     (d)
    h.{i}.attn.qkv.weight     (3d, d)   output rows ordered q | k | v, each d =
    h.{i}.attn.qkv.bias       (3d)      n_head contiguous heads of D = d/n_head
    h.{i}.attn.proj.weight    (d, d)
    h.{i}.attn.proj.bias      (d)
    h.{i}.ln2.weight/bias     (d)
    h.{i}.mlp.fc.weight       (4d, d)
    h.{i}.mlp.fc.bias         (4d)
    h.{i}.mlp.proj.weight     (d, 4d)
    h.{i}.mlp.proj.bias       (d)
    ln_f.weight/bias          (d)

Linear layers use PyTorch's (out, in) layout: y = x @ W^T + b.

Forward, tokens (B, T) -> logits (B, T, V):
    x = wte[tokens]
    per block:  a = LN1(x); q|k|v = a @ Wqkv^T + bqkv, each -> (B, n_head, T, D)
                RoPE(q), RoPE(k); att = softmax(q k^T / sqrt(D) + causal mask) v
                x = x + proj(att with heads concatenated back to (B, T, d))
                x = x + mlp.proj(GELU_tanh(mlp.fc(LN2(x))))
    logits = LN_f(x) @ wte^T                      (no bias)
LayerNorm: eps 1e-5, biased variance. RoPE is GPT-NeoX rotate-half: for
i < D/2, theta_i = base^(-2i/D), angle = pos * theta_i (pos 0-based),
    out[i]       = x[i] cos - x[i + D/2] sin
    out[i + D/2] = x[i + D/2] cos + x[i] sin
Loss: mean token cross-entropy of logits[:, t] against targets[:, t].

Training (sparta's): AdamW with weight decay on the 2-D weights only (wte and
the linear weights; none on biases and LayerNorm), global-norm gradient
clipping before each step, linear warmup then cosine decay to
min_lr_ratio * lr (see lr_at).

The dtype is a constructor argument: the reference generator runs in
float64, the benchmarks in float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    context: int
    n_layer: int
    n_head: int
    d_model: int
    rope_base: float = 10000.0
    ln_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context", "n_layer", "n_head", "d_model"):
            if getattr(self, name) <= 0:
                raise ValueError(f"GPTConfig: {name} must be > 0, got {getattr(self, name)}")
        if self.d_model % self.n_head != 0:
            raise ValueError(f"GPTConfig: d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if (self.d_model // self.n_head) % 2 != 0:
            raise ValueError(f"GPTConfig: head_dim {self.d_model // self.n_head} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


@dataclass(frozen=True)
class TrainHParams:
    lr: float
    warmup: int
    total_steps: int
    weight_decay: float
    grad_clip: float          # <= 0 disables clipping
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    min_lr_ratio: float = 0.1


class LayerNorm(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last dim, biased var."""

    def __init__(self, d: int, eps: float, dtype: torch.dtype):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(d, dtype=dtype))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.layer_norm uses the biased variance, as sparta does.
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


class Linear(nn.Module):
    """y = x @ weight^T + bias, weight (out, in)."""

    def __init__(self, d_in: int, d_out: int, dtype: torch.dtype):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(d_out, d_in, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(d_out, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def rope_tables(context: int, head_dim: int, base: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin: (context, head_dim/2); angle[pos, i] = pos * base^(-2i/head_dim).

    The angles are computed in float64 and rounded once to `dtype`.
    """
    half = head_dim // 2
    i = torch.arange(half, dtype=torch.float64)
    theta = base ** (-2.0 * i / head_dim)
    pos = torch.arange(context, dtype=torch.float64)
    angle = pos[:, None] * theta[None, :]
    return torch.cos(angle).to(dtype), torch.sin(angle).to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D); cos, sin: (T, D/2). Rotate-half (GPT-NeoX) RoPE."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, dtype: torch.dtype):
        super().__init__()
        self.qkv = Linear(cfg.d_model, 3 * cfg.d_model, dtype)
        self.proj = Linear(cfg.d_model, cfg.d_model, dtype)
        self.n_head = cfg.n_head
        self.head_dim = cfg.head_dim

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, T, d); cos, sin: (T, D/2); mask: (T, T) bool, True = masked out.
        B, T, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        # (B, T, d) -> (B, n_head, T, D): head h owns columns [h*D, (h+1)*D).
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        scores = scores.masked_fill(mask, float("-inf"))
        att = torch.softmax(scores, dim=-1) @ v                     # (B, n_head, T, D)
        att = att.transpose(1, 2).contiguous().view(B, T, d)        # heads concatenated
        return self.proj(att)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig, dtype: torch.dtype):
        super().__init__()
        self.fc = Linear(cfg.d_model, 4 * cfg.d_model, dtype)
        self.proj = Linear(4 * cfg.d_model, cfg.d_model, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    # Registration order = sparta's parameter order: ln1, attn, ln2, mlp.
    def __init__(self, cfg: GPTConfig, dtype: torch.dtype):
        super().__init__()
        self.ln1 = LayerNorm(cfg.d_model, cfg.ln_eps, dtype)
        self.attn = CausalSelfAttention(cfg, dtype)
        self.ln2 = LayerNorm(cfg.d_model, cfg.ln_eps, dtype)
        self.mlp = MLP(cfg, dtype)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cos, sin, mask)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Parameter(torch.zeros(cfg.vocab_size, cfg.d_model, dtype=dtype))
        self.h = nn.ModuleList([Block(cfg, dtype) for _ in range(cfg.n_layer)])
        self.ln_f = LayerNorm(cfg.d_model, cfg.ln_eps, dtype)
        cos, sin = rope_tables(cfg.context, cfg.head_dim, cfg.rope_base, dtype)
        mask = torch.triu(torch.ones(cfg.context, cfg.context, dtype=torch.bool), diagonal=1)
        # Not parameters: kept out of named_parameters() and state_dict().
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, T) int64 with T <= context -> logits (B, T, V)."""
        T = tokens.shape[1]
        if T > self.cfg.context:
            raise ValueError(f"GPT.forward: sequence length {T} exceeds context {self.cfg.context}")
        cos, sin, mask = self.rope_cos[:T], self.rope_sin[:T], self.causal_mask[:T, :T]
        x = self.wte[tokens]
        for block in self.h:
            x = block(x, cos, sin, mask)
        return F.linear(self.ln_f(x), self.wte)

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy of forward(tokens) against targets (B, T)."""
        logits = self.forward(tokens)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction)


def init_sparta_(model: GPT, generator: torch.Generator | None = None) -> None:
    """sparta's initialisation: normal(0, 0.02) for wte and every linear weight,
    the two residual projections (attn.proj, mlp.proj) further scaled by
    1/sqrt(2 L), biases 0, LayerNorm weight 1 and bias 0."""
    proj_scale = 1.0 / math.sqrt(2 * model.cfg.n_layer)
    with torch.no_grad():
        model.wte.normal_(0.0, 0.02, generator=generator)
        for block in model.h:
            for lin in (block.attn.qkv, block.attn.proj, block.mlp.fc, block.mlp.proj):
                lin.weight.normal_(0.0, 0.02, generator=generator)
                lin.bias.zero_()
            block.attn.proj.weight.mul_(proj_scale)
            block.mlp.proj.weight.mul_(proj_scale)
        for module in model.modules():
            if isinstance(module, LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()


def count_params(model: GPT) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_token(cfg: GPTConfig, T: int) -> float:
    """Training FLOPs (forward + backward) per token, the convention of bench/README.md:

      6 * N_matmul   N_matmul = L * 12 d^2 (qkv 3d^2 + proj d^2 + fc 4d^2 + mlp.proj 4d^2):
                     2 FLOPs per weight per token forward, 4 backward (input and weight grads)
      6 * V * d      the tied output head, a (V, d) matmul
      6 * L * T * d  attention scores (q k^T) and weighted sum (att v): forward
                     2 * 2 * (T/2) * d per token and layer, T/2 the mean number of keys a
                     query sees under the causal mask; backward twice that

    Embedding lookup, LayerNorm, GELU, softmax, RoPE, bias adds and the optimizer are
    not counted (they are O(d) per token, not O(d^2))."""
    L, d, V = cfg.n_layer, cfg.d_model, cfg.vocab_size
    n_matmul = L * 12 * d * d
    return 6.0 * n_matmul + 6.0 * V * d + 6.0 * L * T * d


def make_optimizer(model: GPT, hp: TrainHParams) -> torch.optim.AdamW:
    """AdamW with weight decay on the 2-D weights only (wte and linear weights)."""
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() != 2]
    groups = [
        {"params": decay, "weight_decay": hp.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=hp.lr, betas=(hp.beta1, hp.beta2), eps=hp.eps)


def lr_at(step: int, hp: TrainHParams) -> float:
    """Learning rate of 0-based step `step`: linear warmup over `warmup` steps,
    then cosine decay from lr to min_lr_ratio * lr at total_steps (held after)."""
    if step < hp.warmup:
        return hp.lr * (step + 1) / hp.warmup
    p = (step - hp.warmup) / max(1, hp.total_steps - hp.warmup)
    lr_min = hp.min_lr_ratio * hp.lr
    return lr_min + 0.5 * (hp.lr - lr_min) * (1.0 + math.cos(math.pi * min(p, 1.0)))


def train_step(model: GPT, opt: torch.optim.Optimizer, hp: TrainHParams, step: int,
               tokens: torch.Tensor, targets: torch.Tensor,
               autocast_dtype: torch.dtype | None = None) -> tuple[float, float, float]:
    """One full step: forward, backward, clip, AdamW update at lr_at(step).

    autocast_dtype (e.g. torch.bfloat16) runs forward + loss under
    torch.autocast(device_type="cpu", dtype=autocast_dtype): mixed precision
    with the model's own (FP32) weights as master weights, gradients, clipping
    and optimizer unchanged. None (the default) runs in the model's dtype.

    Returns (loss before the update, gradient global norm before clipping, lr)."""
    lr = lr_at(step, hp)
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    if autocast_dtype is None:
        loss = model.loss(tokens, targets)
    else:
        with torch.autocast(device_type="cpu", dtype=autocast_dtype):
            loss = model.loss(tokens, targets)
    loss.backward()
    if hp.grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    opt.step()
    return float(loss.detach()), float(norm), lr
