#!/usr/bin/env python3
"""The MPI process group in real MPI jobs.

Usage: test_mpi.py MPIRUN COLLECTIVES_CHECK [unittest args]

Runs collectives_check under `mpirun -np 2` and `-np 3` (as root too:
--allow-run-as-root; more ranks than cores: --oversubscribe).
"""
import os
import subprocess
import sys
import time
import unittest

MPIRUN = None
CHECK = None


def mpirun(np, *args, timeout=120):
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", str(np), CHECK, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1",
               # Containers often forbid the cross-memory-attach single copy.
               OMPI_MCA_btl_vader_single_copy_mechanism="none")
    start = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return p, time.monotonic() - start


class MpiCase(unittest.TestCase):
    def check_every_rank(self, mode, holds):
        """Runs collectives_check MODE with 2 and 3 ranks; each rank must print "rank r of n: HOLDS"."""
        for np in (2, 3):
            with self.subTest(np=np):
                p, _ = mpirun(np, mode)
                self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
                for r in range(np):
                    self.assertIn(f"rank {r} of {np}: {holds}", p.stdout)


class CollectivesTest(MpiCase):
    def test_every_collective_with_2_and_3_ranks(self):
        self.check_every_rank("collectives", "all collectives hold")


class ExchangeTest(MpiCase):
    def test_gradient_averaging_in_every_compression_with_2_and_3_ranks(self):
        self.check_every_rank("exchange", "every exchange holds")


class BucketTest(MpiCase):
    def test_bucketed_exchange_overlapped_on_its_own_thread_with_2_and_3_ranks(self):
        self.check_every_rank("buckets", "every bucketed exchange holds")


class StalledRankTest(unittest.TestCase):
    def test_a_rank_that_stops_taking_part_ends_the_job_with_an_error(self):
        # Rank 1 sleeps 30 s instead of joining a barrier; the others' 3 s
        # timeout must end the whole job well before that.
        p, seconds = mpirun(3, "stalled", timeout=60)
        out = p.stdout + p.stderr
        self.assertNotEqual(p.returncode, 0, out)
        self.assertIn("barrier did not complete within 3 s (dist.timeout_s): rank 1 does not answer: it died, hangs or stopped",
                      out)
        self.assertNotIn("completed without rank 1", out)
        self.assertLess(seconds, 25, out)


if __name__ == "__main__":
    MPIRUN, CHECK = sys.argv[1], sys.argv[2]
    unittest.main(argv=[sys.argv[0]] + sys.argv[3:])
