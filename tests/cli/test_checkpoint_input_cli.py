#!/usr/bin/env python3
"""End-to-end tests of `sparta` on checkpoint folders with hostile or mixed-up
files: deeply nested JSON, huge headers and shapes, a config that does not fit
the weights, bad numbers in the state file, and `eval` of a file much shorter
than the context. Each gets a one-line error (or a quick answer) with bounded
time and memory.

Usage: test_checkpoint_input_cli.py SPARTA_BINARY [unittest args...]
"""
import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_cli import TINY, make_corpus  # noqa: E402  (same tiny model and corpus as the other CLI tests)

# Exact stderr checks: no busy-machine warning from a loaded test machine.
os.environ["SPARTA_LOAD_WARNING"] = "0"

SPARTA = None
# Set by scripts/test.sh when SPARTA is an ASan build: its shadow memory and
# redzones make time and peak-RSS bounds meaningless, so only those are skipped.
SANITIZED = os.environ.get("SPARTA_TEST_SANITIZED") == "1"


def run_measured(args, cpu_limit_s=120):
    """Runs sparta; returns (exit status, stdout, stderr, seconds, peak RSS in MB)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        def limit_cpu():  # a hang fails the test instead of blocking it
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit_s, cpu_limit_s))
        start = time.monotonic()
        p = subprocess.Popen([SPARTA] + args, stdout=out, stderr=err, preexec_fn=limit_cpu)
        _, status, usage = os.wait4(p.pid, 0)  # wait4: this child's own peak RSS
        p.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        return (p.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"), seconds,
                usage.ru_maxrss / 1024)


def safetensors_bytes(header_text):
    return struct.pack("<Q", len(header_text)) + header_text


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def write_safetensors(path, header, payload):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(safetensors_bytes(text) + payload)


class HostileCheckpointTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sparta_cli_ckin_")
        cls.corpus = os.path.join(cls.tmp, "corpus.txt")
        make_corpus(cls.corpus)
        cfg = os.path.join(cls.tmp, "tiny.toml")
        out = os.path.join(cls.tmp, "run")
        with open(cfg, "w") as f:
            f.write(TINY.format(corpus=cls.corpus, steps=2, eval_every=2, ckpt_every=2, out=out))
        subprocess.run([SPARTA, "train", cfg, "--quiet"], check=True, capture_output=True)
        with open(os.path.join(out, "LATEST")) as f:
            cls.good = os.path.join(out, f.read().strip())

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.ck = os.path.join(self.tmp, self.id().rsplit(".", 1)[-1])
        shutil.rmtree(self.ck, ignore_errors=True)
        shutil.copytree(self.good, self.ck)

    def assert_clean_error(self, args, needle, max_seconds=20, max_rss_mb=None):
        rc, _, err, seconds, rss = run_measured(args)
        self.assertNotEqual(rc, 0, f"{args} should fail")
        self.assertGreater(rc, 0, f"killed by signal {-rc}")
        err = err.strip()
        self.assertEqual(len(err.splitlines()), 1, f"expected one line, got:\n{err[:2000]}")
        self.assertLess(len(err), 600, err[:2000])
        self.assertTrue(err.startswith("sparta: error:"), err)
        self.assertIn(needle, err)
        if SANITIZED:
            return err
        self.assertLess(seconds, max_seconds, err)
        if max_rss_mb is not None:
            self.assertLess(rss, max_rss_mb, err)
        return err

    def test_deeply_nested_json_is_an_error_not_a_crash(self):
        nested = "[" * 100000 + "]" * 100000
        for field in ("lowercase", "vocab_file"):
            with open(os.path.join(self.ck, "tokenizer.json"), "w") as f:
                f.write('{"kind": "wordpiece", "%s": %s}' % (field, nested))
            self.assert_clean_error(["eval", "--checkpoint", self.ck, "--data", self.corpus],
                                    "tokenizer.json' nests arrays/objects deeper than 64 levels")
        shutil.copy(os.path.join(self.good, "tokenizer.json"), self.ck)
        for field in ("shape", "data_offsets"):
            header = '{"wte": {"dtype": "F32", "%s": %s}}' % (field, nested)
            with open(os.path.join(self.ck, "model.safetensors"), "wb") as f:
                f.write(safetensors_bytes(header.encode()))
            self.assert_clean_error(["eval", "--checkpoint", self.ck, "--data", self.corpus],
                                    "header nests arrays/objects deeper than 64 levels")

    def test_a_config_that_does_not_fit_the_weights_fails_before_allocating_the_model(self):
        # 16 layers of width 4096: 3.2 GB of weights (and as much for gradients).
        path = os.path.join(self.ck, "config.toml")
        with open(path) as f:
            text = f.read()
        text = re.sub(r"(?m)^d_model = \d+", "d_model = 4096", text)
        text = re.sub(r"(?m)^n_layer = \d+", "n_layer = 16", text)
        with open(path, "w") as f:
            f.write(text)
        self.assert_clean_error(["eval", "--checkpoint", self.ck, "--data", self.corpus],
                                "but the model expects (257, 4096) F32", max_seconds=10, max_rss_mb=300)

    def test_huge_headers_and_shapes_are_rejected_in_bounded_memory(self):
        model = os.path.join(self.ck, "model.safetensors")
        with open(model, "wb") as f:
            f.write(safetensors_bytes(b" " * 99_000_000))
        self.assert_clean_error(["info", "--checkpoint", self.ck], "header is not valid JSON", max_rss_mb=600)
        header = {"wte": {"dtype": "F32", "shape": [1 << 30, 1 << 20], "data_offsets": [0, 1 << 52]}}
        write_safetensors(model, header, b"")
        self.assert_clean_error(["info", "--checkpoint", self.ck], "end past the data region", max_rss_mb=300)
        header = {"wte": {"dtype": "F32", "shape": [1 << 40, 1 << 40, 0], "data_offsets": [0, 0]}}
        write_safetensors(model, header, b"")
        self.assert_clean_error(["info", "--checkpoint", self.ck], "tensor 'wte' has shape (1099511627776, "
                                "1099511627776, 0) F32 but the model expects (257, 32) F32", max_rss_mb=300)

    def test_bad_numbers_in_the_state_file_name_the_file_and_the_field(self):
        state = os.path.join(self.ck, "train_state.safetensors")
        header, payload = read_safetensors(state)
        for bad in ("many", "12abc", "99999999999999999999999"):
            header["__metadata__"]["tokens_seen"] = bad
            write_safetensors(state, header, payload)
            err = self.assert_clean_error(["info", "--checkpoint", self.ck], "metadata 'tokens_seen' is '" + bad)
            self.assertIn("train_state.safetensors", err)
            self.assertNotIn("stoll", err)

    def test_eval_of_a_short_file_runs_at_its_length(self):
        short = os.path.join(self.tmp, "short.txt")
        with open(short, "w") as f:
            f.write(("the quick brown fox jumps over the lazy dog. " * 20)[:900])
        args = ["eval", "--checkpoint", self.ck, "--data", short, "--json"]
        rc, out, err, seconds, _ = run_measured(args + ["--set", "model.context=1048576"])
        self.assertEqual(rc, 0, err)
        self.assertLess(seconds, 30)
        at_long_context = json.loads(out)
        self.assertEqual(at_long_context["tokens"], 899)  # 900 byte tokens, 899 targets
        # The causal model's loss on the file does not depend on padding it to a context.
        rc, out, err, _, _ = run_measured(args + ["--set", "model.context=1024"])
        self.assertEqual(rc, 0, err)
        self.assertAlmostEqual(json.loads(out)["loss"], at_long_context["loss"], places=5)


if __name__ == "__main__":
    SPARTA = os.path.abspath(sys.argv.pop(1))
    unittest.main()
