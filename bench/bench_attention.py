#!/usr/bin/python3
"""Attention speed and memory against sequence length: sparta (dense, DSA, ...) vs PyTorch's dense causal attention.

sparta's numbers come from `SPARTA bench attention --json` (docs/bench-attention.md),
run as a child process. PyTorch's come from this process: the textbook
attention softmax(q·kᵀ·scale + causal mask)·v on (B, H, T, D) float32
tensors, forward and backward through autograd, and decoding of one new
token against T cached keys/values; same thread count, same timing rule (one
warm-up, then repeat until --min-time seconds, at most 20 runs, median) and
the same peak-memory definition (VmHWM after resetting it through
/proc/self/clear_refs, minus the RSS before the problem's tensors were
allocated). PyTorch forms the (T, T) score matrix, so lengths where
B·H·T²·4 bytes · 4 exceed the available memory are skipped (64K always is).

Prints one table of all implementations and the fwd+bwd speed ratios; with
--out DIR writes DIR/attention.jsonl (every record, PyTorch's with
impl "torch"), DIR/attention.svg (rendered by `SPARTA bench attention
--plot-from`) and DIR/bench_attention.json (settings, records, ratios,
skipped lengths).

Usage: bench/bench_attention.py [--seqs 1024,4096,16384,65536] [--impls dense,dsa]
                                [--heads 8] [--head-dim 64] [--batch 1] [--threads 2]
                                [--min-time 1.0] [--out bench/results/attention] [--json]
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_SPARTA = REPO / "build" / "sparta"
DEFAULT_OUT = BENCH_DIR / "results" / "attention"
MAX_RUNS = 20  # as sparta bench attention
TORCH_SCORE_COPIES = 4  # (T, T) float32 buffers alive at once in PyTorch's forward + backward, roughly

sys.path.insert(0, str(BENCH_DIR))
from bench_gpt import (BenchError, check_sparta_binary, choose_openblas_core,  # noqa: E402
                       cpu_busy_fraction, log)


# -------------------------------------------------------------- measurement

def time_runs(fn, min_time_s: float) -> list[float]:
    """One untimed warm-up, then timed runs until they add up to min_time_s
    (at least one, at most MAX_RUNS); seconds per run."""
    fn()
    runs = []
    while True:
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
        if sum(runs) >= min_time_s or len(runs) >= MAX_RUNS:
            return runs


def median_ms(runs: list[float]) -> float:
    return statistics.median(runs) * 1e3


def status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def mem_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """sparta's PeakMemoryMeter: baseline VmRSS now (after returning free heap
    to the OS); begin() resets VmHWM via /proc/self/clear_refs, end() folds
    VmHWM - baseline into peak_mib."""

    def __init__(self):
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self.baseline = status_mib("VmRSS")
        self.peak_mib = 0.0
        self.reset_ok = True

    def begin(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.reset_ok = False

    def end(self):
        self.peak_mib = max(self.peak_mib, status_mib("VmHWM") - self.baseline)


def torch_training(torch, rec: dict, mem: PeakMemory, gen, args) -> None:
    """Forward and backward timings into rec; the tensors are freed on return."""
    B, H, T, D = rec["batch"], rec["heads"], rec["seq"], rec["head_dim"]
    scale = 1.0 / math.sqrt(D)
    q, k, v = (torch.randn(B, H, T, D, generator=gen).requires_grad_() for _ in range(3))
    dout = torch.randn(B, H, T, D, generator=gen)
    mask = torch.ones(T, T, dtype=torch.bool).triu_(1)  # True above the diagonal: future keys

    def forward():
        s = (q @ k.transpose(-2, -1)) * scale
        return torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1) @ v

    mem.begin()
    rec["fwd_ms"] = median_ms(time_runs(forward, args.min_time))
    mem.end()
    out = forward()

    def backward():
        q.grad = k.grad = v.grad = None
        out.backward(dout, retain_graph=True)

    mem.begin()
    rec["bwd_ms"] = median_ms(time_runs(backward, args.min_time))
    mem.end()


def torch_decode(torch, rec: dict, mem: PeakMemory, gen, args) -> None:
    """Decode timing into rec: one new query of one sequence against T cached positions."""
    H, T, D = rec["heads"], rec["seq"], rec["head_dim"]
    scale = 1.0 / math.sqrt(D)
    qd = torch.randn(1, H, 1, D, generator=gen)
    kc, vc = torch.randn(1, H, T, D, generator=gen), torch.randn(1, H, T, D, generator=gen)

    def decode():
        with torch.no_grad():
            for _ in range(args.decode_steps):
                torch.softmax((qd @ kc.transpose(-2, -1)) * scale, dim=-1) @ vc

    mem.begin()
    rec["decode_ms"] = median_ms(time_runs(decode, args.min_time)) / args.decode_steps
    mem.end()


def torch_attention(torch, seq: int, args) -> dict:
    """PyTorch's dense causal attention at one length: the record sparta's
    bench writes, with impl "torch"."""
    gen = torch.Generator().manual_seed(1)
    mem = PeakMemory()
    rec = {"impl": "torch", "seq": seq, "batch": args.batch, "heads": args.heads, "head_dim": args.head_dim,
           "threads": torch.get_num_threads(), "causal": True}
    torch_training(torch, rec, mem, gen, args)
    gc.collect()  # the autograd graph and training tensors go before the cache is allocated
    torch_decode(torch, rec, mem, gen, args)
    rec["peak_mb"] = mem.peak_mib
    rec["peak_reset"] = mem.reset_ok
    return rec


def run_sparta(args) -> list[dict]:
    cmd = [str(args.sparta), "bench", "attention", "--json", "--seqs", args.seqs, "--impls", args.impls,
           "--heads", str(args.heads), "--head-dim", str(args.head_dim), "--batch", str(args.batch),
           "--threads", str(args.threads), "--min-time", str(args.min_time), "--decode-steps", str(args.decode_steps)]
    for s in args.set:
        cmd += ["--set", s]
    log("running " + " ".join(cmd))
    # stderr passes through: sparta's progress lines show as each size finishes.
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"sparta bench attention did not finish within {args.timeout:.0f} s (raise --timeout)") from None
    if p.returncode != 0:
        raise BenchError(f"sparta bench attention failed (exit code {p.returncode}); its message is above")
    recs = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    if not recs:
        raise BenchError("sparta bench attention printed no records")
    return recs


# ------------------------------------------------------------------- report

def fmt_ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 100 else f"{v:.1f}" if v < 1000 else f"{v:.0f}"


def ratios(records: list[dict], impls: list[str]) -> list[dict]:
    """fwd+bwd speed-up of A over B (B's time / A's time; > 1: A is faster) for
    every sparta implementation against sparta's dense and against PyTorch."""
    by = {(r["impl"], r["seq"]): r["fwd_ms"] + r["bwd_ms"] for r in records}
    pairs = [("dense", "torch")] + [(i, "dense") for i in impls if i != "dense"] + \
            [(i, "torch") for i in impls if i != "dense"]
    out = []
    for seq in sorted({r["seq"] for r in records}):
        for a, b in pairs:
            if (a, seq) in by and (b, seq) in by:
                out.append({"seq": seq, "impl": a, "vs": b, "speedup": by[(b, seq)] / by[(a, seq)]})
    return out


