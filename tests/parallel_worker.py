"""One process of a data-parallel test run: train as `python -m training.train ARGS...` does, then gather every rank's
training state (Trainer.state: G, D, EMA, optimiser moments, data stream) on rank 0, which writes them to OUT.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/parallel_worker.py OUT ARGS...

OUT (safetensors) holds `rank<r>/<name>` for every rank r; its metadata `ranks` holds each rank's step and ADA state.
"""
from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from training.gan.cli import build_parser
from training.gan.config import check_config, make_config
from training.gan.loop import run
from training.gan.trainer import Trainer


def rank_state(trainer: Trainer) -> tuple[dict[str, torch.Tensor], dict]:
    """What this rank holds (a collective: every rank calls it)."""
    tensors, meta = trainer.state()
    return ({name: t.detach().cpu().clone().contiguous() for name, t in tensors.items()},
            {"step": meta["step"], "ada": meta["ada"]})


def train(argv: list[str]) -> Trainer:
    cfg = make_config(vars(build_parser().parse_args(argv)))
    check_config(cfg)
    return run(cfg, argv)


def save_states(path: str, states: list[tuple[dict[str, torch.Tensor], dict]]) -> None:
    tensors = {f"rank{r}/{name}": t for r, (state, _) in enumerate(states) for name, t in state.items()}
    save_file(tensors, path, metadata={"ranks": json.dumps([meta for _, meta in states])})


def main(out: str, argv: list[str]) -> None:
    trainer = train(argv)
    state = rank_state(trainer)
    if not dist.is_initialized():
        save_states(out, [state])
        return
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    if dist.get_rank() == 0:
        save_states(out, states)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
