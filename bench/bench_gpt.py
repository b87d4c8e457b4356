#!/usr/bin/python3
"""Training throughput and peak memory: sparta vs PyTorch, FP32 and mixed precision.

The model and batch come from configs/bench.toml (6 layers, d_model 384,
6 heads, context 256, vocab 4096, batch 8). Each run trains for
--warmup-steps + --steps steps in its own child process, so each peak RSS
(from wait4's rusage) is that run's alone:

  sparta   one run per --precision P (fp32, bf16, fp16, fp32-fast; default
           fp32): SPARTA train configs/bench.toml --set train.steps=... --set
           train.out=TMP --set train.threads=N --set train.precision=P; step
           times from TMP/metrics.jsonl. fp32 leaves out the train.precision
           --set when the config does not set that key (fp32 is sparta's
           default), so binaries from before train.precision still run fp32.
  PyTorch  one run per --torch-precision P (fp32, bf16; default both): this
           script with --torch-worker: torch.set_num_threads(N), flush-denormal,
           OpenBLAS (pthreads) FP32 GEMMs, random tokens, AdamW with sparta's
           schedule, clipping and weight-decay groups. fp32 is plain float32;
           bf16 wraps forward + loss in torch.autocast(device_type="cpu",
           dtype=torch.bfloat16), with FP32 master weights, gradients and the
           same optimizer.

tokens/s = B*T / median step time over the steps after the warm-up steps (a
step = forward, backward, clip, AdamW update). Achieved GFLOP/s uses the FLOP
convention of common_torch_gpt.flops_per_token (see bench/README.md), the
same for every precision, and is compared with two oneDNN GEMM peaks from
`SPARTA bench gemm --dtype f32|bf16 --json` (2048^3, FP32 accumulation for
BF16), each measured in the same run before and after the training runs (the
higher rate is kept; without sparta, --skip-sparta, no peak is measured).
The ratios printed: each sparta precision's tokens/s vs sparta fp32, PyTorch
FP32 and PyTorch BF16 autocast, and its peak RSS vs sparta fp32. Target
(FP32): sparta >= 2x PyTorch FP32's tokens/s at <= PyTorch FP32's peak RSS.

Usage: bench/bench_gpt.py [--sparta build/sparta] [--steps 20] [--warmup-steps 3]
                          [--threads 2] [--precision fp32,bf16] [--torch-precision fp32,bf16]
                          [--json] [--skip-torch | --skip-sparta]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_SPARTA = REPO / "build" / "sparta"
DEFAULT_CONFIG = REPO / "configs" / "bench.toml"

# OpenBLAS cores older than AVX2. OpenBLAS's DYNAMIC_ARCH falls back to one of
# these (usually Prescott) on CPUs newer than the library, e.g. 0.3.21 on
# Sapphire/Emerald Rapids, which makes its SGEMM 3-4x slower than it can be.
PRE_AVX2_CORES = {"prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai", "coppermine",
                  "northwood", "banias", "opteron", "opteron_sse3", "barcelona", "bobcat", "sandybridge",
                  "bulldozer", "piledriver"}
OPENBLAS_HINT = ("install Debian's pthread OpenBLAS and make it the system BLAS: apt-get install "
                 "libopenblas0-pthread && update-alternatives --set libblas.so.3-x86_64-linux-gnu "
                 "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3")


class BenchError(Exception):
    """A one-line error for the user; main() prints it and exits 1."""

# sparta's train.precision values (src/nn/precision.h) and the PyTorch modes.
SPARTA_PRECISIONS = ("fp32", "bf16", "fp16", "fp32-fast")
TORCH_PRECISIONS = ("fp32", "bf16")
# The GEMM peaks measured (`SPARTA bench gemm --dtype D`): key, label.
PEAK_DTYPES = (("f32", "FP32"), ("bf16", "BF16"))


def parse_precisions(text: str, choices: tuple[str, ...], flag: str) -> list[str]:
    """'fp32,bf16' -> ['fp32', 'bf16']; BenchError for an empty list, an empty
    item, an unknown name or a repeated one."""
    items = [t.strip().lower() for t in text.split(",")]
    if not any(items):
        raise BenchError(f"{flag} is empty (choices: {', '.join(choices)})")
    seen = []
    for t in items:
        if not t:
            raise BenchError(f"{flag} {text!r}: empty item (give a comma-separated list of {', '.join(choices)})")
        if t not in choices:
            raise BenchError(f"{flag}: unknown precision {t!r} (choices: {', '.join(choices)})")
        if t in seen:
            raise BenchError(f"{flag}: {t!r} is listed twice")
        seen.append(t)
    return seen


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------- config

def load_bench_config(path: Path) -> dict:
    """Model and batch of the benchmark, from the [model], [tokenizer] and [train]
    sections of the sparta config that the sparta side trains too; optional keys
    take sparta's defaults (src/run/config.h)."""
    try:
        with open(path, "rb") as f:
            c = tomllib.load(f)
    except FileNotFoundError:
        raise BenchError(f"config {path} not found (pass --config)") from None
    except tomllib.TOMLDecodeError as e:
        raise BenchError(f"config {path}: {e}") from None
    try:
        m, tr = c["model"], c["train"]
        return {
            "n_layer": int(m["n_layer"]), "n_head": int(m["n_head"]), "d_model": int(m["d_model"]),
            "context": int(m["context"]), "vocab_size": int(c["tokenizer"]["vocab_size"]),
            "rope_base": float(m.get("rope_base", 10000.0)),
            "batch_size": int(tr["batch_size"]), "lr": float(tr["lr"]), "warmup": int(tr["warmup"]),
            "weight_decay": float(tr["weight_decay"]), "grad_clip": float(tr["grad_clip"]),
            "seed": int(tr.get("seed", 1337)), "beta1": float(tr.get("beta1", 0.9)),
            "beta2": float(tr.get("beta2", 0.95)), "eps": float(tr.get("eps", 1e-8)),
            "min_lr_ratio": float(tr.get("min_lr_ratio", 0.1)),
            "precision": tr.get("precision"),  # None: not set (sparta's default, fp32)
        }
    except KeyError as e:
        raise BenchError(f"config {path}: missing key {e.args[0]!r}") from None


