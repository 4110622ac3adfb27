"""medgan.threads: the wait policy chosen at import and the thread count per generation follow the machine."""
import contextlib
import os
import subprocess
import sys
from typing import Iterator

import pytest
import torch

from medgan import threads
from medgan.testing import ROOT


@contextlib.contextmanager
def spinning(count: int) -> Iterator[None]:
    """`count` processes that spin on a core, each started (it said so) before the block runs."""
    hogs = [subprocess.Popen([sys.executable, "-c", "print('spinning', flush=True)\nwhile True: pass"],
                             stdout=subprocess.PIPE, text=True) for _ in range(count)]
    try:
        for hog in hogs:
            assert hog.stdout.readline().strip() == "spinning"
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
            hog.stdout.close()


def test_thread_count_is_a_fair_share_and_one_while_spinning_threads_would_fight_for_cores():
    assert threads.threads_for(1, 0.0, 2, spinning=True) == 2      # quiet machine: every core
    assert threads.threads_for(2, 0.0, 2, spinning=True) == 1      # two generations of ours: one each
    assert threads.threads_for(1, 1.8, 2, spinning=True) == 1      # busy: spinning threads would be 5x slower
    assert threads.threads_for(1, 1.8, 2, spinning=False) == 2     # sleeping threads still help when busy
    assert threads.threads_for(3, 0.0, 8, spinning=False) == 2
    assert threads.threads_for(5, 0.0, 2, spinning=False) == 1


def test_usage_counts_other_processes_runnable_threads_not_this_one(monkeypatch):
    """Others = runnable threads machine-wide less ours in state R (median of samples), re-read every >= 0.5 s."""
    with spinning(3):
        assert threads.sampled_others(samples=5, gap_s=0.01) >= 2.5    # three spinning processes want cores
    readings = iter([3, 1, 2, 0, 0, 0, 5, 5, 5])
    monkeypatch.setattr(threads, "_runnable_others", lambda: next(readings))
    clock = {"wall": 100.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["wall"])
    usage = threads.Usage()
    assert usage.others_now() == 2.0                  # median of 3, 1, 2
    clock["wall"] = 100.2
    assert usage.others_now() == 2.0                  # within 0.5 s: the estimate stands, nothing read
    clock["wall"] = 101.0
    assert usage.others_now() == 0.0
    monkeypatch.setattr(threads, "_runnable_others", lambda: None)   # no /proc: the load average less our share
    monkeypatch.setattr(threads, "_load_average", lambda: 1.5)
    monkeypatch.setattr(threads.time, "process_time", lambda: 0.0)
    assert threads.Usage().others_now() == pytest.approx(1.5)


def test_wait_policy_is_passive_on_a_busy_machine_default_on_a_quiet_one_and_explicit_wins(monkeypatch):
    assert threads.choose_wait_policy({"OMP_WAIT_POLICY": "active"}) == "ACTIVE"
    environ: dict = {}
    monkeypatch.setattr(threads.Usage, "others_now", lambda self, *a, **k: 0.1)
    assert threads.choose_wait_policy(environ) == "DEFAULT" and "OMP_WAIT_POLICY" not in environ
    monkeypatch.setattr(threads.Usage, "others_now", lambda self, *a, **k: threads.cores())
    assert threads.choose_wait_policy(environ) == "PASSIVE" and environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_fair_share_sets_torch_threads_and_import_medgan_sets_the_policy_before_torch():
    with threads.fair_share() as count:
        assert torch.get_num_threads() == count >= 1
    assert threads._in_flight == 0
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import os, medgan, torch; print(os.environ.get('OMP_WAIT_POLICY', 'DEFAULT'))"
    with spinning(threads.cores() + 1):
        busy = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
    assert busy.returncode == 0 and busy.stdout.strip() == "PASSIVE", busy.stderr[-1000:]
    explicit = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                              capture_output=True, text=True, timeout=120)
    assert explicit.stdout.strip() == "ACTIVE"


if __name__ == "__main__":
    pytest.main([__file__])
