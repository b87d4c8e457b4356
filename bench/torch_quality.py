#!/usr/bin/python3
"""PyTorch FP32's validation loss for a sparta config: the same model,
hyper-parameters, steps, tokens and batches as `sparta train CONFIG`, so the two
final validation losses can be compared.

Usage:
    build/sparta tokenize CONFIG --out TOK        # train.bin, val.bin, meta.json
    bench/torch_quality.py --config CONFIG --tokens TOK [--steps N] [--threads N] [--json]

TOK holds train.bin and val.bin (little-endian int32 token ids) and meta.json
({"vocab_size", "train_tokens", "val_tokens"}). The model's vocabulary is
meta.json's vocab_size.

Batches follow sparta's BatchSampler exactly (src/data/token_dataset.h):
window k = train[k*T, k*T + T + 1) for k < (n - 1) // T; each epoch visits
every window once in a Fisher-Yates order drawn from sparta's xoshiro256**
generator seeded by (train.seed, epoch); a batch is the next B windows of that
stream, continuing into the next epoch. So PyTorch sees the very batches
sparta sees, in the same order. (Only the weight initialisation differs: same
distribution, PyTorch's generator.)

Validation loss follows sparta's evaluate_tokens: mean next-token
cross-entropy over non-overlapping windows w of the val stream, inputs
val[w*T + t], targets val[w*T + t + 1]; the last, partial window counts when
it has at least 2 tokens (one target). train.eval_batches > 0 limits it to
that many batches of B windows, as in sparta.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import tomllib
from pathlib import Path

try:
    import numpy as np
except ImportError:
    sys.exit(f"torch_quality: error: {sys.executable} cannot import numpy; run this script with Debian's "
             f"/usr/bin/python3 (apt-get install python3-numpy python3-torch)")

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

# sparta's defaults for keys a config may omit (src/run/config.h).
MODEL_DEFAULTS = {"n_layer": 4, "n_head": 4, "d_model": 256, "context": 128, "attention": "dense",
                  "rope_base": 10000.0}
TRAIN_DEFAULTS = {"batch_size": 8, "steps": 1000, "lr": 1e-3, "warmup": 100, "weight_decay": 0.1,
                  "grad_clip": 1.0, "seed": 1337, "threads": 0, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8,
                  "min_lr_ratio": 0.1, "eval_batches": 0}

U64 = (1 << 64) - 1


class QualityError(Exception):
    """A one-line error for the user; main() prints it and exits 1."""


# ------------------------------------------------------------ sparta's RNG

class SpartaRng:
    """Port of sparta::Rng (src/core/rng.h): xoshiro256** seeded by splitmix64."""

    def __init__(self, seed: int):
        x = seed & U64
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & U64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & U64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & U64
            self.s.append(z ^ (z >> 31))

    @staticmethod
    def _rotl(x: int, k: int) -> int:
        return ((x << k) | (x >> (64 - k))) & U64

    def next_u64(self) -> int:
        s = self.s
        result = (self._rotl((s[1] * 5) & U64, 7) * 9) & U64
        t = (s[1] << 17) & U64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return result

    def below(self, n: int) -> int:
        """Uniform integer in [0, n), bias-free by rejection (as sparta::Rng::below)."""
        limit = U64 - U64 % n
        while True:
            x = self.next_u64()
            if x < limit:
                return x % n


class BatchSampler:
    """Port of sparta::BatchSampler: shuffled, non-overlapping training windows."""

    def __init__(self, tokens: np.ndarray, context: int, seed: int):
        if len(tokens) < context + 1:
            raise QualityError(f"train split has {len(tokens)} tokens, fewer than context+1 = {context + 1}")
        self.tokens = tokens
        self.context = context
        self.seed = seed & U64
        self.windows = (len(tokens) - 1) // context
        self.epoch, self.index = 0, 0
        self._order_epoch, self._order = -1, None

    def epoch_order(self, epoch: int) -> list[int]:
        mix = SpartaRng(self.seed)
        rng = SpartaRng(mix.next_u64() ^ ((epoch * 0xD1B54A32D192ED03) & U64))
        order = list(range(self.windows))
        for i in range(self.windows - 1, 0, -1):
            j = rng.below(i + 1)
            order[i], order[j] = order[j], order[i]
        return order

    def next(self, B: int) -> tuple[np.ndarray, np.ndarray]:
        """inputs, targets: (B, context) int64; advances by B windows."""
        T = self.context
        inputs = np.empty((B, T), dtype=np.int64)
        targets = np.empty((B, T), dtype=np.int64)
        for b in range(B):
            if self._order_epoch != self.epoch:
                self._order, self._order_epoch = self.epoch_order(self.epoch), self.epoch
            start = self._order[self.index] * T
            inputs[b] = self.tokens[start:start + T]
            targets[b] = self.tokens[start + 1:start + T + 1]
            self.index += 1
            if self.index == self.windows:
                self.index, self.epoch = 0, self.epoch + 1
        return inputs, targets


def eval_batches(tokens: np.ndarray, context: int, B: int, max_batches: int):
    """Yields (inputs, targets) (rows, context) int64 over sparta's evaluation
    windows; positions past the stream have input 0 and target -1 (ignored)."""
    n = len(tokens)
    windows = 0 if n < 2 else (n - 1 + context - 1) // context
    batches = (windows + B - 1) // B
    if max_batches > 0:
        batches = min(batches, max_batches)
    for b in range(batches):
        rows = min(B, windows - b * B)
        inputs = np.zeros((rows, context), dtype=np.int64)
        targets = np.full((rows, context), -1, dtype=np.int64)
        for r in range(rows):
            start = (b * B + r) * context
            seg = tokens[start:start + context + 1]
            inputs[r, :len(seg) - 1] = seg[:-1]
            targets[r, :len(seg) - 1] = seg[1:]
        yield inputs, targets


# ------------------------------------------------------------------ inputs

def load_config(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            c = tomllib.load(f)
    except FileNotFoundError:
        raise QualityError(f"config {path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise QualityError(f"config {path}: {e}") from None
    model = {**MODEL_DEFAULTS, **c.get("model", {})}
    train = {**TRAIN_DEFAULTS, **c.get("train", {})}
    if model["attention"] != "dense":
        raise QualityError(f"config {path}: model.attention = {model['attention']!r}; "
                           f"the PyTorch model implements dense attention only")
    return {"model": model, "train": train, "tokenizer": c.get("tokenizer", {})}


def load_tokens(folder: Path) -> tuple[np.ndarray, np.ndarray, int]:
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
        vocab = int(meta["vocab_size"])
        counts = {"train": int(meta["train_tokens"]), "val": int(meta["val_tokens"])}
    except FileNotFoundError:
        raise QualityError(f"{meta_path} not found (make the folder with `sparta tokenize CONFIG --out "
                           f"{folder}`)") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise QualityError(f"{meta_path}: expected {{\"vocab_size\", \"train_tokens\", \"val_tokens\"}} "
                           f"integers ({type(e).__name__}: {e})") from None
    out = {}
    for split, n in counts.items():
        path = folder / f"{split}.bin"
        if not path.exists():
            raise QualityError(f"{path} not found")
        size = path.stat().st_size
        if size != 4 * n:
            raise QualityError(f"{path} has {size} bytes but meta.json says {n} int32 tokens ({4 * n} bytes)")
        arr = np.fromfile(path, dtype="<i4").astype(np.int64)
        if n and (arr.min() < 0 or arr.max() >= vocab):
            bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
            raise QualityError(f"{path} holds token id {bad}, outside [0, {vocab}) (vocab_size of meta.json)")
        out[split] = arr
    return out["train"], out["val"], vocab


# -------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, type=Path, help="sparta TOML config")
    ap.add_argument("--tokens", required=True, type=Path, help="folder written by `sparta tokenize CONFIG --out DIR`")
    ap.add_argument("--steps", type=int, help="override train.steps")
    ap.add_argument("--threads", type=int, help="override train.threads (0 = all cores)")
    ap.add_argument("--json", action="store_true", help="print one JSON record as the last line")
    ap.add_argument("--openblas-coretype", default="auto",
                    help="as in bench_gpt.py: 'auto' (default), 'keep', or an OPENBLAS_CORETYPE value")
    args = ap.parse_args()

    try:
        cfg = load_config(args.config)
        m, tr = cfg["model"], cfg["train"]
        steps = int(args.steps if args.steps is not None else tr["steps"])
        threads = int(args.threads if args.threads is not None else tr["threads"]) or (os.cpu_count() or 1)
        if steps < 1 or threads < 1:
            raise QualityError(f"need steps >= 1 and threads >= 0, got steps {steps}, threads {threads}")
        train_tokens, val_tokens, vocab = load_tokens(args.tokens)
        cfg_vocab = cfg["tokenizer"].get("vocab_size")
        if cfg_vocab is not None and int(cfg_vocab) != vocab:
            raise QualityError(f"{args.tokens}/meta.json has vocab_size {vocab} but {args.config} says "
                               f"tokenizer.vocab_size = {cfg_vocab}; was the folder made from another config?")

        # Thread counts and OpenBLAS kernels must be fixed before torch loads OpenBLAS.
        import bench_gpt
        coretype, _ = bench_gpt.choose_openblas_core(args.openblas_coretype, threads)
        os.environ.update(bench_gpt.torch_env(threads, coretype))
        try:
            import torch
        except ImportError:
            raise QualityError(f"{sys.executable} cannot import torch; run this script with Debian's "
                               f"/usr/bin/python3 (apt-get install python3-torch)") from None
        from common_torch_gpt import GPT, GPTConfig, TrainHParams, init_sparta_, make_optimizer, train_step

        torch.set_num_threads(threads)
        torch.set_flush_denormal(True)
        gcfg = GPTConfig(vocab_size=vocab, context=int(m["context"]), n_layer=int(m["n_layer"]),
                         n_head=int(m["n_head"]), d_model=int(m["d_model"]), rope_base=float(m["rope_base"]))
        hp = TrainHParams(lr=float(tr["lr"]), warmup=int(tr["warmup"]), total_steps=steps,
                          weight_decay=float(tr["weight_decay"]), grad_clip=float(tr["grad_clip"]),
                          beta1=float(tr["beta1"]), beta2=float(tr["beta2"]), eps=float(tr["eps"]),
                          min_lr_ratio=float(tr["min_lr_ratio"]))
        B, T = int(tr["batch_size"]), gcfg.context
        sampler = BatchSampler(train_tokens, T, int(tr["seed"]))
    except QualityError as e:
        print(f"torch_quality: error: {e}", file=sys.stderr)
        return 1

    torch.manual_seed(int(tr["seed"]))
    model = GPT(gcfg, dtype=torch.float32)
    init_sparta_(model)
    opt = make_optimizer(model, hp)
    print(f"torch_quality: {sum(p.numel() for p in model.parameters())} parameters, vocab {vocab}, "
          f"{len(train_tokens)} train / {len(val_tokens)} val tokens ({sampler.windows} windows), "
          f"{steps} steps of {B}x{T}, {threads} threads", file=sys.stderr, flush=True)

    every = max(1, steps // 10)
    train_s = 0.0
    loss = float("nan")
    for step in range(steps):
        x, y = sampler.next(B)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        t0 = time.perf_counter()
        loss, norm, lr = train_step(model, opt, hp, step, xt, yt)
        train_s += time.perf_counter() - t0
        if not math.isfinite(loss):
            print(f"torch_quality: error: loss is {loss} at step {step + 1}; training diverged", file=sys.stderr)
            return 1
        if (step + 1) % every == 0 or step + 1 == steps:
            print(f"step {step + 1}/{steps} | loss {loss:.4f} | lr {lr:.3e} | grad norm {norm:.3f} | "
                  f"{B * T * (step + 1) / train_s:.0f} tok/s", file=sys.stderr, flush=True)

    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in eval_batches(val_tokens, T, B, int(tr["eval_batches"])):
            logits = model(torch.from_numpy(x))
            yt = torch.from_numpy(y)
            total += float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, vocab), yt.reshape(-1), ignore_index=-1, reduction="sum"))
            count += int((yt >= 0).sum())
    tokens_per_s = B * T * steps / train_s
    if count == 0:
        print("torch_quality: error: the validation split has fewer than 2 tokens; no validation loss",
              file=sys.stderr)
        return 1
    val_loss = total / count
    print(f"final train loss {loss:.4f} | val_loss {val_loss:.4f} over {count} tokens | {tokens_per_s:.0f} tok/s")
    if args.json:
        print(json.dumps({"val_loss": val_loss, "steps": steps, "tokens_per_s": tokens_per_s,
                          "final_train_loss": loss, "val_tokens": count, "threads": threads,
                          "openblas_coretype": coretype}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
