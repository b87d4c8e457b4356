#!/usr/bin/python3
"""Quality of each training precision: the same config, data and seed trained
in fp32, bf16, fp16 and fp32-fast; final validation loss of each against
fp32, and the validation / training loss curves overlaid in one SVG.

  bench/precision_quality.py [--sparta build/sparta] [--config configs/default.toml]
                             [--precision fp32,bf16,fp16,fp32-fast] [--out runs/precision-quality]
                             [--threads 2] [--reuse]

Each precision trains with `SPARTA train CONFIG --set train.precision=P
--set train.out=OUT/P --set train.threads=N --force` (so the runs differ only
in the precision). --reuse skips the training of a precision whose
OUT/P/summary.json already exists (e.g. to redraw the plot). Writes
OUT/precision-quality.md (the table) and OUT/precision-quality.svg (the
curves), and prints the table. The pass mark is the one we hold sparta to:
every reduced precision ends within 1% of fp32's validation loss.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHOICES = ("fp32", "bf16", "fp16", "fp32-fast")
COLORS = {"fp32": "#222222", "bf16": "#d62728", "fp16": "#1f77b4", "fp32-fast": "#2ca02c"}
TOLERANCE = 0.01


class QualityError(Exception):
    """A one-line error for the user."""


def read_metrics(path: Path) -> list[dict]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        raise QualityError(f"cannot read {path}: {e}") from None


def train(args, precision: str, out: Path) -> None:
    cmd = [args.sparta, "train", args.config, "--set", f"train.precision={precision}", "--set", f"train.out={out}",
           "--set", f"train.threads={args.threads}", "--force", "--quiet"]
    print(f"training {precision}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise QualityError(f"sparta train in {precision} failed ({p.returncode}): {last}")


def smooth(values: list[float], k: int = 20) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > k:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def svg(curves: dict[str, dict], title: str, colors: dict[str, str] = COLORS) -> str:
    """Validation loss (solid, dots) and smoothed training loss (thin) per run (a precision, or any name in colors)."""
    W, H, L, R, T, B = 760, 420, 60, 150, 30, 45
    xs = [s for c in curves.values() for s, _ in c["train"] + c["val"]]
    ys = [v for c in curves.values() for _, v in c["val"]]
    # The y range fits the validation losses and the training losses after
    # the first tenth of the run (the early, much higher losses are clipped).
    cut = max(xs) * 0.1
    ys += [v for c in curves.values() for s, v in c["train"] if s >= cut]
    x0, x1 = 0, max(xs)
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.05 or 0.05
    y0, y1 = y0 - pad, y1 + pad

    def px(x: float) -> float:
        return L + (x - x0) / (x1 - x0) * (W - L - R)

    def py(y: float) -> float:
        y = min(max(y, y0), y1)
        return T + (y1 - y) / (y1 - y0) * (H - T - B)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
             f'font-size="12">', f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14">{title}</text>']
    for i in range(6):
        y = y0 + (y1 - y0) * i / 5
        parts.append(f'<line x1="{L}" x2="{W - R}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{L - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.3f}</text>')
    for i in range(6):
        x = x0 + (x1 - x0) * i / 5
        parts.append(f'<text x="{px(x):.1f}" y="{H - B + 16}" text-anchor="middle">{x:.0f}</text>')
    parts.append(f'<text x="{(L + W - R) / 2}" y="{H - 8}" text-anchor="middle">step</text>')
    parts.append(f'<text x="14" y="{(T + H - B) / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {(T + H - B) / 2})">loss</text>')
    parts.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#888"/>')
    for i, (p, c) in enumerate(curves.items()):
        color = colors.get(p, "#9467bd")
        tr = c["train"]
        sm = smooth([v for _, v in tr])
        pts = " ".join(f"{px(s):.1f},{py(v):.1f}" for (s, _), v in zip(tr, sm))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1" opacity="0.45"/>')
        pts = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in c["val"])
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        for s, v in c["val"]:
            parts.append(f'<circle cx="{px(s):.1f}" cy="{py(v):.1f}" r="2.5" fill="{color}"/>')
        ly = T + 14 + i * 18
        parts.append(f'<line x1="{W - R + 12}" x2="{W - R + 34}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" '
                     f'stroke-width="2"/>')
        parts.append(f'<text x="{W - R + 40}" y="{ly}">{p}</text>')
    ly = T + 14 + len(curves) * 18 + 10
    parts.append(f'<text x="{W - R + 12}" y="{ly}" font-size="10">thick: validation</text>')
    parts.append(f'<text x="{W - R + 12}" y="{ly + 13}" font-size="10">thin: training (mean</text>')
    parts.append(f'<text x="{W - R + 12}" y="{ly + 26}" font-size="10">of 20 steps)</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sparta", default=str(REPO / "build" / "sparta"))
    ap.add_argument("--config", default=str(REPO / "configs" / "default.toml"))
    ap.add_argument("--precision", default=",".join(CHOICES), help="comma-separated (default: %(default)s)")
    ap.add_argument("--out", default="runs/precision-quality")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="keep finished runs found in --out")
    args = ap.parse_args()
    try:
        precisions = [p for p in args.precision.split(",")]
        bad = [p for p in precisions if p not in CHOICES]
        if bad or not precisions:
            raise QualityError(f"--precision: unknown '{','.join(bad)}' (choose from {', '.join(CHOICES)})")
        if "fp32" not in precisions:
            raise QualityError("--precision must include fp32 (the reference)")
        if args.threads < 1:
            raise QualityError(f"--threads must be >= 1, got {args.threads}")
        if not Path(args.config).is_file():
            raise QualityError(f"config file '{args.config}' does not exist")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        curves, rows = {}, {}
        for p in precisions:
            run = out / p
            if not (args.reuse and (run / "summary.json").is_file()):
                if not Path(args.sparta).is_file():
                    raise QualityError(f"sparta binary '{args.sparta}' does not exist (build it, or pass --sparta)")
                train(args, p, run)
            recs = read_metrics(run / "metrics.jsonl")
            with open(run / "summary.json") as f:
                summary = json.load(f)
            curves[p] = {"train": [(r["step"], r["loss"]) for r in recs if "loss" in r],
                         "val": [(r["step"], r["val_loss"]) for r in recs if "val_loss" in r]}
            if not curves[p]["val"]:
                raise QualityError(f"{run}/metrics.jsonl has no validation loss")
            rows[p] = {"steps": summary["steps"], "val_loss": curves[p]["val"][-1][1],
                       "tok_s": summary.get("median_tokens_per_s"), "rss": summary.get("peak_rss_mb"),
                       "skipped": sum(1 for r in recs if r.get("skipped"))}
        ref = rows["fp32"]["val_loss"]
        lines = ["| precision | steps | final val_loss | vs fp32 | within 1% | skipped steps | tok/s | peak RSS MiB |",
                 "| --- | --: | --: | --: | --- | --: | --: | --: |"]
        ok = True
        for p, r in rows.items():
            rel = r["val_loss"] / ref - 1
            within = abs(rel) <= TOLERANCE
            ok = ok and within
            lines.append(f"| {p} | {r['steps']} | {r['val_loss']:.4f} | {rel * 100:+.2f}% | "
                         f"{'yes' if within else 'NO'} | {r['skipped']} | {r['tok_s']:.0f} | {r['rss']:.0f} |")
        table = "\n".join(lines) + "\n"
        (out / "precision-quality.md").write_text(table)
        (out / "precision-quality.svg").write_text(svg(curves, f"loss per precision: {Path(args.config).name}"))
        print(table, end="")
        print(f"plot: {out / 'precision-quality.svg'}; table: {out / 'precision-quality.md'}")
        return 0 if ok else 1
    except QualityError as e:
        print(f"precision_quality: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
