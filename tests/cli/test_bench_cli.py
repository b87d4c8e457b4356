#!/usr/bin/env python3
"""End-to-end tests of `sparta bench gemm --dtype` and of `sparta bench
attention` (docs/bench-attention.md):
records on stdout and in --out, the SVG chart, --plot-from, one-line errors
for bad input, and a smoke run of bench/bench_attention.py when Debian's
python3 with torch is available.

Usage: test_bench_cli.py SPARTA_BINARY [unittest args...]
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

# Exact stderr checks: no busy-machine warning from a loaded test machine.
os.environ["SPARTA_LOAD_WARNING"] = "0"

SPARTA = None
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A DSA budget below the context at these short lengths, so DSA runs its
# sparse kernels (by default it attends every key up to 1024 tokens and runs
# the dense kernel, see test_short_default_dsa_is_dense).
SPARSE_DSA = ["--set", "model.dsa.dense_len=0", "--set", "model.dsa.block=16", "--set", "model.dsa.window=16",
              "--set", "model.dsa.top_k=16", "--set", "model.dsa.keep_short=0.25"]
BASE = ["--heads", "2", "--head-dim", "16", "--min-time", "0", "--decode-steps", "2", "--threads", "2"]
TINY = BASE + SPARSE_DSA
KEYS = {"impl", "seq", "fwd_ms", "bwd_ms", "decode_ms", "peak_mb", "batch", "heads", "head_dim", "threads",
        "causal", "peak_reset", "precision"}


def run(args, check=True, timeout=120):
    p = subprocess.run([SPARTA] + args, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"sparta {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return p


def svg_texts(path):
    root = ET.parse(path).getroot()  # raises on malformed XML
    return [t.text for t in root.iter("{http://www.w3.org/2000/svg}text") if t.text]


class BenchAttentionTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sparta_bench_cli_")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def check_record(self, r, impl, seq, precision="fp32"):
        want = KEYS | ({"selection_ms"} if impl == "dsa" else set())
        self.assertEqual(set(r), want, r)
        self.assertEqual(r["precision"], precision, r)
        self.assertEqual((r["impl"], r["seq"], r["heads"], r["head_dim"], r["batch"], r["threads"]),
                         (impl, seq, 2, 16, 1, 2))
        for k in ("fwd_ms", "bwd_ms", "decode_ms") + (("selection_ms",) if impl == "dsa" else ()):
            self.assertTrue(math.isfinite(r[k]) and r[k] > 0, (k, r))
        self.assertTrue(math.isfinite(r["peak_mb"]) and r["peak_mb"] >= 0, r)
        self.assertIs(r["causal"], True)

    def test_precisions_are_measured_side_by_side(self):
        p = run(["bench", "attention", "--seqs", "128", "--impls", "dense,dsa", "--precision", "fp32,bf16",
                 "--json"] + TINY)
        recs = [json.loads(l) for l in p.stdout.splitlines()]
        self.assertEqual([(r["impl"], r["precision"]) for r in recs],
                         [("dense", "fp32"), ("dsa", "fp32"), ("dense", "bf16"), ("dsa", "bf16")])
        for r in recs:
            self.check_record(r, r["impl"], 128, r["precision"])
        self.assertIn("dsa/bf16 seq=128: fwd ", p.stderr)
        # The table labels bf16 rows and compares them with dense of the same precision.
        table = run(["bench", "attention", "--seqs", "128", "--impls", "dense,dsa", "--precision", "bf16"] + TINY).stdout
        rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
        self.assertEqual(set(rows), {"dense/bf16", "dsa/bf16"})
        self.assertTrue(rows["dsa/bf16"][-1].endswith("x"), table)
        for bad in ("fp16", "fp32,fp16", "float"):
            r = run(["bench", "attention", "--seqs", "128", "--precision", bad] + TINY, check=False)
            self.assertNotEqual(r.returncode, 0, bad)
            self.assertIn("--precision", r.stderr)

    def test_json_records_and_outputs(self):
        out = os.path.join(self.tmp, "res")
        p = run(["bench", "attention", "--seqs", "256,128", "--impls", "dense,dsa", "--json", "--out", out] + TINY)
        recs = [json.loads(l) for l in p.stdout.splitlines()]
        self.assertEqual([(r["impl"], r["seq"]) for r in recs],
                         [("dense", 128), ("dsa", 128), ("dense", 256), ("dsa", 256)])  # seqs ascending
        for r in recs:
            self.check_record(r, r["impl"], r["seq"])
        # Progress on stderr, one line per measurement.
        self.assertIn("dense seq=128: fwd ", p.stderr)
        self.assertIn("dsa seq=256: fwd ", p.stderr)
        self.assertIn("% of fwd+bwd)", p.stderr)
        # The same records in attention.jsonl; the chart names both series and both lengths.
        with open(os.path.join(out, "attention.jsonl")) as f:
            self.assertEqual([json.loads(l) for l in f], recs)
        texts = svg_texts(os.path.join(out, "attention.svg"))
        for t in ("dense", "dsa", "128", "256", "sequence length (tokens)", "forward + backward (ms)"):
            self.assertIn(t, texts)
        self.assertFalse(os.path.exists(os.path.join(out, "attention.svg.tmp")))

    def test_table_with_speedup_and_dsa_settings(self):
        p = run(["bench", "attention", "--seqs", "128", "--impls", "dense,window,dsa",
                 "--set", "model.dsa.block=32", "--set", "model.dsa.window=32"] + TINY)
        lines = p.stdout.splitlines()
        self.assertEqual(len(lines), 4, p.stdout)
        for col in ("impl", "fwd ms", "bwd ms", "fwd+bwd", "decode ms/t", "sel %", "peak MB", "speed-up"):
            self.assertIn(col, lines[0])
        self.assertTrue(lines[1].startswith("dense") and lines[1].rstrip().endswith("-"), lines[1])
        self.assertTrue(lines[2].startswith("window") and lines[2].rstrip().endswith("x"), lines[2])
        self.assertTrue(lines[3].startswith("dsa") and "%" in lines[3], lines[3])

    def test_rounds_report_one_median_record_per_problem(self):
        out = os.path.join(self.tmp, "rounds")
        p = run(["bench", "attention", "--seqs", "64,128", "--impls", "dense,dsa", "--rounds", "3", "--json",
                 "--out", out] + TINY)
        recs = [json.loads(l) for l in p.stdout.splitlines()]
        self.assertEqual([(r["impl"], r["seq"]) for r in recs],
                         [("dense", 64), ("dsa", 64), ("dense", 128), ("dsa", 128)])
        for r in recs:
            self.check_record(r, r["impl"], r["seq"])
        self.assertEqual(p.stderr.count("dsa seq=128: fwd "), 3)  # every round measured every problem
        self.assertIn("round 3 of 3", p.stderr)
        with open(os.path.join(out, "attention.jsonl")) as f:
            self.assertEqual([json.loads(l) for l in f], recs)
        p = run(["bench", "attention", "--rounds", "0"] + TINY, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stderr.strip().splitlines()[-1], "sparta: error: [bench] --rounds must be in [1, 100], got 0")

    def test_short_default_dsa_is_dense(self):
        # With the default dense_len DSA attends every key at 128 tokens and
        # runs the dense kernel: no selection step to report.
        p = run(["bench", "attention", "--seqs", "128", "--impls", "dsa", "--json"] + BASE)
        r = json.loads(p.stdout)
        self.assertNotIn("selection_ms", r)
        self.assertTrue(math.isfinite(r["fwd_ms"]) and r["fwd_ms"] > 0, r)

    def test_bidirectional_has_no_decode(self):
        p = run(["bench", "attention", "--seqs", "64", "--impls", "dense", "--json", "--bidirectional"] + TINY)
        r = json.loads(p.stdout)
        self.assertIsNone(r["decode_ms"])
        self.assertIs(r["causal"], False)

    def test_too_large_sequence_is_skipped(self):
        p = run(["bench", "attention", "--seqs", "64,100000000000", "--impls", "dense", "--json"] + TINY)
        self.assertEqual([json.loads(l)["seq"] for l in p.stdout.splitlines()], [64])
        self.assertIn("warning: skipping seq=100000000000: needs about", p.stderr)
        p = run(["bench", "attention", "--seqs", "100000000000", "--impls", "dense"] + TINY, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stderr.strip().splitlines()[-1],
                         "sparta: error: [bench] nothing was measured: every sequence length was skipped")

    def test_plot_from_renders_foreign_records(self):
        src = os.path.join(self.tmp, "in.jsonl")
        with open(src, "w") as f:
            for impl, seq, ms in (("dense", 1024, 10), ("torch", 1024, 30), ("dense", 4096, 160), ("torch", 4096, 500)):
                f.write(json.dumps({"impl": impl, "seq": seq, "fwd_ms": ms, "bwd_ms": 2 * ms}) + "\n")
        out = os.path.join(self.tmp, "plot")
        p = run(["bench", "attention", "--plot-from", src, "--out", out])
        self.assertIn("torch", p.stdout)
        self.assertIn("0.33x", p.stdout)  # torch vs dense at 1024: 30 / 90
        texts = svg_texts(os.path.join(out, "attention.svg"))
        for t in ("dense", "torch", "1K", "4K"):
            self.assertIn(t, texts)
        with open(os.path.join(out, "attention.jsonl")) as f:
            self.assertEqual([json.loads(l)["impl"] for l in f], ["dense", "torch", "dense", "torch"])
        with open(src, "a") as f:
            f.write("{not json\n")
        self.assert_clean_error(["bench", "attention", "--plot-from", src], "in.jsonl:5: not a JSON record")

    def assert_clean_error(self, args, needle):
        p = run(args, check=False)
        self.assertNotEqual(p.returncode, 0, f"{args} should fail")
        self.assertNotIn(p.returncode, (-11, -6, 134, 139), "crashed")
        err = p.stderr.strip()
        self.assertEqual(len(err.splitlines()), 1, f"expected one line, got:\n{err}")
        self.assertIn(needle, err)
        self.assertEqual(p.stdout, "")

    def test_bad_input(self):
        b = ["bench", "attention"]
        self.assert_clean_error(b + ["--seqs", ""], "--seqs is empty")
        self.assert_clean_error(b + ["--seqs", "128,0"], "sequence length must be >= 1, got 0")
        self.assert_clean_error(b + ["--seqs", "1k"], "comma-separated list of integers, got '1k'")
        self.assert_clean_error(b + ["--impls", "dense,flash"], "unknown implementation 'flash'")
        self.assert_clean_error(b + ["--heads", "0"], "--heads must be >= 1, got 0")
        self.assert_clean_error(b + ["--head-dim", "-1"], "--head-dim must be >= 1, got -1")
        self.assert_clean_error(b + ["--batch", "0"], "--batch must be >= 1, got 0")
        self.assert_clean_error(b + ["--min-time", "-1"], "--min-time must be in [0, 3600]")
        self.assert_clean_error(b + ["--decode-steps", "0"], "--decode-steps must be >= 1")
        self.assert_clean_error(b + ["--set", "model.dsa.nope=1"], "unknown key 'model.dsa.nope'")
        self.assert_clean_error(b + ["--set", "model.dsa.block=x"], "model.dsa.block must be an integer, got 'x'")
        self.assert_clean_error(b + ["--set", "train.lr=1"], "only model.dsa.KEY=VALUE")
        self.assert_clean_error(b + ["--plot-from", os.path.join(self.tmp, "none.jsonl")], "cannot open")

    @unittest.skipUnless(os.path.exists("/usr/bin/python3"), "needs Debian's /usr/bin/python3")
    def test_bench_attention_script(self):
        probe = subprocess.run(["/usr/bin/python3", "-c", "import torch"], capture_output=True)
        if probe.returncode != 0:
            self.skipTest("/usr/bin/python3 has no torch")
        out = os.path.join(self.tmp, "script")
        p = subprocess.run(["/usr/bin/python3", os.path.join(REPO, "bench", "bench_attention.py"), "--sparta", SPARTA,
                            "--seqs", "64,128", "--heads", "2", "--head-dim", "16", "--min-time", "0",
                            "--decode-steps", "2", "--threads", "1", "--openblas-coretype", "keep",
                            "--out", out, "--json"], capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr[-3000:])
        summary = json.loads(p.stdout.strip().splitlines()[-1])
        got = [(r["impl"], r["seq"]) for r in summary["records"]]
        self.assertEqual(got, [("dense", 64), ("dsa", 64), ("torch", 64), ("dense", 128), ("dsa", 128),
                               ("torch", 128)])
        torch_rec = summary["records"][2]
        for k in ("fwd_ms", "bwd_ms", "decode_ms"):
            self.assertGreater(torch_rec[k], 0)
        self.assertEqual({(x["impl"], x["vs"]) for x in summary["ratios"]},
                         {("dense", "torch"), ("dsa", "dense"), ("dsa", "torch")})
        self.assertIn("sparta dsa vs torch", p.stdout)
        self.assertIn("torch", svg_texts(os.path.join(out, "attention.svg")))
        with open(os.path.join(out, "attention.jsonl")) as f:
            self.assertEqual(len(f.readlines()), 6)
        self.assertTrue(os.path.exists(os.path.join(out, "bench_attention.json")))


class BenchGemmTest(unittest.TestCase):
    def test_every_dtype_reports_a_rate(self):
        for dtype in ("f32", "bf16", "f16", "f32-fast"):
            p = run(["bench", "gemm", "--size", "64", "--reps", "1", "--threads", "1", "--dtype", dtype, "--json"])
            r = json.loads(p.stdout)
            self.assertEqual(set(r), {"gflops", "dtype", "impl", "m", "n", "k", "threads"}, r)
            self.assertEqual((r["dtype"], r["m"], r["threads"]), (dtype, 64, 1))
            self.assertTrue(math.isfinite(r["gflops"]) and r["gflops"] > 0, r)
            self.assertTrue(r["impl"], r)
        self.assertEqual(json.loads(run(["bench", "gemm", "--size", "32", "--reps", "1", "--json"]).stdout)["dtype"],
                         "f32")  # the default: sgemm, as before --dtype
        p = run(["bench", "gemm", "--size", "32", "--reps", "1", "--threads", "1", "--dtype", "bf16"])
        self.assertRegex(p.stdout, r"^oneDNN matmul bf16 \(.+\) 32\^3: [0-9.]+ GFLOP/s on 1 thread\n$")

    def test_unknown_dtype_is_one_line_error(self):
        p = run(["bench", "gemm", "--size", "32", "--dtype", "f8"], check=False)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stderr, "sparta: error: [bench] --dtype must be one of bf16, f16, f32, f32-fast, got 'f8'\n")
        self.assertEqual(p.stdout, "")


class PrecisionQualityTest(unittest.TestCase):
    """bench/precision_quality.py on a tiny byte-level config: one run per
    precision, the table, the overlaid plot, --reuse and bad input."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sparta_precision_quality_")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def script(self, *args):
        return subprocess.run(["/usr/bin/python3", os.path.join(REPO, "bench", "precision_quality.py"),
                               "--sparta", SPARTA] + list(args), capture_output=True, text=True, timeout=300)

    def test_table_plot_and_errors(self):
        corpus = os.path.join(self.tmp, "corpus.txt")
        with open(corpus, "w") as f:
            f.write("the quick brown fox jumps over the lazy dog. " * 400)
        cfg = os.path.join(self.tmp, "q.toml")
        with open(cfg, "w") as f:
            f.write(f"""[model]\nn_layer = 1\nn_head = 2\nd_model = 32\ncontext = 32\n
[data]\ntrain = "{corpus}"\nval_fraction = 0.1\n
[train]\nbatch_size = 4\nsteps = 6\nwarmup = 1\neval_every = 3\nckpt_every = 0\n""")
        out = os.path.join(self.tmp, "out")
        p = self.script("--config", cfg, "--precision", "fp32,bf16", "--out", out, "--threads", "1")
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        rows = [l for l in p.stdout.splitlines() if l.startswith("| fp32 ") or l.startswith("| bf16 ")]
        self.assertEqual(len(rows), 2, p.stdout)
        self.assertIn("| +0.00% | yes |", rows[0])
        texts = svg_texts(os.path.join(out, "precision-quality.svg"))
        self.assertIn("fp32", texts)
        self.assertIn("bf16", texts)
        with open(os.path.join(out, "bf16", "metrics.jsonl")) as f:
            self.assertEqual(len(f.readlines()), 6)
        with open(os.path.join(out, "bf16", "ckpt-00000006", "config.toml")) as f:
            self.assertIn('precision = "bf16"', f.read())
        # --reuse trains nothing: the runs are left as they are.
        before = os.path.getmtime(os.path.join(out, "bf16", "summary.json"))
        p = self.script("--config", cfg, "--precision", "fp32,bf16", "--out", out, "--reuse")
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        self.assertEqual(os.path.getmtime(os.path.join(out, "bf16", "summary.json")), before)
        for args, needle in ((["--precision", "fp32,int8"], "unknown 'int8'"),
                             (["--precision", "bf16"], "must include fp32"),
                             (["--config", os.path.join(self.tmp, "none.toml")], "does not exist")):
            p = self.script(*args, "--out", os.path.join(self.tmp, "bad"))
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(needle, p.stderr)
            self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)


if __name__ == "__main__":
    SPARTA = os.path.abspath(sys.argv.pop(1))
    unittest.main()