# ------------------------------------------------------------ child processes

def run_child(cmd: list[str], env: dict[str, str], label: str, timeout_s: float) -> dict:
    """Runs cmd to completion; returns rc, peak RSS (MiB, from wait4), wall time,
    stdout and stderr. Output goes to temporary files so a chatty child cannot block."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, stdin=subprocess.DEVNULL)
        except OSError as e:
            raise BenchError(f"{label}: cannot start {cmd[0]}: {e.strerror}") from None
        deadline = t0 + timeout_s
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                proc.returncode = -9
                raise BenchError(f"{label}: killed after {timeout_s:.0f} s (raise --timeout)")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        return {"rc": proc.returncode, "peak_rss_mib": ru.ru_maxrss / 1024.0, "wall_s": wall,
                "stdout": out.read().decode("utf-8", "replace"), "stderr": err.read().decode("utf-8", "replace")}


def cpu_busy_fraction(seconds: float) -> float | None:
    """Fraction of all CPUs' time spent busy (not idle or iowait) over the next
    `seconds`, from /proc/stat; None where that is not available. Unlike the
    load average it does not remember the previous minute (e.g. our own last run)."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def tail(text: str, lines: int = 15) -> str:
    # Progress bars redraw with carriage returns: split on those too.
    parts = [p for p in re.split(r"[\r\n]+", text) if p.strip()]
    return "\n".join("    " + p for p in parts[-lines:])


def check_child(res: dict, label: str) -> None:
    if res["rc"] != 0:
        how = f"signal {-res['rc']}" if res["rc"] < 0 else f"exit code {res['rc']}"
        raise BenchError(f"{label} failed ({how}); last lines of its stderr:\n{tail(res['stderr'])}")