def print_report(records: list[dict], rat: list[dict], skipped: list[dict]) -> None:
    print()
    print(f"{'impl':<13} {'seq':>7} {'fwd ms':>9} {'bwd ms':>9} {'fwd+bwd':>9} {'decode ms/t':>12} "
          f"{'sel %':>7} {'peak MB':>9}")
    for r in records:
        sel = r.get("selection_ms")
        share = f"{100 * sel / (r['fwd_ms'] + r['bwd_ms']):.1f}%" if sel is not None else "-"
        name = "torch" if r["impl"] == "torch" else "sparta " + r["impl"]
        print(f"{name:<13} {r['seq']:>7} "
              f"{fmt_ms(r['fwd_ms']):>9} {fmt_ms(r['bwd_ms']):>9} {fmt_ms(r['fwd_ms'] + r['bwd_ms']):>9} "
              f"{fmt_ms(r.get('decode_ms')):>12} {share:>7} {r['peak_mb']:>9.1f}")
    for s in skipped:
        print(f"{s['impl']:<13} {s['seq']:>7}  skipped: {s['reason']}")
    if rat:
        print("\nfwd+bwd speed-up (time of the second / time of the first; > 1: the first is faster)")
        for x in rat:
            a = "sparta " + x["impl"]
            b = "torch" if x["vs"] == "torch" else "sparta " + x["vs"]
            print(f"  seq {x['seq']:>6}: {a} vs {b}: {x['speedup']:.2f}x")


