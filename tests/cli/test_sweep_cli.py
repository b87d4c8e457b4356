#!/usr/bin/env python3
"""End-to-end tests of `sparta sweep`: a 2x2 grid on tiny text and passkey
configs writes one record per run and the table / plot; bad grids fail with
one line before anything trains; --resume, --force and --dry-run behave as
docs/sweep.md says.

Usage: test_sweep_cli.py SPARTA_BINARY [unittest args...]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_cli import TINY, make_corpus  # noqa: E402  (same tiny model and corpus as the other CLI tests)

# Exact stderr checks: no busy-machine warning from a loaded test machine.
os.environ["SPARTA_LOAD_WARNING"] = "0"

SPARTA = None
RECORD_KEYS = ["index", "run", "settings", "status", "steps", "final_loss", "val_loss", "tokens_per_s", "wall_s",
               "peak_tracked_bytes"]
# A 2x2 grid over attention settings; --set keeps the DSA blocks small for context 32.
GRID = ["--grid", "model.attention=dense,dsa", "--grid", "model.dsa.top_k=16,32",
        "--set", "model.dsa.block=16", "--set", "model.dsa.window=16"]
SVG_NS = "{http://www.w3.org/2000/svg}"


def run(args, check=True, timeout=300):
    p = subprocess.run([SPARTA] + args, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"sparta {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return p


def records(out):
    with open(os.path.join(out, "sweep.jsonl")) as f:
        return [json.loads(line) for line in f]


class SweepTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sparta_sweep_cli_")
        self.corpus = os.path.join(self.tmp, "corpus.txt")
        make_corpus(self.corpus)
        self.cfg = os.path.join(self.tmp, "tiny.toml")
        with open(self.cfg, "w") as f:
            f.write(TINY.format(corpus=self.corpus, steps=4, eval_every=2, ckpt_every=4,
                                out=os.path.join(self.tmp, "runs", "tiny")))
        self.out = os.path.join(self.tmp, "runs", "tiny-sweep")  # the default: <train.out>-sweep

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def assert_one_line_error(self, p, needle):
        self.assertNotEqual(p.returncode, 0)
        self.assertNotIn(p.returncode, (-11, -6, 134, 139), "crashed")
        err = p.stderr.strip()
        self.assertEqual(len(err.splitlines()), 1, f"expected one line, got:\n{err}")
        self.assertTrue(err.startswith("sparta: error: [sweep]"), err)
        self.assertIn(needle, err)

    def test_text_sweep_2x2(self):
        p = run(["sweep", self.cfg] + GRID)
        recs = records(self.out)
        self.assertEqual(len(recs), 4)
        want = [("dense", "16"), ("dense", "32"), ("dsa", "16"), ("dsa", "32")]  # last --grid fastest
        for i, (r, (attn, k)) in enumerate(zip(recs, want)):
            # At context 32 the DSA budget covers every key and dense ignores
            # top_k: runs 2-4 repeat run 1 and say so.
            self.assertEqual(list(r.keys()), RECORD_KEYS + (["same_as"] if i else []))
            self.assertEqual(r.get("same_as"), 1 if i else None)
            self.assertEqual(r["index"], i + 1)
            self.assertEqual(r["settings"], {"model.attention": attn, "model.dsa.top_k": k})
            self.assertEqual(r["run"], f"0{i + 1}-attention-{attn}+top_k-{k}")
            self.assertEqual(r["status"], "ok")
            self.assertEqual(r["steps"], 4)
            self.assertTrue(0 < r["val_loss"] < 10 and 0 < r["final_loss"] < 10)
            self.assertGreater(r["tokens_per_s"], 0)
            self.assertGreater(r["wall_s"], 0)
            self.assertGreater(r["peak_tracked_bytes"], 0)
            run_dir = os.path.join(self.out, r["run"])
            self.assertTrue(os.path.exists(os.path.join(run_dir, "summary.json")))
            with open(os.path.join(run_dir, "metrics.jsonl")) as f:
                self.assertEqual(len(f.readlines()), 4)
            # Each run trained with its own combination (and the shared --set).
            info = json.loads(run(["info", "--checkpoint", run_dir, "--json"]).stdout)
            self.assertEqual(info["step"], 4)
            with open(os.path.join(info["checkpoint"], "config.toml"), "rb") as f:
                saved = tomllib.load(f)
            self.assertEqual(saved["model"]["attention"], attn)
            self.assertEqual(saved["model"]["dsa"]["top_k"], int(k))
            self.assertEqual(saved["model"]["dsa"]["window"], 16)
            self.assertEqual(saved["train"]["out"], run_dir)
        # stdout: the table (header, rule, 4 rows), best run, where the files are.
        rows = [l for l in p.stdout.splitlines() if l.startswith("|")]
        self.assertEqual(len(rows), 6, p.stdout)
        self.assertIn("model.attention", rows[0])
        self.assertEqual(sum("**best**" in r for r in rows), 1)
        self.assertIn("best val_loss: #", p.stdout)
        # stderr: one progress line per run.
        progress = [l for l in p.stderr.splitlines() if l.startswith("[")]
        self.assertEqual([l.split("]")[0] + "]" for l in progress], ["[1/4]", "[2/4]", "[3/4]", "[4/4]"])
        self.assertIn("[3/4] model.attention=dsa model.dsa.top_k=16 ...", progress[2])
        with open(os.path.join(self.out, "sweep.md")) as f:
            md = f.read()
        self.assertEqual(sum(1 for l in md.splitlines() if l.startswith("| ") and l[2:].strip()[0].isdigit()), 4)
        self.assertIn("**best**", md)
        svg = ET.parse(os.path.join(self.out, "sweep.svg")).getroot()  # well-formed XML
        self.assertEqual(svg.tag, SVG_NS + "svg")
        texts = {t.text for t in svg.iter(SVG_NS + "text")}
        for attn, k in want:
            self.assertIn(f"attention={attn} top_k={k}", texts)

        # Results are never overwritten by accident; --resume keeps finished runs.
        p = run(["sweep", self.cfg] + GRID, check=False)
        self.assert_one_line_error(p, "already holds sweep results")
        p = run(["sweep", self.cfg] + GRID + ["--resume"])
        self.assertEqual(p.stderr.count("finished earlier, skipped"), 4)
        self.assertEqual(records(self.out), recs)
        # --quiet: nothing on stderr.
        p = run(["sweep", self.cfg] + GRID + ["--resume", "--quiet"])
        self.assertEqual(p.stderr, "")

    def test_resume_after_an_interruption_and_force(self):
        run(["sweep", self.cfg] + GRID + ["--quiet"])
        recs = records(self.out)
        # As if killed during run 3: runs 1-2 recorded, run 3 half-written, run 4 never started.
        with open(os.path.join(self.out, "sweep.jsonl"), "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in recs[:2]))
        os.remove(os.path.join(self.out, recs[2]["run"], "summary.json"))
        shutil.rmtree(os.path.join(self.out, recs[3]["run"]))
        p = run(["sweep", self.cfg] + GRID + ["--resume"])
        self.assertEqual(p.stderr.count("finished earlier, skipped"), 2)
        again = records(self.out)
        self.assertEqual([r["run"] for r in again], [r["run"] for r in recs])
        self.assertEqual(again[:2], recs[:2])
        # Same seed and data: the redone runs reach the same losses.
        self.assertEqual([r["final_loss"] for r in again], [r["final_loss"] for r in recs])
        # Resuming with another grid is refused; --force starts over and drops the old runs.
        other = ["--grid", "model.attention=dense", "--grid", "train.lr=0.001,0.002"]
        p = run(["sweep", self.cfg] + other + ["--resume"], check=False)
        self.assert_one_line_error(p, "another grid")
        run(["sweep", self.cfg] + other + ["--force", "--quiet"])
        self.assertEqual(len(records(self.out)), 2)
        self.assertFalse(os.path.exists(os.path.join(self.out, recs[3]["run"])))
        self.assertEqual(sorted(d for d in os.listdir(self.out) if os.path.isdir(os.path.join(self.out, d))),
                         ["01-attention-dense+lr-0.001", "02-attention-dense+lr-0.002"])

    def test_passkey_sweep_records_accuracy(self):
        out = os.path.join(self.tmp, "task-sweep")
        p = run(["sweep", self.cfg, "--grid", "train.lr=0.001,0.003", "--grid", "model.n_layer=1,2",
                 "--set", "data.task=passkey", "--set", "model.context=128", "--set", "data.task_eval_examples=4",
                 "--set", "train.steps=2", "--out", out, "--quiet"])
        recs = records(out)
        self.assertEqual(len(recs), 4)
        for r in recs:
            self.assertEqual(r["status"], "ok")
            self.assertEqual(r["task"], "passkey")
            self.assertEqual(r["steps"], 2)
            self.assertIn(r["val_accuracy"], (0.0, 0.25, 0.5, 0.75, 1.0))  # 4 validation examples
            self.assertGreater(r["val_loss"], 0)  # loss on the answer digits
        self.assertIn("val_acc", p.stdout)
        self.assertIn("best val_accuracy: #", p.stdout)
        svg = ET.parse(os.path.join(out, "sweep.svg")).getroot()
        self.assertIn("validation accuracy (higher is better)", {t.text for t in svg.iter(SVG_NS + "text")})

    def test_bad_grids_fail_with_one_line_before_training(self):
        out = os.path.join(self.tmp, "bad")
        cases = [
            (["--grid", "model.dsa.top_k"], "expected KEY=V1,V2"),
            (["--grid", "model.dsa.top_k="], "no values after '='"),
            (["--grid", "model.dsa.top_k=16,,32"], "value 2 is empty"),
            (["--grid", "model.dsa.top_k=16,16"], "listed twice"),
            (["--grid", "model.dsa.topk=16,32"], "unknown config key 'model.dsa.topk'"),
            (["--grid", "model.n_layer=1,2", "--grid", "model.n_layer=3"], "already swept"),
            (["--grid", "model.attention=dense,sparse"], "run 2/2 (model.attention=sparse)"),
            (["--grid", "model.n_head=2,3"], "model.n_head (3) must divide"),
            (["--grid", "model.n_layer=1,2", "--set", "model.n_layer=2"], "set by both --set"),
            (["--grid", "train.out=a,b"], "train.out cannot be swept"),
            (["--grid", "data.train=/no/such/file.txt"], "does not exist"),
            (["--grid", "train.seed=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17",
              "--grid", "train.lr=0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1,1.1,1.2,1.3,1.4,1.5,1.6"],
             "272 combinations (17 x 16)"),
        ]
        for args, needle in cases:
            with self.subTest(args=args):
                p = run(["sweep", self.cfg, "--out", out] + args, check=False)
                self.assert_one_line_error(p, needle)
                self.assertFalse(os.path.exists(out), "nothing may be written before validation passes")
        p = run(["sweep", self.cfg], check=False)  # no --grid at all
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--grid", p.stderr)
        self.assertIn("Usage", run(["sweep", "--help"]).stdout)

    def test_dry_run_lists_runs_without_training(self):
        p = run(["sweep", self.cfg] + GRID + ["--dry-run"])
        lines = p.stdout.splitlines()
        self.assertTrue(lines[0].startswith("4 runs into "), p.stdout)
        self.assertIn("03-attention-dsa+top_k-16  model.attention=dsa model.dsa.top_k=16", lines[3])
        self.assertFalse(os.path.exists(self.out))


if __name__ == "__main__":
    SPARTA = os.path.abspath(sys.argv.pop(1))
    unittest.main()
