"""A run: set up (data, resume or warm start), the step loop with its logging, cheap FID, samples and
checkpoints, stopping on a signal or a time limit, and the export. Only rank 0 writes files."""
from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from medgan.generator import save_model_folder

from ..data.lazy import pixels_sha256
from . import checkpoint as ckpt
from .config import TrainConfig, UsageError, adopt_architecture
from .distributed import Dist, pick_device
from .export import export_model, hardware
from .fidlog import TrainFID, fid_reference
from .inputs import load_training_data
from .runlog import MetricsLog, fid_records, plot_fid_curves, save_synthetic_png
from .trainer import STAT, STATS, Trainer


def command_line(argv: list[str], d: Dist) -> str:
    launcher = f"torchrun --nproc_per_node {d.world} -m training.train" if d.world > 1 else "python -m training.train"
    return f"{launcher} {shlex.join(argv)}".strip()


class StopFlag:
    """SIGTERM / Ctrl-C set a flag; the loop checkpoints and exits at the end of the current step.
    A second Ctrl-C falls back to the default (immediate) behaviour."""

    def __init__(self) -> None:
        self.set = False
        self.signal = ""

    def install(self) -> dict[int, Any]:
        """Install the handlers; returns the previous ones (for `restore`)."""
        def handler(signum: int, frame: Any) -> None:
            if self.set and signum == signal.SIGINT:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self.set, self.signal = True, signal.Signals(signum).name

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    @staticmethod
    def restore(previous: dict[int, Any]) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(cfg: TrainConfig, argv: list[str], resume: str | None = None, images: np.ndarray | None = None,
        data_info: dict[str, Any] | None = None, stop: StopFlag | None = None,
        labels: np.ndarray | None = None, classes: list[str] | None = None) -> Trainer:
    """Train (or continue) as configured; returns the trainer. `images` (+ `labels`, `classes`) bypass
    training.data (tests)."""
    d = Dist.from_env()
    device = pick_device(cfg, d)
    if d.world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // d.local_world))
    stop = stop or StopFlag()
    if images is None:
        data = load_training_data(cfg)
        images, data_info, labels, classes = data.images, data.info, data.labels, data.classes
    if cfg.condition and not classes:
        raise UsageError(f"--condition {cfg.condition} needs labelled data")
    data_info = {"train_slices": len(images), **(data_info or {})}
    data_info.setdefault("sha256", pixels_sha256(images))
    run_dir = Path(cfg.out)
    if not resume:
        cfg = adopt_architecture(cfg)
    trainer = Trainer(cfg, images, d, device, labels=labels, classes=classes)
    log = MetricsLog(run_dir)
    if resume:
        tensors, meta = ckpt.load_checkpoint(resume)
        if meta.get("data_sha256") and meta["data_sha256"] != data_info.get("sha256"):
            raise UsageError("the training data differ from the data this checkpoint was trained on")
        trainer.load_state(tensors, meta)
        if d.main:
            log.truncate_after(trainer.step)
    elif cfg.init_from:
        info = trainer.warm_start(cfg.init_from)
        print(f"warm start from {info['model']}: {info['copied']} tensors copied, {len(info['new'])} new; "
              f"discriminator {info['discriminator']}", flush=True)
        if info["discriminator"].startswith("fresh") and trainer.policy and not trainer.ada and cfg.augment_p >= 0.5:
            # Measured on brain-t1 (docs/experiments.md): behind p=1 augmentation a fresh D stayed at chance
            # (logits within ±0.01) against a trained G for 825 steps; with ADA it separated within 100.
            print(f"note: a fresh discriminator behind fixed --augment-p {cfg.augment_p:g} may never leave chance "
                  "against a trained generator; --ada-target 0.6 starts p at 0 so it can learn", flush=True)
    trainer.commands.append(command_line(argv, d))
    hw = {**hardware(d, device), "precision": trainer.precision.describe()}
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    def save(reason: str) -> None:
        tensors, meta = trainer.state()  # collective: all ranks
        meta["data_sha256"] = data_info.get("sha256")
        if d.main:
            path = ckpt.save_checkpoint(run_dir / ckpt.FILENAME, tensors, meta)
            log.plot(run_dir / "loss.png", title=run_dir.name)
            tqdm.write(f"checkpoint ({reason}): step {trainer.step} -> {path}", file=sys.stdout)
            sys.stdout.flush()

    # Handlers only around the loop: before it there is nothing to save, and a signal must just end us.
    previous = stop.install() if threading.current_thread() is threading.main_thread() else {}
    try:
        reason = train_loop(trainer, cfg, d, stop, log, save, run_dir)
        save(reason)
    finally:
        StopFlag.restore(previous)
    if not stop.set and d.main:
        folder = export_model(trainer, Path(cfg.export or run_dir / "model"), data_info, hw, run_dir)
        print(f"exported {trainer.step} steps ({trainer.elapsed / 60:.1f} min, {reason}) -> {folder}", flush=True)
    elif d.main:
        print(f"{reason} at step {trainer.step}; continue with: python -m training.train --resume {run_dir}",
              flush=True)
    if d.world > 1:
        dist.barrier()
    return trainer


