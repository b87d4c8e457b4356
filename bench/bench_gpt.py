#!/usr/bin/python3
"""Training throughput and peak memory: sparta vs PyTorch FP32 on the same GPT.

The model and batch come from configs/bench.toml (6 layers, d_model 384,
6 heads, context 256, vocab 4096, batch 8). Each side trains for
--warmup-steps + --steps steps in its own child process, so each peak RSS
(from wait4's rusage) is that implementation's alone:

  sparta   SPARTA train configs/bench.toml --set train.steps=... --set
           train.out=TMP --set train.threads=N; step times from TMP/metrics.jsonl
  PyTorch  this script with --torch-worker: float32, torch.set_num_threads(N),
           flush-denormal, OpenBLAS (pthreads) GEMMs, random tokens, AdamW
           with sparta's schedule, clipping and weight-decay groups

tokens/s = B*T / median step time over the steps after the warm-up steps (a
step = forward, backward, clip, AdamW update). Achieved GFLOP/s uses the FLOP
convention of common_torch_gpt.flops_per_token (see bench/README.md) and is
compared with the oneDNN FP32 GEMM peak from `SPARTA bench gemm`, measured in
the same run (before and after the training runs; the higher rate is kept). Target: sparta >= 2x PyTorch's tokens/s at <= PyTorch's peak RSS.

Usage: bench/bench_gpt.py [--sparta build/sparta] [--steps 20] [--warmup-steps 3]
                          [--threads 2] [--json] [--skip-torch | --skip-sparta]
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
    """Child process: trains the PyTorch model and writes its measurements as one
    JSON line to --result-file (or, with --probe-blas, reports the BLAS and exits)."""
    import torch
    info = blas_info()
    if args.probe_blas:
        print(json.dumps({"blas": info}))
        return 0
    sys.path.insert(0, str(BENCH_DIR))
    from common_torch_gpt import GPT, GPTConfig, TrainHParams, flops_per_token, init_sparta_, make_optimizer, train_step

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
        loss, _, _ = train_step(model, opt, hp, s, x, y)
        step_s.append(time.perf_counter() - t0)
        losses.append(loss)
        log(f"  pytorch step {s + 1}/{total}: loss {loss:.4f}, {step_s[-1] * 1e3:.0f} ms"
            + (" (warm-up)" if s < args.warmup_steps else ""))
    timed = step_s[args.warmup_steps:]
    med = statistics.median(timed)
    import resource
    result = {
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


def run_torch(args, config: Path) -> dict:
    coretype, probe = choose_openblas_core(args.openblas_coretype, args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_gpt_torch_") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--torch-worker", "--config", str(config),
               "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps),
               "--threads", str(args.threads), "--result-file", str(result_file)]
        log(f"running PyTorch FP32 ({args.warmup_steps} warm-up + {args.steps} timed steps, "
            f"{args.threads} threads{', OPENBLAS_CORETYPE=' + coretype if coretype else ''}) ...")
        res = run_child(cmd, torch_env(args.threads, coretype), "PyTorch worker", args.timeout)
        check_child(res, "PyTorch worker")
        if not result_file.exists():
            raise BenchError(f"PyTorch worker wrote no result; its stderr:\n{tail(res['stderr'])}")
        r = json.loads(result_file.read_text())
    r["peak_rss_mib"] = res["peak_rss_mib"]
    r["wall_s"] = res["wall_s"]
    r["openblas_coretype"] = coretype
    if probe is not None:
        r["openblas_default_core"] = probe.get("corename")
    b = r["blas"]
    if not b.get("openblas") or b.get("threading") != "pthreads":
        what = (f"OpenBLAS with {b['threading']} threading" if b.get("openblas")
                else f"not OpenBLAS (libraries: {', '.join(b['libraries']) or 'none found'}; {b['torch_blas_info']})")
        log("!" * 78)
        log(f"WARNING: PyTorch's BLAS is {what}; the baseline is meant to be OpenBLAS with pthreads.")
        log(f"         Fix: {OPENBLAS_HINT}")
        log("!" * 78)
    return r


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


def measure_gemm(args) -> dict:
    """`SPARTA bench gemm --threads T --json`: {"gflops", "m", "n", "k", ...}."""
    cmd = [str(args.sparta), "bench", "gemm", "--threads", str(args.threads), "--reps", "20", "--json"]
    log("measuring the oneDNN FP32 GEMM peak: " + " ".join(cmd))
    res = run_child(cmd, dict(os.environ), "sparta bench gemm", args.timeout)
    check_child(res, "sparta bench gemm")
    return last_json_line(res["stdout"], "sparta bench gemm", ("gflops", "m", "n", "k"))


def run_sparta(args, config: Path) -> dict:
    binary = Path(args.sparta)
    check_sparta_binary(binary)
    total = args.warmup_steps + args.steps
    tmp = Path(tempfile.mkdtemp(prefix="bench_gpt_sparta_"))
    try:
        out = tmp / "run"
        cmd = [str(binary), "train", str(config), "--set", f"train.steps={total}",
               "--set", f"train.out={out}", "--set", f"train.threads={args.threads}"]
        log(f"running sparta ({args.warmup_steps} warm-up + {args.steps} timed steps, {args.threads} threads): "
            + " ".join(cmd))
        res = run_child(cmd, dict(os.environ), "sparta train", args.timeout)
        check_child(res, "sparta train")
        recs = [r for r in read_metrics(out / "metrics.jsonl") if "tokens_per_s" in r]
        recs.sort(key=lambda r: r["step"])
        if len(recs) != total:
            raise BenchError(f"sparta train logged {len(recs)} step records in {out / 'metrics.jsonl'}, "
                             f"expected {total}")
        timed = recs[args.warmup_steps:]
        tps = statistics.median(float(r["tokens_per_s"]) for r in timed)
        step_ms = statistics.median(float(r["step_ms"]) for r in timed) if all("step_ms" in r for r in timed) else None
        result = {"tokens_per_s": tps, "step_ms": step_ms, "peak_rss_mib": res["peak_rss_mib"],
                  "wall_s": res["wall_s"], "losses": [r.get("loss") for r in recs],
                  "step_ms_all": [r.get("step_ms") for r in recs]}
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------- report

def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparta", default=str(DEFAULT_SPARTA), help="sparta binary (default: %(default)s)")
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="model/batch config (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (default: %(default)s)")
    ap.add_argument("--warmup-steps", type=int, default=3,
                    help="steps run first and excluded from timing (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="threads for both sides (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print one JSON record as the last line")
    ap.add_argument("--skip-torch", action="store_true", help="run sparta only")
    ap.add_argument("--skip-sparta", action="store_true", help="run PyTorch only")
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
        if not args.skip_sparta:  # fail fast on a missing binary, before the long PyTorch run
            check_sparta_binary(Path(args.sparta))
        # The GEMM peak is measured before and after the training runs and the
        # higher rate kept: other load can only lower a measured peak.
        gemm_runs = [] if args.skip_sparta else [measure_gemm(args)]
        torch_r = None if args.skip_torch else run_torch(args, config)
        sparta_r = None if args.skip_sparta else run_sparta(args, config)
        if sparta_r:
            gemm_runs.append(measure_gemm(args))
            sparta_r["gemm"] = max(gemm_runs, key=lambda g: g["gflops"])
            sparta_r["gemm_runs_gflops"] = [g["gflops"] for g in gemm_runs]
    except BenchError as e:
        print(f"bench_gpt: error: {e}", file=sys.stderr)
        return 1

    peak = sparta_r["gemm"]["gflops"] if sparta_r else None
    rows = []
    for name, r in (("sparta", sparta_r), ("pytorch", torch_r)):
        if r is None:
            continue
        r["gflops"] = fpt * r["tokens_per_s"] / 1e9
        rows.append((name, r))

    print()
    print(f"{'impl':<8} {'tokens/s':>10} {'step ms':>9} {'peak RSS MiB':>13} {'GFLOP/s':>9}")
    for name, r in rows:
        print(f"{name:<8} {r['tokens_per_s']:>10.0f} {fmt(r['step_ms'], '.1f'):>9} "
              f"{r['peak_rss_mib']:>13.0f} {r['gflops']:>9.1f}")
    speed = mem = None
    if sparta_r and torch_r:
        speed = sparta_r["tokens_per_s"] / torch_r["tokens_per_s"]
        mem = sparta_r["peak_rss_mib"] / torch_r["peak_rss_mib"]
        print(f"speed ratio sparta/pytorch:  {speed:.2f}x  (target >= 2x: {'met' if speed >= 2 else 'NOT met'})")
        print(f"memory ratio sparta/pytorch: {mem:.2f}x  (target <= 1x: {'met' if mem <= 1 else 'NOT met'})")
    if sparta_r:
        g = sparta_r["gemm"]
        print(f"sparta achieves {sparta_r['gflops']:.1f} GFLOP/s = {100 * sparta_r['gflops'] / peak:.1f}% of "
              f"oneDNN FP32 GEMM peak ({peak:.1f} GFLOP/s, {g['m']}x{g['n']}x{g['k']}, {args.threads} threads; "
              f"best of runs at {', '.join(f'{x:.1f}' for x in sparta_r['gemm_runs_gflops'])})")
        if sparta_r["gflops"] > peak:
            print("WARNING: sparta's training rate exceeds the measured GEMM peak, so the machine was busier "
                  "while the peak was measured; rerun on an idle machine")
    if torch_r:
        extra = f" = {100 * torch_r['gflops'] / peak:.1f}% of that peak" if peak else ""
        b = torch_r["blas"]
        blas = (f"{b['openblas']}, {b['threading']}" if b.get("openblas") else ", ".join(b["libraries"]) or "unknown BLAS")
        core = torch_r.get("openblas_coretype")
        print(f"pytorch achieves {torch_r['gflops']:.1f} GFLOP/s{extra} "
              f"(torch {torch_r['torch_version']}, {blas}"
              f"{', kernels forced to ' + core if core else ''}; "
              f"{torch_r['rss_after_import_mib']:.0f} MiB RSS after import)")

    if args.json:
        record = {
            "config": str(config), "model": c, "steps": args.steps, "warmup_steps": args.warmup_steps,
            "threads": args.threads, "cpu_busy_before": busy, "flops_per_token": fpt, "gemm_peak_gflops": peak,
            "sparta": sparta_r, "pytorch": torch_r, "speed_ratio": speed, "memory_ratio": mem,
        }
        print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