def last_json_line(text: str, label: str, required: tuple[str, ...]) -> dict:
    for line in reversed(text.strip().splitlines()):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and all(k in obj for k in required):
            return obj
    raise BenchError(f"{label}: no JSON object with {', '.join(required)} in its output:\n{tail(text)}")


# ---------------------------------------------------------------- PyTorch side

def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def best_openblas_core(flags: set[str]) -> str | None:
    if {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def torch_env(threads: int, coretype: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    return env


def choose_openblas_core(mode: str, threads: int) -> tuple[str | None, dict | None]:
    """The OPENBLAS_CORETYPE to run PyTorch with, and the probed BLAS (or None).

    mode 'auto': probe (in a child process) which kernels OpenBLAS selects on its
    own; if that is a pre-AVX2 fallback on a CPU with AVX2/AVX-512, return the
    best core this CPU supports, so the baseline is not handicapped by an
    OpenBLAS that does not know the CPU model. 'keep': OpenBLAS's own choice.
    Any other value is used as is. A value already in the environment wins."""
    if os.environ.get("OPENBLAS_CORETYPE"):
        return os.environ["OPENBLAS_CORETYPE"], None
    if mode == "keep":
        return None, None
    if mode != "auto":
        return mode, None
    res = run_child([sys.executable, str(Path(__file__).resolve()), "--torch-worker", "--probe-blas"],
                    torch_env(threads, None), "PyTorch BLAS probe", 300)
    check_child(res, "PyTorch BLAS probe")
    probe = last_json_line(res["stdout"], "PyTorch BLAS probe", ("blas",))["blas"]
    core = (probe.get("corename") or "").lower()
    best = best_openblas_core(cpu_flags())
    if probe.get("openblas") and core in PRE_AVX2_CORES and best:
        log(f"NOTE: OpenBLAS picked its '{probe['corename']}' kernels on this CPU, which supports {best}'s; "
            f"running PyTorch with OPENBLAS_CORETYPE={best} (--openblas-coretype keep to disable)")
        return best, probe
    return None, probe


def blas_info() -> dict:
    """Which BLAS the running torch uses: the libraries mapped into this process,
    and for OpenBLAS its build, selected kernels and threading (via its C API)."""
    import ctypes
    import torch
    torch.ones(64, 64) @ torch.ones(64, 64)  # make sure the BLAS is loaded and initialised
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            base = os.path.basename(path)
            if ".so" in base and any(s in base for s in ("blas", "mkl", "blis", "lapack")):
                libs.add(os.path.realpath(path))
    info = {"libraries": sorted(libs), "openblas": None, "corename": None, "threading": None,
            "torch_blas_info": " ".join(re.findall(r"\b(?:BLAS_INFO|LAPACK_INFO)=\w+", torch.__config__.show()))}
    for path in info["libraries"]:
        if "openblas" not in os.path.basename(path):
            continue
        lib = ctypes.CDLL(path)
        lib.openblas_get_config.restype = ctypes.c_char_p
        lib.openblas_get_corename.restype = ctypes.c_char_p
        info["openblas"] = lib.openblas_get_config().decode()
        info["corename"] = lib.openblas_get_corename().decode()
        info["threading"] = {0: "sequential", 1: "pthreads", 2: "openmp"}.get(lib.openblas_get_parallel(), "unknown")
        info["openblas_path"] = path
        break
    if any("mkl" in os.path.basename(p) for p in info["libraries"]):
        info["mkl"] = True
    return info


def set_openblas_threads(info: dict, threads: int) -> None:
    if info.get("openblas_path"):
        import ctypes
        ctypes.CDLL(info["openblas_path"]).openblas_set_num_threads(threads)


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def torch_worker(args) -> int:
    """Child process: trains the PyTorch model in --torch-precision (one of
    TORCH_PRECISIONS) and writes its measurements as one JSON line to
    --result-file (or, with --probe-blas, reports the BLAS and exits)."""
    import torch
    info = blas_info()
    if args.probe_blas:
        print(json.dumps({"blas": info}))
        return 0
    sys.path.insert(0, str(BENCH_DIR))
    from common_torch_gpt import GPT, GPTConfig, TrainHParams, flops_per_token, init_sparta_, make_optimizer, train_step

    precision = args.torch_precision
    if precision not in TORCH_PRECISIONS:
        raise BenchError(f"--torch-worker: unknown precision {precision!r}")
    autocast_dtype = torch.bfloat16 if precision == "bf16" else None
    torch.set_num_threads(args.threads)
    set_openblas_threads(info, args.threads)
    flush = torch.set_flush_denormal(True)
    c = load_bench_config(Path(args.config))
    cfg = GPTConfig(vocab_size=c["vocab_size"], context=c["context"], n_layer=c["n_layer"],
                    n_head=c["n_head"], d_model=c["d_model"], rope_base=c["rope_base"])
    B, T = c["batch_size"], c["context"]
    total = args.warmup_steps + args.steps
    hp = TrainHParams(lr=c["lr"], warmup=c["warmup"], total_steps=total, weight_decay=c["weight_decay"],
                      grad_clip=c["grad_clip"], beta1=c["beta1"], beta2=c["beta2"], eps=c["eps"],
                      min_lr_ratio=c["min_lr_ratio"])
    rss_import = rss_mib()

    gen = torch.Generator().manual_seed(c["seed"])
    torch.manual_seed(c["seed"])
    model = GPT(cfg, dtype=torch.float32)
    init_sparta_(model, gen)
    opt = make_optimizer(model, hp)
    # A few distinct random batches, made before timing starts.
    batches = []
    for _ in range(4):
        seq = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=gen)
        batches.append((seq[:, :-1].contiguous(), seq[:, 1:].contiguous()))

    step_s, losses = [], []
    for s in range(total):
        x, y = batches[s % len(batches)]
        t0 = time.perf_counter()
        loss, _, _ = train_step(model, opt, hp, s, x, y, autocast_dtype=autocast_dtype)
        step_s.append(time.perf_counter() - t0)
        losses.append(loss)
        log(f"  pytorch {precision} step {s + 1}/{total}: loss {loss:.4f}, {step_s[-1] * 1e3:.0f} ms"
            + (" (warm-up)" if s < args.warmup_steps else ""))
    timed = step_s[args.warmup_steps:]
    med = statistics.median(timed)
    import resource
    result = {
        "precision": precision, "autocast": str(autocast_dtype) if autocast_dtype else None,
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "tokens_per_s": B * T / med, "step_ms": med * 1e3, "step_ms_all": [t * 1e3 for t in step_s],
        "losses": losses, "params": sum(p.numel() for p in model.parameters()),
        "flops_per_token": flops_per_token(cfg, T), "threads": torch.get_num_threads(),
        "flush_denormal": bool(flush), "blas": info, "torch_version": torch.__version__,
        "rss_after_import_mib": rss_import,
        "self_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    with open(args.result_file, "w") as f:
        f.write(json.dumps(result) + "\n")
    return 0


def run_torch(args, config: Path, precision: str, coretype: str | None, probe: dict | None) -> dict:
    """One PyTorch run in `precision` (fp32 or bf16 autocast) in a child process."""
    with tempfile.TemporaryDirectory(prefix="bench_gpt_torch_") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--torch-worker", "--config", str(config),
               "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps),
               "--threads", str(args.threads), "--torch-precision", precision, "--result-file", str(result_file)]
        what = "FP32" if precision == "fp32" else "BF16 autocast"
        label = f"PyTorch {what} worker"
        log(f"running PyTorch {what} ({args.warmup_steps} warm-up + {args.steps} timed steps, "
            f"{args.threads} threads{', OPENBLAS_CORETYPE=' + coretype if coretype else ''}) ...")
        res = run_child(cmd, torch_env(args.threads, coretype), label, args.timeout)
        check_child(res, label)
        if not result_file.exists():
            raise BenchError(f"{label} wrote no result; its stderr:\n{tail(res['stderr'])}")
        r = json.loads(result_file.read_text())
    r["peak_rss_mib"] = res["peak_rss_mib"]
    r["wall_s"] = res["wall_s"]
    r["openblas_coretype"] = coretype
    if probe is not None:
        r["openblas_default_core"] = probe.get("corename")
    return r


def run_torch_all(args, config: Path, precisions: list[str]) -> dict[str, dict]:
    """PyTorch runs, one per precision, with the OpenBLAS kernels chosen once;
    warns loudly when the BLAS is not OpenBLAS with pthreads."""
    coretype, probe = choose_openblas_core(args.openblas_coretype, args.threads)
    runs = {p: run_torch(args, config, p, coretype, probe) for p in precisions}
    b = next(iter(runs.values()))["blas"]
    if not b.get("openblas") or b.get("threading") != "pthreads":
        what = (f"OpenBLAS with {b['threading']} threading" if b.get("openblas")
                else f"not OpenBLAS (libraries: {', '.join(b['libraries']) or 'none found'}; {b['torch_blas_info']})")
        log("!" * 78)
        log(f"WARNING: PyTorch's BLAS is {what}; the baseline is meant to be OpenBLAS with pthreads.")
        log(f"         Fix: {OPENBLAS_HINT}")
        log("!" * 78)
    return runs


# ----------------------------------------------------------------- sparta side

def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        raise BenchError(f"sparta train wrote no {path}")
    recs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise BenchError(f"{path}:{n}: not JSON ({e.msg})") from None
    return recs


def check_sparta_binary(binary: Path) -> None:
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise BenchError(f"sparta binary {binary} not found or not executable (build it with "
                         f"`cmake --build build -j2 --target sparta`, pass --sparta PATH, or use --skip-sparta)")


def measure_gemm(args, dtype: str) -> dict:
    """`SPARTA bench gemm --dtype D --threads T --reps 20 --json`:
    {"dtype", "gflops", "impl", "m", "n", "k", "threads"}."""
    cmd = [str(args.sparta), "bench", "gemm", "--dtype", dtype, "--threads", str(args.threads),
           "--reps", "20", "--json"]
    label = f"sparta bench gemm --dtype {dtype}"
    log(f"measuring the oneDNN {dict(PEAK_DTYPES)[dtype]} GEMM peak: " + " ".join(cmd))
    res = run_child(cmd, dict(os.environ), label, args.timeout)
    check_child(res, label)
    g = last_json_line(res["stdout"], label, ("gflops", "m", "n", "k"))
    if g.get("dtype", dtype) != dtype:
        raise BenchError(f"{label} reported dtype {g['dtype']!r}")
    return g


def check_sparta_precision_key(args, config: Path) -> None:
    """Fails fast, before the long runs, when the binary predates train.precision:
    a train with an invalid train.precision value stops at config validation,
    with "unknown key 'train.precision'" only when the binary lacks the key."""
    with tempfile.TemporaryDirectory(prefix="bench_gpt_probe_") as tmp:
        cmd = [str(args.sparta), "train", str(config), "--set", "train.steps=1", "--set", f"train.out={tmp}/run",
               "--set", "train.precision=bench-gpt-probe"]
        res = run_child(cmd, dict(os.environ), "sparta train.precision probe", min(args.timeout, 120))
    if res["rc"] != 0 and "unknown key 'train.precision'" in res["stderr"]:
        raise BenchError(f"{args.sparta} does not know train.precision (built before mixed precision); "
                         f"with it only --precision fp32 runs")


def run_sparta(args, config: Path, precision: str, config_precision: str | None) -> dict:
    """One sparta training run in `precision`. The train.precision --set is left
    out for fp32 when the config does not set the key (fp32 is the default), so
    a binary that predates train.precision still runs fp32."""
    binary = Path(args.sparta)
    check_sparta_binary(binary)
    total = args.warmup_steps + args.steps
    tmp = Path(tempfile.mkdtemp(prefix="bench_gpt_sparta_"))
    try:
        out = tmp / "run"
        cmd = [str(binary), "train", str(config), "--set", f"train.steps={total}",
               "--set", f"train.out={out}", "--set", f"train.threads={args.threads}"]
        if precision != "fp32" or config_precision is not None:
            cmd += ["--set", f"train.precision={precision}"]
        label = f"sparta train ({precision})"
        log(f"running sparta {precision} ({args.warmup_steps} warm-up + {args.steps} timed steps, "
            f"{args.threads} threads): " + " ".join(cmd))
        res = run_child(cmd, dict(os.environ), label, args.timeout)
        if res["rc"] != 0 and "unknown key 'train.precision'" in res["stderr"]:
            raise BenchError(f"{binary} does not know train.precision (built before mixed precision); "
                             f"with it only --precision fp32 runs")
        check_child(res, label)
        recs = [r for r in read_metrics(out / "metrics.jsonl") if "tokens_per_s" in r]
        recs.sort(key=lambda r: r["step"])
        if len(recs) != total:
            raise BenchError(f"{label} logged {len(recs)} step records in {out / 'metrics.jsonl'}, "
                             f"expected {total}")
        timed = recs[args.warmup_steps:]
        tps = statistics.median(float(r["tokens_per_s"]) for r in timed)
        step_ms = statistics.median(float(r["step_ms"]) for r in timed) if all("step_ms" in r for r in timed) else None
        result = {"precision": precision, "tokens_per_s": tps, "step_ms": step_ms,
                  "peak_rss_mib": res["peak_rss_mib"], "wall_s": res["wall_s"],
                  "losses": [r.get("loss") for r in recs], "step_ms_all": [r.get("step_ms") for r in recs]}
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------- report

def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparta", default=str(DEFAULT_SPARTA), help="sparta binary (default: %(default)s)")
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="model/batch config (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (default: %(default)s)")
    ap.add_argument("--warmup-steps", type=int, default=3,
                    help="steps run first and excluded from timing (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="threads for every run (default: %(default)s)")
    ap.add_argument("--precision", default="fp32",
                    help=f"sparta runs, one per comma-separated train.precision: {', '.join(SPARTA_PRECISIONS)} "
                         f"(default: %(default)s)")
    ap.add_argument("--torch-precision", default="fp32,bf16",
                    help="PyTorch runs, comma-separated: fp32 (float32) and/or bf16 (BF16 autocast around "
                         "forward + loss, FP32 master weights) (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print one JSON record as the last line")
    ap.add_argument("--skip-torch", action="store_true", help="run sparta only")
    ap.add_argument("--skip-sparta", action="store_true", help="run PyTorch only (no GEMM peaks either)")
    ap.add_argument("--openblas-coretype", default="auto",
                    help="PyTorch side: 'auto' (default) forces the best OpenBLAS kernels for this CPU when "
                         "OpenBLAS falls back to pre-AVX2 ones, 'keep' leaves OpenBLAS's choice, anything "
                         "else is passed as OPENBLAS_CORETYPE")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed per child (default: %(default)s)")
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--probe-blas", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result-file", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.torch_worker:
        return torch_worker(args)

    try:
        if importlib.util.find_spec("torch") is None:  # the FLOP model and the PyTorch side need it
            raise BenchError(f"{sys.executable} cannot import torch; run this script with Debian's "
                             f"/usr/bin/python3 (apt-get install python3-torch)")
        if args.steps < 1 or args.warmup_steps < 0 or args.threads < 1:
            raise BenchError(f"need --steps >= 1, --warmup-steps >= 0, --threads >= 1 (got {args.steps}, "
                             f"{args.warmup_steps}, {args.threads})")
        if args.skip_torch and args.skip_sparta:
            raise BenchError("--skip-torch and --skip-sparta together leave nothing to run")
        # Both lists are checked even when --skip-* leaves one of them unused.
        precisions = parse_precisions(args.precision, SPARTA_PRECISIONS, "--precision")
        torch_precisions = parse_precisions(args.torch_precision, TORCH_PRECISIONS, "--torch-precision")
        precisions = [] if args.skip_sparta else precisions
        torch_precisions = [] if args.skip_torch else torch_precisions
        config = Path(args.config).resolve()
        c = load_bench_config(config)
        sys.path.insert(0, str(BENCH_DIR))
        from common_torch_gpt import GPTConfig, flops_per_token
        cfg = GPTConfig(vocab_size=c["vocab_size"], context=c["context"], n_layer=c["n_layer"],
                        n_head=c["n_head"], d_model=c["d_model"])
        fpt = flops_per_token(cfg, cfg.context)
        log(f"model: {cfg.n_layer} layers, d_model {cfg.d_model}, {cfg.n_head} heads, context {cfg.context}, "
            f"vocab {cfg.vocab_size}, batch {c['batch_size']} ({config}); "
            f"{fpt / 1e6:.1f} MFLOP per trained token")

        busy = cpu_busy_fraction(1.0)
        if busy is not None and busy > 0.2:
            log(f"WARNING: other processes kept {100 * busy:.0f}% of the CPUs busy just before the run; "
                f"with {args.threads} threads every parallel region waits for the slowest one, so the "
                f"numbers below are unreliable")
        if precisions:  # fail fast on a missing or too old binary, before the long PyTorch runs
            check_sparta_binary(Path(args.sparta))
            if any(p != "fp32" for p in precisions):
                check_sparta_precision_key(args, config)
        # The GEMM peaks are measured before and after the training runs and the
        # higher rate kept: other load can only lower a measured peak.
        gemm_runs: dict[str, list[dict]] = {d: [] for d, _ in PEAK_DTYPES}
        if precisions:
            for d, _ in PEAK_DTYPES:
                gemm_runs[d].append(measure_gemm(args, d))
        torch_runs = run_torch_all(args, config, torch_precisions) if torch_precisions else {}
        sparta_runs = {p: run_sparta(args, config, p, c["precision"]) for p in precisions}
        if precisions:
            for d, _ in PEAK_DTYPES:
                gemm_runs[d].append(measure_gemm(args, d))
    except BenchError as e:
        print(f"bench_gpt: error: {e}", file=sys.stderr)
        return 1

    gemm = {}
    for d, _ in PEAK_DTYPES:
        if gemm_runs[d]:
            gemm[d] = dict(max(gemm_runs[d], key=lambda g: g["gflops"]))
            gemm[d]["runs_gflops"] = [g["gflops"] for g in gemm_runs[d]]
    peak32 = gemm["f32"]["gflops"] if "f32" in gemm else None
    peak16 = gemm["bf16"]["gflops"] if "bf16" in gemm else None

    runs = [("sparta", p, r) for p, r in sparta_runs.items()] + [("pytorch", p, r) for p, r in torch_runs.items()]
    for impl, p, r in runs:
        r["impl"] = impl
        r["gflops"] = fpt * r["tokens_per_s"] / 1e9
        r["fraction_of_fp32_peak"] = ratio(r["gflops"], peak32)
        r["fraction_of_bf16_peak"] = ratio(r["gflops"], peak16)

    def pct(x):
        return fmt(None if x is None else 100 * x, ".1f")

    print()
    print(f"{'run':<21} {'tokens/s':>9} {'step ms':>9} {'peak RSS MiB':>13} {'GFLOP/s':>8} "
          f"{'% BF16 peak':>12} {'% FP32 peak':>12}")
    for impl, p, r in runs:
        name = f"{impl} {p}" + (" autocast" if impl == "pytorch" and p == "bf16" else "")
        print(f"{name:<21} {r['tokens_per_s']:>9.0f} {fmt(r['step_ms'], '.1f'):>9} {r['peak_rss_mib']:>13.0f} "
              f"{r['gflops']:>8.1f} {pct(r['fraction_of_bf16_peak']):>12} {pct(r['fraction_of_fp32_peak']):>12}")

    if gemm:
        g0 = next(iter(gemm.values()))
        print(f"oneDNN GEMM peaks ({g0['m']}x{g0['n']}x{g0['k']}, {args.threads} threads; best of the runs "
              f"before and after training):")
        for d, label in PEAK_DTYPES:
            g = gemm[d]
            print(f"  {label}  {g['gflops']:.1f} GFLOP/s ({g.get('impl', '?')}; runs at "
                  f"{', '.join(f'{x:.1f}' for x in g['runs_gflops'])})")

    s32, t32, t16 = sparta_runs.get("fp32"), torch_runs.get("fp32"), torch_runs.get("bf16")
    ratios = {}
    for p, r in sparta_runs.items():
        ratios[p] = {
            "speed_vs_sparta_fp32": ratio(r["tokens_per_s"], s32 and s32["tokens_per_s"]),
            "speed_vs_pytorch_fp32": ratio(r["tokens_per_s"], t32 and t32["tokens_per_s"]),
            "speed_vs_pytorch_bf16": ratio(r["tokens_per_s"], t16 and t16["tokens_per_s"]),
            "rss_vs_sparta_fp32": ratio(r["peak_rss_mib"], s32 and s32["peak_rss_mib"]),
            "rss_vs_pytorch_fp32": ratio(r["peak_rss_mib"], t32 and t32["peak_rss_mib"]),
        }
    if ratios and (s32 or torch_runs):
        print("ratios of each sparta run (tokens/s: > 1 means the sparta run is faster; peak RSS: < 1 means "
              "it uses less):")
        print(f"{'run':<21} {'vs sparta fp32':>15} {'vs pytorch fp32':>16} {'vs pytorch bf16':>16} "
              f"{'RSS vs sparta fp32':>19}")

        def x(v):
            return fmt(v, ".2f") + ("x" if v is not None else "")
        for p, q in ratios.items():
            print(f"{'sparta ' + p:<21} {x(q['speed_vs_sparta_fp32']):>15} {x(q['speed_vs_pytorch_fp32']):>16} "
                  f"{x(q['speed_vs_pytorch_bf16']):>16} {x(q['rss_vs_sparta_fp32']):>19}")
    speed = mem = None
    if s32 and t32:
        speed = s32["tokens_per_s"] / t32["tokens_per_s"]
        mem = s32["peak_rss_mib"] / t32["peak_rss_mib"]
        print(f"speed ratio sparta fp32/pytorch fp32:  {speed:.2f}x  "
              f"(target >= 2x: {'met' if speed >= 2 else 'NOT met'})")
        print(f"memory ratio sparta fp32/pytorch fp32: {mem:.2f}x  (target <= 1x: {'met' if mem <= 1 else 'NOT met'})")
    if torch_runs:
        tr = next(iter(torch_runs.values()))
        b = tr["blas"]
        blas = (f"{b['openblas']}, {b['threading']}" if b.get("openblas") else ", ".join(b["libraries"]) or "unknown BLAS")
        core = tr.get("openblas_coretype")
        print(f"pytorch: torch {tr['torch_version']}, FP32 GEMMs: {blas}"
              f"{', kernels forced to ' + core if core else ''}; oneDNN (mkldnn) available: "
              f"{'yes' if tr.get('mkldnn_available') else 'no'}; "
              f"{tr['rss_after_import_mib']:.0f} MiB RSS after import")
    for impl, p, r in runs:
        # A training run cannot beat the GEMM peak of its products' type unless the
        # machine was busier while that peak was measured.
        limit = peak32 if p == "fp32" else peak16
        if limit is not None and r["gflops"] > limit:
            print(f"WARNING: {impl} {p}'s training rate exceeds the measured {'FP32' if p == 'fp32' else 'BF16'} "
                  f"GEMM peak, so the machine was busier while the peak was measured; rerun on an idle machine")

    if args.json:
        record = {
            "config": str(config), "model": c, "steps": args.steps, "warmup_steps": args.warmup_steps,
            "threads": args.threads, "cpu_busy_before": busy, "flops_per_token": fpt,
            "precisions": precisions, "torch_precisions": torch_precisions,
            "gemm_peak_gflops": peak32, "gemm_peak_bf16_gflops": peak16, "gemm": gemm,
            "runs": [r for _, _, r in runs],
            "sparta": s32, "pytorch": t32, "speed_ratio": speed, "memory_ratio": mem,
            "ratios": ratios,
        }
        print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
