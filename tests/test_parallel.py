"""Data-parallel training (torchrun, gloo on CPU) against one process, and ranks against each other.

The runs go through tests/parallel_worker.py, which trains as `python -m training.train` does and gathers every
rank's Trainer.state (G, D, EMA, Adam moments, the shared data stream) on rank 0.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from helpers import run_process_group
from test_train import make_npz
from training.gan.trainer import GLOBAL_DRAWS_ENV

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "parallel_worker.py"
TINY = ["--size", "32", "--batch-size", "8", "--d-width", "8", "--threads", "1", "--log-every", "1",
        "--sample-every", "1000", "--ckpt-every", "1000"]
# The small-data recipe with everything that must average the same way switched on: augmentation at p = 1,
# flips, spectral norm, EMA, and R1 every 2 steps (steps 0 and 2 regularise, 1 and 3 do not). D without batch norm:
# its statistics over a rank's half batch differ from the global batch's, so no averaging makes 2 ranks equal one
# process there (G's batch norm and w_avg are handled by the global-draws hook, which runs G on the global batch).
ARCHS = {
    "dcgan": ["--arch", "dcgan", "--base-width", "8", "--no-d-batchnorm", "--r1-every", "2", "--steps", "3"],
    # conditional (labels gathered across ranks), style mixing, per-layer noise; ADA's p updates every 4 steps,
    # so 4 steps include one update from the summed sign statistics
    "style": ["--arch", "style", "--condition", "level", "--base-width", "4", "--w-dim", "32", "--latent-dim", "16",
              "--no-d-batchnorm", "--r1-every", "2", "--ada-target", "0.6", "--ada-kimg", "0.1", "--steps", "4"],
}
# Relative difference allowed per tensor, ||two ranks - one process|| / ||one process||. Both compute the same
# mathematics in another order (sums over 4 + 4 rows, then across ranks, against sums over 8 rows): run in float64,
# the two agree to 1e-14. In float32 the rounding differences grow through the steps (2e-6 after the first style
# step, 6e-4 after the third); measured at most 4e-4 for these runs (style: D's bias gradients in Adam's moments)
# and 3e-6 (dcgan). G's gradients left out of the averaging, or R1 summed over a rank's rows instead of averaged,
# gave 0.5 to 31.
RTOL = 1e-2


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    return make_npz(tmp_path_factory.mktemp("data") / "phantom.npz")


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != GLOBAL_DRAWS_ENV}
    return {**env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


def launch(out: Path, args: list[str], ranks: int, **env: str) -> list[dict]:
    """Train with the worker (under torch's launcher when ranks > 1); every rank's state, rank 0 first."""
    prefix = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)] if ranks > 1 else []
    cmd = [sys.executable, *prefix, str(WORKER), str(out / "states.safetensors"), *args, "--out", str(out / "run")]
    proc = run_process_group(cmd, worker_env(**env), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_states(out / "states.safetensors")


def read_states(path: Path) -> list[dict]:
    with safe_open(str(path), "pt") as f:
        metas = json.loads(f.metadata()["ranks"])
        states = [{"meta": meta, "tensors": {}} for meta in metas]
        for key in f.keys():
            rank, name = key.split("/", 1)
            states[int(rank.removeprefix("rank"))]["tensors"][name] = f.get_tensor(key)
    return states


def model_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """G, D and EMA parameters and buffers, and both optimisers' moments."""
    return {k: v for k, v in tensors.items() if k.split(".", 1)[0] in ("G", "D", "G_ema", "opt_g", "opt_d")}


def max_differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    assert a.keys() == b.keys()
    return {k: (a[k].double() - b[k].double()).abs().max().item() if a[k].numel() else 0.0 for k in a}


def relative_differences(a: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, float]:
    """||a - reference|| / ||reference|| per tensor (0 where both are zero, inf where only the reference is)."""
    assert a.keys() == reference.keys()
    out = {}
    for k, ref in reference.items():
        diff, norm = (a[k].double() - ref.double()).norm().item(), ref.double().norm().item()
        out[k] = diff / norm if norm else (0.0 if diff == 0 else float("inf"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_two_ranks_with_global_draws_train_as_one_process(tmp_path, npz, arch):
    """Under the test-only global-draws hook every rank draws what one process draws for the same global batch of
    8 and keeps its 4 rows: after the steps, G, D, EMA and the Adam moments are one process's to float tolerance.
    A gradient left out of the averaging or a loss summed instead of averaged fails it (see RTOL)."""
    args = ["--data", str(npz), *TINY, *ARCHS[arch]]
    (one,) = launch(tmp_path / "one", args, ranks=1)
    two = launch(tmp_path / "two", args, ranks=2, **{GLOBAL_DRAWS_ENV: "1"})
    reference = one["tensors"]
    assert {k for k in reference if k.startswith("G_ema.")}, "the EMA generator is compared"
    for rank, state in enumerate(two):
        tensors = state["tensors"]
        # the same draws: the shared data stream and the single-process latent and augmentation streams
        for name in ("gen.perm", "stream.buffer"):
            assert torch.equal(tensors[name], reference[name]), (rank, name)
        for name in ("noise", "aug"):
            for r in range(2):
                assert torch.equal(tensors[f"gen.{name}.{r}"], reference[f"gen.{name}.0"]), (rank, name, r)
        assert state["meta"]["step"] == one["meta"]["step"]
        if arch == "style":  # ADA: the summed sign statistics of both ranks are the one process's
            assert state["meta"]["ada"] == one["meta"]["ada"], (state["meta"]["ada"], one["meta"]["ada"])
        diffs = relative_differences(model_tensors(tensors), model_tensors(reference))
        worst = sorted(diffs, key=diffs.get, reverse=True)[:5]
        assert diffs[worst[0]] <= RTOL, f"rank {rank}: " + ", ".join(f"{k} {diffs[k]:.2g}" for k in worst)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_ranks_hold_identical_state_after_a_normal_run(tmp_path, npz, arch):
    """Without the hook each rank draws its own latents and augmentations, and batch-norm layers in G and D (D's
    switched on here) and style's w_avg update from each rank's own rows; every tensor of the training state is
    still the same, bit for bit, on every rank."""
    args = ["--data", str(npz), *TINY, *ARCHS[arch], "--d-batchnorm"]
    states = launch(tmp_path, args, ranks=2)
    assert len(states) == 2
    first, second = (s["tensors"] for s in states)
    assert not torch.equal(first["gen.noise.0"], first["gen.noise.1"])  # the ranks drew different latents
    assert first.keys() == second.keys()
    # The global RNG states (rng.*) are each process's own: training draws only from its seeded generators, and
    # rank 0 alone has exported the model (which draws from torch's) by the time the states are gathered.
    state = [k for k in first if not k.startswith("rng.")]
    differing = {k: v for k, v in max_differences(*({k: s[k] for k in state} for s in (first, second))).items()
                 if v or not torch.equal(first[k], second[k])}
    assert not differing, "ranks differ (max |difference|): " + ", ".join(f"{k} {v:.3g}" for k, v in differing.items())
    assert states[0]["meta"] == states[1]["meta"]