def write_outputs(args, records: list[dict], summary: dict) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        tmp = f.name
    try:
        # sparta renders the chart (log-log, one line per impl, torch included)
        # and writes attention.jsonl next to it.
        p = subprocess.run([str(args.sparta), "bench", "attention", "--plot-from", tmp, "--out", str(out), "--json"],
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise BenchError(f"sparta bench attention --plot-from failed: {p.stderr.strip()}")
    finally:
        os.unlink(tmp)
    (out / "bench_attention.json").write_text(json.dumps(summary, indent=1) + "\n")
    log(f"wrote {out / 'attention.jsonl'}, {out / 'attention.svg'} and {out / 'bench_attention.json'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparta", default=str(DEFAULT_SPARTA), help="sparta binary (default: %(default)s)")
    ap.add_argument("--seqs", default="1024,4096,16384,65536", help="sequence lengths (default: %(default)s)")
    ap.add_argument("--impls", default="dense,dsa", help="sparta implementations (default: %(default)s)")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="threads for both sides (default: %(default)s)")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds per timing (default: %(default)s)")
    ap.add_argument("--decode-steps", type=int, default=16)
    ap.add_argument("--set", action="append", default=[], metavar="model.dsa.KEY=VALUE",
                    help="DSA setting passed to sparta (repeatable)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: %(default)s); '' for none")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON object as the last line")
    ap.add_argument("--openblas-coretype", default="auto", help="as in bench_gpt.py (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=7200, help="seconds allowed for sparta (default: %(default)s)")
    args = ap.parse_args()

    try:
        if importlib.util.find_spec("torch") is None:
            raise BenchError(f"{sys.executable} cannot import torch; run this script with Debian's "
                             f"/usr/bin/python3 (apt-get install python3-torch)")
        if min(args.heads, args.head_dim, args.batch, args.threads, args.decode_steps) < 1 or args.min_time < 0:
            raise BenchError("need --heads, --head-dim, --batch, --threads, --decode-steps >= 1 and --min-time >= 0")
        check_sparta_binary(Path(args.sparta))
        busy = cpu_busy_fraction(1.0)
        if busy is not None and busy > 0.2:
            log(f"WARNING: other processes kept {100 * busy:.0f}% of the CPUs busy just before the run; "
                f"the numbers below are unreliable")
        sparta_recs = run_sparta(args)  # also validates --seqs, --impls and --set

        # The environment must be final before torch (and OpenBLAS) load.
        coretype, _ = choose_openblas_core(args.openblas_coretype, args.threads)
        os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
        if coretype:
            os.environ["OPENBLAS_CORETYPE"] = coretype
        import torch
        torch.set_num_threads(args.threads)
        flush = torch.set_flush_denormal(True)

        seqs = sorted({r["seq"] for r in sparta_recs})
        # An untimed pass first, as sparta does: thread pools, OpenBLAS buffers
        # and autograd's first-call costs land in no record.
        torch_attention(torch, min(seqs[0], 256), argparse.Namespace(**{**vars(args), "min_time": 0.0}))
        torch_recs, skipped = [], []
        avail = mem_available_bytes()
        for seq in seqs:
            need = args.batch * args.heads * seq * seq * 4 * TORCH_SCORE_COPIES
            if avail is not None and need > avail:
                reason = (f"the (T, T) scores need about {need / 2**30:.1f} GiB, "
                          f"{avail / 2**30:.1f} GiB available")
                log(f"torch seq={seq}: {reason}; skipped")
                skipped.append({"impl": "torch", "seq": seq, "reason": reason})
                continue
            r = torch_attention(torch, seq, args)
            log(f"torch seq={seq}: fwd {r['fwd_ms']:.4g} ms, bwd {r['bwd_ms']:.4g} ms, "
                f"decode {r['decode_ms']:.4g} ms/token, peak {r['peak_mb']:.4g} MB")
            torch_recs.append(r)

        order = {name: i for i, name in enumerate([r["impl"] for r in sparta_recs] + ["torch"])}
        records = sorted(sparta_recs + torch_recs, key=lambda r: (r["seq"], order[r["impl"]]))
        impls = list(dict.fromkeys(r["impl"] for r in sparta_recs))
        rat = ratios(records, impls)
        summary = {
            "settings": {"seqs": seqs, "impls": impls, "batch": args.batch, "heads": args.heads,
                         "head_dim": args.head_dim, "threads": args.threads, "min_time_s": args.min_time,
                         "decode_steps": args.decode_steps, "dsa_sets": args.set, "cpu_busy_before": busy,
                         "torch_version": torch.__version__, "openblas_coretype": coretype,
                         "flush_denormal": bool(flush)},
            "records": records, "ratios": rat, "skipped": skipped,
        }
        print_report(records, rat, skipped)
        if args.out:
            write_outputs(args, records, summary)
    except BenchError as e:
        print(f"bench_attention: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
