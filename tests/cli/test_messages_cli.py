#!/usr/bin/env python3
"""End-to-end tests of what `sparta` tells its user: bad flag values are
refused with one line naming the flag, odd-but-valid settings get one
warning, generate checks every option before printing and says when the
context window cuts or slides, skipped binary files are reported, counts
agree with their nouns, `info --json` prints the config as an object with
floats as written, the loss chart clips the first steps, and `sweep` names
equivalent runs and refuses in --dry-run where the real run would.

Usage: test_messages_cli.py SPARTA_BINARY [unittest args...]
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_cli import CliCase  # noqa: E402  (same tiny model, corpus and run folders as the other CLI tests)

# Exact stderr checks: no busy-machine warning from a loaded test machine.
os.environ["SPARTA_LOAD_WARNING"] = "0"

SPARTA = None


def run(args, check=True, timeout=300, prefix=()):
    p = subprocess.run(list(prefix) + [SPARTA] + args, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"sparta {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return p


class MessagesCase(CliCase):
    def config(self, name, steps=2, eval_every=2, ckpt_every=2, corpus=None):
        return super().config(name, steps=steps, eval_every=eval_every, ckpt_every=ckpt_every, corpus=corpus)

    def trained(self, name="ck", steps=2):
        cfg, out = self.config(name, steps=steps)
        run(["train", cfg, "--quiet"])
        return cfg, out

    def assert_clean_error(self, args, needle, prefix=()):
        p = run(args, check=False, prefix=prefix)
        self.assertNotEqual(p.returncode, 0, f"{args} should fail")
        self.assertNotIn(p.returncode, (-11, -6, 134, 139), "crashed")
        err = p.stderr.strip()
        self.assertEqual(len(err.splitlines()), 1, f"expected one line, got:\n{err}")
        self.assertTrue(err.startswith("sparta: error:"), err)
        self.assertIn(needle, err)
        return p


class FlagValuesTest(MessagesCase):
    def test_bad_counts_are_refused_naming_the_flag(self):
        cfg, out = self.trained()
        for n in ("-3", "0"):
            self.assert_clean_error(["eval", "--checkpoint", out, "--task", "passkey", "--examples", n],
                                    f"--examples must be >= 1, got {n}")
        for n in ("-1", "0"):
            self.assert_clean_error(["train", cfg, "--resume", "--until", n], f"--until must be >= 1, got {n}")
        ok = run(["eval", "--checkpoint", out, "--task", "passkey", "--examples", "2", "--json",
                  "--set", "model.context=128"])
        self.assertEqual(json.loads(ok.stdout)["examples"], 2)

    def test_warmup_longer_than_the_run_warns_once_and_trains(self):
        cfg, out = self.config("warm", steps=2)
        p = run(["train", cfg, "--quiet", "--set", "train.warmup=50"])
        warnings = [l for l in p.stderr.splitlines() if "train.warmup" in l]
        self.assertEqual(warnings, ["warning: train.warmup (50) is longer than train.steps (2): the learning rate "
                                    "never reaches train.lr"])
        self.assertTrue(os.path.exists(os.path.join(out, "summary.json")))
        p = run(["train", cfg, "--quiet", "--force"])
        self.assertNotIn("train.warmup", p.stderr)
        # A sweep says it once, not once per run.
        p = run(["sweep", cfg, "--set", "train.warmup=50", "--grid", "train.lr=0.001,0.002",
                 "--out", os.path.join(self.tmp, "warm-sweep")])
        self.assertEqual(p.stderr.count("train.warmup (50) is longer than train.steps (2)"), 1, p.stderr)


class GenerateTest(MessagesCase):
    def test_options_are_checked_before_any_output(self):
        _, out = self.trained()
        for flag, value in (("--max-tokens", "-1"), ("--top-p", "2"), ("--top-k", "-1"), ("--temperature", "-1")):
            p = self.assert_clean_error(["generate", "--checkpoint", out, "--prompt", "the quick", flag, value],
                                        flag)
            self.assertEqual(p.stdout, "", "nothing may be printed before an error")
        p = self.assert_clean_error(["generate", "--checkpoint", out, "--prompt", "x", "--max-tokens", "-1"],
                                    "--max-tokens must be >= 0")
        self.assertNotIn("max_tokens", p.stderr)

    def test_the_sliding_window_is_announced_once(self):
        _, out = self.trained()  # context 32 (bytes)
        long_prompt = "the quick brown fox jumps over a lazy dog " * 2  # 84 bytes
        p = run(["generate", "--checkpoint", out, "--prompt", long_prompt, "--max-tokens", "5",
                 "--temperature", "0"])
        self.assertTrue(p.stdout.startswith(long_prompt))
        notes = [l for l in p.stderr.splitlines() if l.startswith("note:")]
        self.assertEqual(len([n for n in notes if "longer than the model's context of 32" in n]), 1, p.stderr)
        self.assertIn("only its last 32 tokens are used", p.stderr)
        p = run(["generate", "--checkpoint", out, "--prompt", "the", "--max-tokens", "60", "--temperature", "0"])
        self.assertEqual(p.stderr.count("sliding window"), 1, p.stderr)
        self.assertNotIn("longer than the model's context", p.stderr)
        p = run(["generate", "--checkpoint", out, "--prompt", "the", "--max-tokens", "10", "--temperature", "0"])
        self.assertNotIn("note:", p.stderr)


class DataMessagesTest(MessagesCase):
    def test_skipped_binary_files_are_reported(self):
        folder = os.path.join(self.tmp, "texts")
        os.makedirs(folder)
        shutil.copy(self.corpus, os.path.join(folder, "a.txt"))
        with open(os.path.join(folder, "blob.bin"), "wb") as f:
            f.write(b"\x00\x01\x02binary")
        with open(os.path.join(folder, "latin1.txt"), "wb") as f:
            f.write(b"caf\xe9\n")
        cfg, out = self.config("folder", corpus=folder)
        p = run(["train", cfg, "--quiet"])
        self.assertIn(f"warning: skipped 2 binary or non-UTF-8 files in '{folder}': blob.bin, latin1.txt",
                      p.stderr)
        p = run(["eval", "--checkpoint", out, "--data", folder])
        self.assertEqual(p.stderr.count("skipped 2 binary or non-UTF-8 files"), 1)

    def test_errors_name_the_flag_and_what_the_path_is(self):
        cfg, out = self.trained()
        missing = os.path.join(self.tmp, "missing.txt")
        p = self.assert_clean_error(["eval", "--checkpoint", out, "--data", missing], f"--data '{missing}' does not exist")
        self.assertNotIn("train file", p.stderr)
        self.assert_clean_error(["train", self.tmp], "is a folder, not a config file")
        self.assert_clean_error(["sweep", self.tmp, "--grid", "train.lr=0.001"], "is a folder, not a config file")

    def test_counts_agree_with_their_nouns(self):
        cfg, _ = self.config("one", steps=2)
        p = run(["train", cfg, "--set", "train.threads=1"])
        self.assertIn(" val tokens, 1 thread\n", p.stderr)
        self.assertNotIn("1 threads", p.stderr)
        p = run(["bench", "gemm", "--size", "32", "--reps", "1", "--threads", "1"])
        self.assertIn("on 1 thread\n", p.stdout)

    @unittest.skipUnless(shutil.which("taskset"), "taskset (util-linux) is not installed")
    def test_all_cores_means_the_cores_this_process_may_use(self):
        cfg, out = self.config("pinned", steps=1)
        run(["train", cfg, "--quiet", "--set", "train.threads=0"], prefix=("taskset", "-c", "0"))
        with open(os.path.join(out, "summary.json")) as f:
            self.assertEqual(json.load(f)["threads"], 1)


class ConfigOutputTest(MessagesCase):
    def test_info_json_has_the_config_as_an_object_and_floats_as_written(self):
        cfg, out = self.config("floats")
        run(["train", cfg, "--quiet", "--set", "model.dsa.keep_short=0.8"])
        p = run(["info", "--checkpoint", out, "--json"])
        info = json.loads(p.stdout)
        conf = info["config"]
        self.assertIsInstance(conf, dict)
        self.assertEqual(conf["model"]["n_layer"], 1)
        self.assertEqual(conf["model"]["dsa"]["keep_short"], 0.8)
        self.assertEqual(conf["train"]["lr"], 0.003)
        self.assertIn('"keep_short": 0.8,', p.stdout)
        self.assertNotIn("00000", json.dumps(conf))  # no 0.80000000000000004
        text = run(["info", "--checkpoint", out]).stdout
        self.assertIn("keep_short = 0.8\n", text)
        with open(os.path.join(info["checkpoint"], "config.toml")) as f:
            saved = f.read()
        self.assertIn("lr = 0.003\n", saved)
        self.assertIn("eps = 1e-08\n", saved)
        # The optimizer's eps is stored exactly (it was "0.000000").
        with open(os.path.join(info["checkpoint"], "optimizer.safetensors"), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            meta = json.loads(f.read(n))["__metadata__"]
        self.assertEqual(meta["eps"], "1e-08")
        self.assertEqual(meta["beta1"], "0.9")
        self.assertEqual(float(meta["beta2"]), 0.95)

    def test_loss_chart_clips_the_first_steps(self):
        cfg, out = self.config("chart", steps=60, eval_every=30, ckpt_every=60)
        run(["train", cfg, "--quiet"])
        with open(os.path.join(out, "loss.svg")) as f:
            svg = f.read()
        self.assertIn('<polygon class="clipped"', svg)
        self.assertIn("points above", svg)


class SweepMessagesTest(MessagesCase):
    GRID = ["--grid", "model.attention=dense,dsa", "--grid", "model.dsa.top_k=16,32",
            "--set", "model.dsa.block=16", "--set", "model.dsa.window=16"]

    def test_equivalent_runs_are_named_before_training_and_never_best(self):
        cfg, _ = self.config("tiny")
        sweep = os.path.join(self.tmp, "sw")
        p = run(["sweep", cfg, "--out", sweep, "--dry-run"] + self.GRID)
        note = "note: runs 2, 3 and 4 are equivalent to run 1: dense attention ignores the model.dsa settings; " \
               "the DSA budget covers the whole context of 32"
        self.assertIn(note, p.stdout)
        self.assertIn("02-attention-dense+top_k-32  model.attention=dense model.dsa.top_k=32  (= #1)", p.stdout)
        p = run(["sweep", cfg, "--out", sweep] + self.GRID)
        self.assertTrue(p.stderr.startswith(note + "\n"), p.stderr[:500])  # before the first run
        rows = [l for l in p.stdout.splitlines() if l.startswith("| ") and l[2:].strip()[0].isdigit()]
        self.assertEqual(len(rows), 4)
        self.assertIn("**best**", rows[0])
        for r in rows[1:]:
            self.assertIn("= #1", r)
        self.assertIn("best val_loss: #1 ", p.stdout)
        with open(os.path.join(sweep, "sweep.md")) as f:
            self.assertIn("Note: " + note[len("note: "):], f.read())
        with open(os.path.join(sweep, "sweep.jsonl")) as f:
            self.assertEqual([json.loads(l).get("same_as") for l in f], [None, 1, 1, 1])

        # --dry-run refuses where the real run would: results already there.
        p = self.assert_clean_error(["sweep", cfg, "--out", sweep, "--dry-run"] + self.GRID,
                                    "already holds sweep results")
        self.assertEqual(p.stdout, "")
        run(["sweep", cfg, "--out", sweep, "--dry-run", "--resume"] + self.GRID)
        self.assert_clean_error(["sweep", cfg, "--out", sweep, "--dry-run", "--resume", "--grid", "train.lr=0.001"],
                                "another grid")
        self.assert_clean_error(["sweep", cfg, "--out", sweep, "--dry-run", "--grid", "model.dsa.top_k=16,-1"],
                                "top_k must be >= 0")

    def test_a_really_sparse_grid_has_no_equivalent_runs(self):
        cfg, _ = self.config("tiny")
        p = run(["sweep", cfg, "--dry-run", "--set", "model.context=64", "--set", "model.dsa.block=8",
                 "--set", "model.dsa.window=8", "--set", "model.dsa.keep_short=0.25",
                 "--set", "model.dsa.keep_long=0.2", "--set", "model.dsa.dense_len=0", "--grid", "model.attention=dsa",
                 "--grid", "model.dsa.top_k=8,24"])
        self.assertNotIn("equivalent", p.stdout)
        self.assertIn("2 runs into", p.stdout)


if __name__ == "__main__":
    SPARTA = os.path.abspath(sys.argv.pop(1))
    unittest.main()
