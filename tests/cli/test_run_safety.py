#!/usr/bin/env python3
"""End-to-end tests that `sparta train`, `sweep` and `bench` never lose or mix
a run: Ctrl-C / SIGTERM stop cleanly with a checkpoint and exit 130 / 143,
one process per run folder (flock), --resume continues the checkpoint's own
config, --force starts over completely, failed runs leave no folder behind,
and non-finite numbers never reach or leave a checkpoint.

Usage: test_run_safety.py SPARTA_BINARY [unittest args...]
"""
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_cli  # noqa: E402
from test_cli import TINY, losses, make_corpus, run  # noqa: E402  (the tiny model, corpus and runner of the other CLI tests)

# Exact stderr checks: no busy-machine warning from a loaded test machine.
os.environ["SPARTA_LOAD_WARNING"] = "0"

SPARTA = None
LONG = 1000000  # train.steps of runs that are always stopped long before the end


def metric_lines(out):
    try:
        with open(os.path.join(out, "metrics.jsonl")) as f:
            return [json.loads(l) for l in f if l.endswith("\n")]
    except FileNotFoundError:
        return []


def checkpoint_step(out):
    return json.loads(run(["info", "--checkpoint", out, "--json"]).stdout)["step"]


class Case(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sparta_safety_")
        self.corpus = os.path.join(self.tmp, "corpus.txt")
        make_corpus(self.corpus)
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def config(self, name, steps=8, eval_every=4, ckpt_every=4):
        out = os.path.join(self.tmp, name)
        path = os.path.join(self.tmp, name + ".toml")
        with open(path, "w") as f:
            f.write(TINY.format(corpus=self.corpus, steps=steps, eval_every=eval_every, ckpt_every=ckpt_every,
                                out=out))
        return path, out

    def start(self, args):
        p = subprocess.Popen([SPARTA] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def wait_for_steps(self, p, out, n, timeout=120):
        """Waits until metrics.jsonl has more than n records; returns their count."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            k = len(metric_lines(out))
            if k > n:
                return k
            if p.poll() is not None:
                self.fail(f"sparta exited early ({p.returncode}): {p.stderr.read()[-2000:]}")
            time.sleep(0.005)
        self.fail("no training progress")

    def wait_for_lock(self, p, out, timeout=60):
        """Waits until process p holds the run folder's lock (its handlers are installed by then)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with open(os.path.join(out, ".sparta.lock")) as f:
                    if f.readline().strip() == str(p.pid):
                        return
            except FileNotFoundError:
                pass
            if p.poll() is not None:
                self.fail(f"sparta exited early ({p.returncode}): {p.stderr.read()[-2000:]}")
            time.sleep(0.005)
        self.fail("the run folder was never locked")

    def assert_one_line_error(self, p, *needles):
        self.assertNotEqual(p.returncode, 0)
        self.assertNotIn(p.returncode, (-11, -6, 134, 139), "crashed")
        err = p.stderr.strip()
        self.assertEqual(len(err.splitlines()), 1, f"expected one line, got:\n{err}")
        self.assertTrue(err.startswith("sparta: error:"), err)
        for n in needles:
            self.assertIn(n, err)


class InterruptTest(Case):
    def test_sigint_and_sigterm_checkpoint_and_resume_bit_exactly(self):
        for sig, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
            cfg, out = self.config(f"sig{status}", steps=LONG, eval_every=0, ckpt_every=0)
            p = self.start(["train", cfg, "--quiet"])
            self.wait_for_steps(p, out, 0)
            p.send_signal(sig)
            t0 = time.time()
            _, err = p.communicate(timeout=60)
            self.assertLess(time.time() - t0, 10)
            self.assertEqual(p.returncode, status, err)
            # Stopped after a whole step, with a checkpoint at exactly that step.
            stopped = len(metric_lines(out))
            self.assertEqual(checkpoint_step(out), stopped)
            self.assertIn(f"stopped after step {stopped} of {LONG}", err)
            self.assertIn(f"resume with: {SPARTA} train {cfg} --resume", err)
            # Continuing gives what one uninterrupted run gives.
            until = str(stopped + 7)
            run(["train", cfg, "--quiet", "--resume", "--until", until])
            ref_cfg, ref_out = self.config(f"ref{status}", steps=LONG, eval_every=0, ckpt_every=0)
            run(["train", ref_cfg, "--quiet", "--until", until])
            self.assertEqual(losses(os.path.join(out, "metrics.jsonl")),
                             losses(os.path.join(ref_out, "metrics.jsonl")))

    def test_an_evaluation_in_progress_is_abandoned(self):
        # A large validation split evaluated after every step: almost all the
        # time goes into evaluations, so the signal lands in one.
        big = os.path.join(self.tmp, "big.txt")
        make_corpus(big, n_lines=20000, seed=3)
        cfg, out = self.config("evals", steps=LONG, eval_every=1, ckpt_every=0)
        args = ["train", cfg, "--quiet", "--set", f"data.train={big}", "--set", "data.val_fraction=0.5",
                "--set", "model.n_layer=2"]
        p = self.start(args)
        self.wait_for_steps(p, out, 0, timeout=300)
        t1 = time.time()
        self.wait_for_steps(p, out, 1, timeout=300)
        eval_s = time.time() - t1  # one step + one whole evaluation
        time.sleep(eval_s / 4)  # well inside the next evaluation
        p.send_signal(signal.SIGINT)
        t0 = time.time()
        _, err = p.communicate(timeout=120)
        reaction_s = time.time() - t0
        self.assertEqual(p.returncode, 130, err)
        self.assertGreater(eval_s, 1.0, "the evaluation is too short to test abandoning it")
        print(f"evaluation {eval_s:.2f} s, stopped {reaction_s:.2f} s after the signal", file=sys.stderr)
        self.assertLess(reaction_s, eval_s / 2, f"took {reaction_s:.2f} s to stop; an evaluation takes {eval_s:.2f} s")
        recs = metric_lines(out)
        self.assertEqual(checkpoint_step(out), len(recs))
        self.assertNotIn("val_loss", recs[-1])  # the abandoned evaluation is not recorded
        self.assertIn("val_loss", recs[0])

    def test_a_second_signal_exits_at_once_and_the_last_checkpoint_stays_valid(self):
        # A checkpoint after every step: the second signal lands inside a
        # checkpoint write (or the final one) most of the time.
        cfg, out = self.config("double", steps=LONG, eval_every=0, ckpt_every=1)
        rng = random.Random(7)
        newest = 0
        for attempt in range(6):
            p = self.start(["train", cfg, "--quiet"] + (["--resume"] if attempt else []))
            if attempt == 0:
                self.wait_for_steps(p, out, 1)  # checkpoint 1 is complete
            else:
                self.wait_for_lock(p, out)  # training (metrics.jsonl may still hold lines past the checkpoint)
                time.sleep(rng.uniform(0.0, 0.2))
            p.send_signal(signal.SIGINT)
            time.sleep(rng.uniform(0.0, 0.01))
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
            p.communicate(timeout=60)
            self.assertEqual(p.returncode, 130)
            step = checkpoint_step(out)  # LATEST names a complete checkpoint
            self.assertGreaterEqual(step, max(newest, 1))
            newest = step
        until = str(newest + 5)
        run(["train", cfg, "--quiet", "--resume", "--until", until])
        ref_cfg, ref_out = self.config("double_ref", steps=LONG, eval_every=0, ckpt_every=1)
        run(["train", ref_cfg, "--quiet", "--until", until])
        self.assertEqual(losses(os.path.join(out, "metrics.jsonl")), losses(os.path.join(ref_out, "metrics.jsonl")))

    def test_sweep_keeps_finished_runs_and_continues(self):
        cfg, _ = self.config("sweep", steps=60, eval_every=0, ckpt_every=0)
        sweep_out = os.path.join(self.tmp, "sweep-out")
        grid = ["--grid", "train.seed=1,2,3,4,5,6", "--out", sweep_out]
        p = self.start(["sweep", cfg] + grid)
        deadline = time.time() + 120
        while not os.path.exists(os.path.join(sweep_out, "sweep.jsonl")):  # the first run finished
            self.assertIsNone(p.poll(), "the sweep ended before it could be interrupted")
            self.assertLess(time.time(), deadline)
            time.sleep(0.005)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 143, err)
        self.assertIn("continue with:", err)
        with open(os.path.join(sweep_out, "sweep.jsonl")) as f:
            kept = [json.loads(l) for l in f]
        self.assertGreaterEqual(len(kept), 1)
        self.assertLess(len(kept), 6)
        self.assertTrue(all(r["status"] == "ok" for r in kept))
        p = run(["sweep", cfg] + grid + ["--resume"])
        self.assertIn(f"{len(kept)} skipped", p.stderr)
        with open(os.path.join(sweep_out, "sweep.jsonl")) as f:
            self.assertEqual(len(f.readlines()), 6)

    def test_bench_keeps_what_was_measured(self):
        out = os.path.join(self.tmp, "bench")
        p = self.start(["bench", "attention", "--seqs", "64,128,256,512,1024,2048,4096,8192", "--impls", "dense",
                        "--heads", "2", "--head-dim", "16", "--min-time", "0.3", "--threads", "1", "--out", out])
        deadline = time.time() + 120
        while not os.path.exists(os.path.join(out, "attention.jsonl")):  # one length measured
            self.assertIsNone(p.poll(), "the benchmark ended before it could be interrupted")
            self.assertLess(time.time(), deadline)
            time.sleep(0.005)
        p.send_signal(signal.SIGINT)
        t0 = time.time()
        stdout, err = p.communicate(timeout=60)
        self.assertLess(time.time() - t0, 5)
        self.assertEqual(p.returncode, 130, err)
        with open(os.path.join(out, "attention.jsonl")) as f:
            recs = [json.loads(l) for l in f]
        self.assertTrue(1 <= len(recs) < 8)
        self.assertIn(f"stopped after {len(recs)} measurements", err)
        for r in recs:
            self.assertIn(f"{r['seq']}", stdout)  # the table of what was measured


class LockTest(Case):
    def test_one_process_per_run_folder(self):
        cfg, out = self.config("locked", steps=LONG, eval_every=0, ckpt_every=5)
        a = self.start(["train", cfg, "--quiet"])
        self.wait_for_steps(a, out, 5)  # a checkpoint exists
        with open(os.path.join(out, ".sparta.lock")) as f:
            self.assertEqual(f.readline().strip(), str(a.pid))
        for args in (["train", cfg, "--quiet"], ["train", cfg, "--quiet", "--force"],
                     ["train", cfg, "--quiet", "--resume"],
                     ["sweep", cfg, "--grid", "train.seed=1,2", "--out", out]):
            t0 = time.time()
            p = run(args, check=False)
            self.assertLess(time.time() - t0, 5)
            self.assert_one_line_error(p, f"'{out}' is in use by another sparta process (pid {a.pid}, \"{SPARTA} train")
        self.assertIsNone(a.poll())  # the first run was not disturbed
        a.send_signal(signal.SIGKILL)
        a.wait()
        # A killed holder leaves no stale lock.
        run(["train", cfg, "--quiet", "--resume", "--until", str(checkpoint_step(out) + 2)])
        run(["train", cfg, "--quiet", "--force", "--until", "3"])
        self.assertEqual(checkpoint_step(out), 3)

    def test_readers_do_not_lock(self):
        cfg, out = self.config("reader", steps=LONG, eval_every=0, ckpt_every=1)
        a = self.start(["train", cfg, "--quiet"])
        self.wait_for_steps(a, out, 1)
        run(["info", "--checkpoint", out])
        run(["eval", "--checkpoint", out, "--data", self.corpus])
        run(["generate", "--checkpoint", out, "--prompt", "the", "--max-tokens", "4"])
        self.assertIsNone(a.poll())


class ResumeRulesTest(Case):
    def test_resume_uses_the_checkpoints_config(self):
        window = ["--set", "model.attention=window", "--set", "model.dsa.block=8", "--set", "model.dsa.window=8"]
        cfg, out = self.config("win", steps=10, eval_every=5, ckpt_every=5)
        run(["train", cfg, "--quiet", "--until", "4"] + window)
        # No --set: the run goes on with window attention, as it was trained.
        run(["train", cfg, "--quiet", "--resume"])
        info = json.loads(run(["info", "--checkpoint", out, "--json"]).stdout)
        self.assertEqual(info["step"], 10)
        self.assertEqual(info["config"]["model"]["attention"], "window")
        ref_cfg, ref_out = self.config("win_ref", steps=10, eval_every=5, ckpt_every=5)
        run(["train", ref_cfg, "--quiet"] + window)
        self.assertEqual(losses(os.path.join(out, "metrics.jsonl")), losses(os.path.join(ref_out, "metrics.jsonl")))

    def test_unsafe_changes_are_refused_and_safe_ones_apply(self):
        cfg, out = self.config("rules", steps=6, eval_every=3, ckpt_every=3)
        run(["train", cfg, "--quiet", "--until", "3"])
        p = run(["train", cfg, "--quiet", "--resume", "--set", "train.lr=0.001"], check=False)
        self.assert_one_line_error(p, "--resume: train.lr is 0.003 in the checkpoint but --set gives 0.001",
                                   "only train.steps,", "train.init_from")
        p = run(["train", cfg, "--quiet", "--resume", "--set", "model.attention=dsa"], check=False)
        self.assert_one_line_error(p, "model.attention is \"dense\" in the checkpoint but --set gives \"dsa\"")
        p = run(["train", cfg, "--quiet", "--resume", "--set", "train.seed=6"], check=False)
        self.assert_one_line_error(p, "train.seed is 5 in the checkpoint")
        p = run(["train", cfg, "--quiet", "--resume", "--set", "train.steps=2"], check=False)
        self.assert_one_line_error(p, "train.steps = 2 is below the checkpoint's step 3")
        p = run(["train", cfg, "--quiet", "--resume", "--until", "3"], check=False)
        self.assert_one_line_error(p, "--until 3: the run in", "is already at step 3")
        self.assertEqual(checkpoint_step(out), 3)  # refusals change nothing
        # Repeating the checkpoint's value is fine; safe keys may change.
        run(["train", cfg, "--quiet", "--resume", "--set", "train.lr=0.003", "--set", "train.eval_every=1",
             "--set", "train.threads=1"])
        recs = metric_lines(out)
        self.assertEqual([r["step"] for r in recs], list(range(1, 7)))
        self.assertEqual(["val_loss" in r for r in recs], [False, False, True, True, True, True])
        # Finished: said so, with how to go on.
        p = run(["train", cfg, "--quiet", "--resume"], check=False)
        self.assert_one_line_error(p, "is finished (step 6 of train.steps = 6)", "--set train.steps=N")
        run(["train", cfg, "--quiet", "--resume", "--set", "train.steps=8"])
        self.assertEqual(checkpoint_step(out), 8)

    def test_nothing_to_resume_and_conflicting_flags(self):
        cfg, out = self.config("none", steps=4)
        p = run(["train", cfg, "--quiet", "--resume"], check=False)
        self.assert_one_line_error(p, f"--resume: run folder '{out}' (train.out) does not exist")
        self.assertFalse(os.path.exists(out))
        os.makedirs(out)
        p = run(["train", cfg, "--quiet", "--resume"], check=False)
        self.assert_one_line_error(p, "holds no checkpoint to resume (no LATEST)")
        p = run(["train", cfg, "--quiet", "--resume", "--force"], check=False)
        self.assert_one_line_error(p, "--resume", "--force")

    def test_shape_errors_name_the_key_that_differs(self):
        cfg_a, out_a = self.config("shape_a", steps=2)
        run(["train", cfg_a, "--quiet"])
        cfg_b, out_b = self.config("shape_b", steps=2)
        p = run(["train", cfg_b, "--quiet", "--set", f"train.init_from={out_a}", "--set", "model.n_head=4"],
                check=False)
        self.assert_one_line_error(p, "train.init_from", "model.n_head is 2 in the checkpoint but 4 in this run")
        self.assertFalse(os.path.exists(out_b))
        p = run(["eval", "--checkpoint", out_a, "--data", self.corpus, "--set", "model.d_model=64"], check=False)
        self.assert_one_line_error(p, "model.d_model is 32 in the checkpoint but 64 in the overrides")


class StartOverTest(Case):
    def test_force_removes_everything_sparta_wrote_and_nothing_else(self):
        cfg, out = self.config("over", steps=8, eval_every=4, ckpt_every=2)
        run(["train", cfg, "--quiet", "--set", "train.keep_checkpoints=10"])
        os.makedirs(os.path.join(out, ".ckpt-00000099.tmp"))  # scratch of a killed write
        os.makedirs(os.path.join(out, "mydata"))
        with open(os.path.join(out, "notes.txt"), "w") as f:
            f.write("mine\n")
        run(["train", cfg, "--quiet", "--force", "--set", "train.steps=2", "--set", "train.ckpt_every=1"])
        self.assertEqual(sorted(os.listdir(out)),
                         [".sparta.lock", "LATEST", "ckpt-00000001", "ckpt-00000002", "loss.svg", "metrics.jsonl",
                          "mydata", "notes.txt", "summary.json"])
        self.assertEqual(len(metric_lines(out)), 2)
        with open(os.path.join(out, "summary.json")) as f:
            self.assertEqual(json.load(f)["steps"], 2)

    def test_failed_runs_leave_no_folder(self):
        cfg, out = self.config("failed", steps=4)
        tiny = os.path.join(self.tmp, "tiny.txt")
        with open(tiny, "w") as f:
            f.write("hi\n")
        for sets in (["data.train=" + os.path.join(self.tmp, "missing.txt")], ["data.train=" + tiny],
                     ["model.n_head=3"], ["train.init_from=" + os.path.join(self.tmp, "nope")]):
            p = run(["train", cfg, "--quiet"] + [a for s in sets for a in ("--set", s)], check=False)
            self.assert_one_line_error(p)
            self.assertFalse(os.path.exists(out), f"{sets} left {out} behind")
        # A folder that was there before is left alone.
        os.makedirs(out)
        with open(os.path.join(out, "notes.txt"), "w") as f:
            f.write("mine\n")
        p = run(["train", cfg, "--quiet", "--set", "data.train=" + tiny], check=False)
        self.assert_one_line_error(p)
        self.assertTrue(os.path.exists(os.path.join(out, "notes.txt")))


def corrupt_first_float(safetensors_path, value):
    """Overwrites the first element of the first tensor (by data offset); returns its name."""
    with open(safetensors_path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        name, info = min(((k, v) for k, v in header.items() if k != "__metadata__"),
                         key=lambda kv: kv[1]["data_offsets"][0])
        f.seek(8 + n + info["data_offsets"][0])
        f.write(struct.pack("<f", value))
    return name


class NonFiniteTest(Case):
    def test_a_checkpoint_with_nan_or_inf_weights_is_refused(self):
        cfg, out = self.config("nan", steps=4, eval_every=4, ckpt_every=2)
        run(["train", cfg, "--quiet", "--until", "2"])
        model = os.path.join(out, "ckpt-00000002", "model.safetensors")
        for value in (float("nan"), float("inf")):
            name = corrupt_first_float(model, value)
            for args in (["eval", "--checkpoint", out, "--data", self.corpus],
                         ["generate", "--checkpoint", out, "--prompt", "a"],
                         ["info", "--checkpoint", out],
                         ["train", cfg, "--quiet", "--resume"]):
                p = run(args, check=False)
                self.assert_one_line_error(p, f"tensor '{name}'", model)
            cfg_b, out_b = self.config("from_nan", steps=2)
            p = run(["train", cfg_b, "--quiet", "--set", f"train.init_from={out}"], check=False)
            self.assert_one_line_error(p, f"tensor '{name}'")

    def test_non_finite_steps_are_skipped_then_stop_the_run(self):
        # At lr 1e30 the first update blows the weights up to ~1e30 (still
        # finite); every later forward pass overflows to a non-finite loss.
        cfg, out = self.config("diverge", steps=20, eval_every=0, ckpt_every=1)
        p = run(["train", cfg, "--quiet", "--set", "train.lr=1e30", "--set", "train.warmup=0"], check=False)
        self.assertNotEqual(p.returncode, 0)
        err = p.stderr.strip().splitlines()
        self.assertEqual(err[:3], [f"warning: step {s} skipped: loss is NaN (no update)" for s in (2, 3, 4)], err)
        self.assertIn("3 steps in a row had a non-finite loss or gradient norm (steps 2-4)", err[-1])
        recs = metric_lines(out)
        self.assertEqual([r["step"] for r in recs], [1, 2, 3, 4])
        self.assertNotIn("skipped", recs[0])
        for r in recs[1:]:
            self.assertEqual((r["skipped"], r["reason"]), (True, "loss is NaN"))
            self.assertNotIn("loss", r)
        # Skipped steps change no weight: the checkpoints of steps 1-3 are identical.
        weights = []
        for s in (1, 3):
            with open(os.path.join(out, f"ckpt-0000000{s}", "model.safetensors"), "rb") as f:
                weights.append(f.read()[-4096:])
        self.assertEqual(weights[0], weights[1])
        # train.max_bad_steps raises the limit.
        cfg2, out2 = self.config("diverge5", steps=20, eval_every=0, ckpt_every=0)
        p = run(["train", cfg2, "--quiet", "--set", "train.lr=1e30", "--set", "train.warmup=0",
                 "--set", "train.max_bad_steps=5"], check=False)
        self.assertIn("5 steps in a row", p.stderr)
        self.assertEqual(len(metric_lines(out2)), 6)

    def test_non_finite_weights_are_never_saved(self):
        # An lr beyond float range makes the first update infinite.
        cfg, out = self.config("inf", steps=4, eval_every=0, ckpt_every=1)
        p = run(["train", cfg, "--quiet", "--set", "train.lr=1e39", "--set", "train.warmup=0"], check=False)
        self.assert_one_line_error(p, "not saving step 1", "is not finite")
        self.assertFalse(os.path.exists(os.path.join(out, "LATEST")))
        self.assertFalse(any(n.startswith("ckpt-") or n.startswith(".ckpt-") for n in os.listdir(out)))


if __name__ == "__main__":
    SPARTA = test_cli.SPARTA = os.path.abspath(sys.argv.pop(1))
    unittest.main()
