#!/usr/bin/python3
"""Quality of each data-parallel gradient exchange: the same config, data and
seed trained by R processes (mpirun) exchanging gradients as none (FP32),
bf16, q4 with error feedback and q4 without it; final validation loss of
each against none, and the loss curves overlaid in one SVG.

  bench/dist_quality.py [--sparta build/sparta] [--config configs/default.toml] [--ranks 2]
                        [--modes none,bf16,q4,q4-noef] [--out runs/dist-quality] [--reuse]
                        [--mpirun "mpirun --allow-run-as-root --oversubscribe"] [--set KEY=VALUE ...]

Each mode trains with `MPIRUN -np R SPARTA train CONFIG --set dist.compress=...
--set train.out=OUT/MODE --set train.threads=1 --force` (q4-noef adds
--set dist.error_feedback=false), then every --set given here (e.g.
train.seed=2 for another draw of the same comparison). --reuse skips a mode whose
OUT/MODE/summary.json exists. Writes OUT/dist-quality.md and
OUT/dist-quality.svg and prints the table. The pass marks: q4 with error
feedback ends within 1% of none's validation loss, and q4 without error
feedback ends with a higher validation loss than q4 with it.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from precision_quality import QualityError, read_metrics, svg  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SETS = {"none": ["dist.compress=none"], "bf16": ["dist.compress=bf16"], "q4": ["dist.compress=q4"],
        "q4-noef": ["dist.compress=q4", "dist.error_feedback=false"]}
COLORS = {"none": "#222222", "bf16": "#1f77b4", "q4": "#d62728", "q4-noef": "#ff7f0e"}
TOLERANCE = 0.01


def train(args, mode: str, out: Path) -> None:
    cmd = shlex.split(args.mpirun) + ["-np", str(args.ranks), args.sparta, "train", args.config,
                                      "--set", f"train.out={out}", "--set", "train.threads=1", "--force", "--quiet"]
    for s in SETS[mode] + args.set:
        cmd += ["--set", s]
    print(f"training {mode}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    env = dict(os.environ, OMPI_MCA_btl_vader_single_copy_mechanism="none")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        errors = [l for l in p.stderr.splitlines() if l.startswith("sparta: error")] or ["(no message)"]
        raise QualityError(f"training {mode} failed ({p.returncode}): {errors[0]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sparta", default=str(REPO / "build" / "sparta"))
    ap.add_argument("--config", default=str(REPO / "configs" / "default.toml"))
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--modes", default=",".join(SETS), help="comma-separated (default: %(default)s)")
    ap.add_argument("--out", default="runs/dist-quality")
    ap.add_argument("--mpirun", default="mpirun --allow-run-as-root --oversubscribe")
    ap.add_argument("--reuse", action="store_true", help="keep finished runs found in --out")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to every run's `sparta train` (repeatable)")
    args = ap.parse_args()
    try:
        modes = args.modes.split(",")
        bad = [m for m in modes if m not in SETS]
        if bad:
            raise QualityError(f"--modes: unknown '{','.join(bad)}' (choose from {', '.join(SETS)})")
        if "none" not in modes:
            raise QualityError("--modes must include none (the reference)")
        if args.ranks < 2:
            raise QualityError(f"--ranks must be >= 2, got {args.ranks}")
        if not Path(args.config).is_file():
            raise QualityError(f"config file '{args.config}' does not exist")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        curves, rows = {}, {}
        for m in modes:
            run = out / m
            if not (args.reuse and (run / "summary.json").is_file()):
                if not Path(args.sparta).is_file():
                    raise QualityError(f"sparta binary '{args.sparta}' does not exist (build it, or pass --sparta)")
                train(args, m, run)
            recs = read_metrics(run / "metrics.jsonl")
            curves[m] = {"train": [(r["step"], r["loss"]) for r in recs if "loss" in r],
                         "val": [(r["step"], r["val_loss"]) for r in recs if "val_loss" in r]}
            if not curves[m]["val"]:
                raise QualityError(f"{run}/metrics.jsonl has no validation loss")
            comm = [r for r in recs if "comm_bytes" in r]
            rows[m] = {"steps": recs[-1]["step"], "val_loss": curves[m]["val"][-1][1],
                       "bytes": sorted(r["comm_bytes"] for r in comm)[len(comm) // 2] if comm else 0,
                       "skipped": sum(1 for r in recs if r.get("skipped"))}
        ref = rows["none"]
        lines = ["| exchange | steps | final val_loss | vs none | gradient MB sent per step and rank | skipped steps |",
                 "| --- | --: | --: | --: | --: | --: |"]
        for m, r in rows.items():
            rel = r["val_loss"] / ref["val_loss"] - 1
            lines.append(f"| {m} | {r['steps']} | {r['val_loss']:.4f} | {rel * 100:+.2f}% | {r['bytes'] / 1e6:.2f} | "
                         f"{r['skipped']} |")
        ok = True
        if "q4" in rows:
            gap = abs(rows["q4"]["val_loss"] / ref["val_loss"] - 1)
            ok = gap <= TOLERANCE
            lines.append("")
            lines.append(f"q4 with error feedback within 1% of none: {'yes' if ok else 'NO'} ({gap * 100:.2f}%)")
            if "q4-noef" in rows:
                cost = rows["q4-noef"]["val_loss"] / rows["q4"]["val_loss"] - 1
                ok = ok and cost > 0
                lines.append(f"q4 without error feedback ends higher than with it: {'yes' if cost > 0 else 'NO'} "
                             f"({cost * 100:+.2f}%)")
        table = "\n".join(lines) + "\n"
        (out / "dist-quality.md").write_text(table)
        title = f"loss per gradient exchange: {Path(args.config).name}, {args.ranks} processes"
        (out / "dist-quality.svg").write_text(svg(curves, title, COLORS))
        print(table, end="")
        print(f"plot: {out / 'dist-quality.svg'}; table: {out / 'dist-quality.md'}")
        return 0 if ok else 1
    except QualityError as e:
        print(f"dist_quality: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
