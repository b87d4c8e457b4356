#!/usr/bin/env python3
"""Data-parallel `sparta train` under mpirun: 2 and 3 processes train the run
one process trains (up to float rounding), every dist.compress mode follows
its schedule and its byte counts, a q4 run resumes bit-exactly (its
error-feedback residuals are in the checkpoint), a resume on another number
of processes says that it resets them, only rank 0 writes, and a rank that
stops or dies ends the job with an error naming it, after which the run
resumes from its last checkpoint, and Ctrl-C on mpirun stops every rank
with a checkpoint.

Usage: test_train_dp.py MPIRUN SPARTA_BINARY [unittest args]
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

MPIRUN = None
SPARTA = None

TINY = """
[model]
n_layer = 1
n_head = 2
d_model = 32
context = 32
[data]
train = "{corpus}"
val_fraction = 0.1
[train]
batch_size = 6
grad_accum = 2
steps = {steps}
lr = 3e-3
warmup = 2
seed = 5
eval_every = 4
ckpt_every = 4
threads = 1
out = "{out}"
"""

ENV = dict(os.environ, SPARTA_LOAD_WARNING="0", OMP_NUM_THREADS="1",
           # Containers often forbid the cross-memory-attach single copy.
           OMPI_MCA_btl_vader_single_copy_mechanism="none")


def mpirun_cmd(np, args):
    return [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", str(np), SPARTA, *args]


def train(np, config, *sets, extra=(), check=True, timeout=240, quiet=True):
    args = ["train", config, *(["--quiet"] if quiet else []), *extra]
    for s in sets:
        args += ["--set", s]
    cmd = mpirun_cmd(np, args) if np > 1 else [SPARTA, *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-3000:]}")
    return p


def records(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def lines_in(path):
    """Complete lines in a file being written (0 while it does not exist)."""
    try:
        with open(path) as f:
            return f.read().count("\n")
    except OSError:
        return 0


def sparta_errors(text):
    return [line for line in text.splitlines() if line.startswith("sparta: error:")]


class DpCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sparta_dp_")
        self.corpus = os.path.join(self.tmp, "corpus.txt")
        words = ("the quick brown fox jumps over a lazy dog while seven wise owls watch "
                 "from old oak trees and count every star").split()
        with open(self.corpus, "w") as f:
            for i in range(400):
                f.write(" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(4 + i % 9)) + ".\n")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def config(self, name, steps=8):
        out = os.path.join(self.tmp, name)
        path = os.path.join(self.tmp, name + ".toml")
        with open(path, "w") as f:
            f.write(TINY.format(corpus=self.corpus, steps=steps, out=out))
        return path, out


class SameRunTest(DpCase):
    def test_two_and_three_processes_train_the_single_process_run(self):
        # 20 steps of 2 micro-batches of 6 rows: losses within 1e-5 relative.
        cfg, out1 = self.config("one", steps=20)
        train(1, cfg)
        one = records(out1)
        # Buckets of 0.01 MiB: the exchange runs in two buckets (the block
        # with the final LayerNorm, then the embedding) on its own thread,
        # overlapped with the backward.
        for np, buckets in ((2, "4"), (3, "4"), (2, "0.01"), (3, "0.01")):
            with self.subTest(np=np, bucket_mb=buckets):
                cfg_n, out_n = self.config(f"np{np}_{buckets}", steps=20)
                p = train(np, cfg_n, f"dist.bucket_mb={buckets}", quiet=False)
                self.assertIn(f"{np} processes × 1 thread, gradients exchanged as none in " +
                              ("1 bucket\n" if buckets == "4" else "2 buckets overlapped with backward"), p.stderr)
                self.assertIn(f"data parallel over {np} processes", p.stdout)
                many = records(out_n)
                self.assertEqual(len(many), len(one))
                for a, b in zip(one, many):
                    self.assertAlmostEqual(a["loss"], b["loss"], delta=1e-5 * abs(a["loss"]), msg=b)
                    self.assertAlmostEqual(a["grad_norm"], b["grad_norm"], delta=1e-4 * a["grad_norm"], msg=b)
                    if "val_loss" in a:
                        self.assertAlmostEqual(a["val_loss"], b["val_loss"], delta=1e-5 * a["val_loss"])
                    self.assertEqual(b["compress"], "none")
                    self.assertGreater(b["comm_bytes"], 0)
                    self.assertGreaterEqual(b["comm_ms"], 0)
                    self.assertGreaterEqual(b["comm_wait_ms"], 0)
                    self.assertNotIn("comm_bytes", a)
                # Rank 0 alone wrote: the folder holds what one process writes.
                self.assertEqual(sorted(os.listdir(out_n)), sorted(os.listdir(out1)))
                with open(os.path.join(out_n, "summary.json")) as f:
                    self.assertEqual(json.load(f)["ranks"], np)
        # Another batch is another run: the comparison above can fail.
        cfg_b, out_b = self.config("other", steps=20)
        train(2, cfg_b, "train.batch_size=4")
        self.assertGreater(max(abs(a["loss"] - b["loss"]) for a, b in zip(one[1:], records(out_b)[1:])), 1e-3)


class CompressTest(DpCase):
    def test_modes_follow_the_schedule_and_q4_sends_7x_fewer_bytes(self):
        cfg, out = self.config("q4", steps=10)
        train(2, cfg, "dist.compress=q4", "dist.compress_after=2", "dist.full_precision_every=4",
              "dist.q4_block=64")
        recs = records(out)
        self.assertEqual([r["compress"] for r in recs],
                         ["none", "none", "q4", "none", "q4", "q4", "q4", "none", "q4", "q4"])
        full = recs[0]["comm_bytes"]
        for r in recs:
            if r["compress"] == "q4":
                self.assertLess(r["comm_bytes"] * 7, full, r)
        cfg_f, out_f = self.config("fp32", steps=10)
        train(2, cfg_f)
        self.assertAlmostEqual(recs[-1]["loss"], records(out_f)[-1]["loss"], delta=0.02 * recs[-1]["loss"])
        cfg_b, out_b = self.config("bf16", steps=4)
        train(2, cfg_b, "dist.compress=bf16")
        b = records(out_b)
        self.assertEqual({r["compress"] for r in b}, {"bf16"})
        self.assertEqual(b[0]["comm_bytes"] * 2, full)
        # q4 without error feedback has no residuals to checkpoint.
        cfg_n, out_n = self.config("no_ef", steps=4)
        train(2, cfg_n, "dist.compress=q4", "dist.error_feedback=false")
        self.assertEqual([f for f in os.listdir(os.path.join(out_n, "ckpt-00000004")) if f.startswith("dist_")], [])


class ResumeTest(DpCase):
    def test_q4_resume_is_bit_exact_and_another_rank_count_resets_the_residuals(self):
        # Two buckets, exchanged on their own thread: each keeps its residuals.
        q4 = ("dist.compress=q4", "dist.q4_block=64", "dist.bucket_mb=0.01")
        cfg_a, out_a = self.config("straight")
        train(2, cfg_a, *q4)
        cfg_b, out_b = self.config("resumed")
        train(2, cfg_b, *q4, extra=["--until", "4"])
        ckpt = os.path.join(out_b, "ckpt-00000004")
        self.assertEqual(sorted(f for f in os.listdir(ckpt) if f.startswith("dist_")),
                         ["dist_residuals.rank0.safetensors", "dist_residuals.rank1.safetensors"])
        p = train(2, cfg_b, *q4, extra=["--resume"])
        self.assertNotIn("residuals", p.stderr)
        # `sparta info` shows how the run was trained.
        info = subprocess.run([SPARTA, "info", "--checkpoint", out_b], capture_output=True, text=True, check=True)
        self.assertIn("trained on  2 processes, gradients exchanged as q4 (blocks of 64, error feedback), "
                      "in buckets of 0.01 MiB", info.stdout)
        info = subprocess.run([SPARTA, "info", "--checkpoint", out_b, "--json"], capture_output=True, text=True,
                              check=True)
        dist = json.loads(info.stdout)["dist"]
        self.assertEqual((dist["ranks"], dist["compress"], dist["q4_block"]), (2, "q4", 64))
        strip = lambda recs: [(r["step"], repr(r["loss"]), repr(r.get("val_loss"))) for r in recs]
        self.assertEqual(strip(records(out_a)), strip(records(out_b)))
        with open(os.path.join(out_a, "ckpt-00000008", "model.safetensors"), "rb") as fa, \
                open(os.path.join(out_b, "ckpt-00000008", "model.safetensors"), "rb") as fb:
            self.assertEqual(fa.read(), fb.read())
        # Other buckets cannot take the residuals: they start from zero, with a notice.
        p = train(2, cfg_b, *q4[:2], "dist.bucket_mb=4", "train.steps=9", extra=["--resume"])
        self.assertIn("the gradient buckets differ from the checkpoint's (dist.bucket_mb changed)", p.stderr)
        # Without the residuals the resume is not the same run: the test can fail.
        cfg_c, out_c = self.config("reset")
        train(2, cfg_c, *q4, extra=["--until", "4"])
        p = train(3, cfg_c, *q4, extra=["--resume", "--until", "6"])
        self.assertIn("resumed on 3 processes from a checkpoint written by 2: the error-feedback residuals "
                      "of dist.compress = q4 start from zero", p.stderr)
        self.assertNotEqual(repr(records(out_c)[-1]["loss"]), repr(records(out_a)[5]["loss"]))
        # A checkpoint that lost a rank's residuals is refused with the file named.
        os.remove(os.path.join(out_c, "ckpt-00000006", "dist_residuals.rank2.safetensors"))
        p = train(3, cfg_c, *q4, extra=["--resume"], check=False)
        self.assertNotEqual(p.returncode, 0)
        errors = sparta_errors(p.stderr)
        self.assertEqual(len(errors), 1, p.stderr)
        self.assertIn("dist_residuals.rank2.safetensors", errors[0])


class BadLaunchTest(DpCase):
    def test_errors_are_printed_once(self):
        cfg, out = self.config("bad")
        p = train(3, cfg, "train.batch_size=4", check=False)
        self.assertNotEqual(p.returncode, 0)
        errors = sparta_errors(p.stderr)
        self.assertEqual(errors, ["sparta: error: [train] train.batch_size = 4 does not split over 3 processes: "
                                  "make it a multiple of 3 (it is the global batch; each process takes "
                                  "batch_size / 3 rows)"], p.stderr)
        self.assertFalse(os.path.exists(out))  # nothing left behind
        p = train(2, cfg, "dist.compress=int4", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertEqual(len(sparta_errors(p.stderr)), 1, p.stderr)
        self.assertIn("dist.compress must be", p.stderr)


def rank_pids(mpirun_pid):
    """{rank: pid} of the processes mpirun started."""
    pids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != mpirun_pid:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            if b"OMPI_COMM_WORLD_RANK" in env:
                pids[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(entry)
        except (OSError, ValueError, IndexError):
            continue
    return pids


class FailureTest(DpCase):
    def run_and_break(self, name, sig):
        cfg, out = self.config(name, steps=100000)
        cmd = mpirun_cmd(3, ["train", cfg, "--quiet", "--set", "train.batch_size=3", "--set", "train.grad_accum=1",
                             "--set", "dist.timeout_s=5", "--set", "train.eval_every=0"])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        try:
            # Wait for a checkpoint, then break rank 1.
            deadline = time.monotonic() + 60
            while not os.path.exists(os.path.join(out, "LATEST")) and time.monotonic() < deadline:
                time.sleep(0.2)
            self.assertTrue(os.path.exists(os.path.join(out, "LATEST")), "no checkpoint within 60 s")
            pids = rank_pids(proc.pid)
            self.assertEqual(sorted(pids), [0, 1, 2])
            os.kill(pids[1], sig)
            start = time.monotonic()
            stdout, stderr = proc.communicate(timeout=60)
            seconds = time.monotonic() - start
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            for pid in rank_pids(proc.pid).values():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        self.assertNotEqual(proc.returncode, 0)
        self.assertLess(seconds, 30, stderr)
        # The run resumes from its last checkpoint.
        with open(os.path.join(out, "LATEST")) as f:
            at = int(f.read().strip().split("-")[1])
        train(3, cfg, f"train.steps={at + 2}", "train.batch_size=3", "train.grad_accum=1", extra=["--resume"])
        self.assertEqual(records(out)[-1]["step"], at + 2)
        return stderr

    def test_a_stopped_rank_is_named_within_the_timeout(self):
        stderr = self.run_and_break("stopped", signal.SIGSTOP)
        self.assertIn("did not complete within 5 s (dist.timeout_s): rank 1 does not answer", stderr)

    def test_a_killed_rank_ends_the_job(self):
        stderr = self.run_and_break("killed", signal.SIGKILL)
        self.assertIn("rank 1", stderr)

    def test_ctrl_c_stops_every_rank_with_a_checkpoint(self):
        # mpirun turns SIGINT into SIGTERM for every rank: they stop together
        # after the current step and rank 0 writes a checkpoint.
        cfg, out = self.config("interrupted", steps=100000)
        cmd = mpirun_cmd(2, ["train", cfg, "--quiet", "--set", "train.eval_every=0", "--set", "train.ckpt_every=0"])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and lines_in(os.path.join(out, "metrics.jsonl")) < 3:
                time.sleep(0.2)
            os.kill(proc.pid, signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.assertIn("SIGTERM: stopped after step", stderr)
        self.assertIn("resume with:", stderr)
        with open(os.path.join(out, "LATEST")) as f:
            at = int(f.read().strip().split("-")[1])
        self.assertGreaterEqual(at, 3)
        self.assertEqual(records(out)[-1]["step"], at)
        train(2, cfg, f"train.steps={at + 2}", extra=["--resume"])
        self.assertEqual(records(out)[-1]["step"], at + 2)


if __name__ == "__main__":
    MPIRUN, SPARTA = sys.argv[1], sys.argv[2]
    unittest.main(argv=[sys.argv[0]] + sys.argv[3:])