def train_loop(trainer: Trainer, cfg: TrainConfig, d: Dist, stop: StopFlag, log: MetricsLog, save: Any,
               run_dir: Path) -> str:
    """Steps until done, a signal or the time limit; returns why it stopped."""
    bar = tqdm(total=cfg.steps, initial=trainer.step, disable=not d.main, dynamic_ncols=True, unit="step",
               file=sys.stderr)
    sums = torch.zeros(len(STATS), dtype=torch.float64)
    fid_logger = TrainFID(fid_reference(trainer.images), cfg.fid_images) if cfg.fid_every and d.main else None
    n_sums, began = 0, time.perf_counter() - trainer.elapsed
    cpu_began = time.process_time() - trainer.cpu_elapsed
    reason = "done"
    step_time = step_cpu = 0.0  # pure training time in the log interval (sampling, checkpoints excluded)
    while trainer.step < cfg.steps:
        t0, c0 = time.perf_counter(), time.process_time()
        stats = trainer.train_step().double()
        trainer.elapsed = time.perf_counter() - began
        trainer.cpu_elapsed = time.process_time() - cpu_began
        budget_spent = bool(trainer.private and trainer.private.spent(trainer.step))
        timeup = (cfg.max_minutes > 0 and trainer.elapsed >= cfg.max_minutes * 60) or \
            (cfg.max_cpu_minutes > 0 and trainer.cpu_elapsed >= cfg.max_cpu_minutes * 60) or budget_spent
        # One small collective per step: stop flags, ADA statistics and losses, summed over ranks.
        flags = torch.cat([torch.tensor([float(stop.set), float(timeup)], dtype=torch.float64, device=stats.device),
                           stats])
        if d.world > 1:
            dist.all_reduce(flags)
        flags = flags.cpu()
        step_time += time.perf_counter() - t0
        step_cpu += time.process_time() - c0
        stats = flags[2:]
        sums += stats
        n_sums += 1
        if trainer.ada is not None:
            trainer.ada.observe(float(stats[STAT["sign_sum"]]), int(stats[STAT["count"]]), trainer.step, cfg.batch_size)
        bar.update(1)
        if trainer.step % cfg.log_every == 0 or trainer.step == cfg.steps or flags[:2].any():
            mean = dict(zip(STATS, (sums / (n_sums * d.world)).tolist()))
            rate = n_sums * cfg.batch_size / max(step_time, 1e-9)
            cpu_rate = n_sums * cfg.batch_size / d.world / max(step_cpu, 1e-9)  # per process
            trainer.last = {k: round(mean[k], 5) for k in ("loss_d", "loss_g", "d_real", "d_fake")}
            if d.main:
                log.append({"step": trainer.step, "kimg": round(trainer.step * cfg.batch_size / 1000, 3),
                            "time_s": round(trainer.elapsed, 2), "cpu_s": round(trainer.cpu_elapsed, 2),
                            **trainer.last, "r1": round(mean["r1"], 6),
                            "aug_p": round(trainer.aug_p if trainer.policy else 0.0, 4),
                            "rt": round(float(sums[STAT["sign_sum"]] / max(float(sums[STAT["count"]]), 1.0)), 4),
                            "img_per_s": round(rate, 1),
                            "img_per_cpu_s": round(cpu_rate, 2)})
                bar.set_postfix(D=f"{mean['loss_d']:.3f}", G=f"{mean['loss_g']:.3f}", img_s=f"{rate:.0f}", refresh=False)
            sums.zero_()
            n_sums, step_time, step_cpu = 0, 0.0, 0.0
        if d.main and trainer.step % cfg.sample_every == 0:
            save_synthetic_png(run_dir / "samples" / f"synthetic_step{trainer.step:07d}.png", trainer.sample_grid(),
                               {"step": str(trainer.step)})
        if fid_logger and (trainer.step % cfg.fid_every == 0 or flags[:2].any() or trainer.step == cfg.steps):
            # the FID's own time does not count as training time (nor against the time limits)
            wall, cpu = log_fid(trainer, fid_logger, log, run_dir)
            began, cpu_began = began + wall, cpu_began + cpu
        if flags[0] > 0:
            reason = f"stopped by {stop.signal or 'signal on another rank'}"
            break
        if flags[1] > 0:
            reason = "privacy budget spent" if budget_spent else "time limit"
            break
        if trainer.step % cfg.ckpt_every == 0 and trainer.step < cfg.steps:
            save("periodic")
    bar.close()
    return reason


def log_fid(trainer: Trainer, fid_logger: TrainFID, log: MetricsLog, run_dir: Path) -> tuple[float, float]:
    """Append a cheap-FID record and redraw fid.png; returns the (wall, CPU) seconds it took."""
    t0, c0 = time.perf_counter(), time.process_time()
    generator = trainer.export_generator()
    log.append({"step": trainer.step, "kimg": round(trainer.step * trainer.cfg.batch_size / 1000, 3),
                "time_s": round(trainer.elapsed, 2), "cpu_s": round(trainer.cpu_elapsed, 2),
                **fid_logger(generator)})
    # The exported generator at each curve point, so any point can be evaluated in full later (ablations
    # at equal CPU time).
    save_model_folder(run_dir / "snapshots" / f"step{trainer.step:07d}", generator.config, generator.reference_net)
    plot_fid_curves(run_dir / "fid.png", {trainer.cfg.arch: fid_records(run_dir)}, title=run_dir.name)
    return time.perf_counter() - t0, time.process_time() - c0
