#!/usr/bin/env python3
"""End-to-end tests of the `sparta` command line: resume is bit-exact, train.init_from
continues from a checkpoint's weights at another context,
SIGKILL during checkpoint writes never loses the newest marked checkpoint,
bad input gets a one-line error and a non-zero exit, and every command runs.

Usage: test_cli.py SPARTA_BINARY [unittest args...]
"""
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

# Exact stderr checks: no busy-machine warning from a loaded test machine.
os.environ["SPARTA_LOAD_WARNING"] = "0"

SPARTA = None

TINY = """
[model]
n_layer = 1
n_head = 2
d_model = 32
context = 32
[tokenizer]
kind = "byte"
vocab_size = 257
[data]
train = "{corpus}"
val_fraction = 0.1
[train]
batch_size = 4
steps = {steps}
lr = 3e-3
warmup = 2
weight_decay = 0.1
grad_clip = 1.0
seed = 5
eval_every = {eval_every}
ckpt_every = {ckpt_every}
threads = 2
out = "{out}"
"""


def make_corpus(path, n_lines=400, seed=0):
    rng = random.Random(seed)
    words = ("the quick brown fox jumps over a lazy dog while seven wise owls "
             "watch from old oak trees and count every star in the sky").split()
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n_lines):
            f.write(" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + ".\n")


def run(args, check=True, timeout=300):
    p = subprocess.run([SPARTA] + args, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"sparta {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return p


def losses(metrics_path):
    # Compare the JSON text of the losses: bit-exact, not approximately equal.
    out = []
    with open(metrics_path) as f:
        for line in f:
            rec = json.loads(line)
            out.append((rec["step"], repr(rec["loss"]), repr(rec.get("val_loss"))))
    return out


def records(metrics_path):
    with open(metrics_path) as f:
        return [json.loads(line) for line in f]


class CliCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sparta_cli_")
        self.corpus = os.path.join(self.tmp, "corpus.txt")
        make_corpus(self.corpus)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def config(self, name, steps=8, eval_every=4, ckpt_every=4, corpus=None):
        out = os.path.join(self.tmp, name)
        path = os.path.join(self.tmp, name + ".toml")
        with open(path, "w") as f:
            f.write(TINY.format(corpus=corpus or self.corpus, steps=steps, eval_every=eval_every,
                                ckpt_every=ckpt_every, out=out))
        return path, out


class GradAccumTest(CliCase):
    def test_micro_batches_add_up_to_one_batch(self):
        # batch 4 in one pass, in 2 micro-batches of 2, in 4 of 1: the same
        # rows per step, so the same run up to float rounding.
        runs = {}
        for batch, accum in ((4, 1), (2, 2), (1, 4)):
            cfg, out = self.config(f"accum{accum}", steps=6, eval_every=3, ckpt_every=0)
            run(["train", cfg, "--quiet", "--set", f"train.batch_size={batch}", "--set", f"train.grad_accum={accum}"])
            with open(os.path.join(out, "metrics.jsonl")) as f:
                runs[accum] = [(r["loss"], r.get("val_loss")) for r in map(json.loads, f)]
            with open(os.path.join(out, "summary.json")) as f:
                summary = json.load(f)
            self.assertEqual(summary["steps"], 6)
        for accum in (2, 4):
            self.assertEqual(len(runs[accum]), len(runs[1]))
            for (l1, v1), (l2, v2) in zip(runs[1], runs[accum]):
                self.assertAlmostEqual(l1, l2, delta=2e-4 * abs(l1), msg=f"grad_accum={accum}")
                self.assertEqual(v1 is None, v2 is None)
                if v1 is not None:
                    self.assertAlmostEqual(v1, v2, delta=2e-4 * abs(v1), msg=f"grad_accum={accum}")
        # A different number of rows per step is a different run: the test can fail.
        cfg, out = self.config("accum_other", steps=6, eval_every=3, ckpt_every=0)
        run(["train", cfg, "--quiet", "--set", "train.batch_size=2", "--set", "train.grad_accum=1"])
        with open(os.path.join(out, "metrics.jsonl")) as f:
            other = [json.loads(l)["loss"] for l in f]
        self.assertGreater(max(abs(a - b[0]) for a, b in zip(other[1:], runs[1][1:])), 1e-3)

    def test_grad_accum_errors(self):
        cfg, _ = self.config("accum_bad")
        p = run(["train", cfg, "--quiet", "--set", "train.grad_accum=0"], check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("train.grad_accum must be >= 1", p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)


class ResumeTest(CliCase):
    def test_resume_is_bit_exact(self):
        cfg_a, out_a = self.config("straight", steps=12, eval_every=3, ckpt_every=5)
        run(["train", cfg_a, "--quiet"])
        cfg_b, out_b = self.config("resumed", steps=12, eval_every=3, ckpt_every=5)
        run(["train", cfg_b, "--quiet", "--until", "6"])
        self.assertEqual(len(losses(os.path.join(out_b, "metrics.jsonl"))), 6)
        run(["train", cfg_b, "--quiet", "--resume"])
        a, b = losses(os.path.join(out_a, "metrics.jsonl")), losses(os.path.join(out_b, "metrics.jsonl"))
        self.assertEqual(len(a), 12)
        self.assertEqual(a, b)
        self.assertTrue(os.path.exists(os.path.join(out_b, "loss.svg")))

    def test_resume_with_gradient_accumulation_is_bit_exact(self):
        cfg_a, out_a = self.config("accum_straight", steps=6, eval_every=3, ckpt_every=3)
        run(["train", cfg_a, "--quiet", "--set", "train.grad_accum=2"])
        cfg_b, out_b = self.config("accum_resumed", steps=6, eval_every=3, ckpt_every=3)
        run(["train", cfg_b, "--quiet", "--set", "train.grad_accum=2", "--until", "3"])
        run(["train", cfg_b, "--quiet", "--resume"])
        a, b = losses(os.path.join(out_a, "metrics.jsonl")), losses(os.path.join(out_b, "metrics.jsonl"))
        self.assertEqual(len(a), 6)
        self.assertEqual(a, b)

    def test_refuses_to_overwrite_a_run(self):
        cfg, out = self.config("run", steps=2)
        run(["train", cfg, "--quiet"])
        p = run(["train", cfg, "--quiet"], check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--resume", p.stderr)
        run(["train", cfg, "--quiet", "--force"])


class InitFromTest(CliCase):
    def train_and_drop_saved_key(self, name, key):
        """Trains one step, then removes `key = ...` from the checkpoint's
        config.toml, as a checkpoint written before the key existed; returns
        (run folder, the key's section of `info --json` before the removal)."""
        cfg, out = self.config(name, steps=1, eval_every=100, ckpt_every=1)
        run(["train", cfg, "--quiet"])
        info = json.loads(run(["info", "--checkpoint", out, "--json"]).stdout)
        path = os.path.join(info["checkpoint"], "config.toml")
        with open(path) as f:
            lines = [l for l in f if not l.strip().startswith(key + " ")]
        with open(path, "w") as f:
            f.writelines(lines)
        return out, info["config"]["model"]["dsa"]

    def saved_dsa_settings(self, out):
        return json.loads(run(["info", "--checkpoint", out, "--json"]).stdout)["config"]["model"]["dsa"]

    def test_starts_from_a_checkpoints_weights_at_another_context(self):
        cfg_a, out_a = self.config("short", steps=24, eval_every=12, ckpt_every=12)
        run(["train", cfg_a, "--quiet"])
        want = json.loads(run(["eval", "--checkpoint", out_a, "--data", self.corpus, "--json"]).stdout)["loss"]
        # Continued at twice the context with a negligible learning rate: the
        # weights are A's, so evaluated at A's context the loss is A's.
        cfg_b, out_b = self.config("long", steps=1)
        run(["train", cfg_b, "--quiet", "--set", f"train.init_from={out_a}", "--set", "model.context=64",
             "--set", "train.lr=1e-12"])
        got = json.loads(run(["eval", "--checkpoint", out_b, "--data", self.corpus, "--json",
                              "--set", "model.context=32"]).stdout)["loss"]
        self.assertAlmostEqual(got, want, places=5)
        self.assertLess(want, 5.0)  # trained: a random init scores about ln 257 = 5.5
        # Another model shape is refused with one line; so is a missing folder.
        cfg_c, _ = self.config("wide", steps=1)
        p = run(["train", cfg_c, "--quiet", "--set", f"train.init_from={out_a}", "--set", "model.d_model=64"],
                check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("train.init_from", p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        p = run(["train", cfg_c, "--quiet", "--force", "--set", "train.init_from=" + os.path.join(self.tmp, "nope")],
                check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)

    def test_the_runs_dsa_training_settings_apply_to_the_loaded_model(self):
        # explore and scorer_loss act only in training; a run started from a
        # checkpoint must train with its own values, not the checkpoint's.
        cfg_a, out_a = self.config("base", steps=2)
        run(["train", cfg_a, "--quiet"])
        dsa = ["--set", "model.attention=dsa", "--set", "model.dsa.block=8", "--set", "model.dsa.window=8",
               "--set", "model.dsa.top_k=8", "--set", "model.dsa.keep_short=0.3", "--set", "model.dsa.keep_long=0.3",
               "--set", "model.context=64", "--set", "model.dsa.dense_len=0",
               "--set", f"train.init_from={out_a}"]
        got = {}
        for name, extra in (("plain", []), ("explore", ["model.dsa.explore=2.0"]),
                            ("scorer", ["model.dsa.scorer_loss=1.0"])):
            cfg, out = self.config(name, steps=1, eval_every=100, ckpt_every=100)
            run(["train", cfg, "--quiet"] + dsa + [a for kv in extra for a in ("--set", kv)])
            with open(os.path.join(out, "metrics.jsonl")) as f:
                first = json.loads(f.readline())
            got[name] = (repr(first["loss"]), repr(first["grad_norm"]))
        self.assertNotEqual(got["explore"][0], got["plain"][0])  # another selection from the first step on
        self.assertEqual(got["scorer"][0], got["plain"][0])      # the scorer loss changes gradients only
        self.assertNotEqual(got["scorer"][1], got["plain"][1])

    def test_the_runs_precision_applies_to_the_loaded_model(self):
        # An FP32 checkpoint continued in bf16 computes in bf16 (and back):
        # the first step's loss is the loaded weights' loss in the run's precision.
        cfg_a, out_a = self.config("base", steps=2)
        run(["train", cfg_a, "--quiet"])
        first = {}
        for prec in ("fp32", "bf16", "fp32-again"):
            cfg, out = self.config(prec, steps=1, eval_every=100, ckpt_every=100)
            run(["train", cfg, "--quiet", "--set", f"train.init_from={out_a}",
                 "--set", "train.precision=" + prec.replace("-again", "")])
            with open(os.path.join(out, "metrics.jsonl")) as f:
                first[prec] = json.loads(f.readline())["loss"]
        self.assertEqual(first["fp32"], first["fp32-again"])
        self.assertNotEqual(first["fp32"], first["bf16"])
        self.assertAlmostEqual(first["fp32"], first["bf16"], delta=0.05 * first["fp32"])

    def test_a_checkpoint_without_the_rank_key_keeps_mean_ranking(self):
        # model.dsa.rank defaulted to "mean" before checkpoints recorded it;
        # such a checkpoint must load with the ranking it was trained with,
        # while new runs get the current default ("bound") and --set still
        # applies on top.
        out, before = self.train_and_drop_saved_key("legacy", "rank")
        self.assertEqual(before["rank"], "bound")
        self.assertEqual(self.saved_dsa_settings(out)["rank"], "mean")
        ev = json.loads(run(["eval", "--checkpoint", out, "--data", self.corpus, "--json",
                             "--set", "model.attention=dsa", "--set", "model.dsa.rank=bound"]).stdout)
        self.assertTrue(0 < ev["loss"] < 10)

    def test_a_checkpoint_without_the_dense_len_key_keeps_its_sparse_budget(self):
        # model.dsa.dense_len did not exist before 2026-12-07 (DSA then used
        # the budget formula at every length): such a checkpoint loads with 0,
        # new runs get 1024, and --set still applies on top.
        out, before = self.train_and_drop_saved_key("legacy-dense-len", "dense_len")
        self.assertEqual(before["dense_len"], 1536)
        self.assertEqual(self.saved_dsa_settings(out)["dense_len"], 0)
        sparse = ["--set", "model.attention=dsa", "--set", "model.dsa.block=8", "--set", "model.dsa.window=8",
                  "--set", "model.dsa.top_k=8", "--set", "model.dsa.keep_short=0.3"]
        losses = [json.loads(run(["eval", "--checkpoint", out, "--data", self.corpus, "--json"] + sparse + extra)
                             .stdout)["loss"]
                  for extra in ([], ["--set", "model.dsa.dense_len=1024"],
                                ["--set", "model.attention=dense"])]
        self.assertNotEqual(losses[0], losses[2])  # the legacy budget selects
        self.assertEqual(losses[1], losses[2])     # dense_len >= context: the dense kernel


class CrashTest(CliCase):
    def test_sigkill_during_checkpoint_writes(self):
        # A checkpoint every step, so kills land inside checkpoint writes
        # often; enough steps that a run outlives the random kill delays.
        steps = 300
        cfg, out = self.config("crash", steps=steps, eval_every=50, ckpt_every=1)
        rng = random.Random(1234)
        kills = 0
        step = 0
        for attempt in range(200):
            # --resume needs a checkpoint; before the first one the run starts afresh.
            resume = ["--resume"] if os.path.exists(os.path.join(out, "LATEST")) else []
            p = subprocess.Popen([SPARTA, "train", cfg, "--quiet"] + resume, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.02, 0.15))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                kills += 1
            p.wait()
            if os.path.exists(os.path.join(out, "LATEST")):
                info = run(["info", "--checkpoint", out, "--json"])
                new_step = json.loads(info.stdout)["step"]
                self.assertGreaterEqual(new_step, max(step, 1))  # never goes back
                step = new_step
            if step == steps or kills >= 25:
                break
        print(f"crash test: {kills} SIGKILLs, newest checkpoint at step {step} after the last one", file=sys.stderr)
        self.assertGreaterEqual(kills, 5, "the run finished before it could be killed often enough")
        if step < steps:  # finish
            run(["train", cfg, "--quiet"] + (["--resume"] if os.path.exists(os.path.join(out, "LATEST")) else []))
        info = json.loads(run(["info", "--checkpoint", out, "--json"]).stdout)
        self.assertEqual(info["step"], steps)
        # Killed and resumed many times, the losses still equal an uninterrupted run.
        ref_cfg, ref_out = self.config("crash_ref", steps=steps, eval_every=50, ckpt_every=1)
        run(["train", ref_cfg, "--quiet"])
        self.assertEqual(losses(os.path.join(out, "metrics.jsonl")), losses(os.path.join(ref_out, "metrics.jsonl")))


class BadInputTest(CliCase):
    def assert_clean_error(self, args, needle):
        p = run(args, check=False)
        self.assertNotEqual(p.returncode, 0, f"{args} should fail")
        self.assertNotIn(p.returncode, (-11, -6, 134, 139), "crashed")
        err = p.stderr.strip()
        self.assertEqual(len(err.splitlines()), 1, f"expected one line, got:\n{err}")
        self.assertIn(needle, err)
        self.assertTrue(err.startswith("sparta: error:"), err)

    def test_config_errors(self):
        cfg, _ = self.config("bad")
        self.assert_clean_error(["train", cfg, "--set", "model.n_layers=2"], "unknown key 'model.n_layers'")
        self.assert_clean_error(["train", cfg, "--set", "train.lr=-0.1"], "train.lr must be > 0")
        self.assert_clean_error(["train", cfg, "--set", "model.n_head=3"], "must divide model.d_model")
        self.assert_clean_error(["train", cfg, "--set", "data.train=/no/such/file.txt"], "does not exist")
        self.assert_clean_error(["train", os.path.join(self.tmp, "missing.toml")], "does not exist")
        garbled = os.path.join(self.tmp, "garbled.toml")
        with open(garbled, "w") as f:
            f.write("[model]\nn_layer = = 2\n")
        self.assert_clean_error(["train", garbled], "garbled.toml:2")
        empty = os.path.join(self.tmp, "empty.txt")
        open(empty, "w").close()
        self.assert_clean_error(["train", cfg, "--set", f"data.train={empty}"], "empty")
        tiny = os.path.join(self.tmp, "tiny.txt")
        with open(tiny, "w") as f:
            f.write("hi\n")
        self.assert_clean_error(["train", cfg, "--set", f"data.train={tiny}"], "context")

    def test_text_input_errors(self):
        cfg, out = self.config("text")
        # A model far too large for the machine: named before anything is allocated.
        self.assert_clean_error(["train", cfg, "--set", "model.n_layer=1024", "--set", "model.d_model=65536"],
                                "model.n_layer = 1024, model.d_model = 65536")
        self.assert_clean_error(["train", cfg, "--set", "model.n_layer=1000000"], "model.n_layer must be in")
        # toml++ 3.3.0 has undefined behaviour on these bytes; they are refused first.
        bare = os.path.join(self.tmp, "bare.toml")
        with open(bare, "wb") as f:
            f.write("\u0463".encode())
        self.assert_clean_error(["train", bare], "bare.toml:1:1: character U+0463")
        self.assert_clean_error(["train", cfg, "--set", "train.eps=1e999"], "train.eps is out of range")
        # Invalid UTF-8 in a --set string (a surrogate escape is the raw byte 0xFF).
        self.assert_clean_error(["train", cfg, "--set", "train.out=runs\udcff"], "train.out must be UTF-8 text")
        vocab = os.path.join(self.tmp, "vocab.txt")
        with open(vocab, "w") as f:
            f.write("[PAD]\n[UNK]\n[CLS]\n\n[SEP]\n[MASK]\n")
        wp = ["--set", "tokenizer.kind=wordpiece", "--set", f"tokenizer.vocab_file={vocab}",
              "--set", "tokenizer.vocab_size=16"]
        self.assert_clean_error(["train", cfg] + wp, "vocab.txt' line 4 is empty")
        with open(vocab, "wb") as f:
            f.write(b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nab\xff\n")
        self.assert_clean_error(["train", cfg] + wp, "vocab.txt' line 6 is not valid UTF-8")
        # A subnormal epsilon is a number: trains, and config.toml keeps it.
        run(["train", cfg, "--quiet", "--set", "train.steps=2", "--set", "train.eps=1e-320"])
        info = json.loads(run(["info", "--checkpoint", out, "--json"]).stdout)
        self.assertEqual(info["config"]["train"]["eps"], 1e-320)
        with open(os.path.join(out, "LATEST")) as f:
            saved = open(os.path.join(out, f.read().strip(), "config.toml")).read()
        eps = [line.split("=")[1] for line in saved.splitlines() if line.startswith("eps =")]
        self.assertEqual([float(v) for v in eps], [1e-320])

    def test_checkpoint_errors(self):
        cfg, out = self.config("ck", steps=2)
        run(["train", cfg, "--quiet"])
        info = json.loads(run(["info", "--checkpoint", out, "--json"]).stdout)
        ck = info["checkpoint"]
        model = os.path.join(ck, "model.safetensors")
        data = open(model, "rb").read()
        self.assert_clean_error(["info", "--checkpoint", os.path.join(self.tmp, "nope")], "nope")
        # Wrong shape: evaluate the checkpoint as a wider model.
        self.assert_clean_error(["eval", "--checkpoint", out, "--data", self.corpus, "--set", "model.d_model=64"],
                                "shape")
        for cut in (0, 5, 8, 100, len(data) // 2, len(data) - 1):
            with open(model, "wb") as f:
                f.write(data[:cut])
            self.assert_clean_error(["info", "--checkpoint", out], "model.safetensors")
        garbled = bytearray(data)
        garbled[8:20] = b"}}}}garbage!"
        with open(model, "wb") as f:
            f.write(bytes(garbled))
        self.assert_clean_error(["info", "--checkpoint", out], "model.safetensors")
        with open(model, "wb") as f:
            f.write(data)
        run(["info", "--checkpoint", out])

    def test_cli_usage_errors(self):
        p = run(["train"], check=False)
        self.assertNotEqual(p.returncode, 0)
        p = run(["frobnicate"], check=False)
        self.assertNotEqual(p.returncode, 0)
        p = run(["generate", "--checkpoint", self.tmp, "--prompt", "x", "--bogus"], check=False)
        self.assertNotEqual(p.returncode, 0)
        for cmd in (["--help"], ["train", "--help"], ["generate", "--help"], ["eval", "--help"], ["info", "--help"],
                    ["tokenize", "--help"], ["bench", "--help"], ["bench", "gemm", "--help"]):
            p = run(cmd)
            self.assertIn("Usage", p.stdout + p.stderr)


class CommandsTest(CliCase):
    def test_generate_eval_info_tokenize(self):
        cfg, out = self.config("cmds", steps=6)
        run(["train", cfg, "--quiet"])
        g1 = run(["generate", "--checkpoint", out, "--prompt", "the quick", "--max-tokens", "20", "--temperature", "0"])
        g2 = run(["generate", "--checkpoint", out, "--prompt", "the quick", "--max-tokens", "20", "--temperature", "0"])
        self.assertEqual(g1.stdout, g2.stdout)
        self.assertTrue(g1.stdout.startswith("the quick"))
        s1 = run(["generate", "--checkpoint", out, "--prompt", "a", "--seed", "3", "--top-p", "0.9", "--top-k", "10"])
        s2 = run(["generate", "--checkpoint", out, "--prompt", "a", "--seed", "3", "--top-p", "0.9", "--top-k", "10"])
        self.assertEqual(s1.stdout, s2.stdout)
        ev = json.loads(run(["eval", "--checkpoint", out, "--data", self.corpus, "--json"]).stdout)
        self.assertGreater(ev["tokens"], 1000)
        self.assertTrue(0 < ev["loss"] < 6)
        info = json.loads(run(["info", "--checkpoint", out, "--json"]).stdout)
        self.assertEqual(info["step"], 6)
        self.assertGreater(info["parameters"], 10000)
        # A single checkpoint folder works too.
        run(["eval", "--checkpoint", info["checkpoint"], "--data", self.corpus])
        tok_dir = os.path.join(self.tmp, "tokens")
        run(["tokenize", cfg, "--out", tok_dir])
        meta = json.load(open(os.path.join(tok_dir, "meta.json")))
        self.assertEqual(os.path.getsize(os.path.join(tok_dir, "train.bin")), 4 * meta["train_tokens"])
        with open(os.path.join(out, "metrics.jsonl")) as f:
            recs = [json.loads(l) for l in f]
        self.assertEqual([r["step"] for r in recs], list(range(1, 7)))
        for r in recs:
            for k in ("loss", "lr", "tokens_per_s"):
                self.assertIn(k, r)
        self.assertIn("val_loss", recs[-1])
        svg = open(os.path.join(out, "loss.svg")).read()
        self.assertIn("<svg", svg)


class TaskTest(CliCase):
    def test_train_and_eval_on_synthetic_tasks(self):
        cfg, out = self.config("task", steps=4, eval_every=2)
        run(["train", cfg, "--quiet", "--set", "data.task=passkey", "--set", "model.context=128",
             "--set", "data.task_eval_examples=4"])
        recs = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
        self.assertIn("val_accuracy", recs[-1])
        ev = json.loads(run(["eval", "--checkpoint", out, "--task", "passkey", "--examples", "6", "--json"]).stdout)
        self.assertEqual((ev["task"], ev["examples"], ev["length"]), ("passkey", 6, 128))
        self.assertEqual(ev["tokens"], 6 * 5)  # five answer digits per example, nothing else scored
        self.assertTrue(0.0 <= ev["accuracy"] <= 1.0)
        ev = json.loads(run(["eval", "--checkpoint", out, "--task", "mqar", "--examples", "3", "--json",
                             "--set", "data.mqar_queries=4"]).stdout)
        self.assertEqual(ev["tokens"], 3 * 4)
        p = run(["eval", "--checkpoint", out, "--task", "needle"], check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("data.task", p.stderr)
        p = run(["eval", "--checkpoint", out, "--task", "passkey", "--set", "model.context=32"], check=False)
        self.assertNotEqual(p.returncode, 0)


class PrecisionTest(CliCase):
    """train.precision end to end: bf16/fp16/fp32-fast train, resume bit-exact,
    record the policy, run in another precision, and fp16's loss scaler."""

    def test_reduced_precision_trains_and_resumes_bit_exact(self):
        for prec in ("bf16", "fp16", "fp32-fast"):
            sets = ["--set", f"train.precision={prec}", "--set", "precision.fp32=[]"]
            cfg_a, out_a = self.config(f"{prec}_straight", steps=8, eval_every=4, ckpt_every=3)
            run(["train", cfg_a, "--quiet"] + sets)
            cfg_b, out_b = self.config(f"{prec}_resumed", steps=8, eval_every=4, ckpt_every=3)
            run(["train", cfg_b, "--quiet", "--until", "4"] + sets)
            run(["train", cfg_b, "--quiet", "--resume"])
            a, b = losses(os.path.join(out_a, "metrics.jsonl")), losses(os.path.join(out_b, "metrics.jsonl"))
            self.assertEqual(len(a), 8, prec)
            self.assertEqual(a, b, prec)
            info = json.loads(run(["info", "--checkpoint", out_b, "--json"]).stdout)
            self.assertEqual(info["config"]["train"]["precision"], prec)
            self.assertEqual(info["config"]["precision"]["fp32"], [])
            self.assertEqual(info["precision"]["mode"], prec)
            expect = {"bf16": "bf16", "fp16": "fp16", "fp32-fast": "fp32 (bf16 math)"}[prec]
            self.assertEqual(set(info["precision"]["modules"].values()), {expect})
            attention = {"bf16": "bf16", "fp16": "fp32 (fp16 inputs)", "fp32-fast": "fp32 (bf16 math)"}[prec]
            self.assertEqual(set(info["precision"]["attention"].values()), {attention})
            recs = records(os.path.join(out_b, "metrics.jsonl"))
            if prec == "fp16":
                self.assertTrue(all(r["loss_scale"] == 65536.0 and r["skipped"] is False for r in recs))
                self.assertEqual(info["precision"]["loss_scale"], 65536.0)
                self.assertIn("; loss scale 65536\n", run(["info", "--checkpoint", out_b]).stdout)
            else:
                self.assertTrue(all("loss_scale" not in r for r in recs))
        # The reduced precisions are not the FP32 run (the test can fail),
        # but close to it after 8 steps.
        cfg, out = self.config("fp32_ref", steps=8, eval_every=4, ckpt_every=0)
        run(["train", cfg, "--quiet"])
        ref = losses(os.path.join(out, "metrics.jsonl"))
        bf16 = losses(os.path.join(self.tmp, "bf16_straight", "metrics.jsonl"))
        self.assertNotEqual(ref, bf16)
        for (_, l32, _), (_, l16, _) in zip(ref, bf16):
            self.assertAlmostEqual(float(l32), float(l16), delta=0.02 * float(l32))

    def test_policy_is_shown_and_eval_runs_in_another_precision(self):
        cfg, out = self.config("bf16_run", steps=3, eval_every=0, ckpt_every=0)
        run(["train", cfg, "--quiet", "--set", "train.precision=bf16"])
        text = run(["info", "--checkpoint", out]).stdout
        self.assertIn("precision   bf16: 4 of 5 matrix products with 16-bit operands; FP32: head; "
                      "attention products BF16 in 1 of 1 layers", text)
        self.assertIn('precision = "bf16"', text)
        self.assertIn('fp32 = ["head"]', text)
        evals = {}
        for prec in ("fp32", "bf16", "fp16", "fp32-fast"):
            evals[prec] = json.loads(run(["eval", "--checkpoint", out, "--data", self.corpus, "--json",
                                          "--set", f"train.precision={prec}"]).stdout)["loss"]
        self.assertEqual(len(set(evals.values())), 4, evals)  # each really ran in its precision
        for prec, loss in evals.items():
            self.assertAlmostEqual(loss, evals["fp32"], delta=0.01 * evals["fp32"], msg=prec)
        g = run(["generate", "--checkpoint", out, "--prompt", "the ", "--max-tokens", "8", "--temperature", "0",
                 "--set", "train.precision=fp32"])
        self.assertTrue(g.stdout.startswith("the "))

    def test_fp16_overflow_skips_the_step_and_lowers_the_scale(self):
        # A scale of 1e12 makes the 16-bit gradients overflow: those steps are
        # skipped (no update) and the scale backs off until they fit; two
        # clean steps in a row then double it.
        cfg, out = self.config("fp16_scaler", steps=12, eval_every=0, ckpt_every=0)
        p = run(["train", cfg, "--set", "train.precision=fp16", "--set", "precision.init_scale=1e12",
                 "--set", "precision.backoff_factor=0.01", "--set", "precision.growth_interval=2"])
        recs = records(os.path.join(out, "metrics.jsonl"))
        self.assertEqual(len(recs), 12)
        skipped = [r for r in recs if r["skipped"]]
        self.assertGreaterEqual(len(skipped), 1)
        self.assertEqual(recs[0]["loss_scale"], 1e12)
        self.assertTrue(recs[0]["skipped"])
        self.assertIn("gradient overflow at loss scale", recs[0]["reason"])
        self.assertIn("gradient overflow", p.stderr)
        # The scale each step used follows GradScaler's rule from the skips.
        scale, good = 1e12, 0
        for r in recs:
            self.assertEqual(r["loss_scale"], scale, r)
            self.assertEqual("loss" in r, not r["skipped"], r)
            if r["skipped"]:
                scale, good = scale * 0.01, 0
            else:
                good += 1
                if good == 2:
                    scale, good = scale * 2, 0
        self.assertGreaterEqual(sum(not r["skipped"] for r in recs), 6)

    def test_fp16_trains_with_the_dsa_scorer_loss(self):
        # The scorer loss's gradient is formed inside the attention backward;
        # under fp16 loss scaling it carries the scale like the rest, so once
        # unscaled the run follows fp32's. A strong scorer loss dominates the
        # gradient norm once attention has sharpened (~step 10): were its
        # gradient divided by the scale, fp16 would follow the run without it.
        dsa = ["model.attention=dsa", "model.dsa.block=8", "model.dsa.window=8", "model.dsa.top_k=8",
               "model.dsa.keep_short=0.3", "model.dsa.keep_long=0.3", "model.dsa.dense_len=0",
               "model.context=64", "precision.fp32=[]", "train.lr=1e-2"]
        runs = {}
        for name, sets in (("fp32", ["model.dsa.scorer_loss=30"]),
                           ("fp16", ["train.precision=fp16", "model.dsa.scorer_loss=30"]),
                           ("fp16_off", ["train.precision=fp16"])):
            cfg, out = self.config(f"dsa_scorer_{name}", steps=20, eval_every=0, ckpt_every=0)
            run(["train", cfg, "--quiet"] + [a for kv in dsa + sets for a in ("--set", kv)])
            runs[name] = records(os.path.join(out, "metrics.jsonl"))
        for name, recs in runs.items():
            self.assertEqual(len(recs), 20, name)
            for r in recs:
                self.assertTrue(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]), (name, r))
                if name != "fp32":
                    self.assertEqual((r["loss_scale"], r["skipped"]), (65536.0, False), (name, r))
        for a, b in zip(runs["fp32"], runs["fp16"]):
            self.assertAlmostEqual(b["loss"], a["loss"], delta=0.01 * a["loss"], msg=a["step"])
            self.assertAlmostEqual(b["grad_norm"], a["grad_norm"], delta=0.1 * a["grad_norm"], msg=a["step"])
        late = {name: sum(r["grad_norm"] for r in recs[10:]) / 10 for name, recs in runs.items()}
        self.assertLess(late["fp16_off"], 0.5 * late["fp32"], late)  # the scorer loss is what the norms show

    def test_precision_errors(self):
        cfg, _ = self.config("prec_bad")
        for sets, needle in ((["train.precision=fp8"], 'unknown precision "fp8"'),
                             (["precision.fp32=h.7.*"], '"h.7.*" matches no module'),
                             (["precision.fp32=[1]"], "precision.fp32 must be an array of strings"),
                             (["precision.backoff_factor=1.5"], "precision.backoff_factor must be in (0, 1)")):
            args = ["train", cfg, "--quiet"]
            for s in sets:
                args += ["--set", s]
            p = run(args, check=False)
            self.assertNotEqual(p.returncode, 0, sets)
            self.assertIn(needle, p.stderr)
            self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)


if __name__ == "__main__":
    SPARTA = os.path.abspath(sys.argv.pop(1))
    unittest.main()
