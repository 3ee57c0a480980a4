"""bench.dist.torchrun: K local processes under torch.distributed.run; rank 0's output alone, unless another
rank fails first (then its exit code and last lines)."""
from __future__ import annotations

import sys

from bench.dist import torchrun
from sfv_core.logs import setup_console


def _launch(code: str, capfd, k: int = 2):
    setup_console()                     # as the command line does: a failure report is a logged error
    rc = torchrun(k, [sys.executable, "-c", "import os, sys, signal, time\nrank = int(os.environ['RANK'])\n" + code],
                  threads=1)
    return rc, capfd.readouterr()


def test_every_process_gets_its_rank_and_torchruns_variables(capfd):
    rc, out = _launch("print(rank, os.environ['WORLD_SIZE'], os.environ['LOCAL_RANK'], os.environ['OMP_NUM_THREADS'], "
                      "os.environ['MASTER_ADDR'], flush=True)", capfd, k=3)
    assert rc == 0 and out.out.split() == ["0", "3", "0", "1", "localhost"]      # the others' output is not shown


def test_a_process_that_fails_first_gives_its_code_and_last_lines(capfd):
    rc, out = _launch("if rank == 1:\n    print('boom in rank 1', file=sys.stderr); sys.exit(3)\ntime.sleep(30)",
                      capfd)
    assert rc == 3 and "process 1 of 2 ended with code 3" in out.err and "boom in rank 1" in out.err


def test_rank_0s_refusal_wins_over_the_others_collateral_failure(capfd):
    rc, out = _launch("if rank == 0:\n    print('error: refused', file=sys.stderr); sys.exit(2)\n"
                      "time.sleep(0.5); print('Traceback: peer closed', file=sys.stderr); sys.exit(1)", capfd)
    assert rc == 2 and out.err.count("refused") == 1 and "Traceback" not in out.err


def test_a_killed_process_reads_as_128_plus_the_signal(capfd):
    rc, out = _launch("if rank == 1:\n    os.kill(os.getpid(), signal.SIGKILL)\ntime.sleep(30)", capfd)
    assert rc == 137 and "ended with code 137" in out.err


WAITS = """
import time
from bench.dist import Dist
d = Dist("cpu")
def work(tick):                          # 3.6 s of rank 0 work in 0.9 s pieces, under a 3 s timeout
    for _ in range(4):
        time.sleep(0.9)
        tick()
    return "timed"
print("main_alone:", d.main_alone(work), flush=True)
if d.main:
    time.sleep(5.4)                      # the same work, waited for in one barrier: well past the timeout
d.barrier()
print("barrier passed", flush=True)
"""


def test_the_timing_pass_wait_outlasts_the_timeout_a_single_barrier_does_not(capfd, monkeypatch):
    """The process-group timeout is the one set (SFV_DIST_TIMEOUT_S): one barrier waiting longer fails;
    ``main_alone`` waits for the same work in pieces, each well under it."""
    monkeypatch.setenv("SFV_DIST_TIMEOUT_S", "3")   # 1 s can cut the start-up rendezvous on a busy machine
    rc = torchrun(2, [sys.executable, "-c", WAITS], threads=1)
    out = capfd.readouterr()
    assert "main_alone: timed" in out.out and "barrier passed" not in out.out
    # whichever rank gives up first: its own timeout, or the peer's connection closed by that timeout
    assert rc != 0 and ("timed out" in out.err.lower() or "closed by peer" in out.err), out.err
