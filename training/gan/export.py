"""A finished run as a medgan model folder: weights, config.json with the run's provenance, sample grid, curves,
the discriminator (for a later --init-from) and the card."""
from __future__ import annotations

import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from medgan.config import ModelConfig
from medgan.generator import Generator, save_model_folder
from medgan.imaging import grid
from medgan.perf import cpu_name

from ..data import pseudonyms as P
from .config import ARCH_NAMES, TrainConfig
from .discriminator import save_discriminator
from .distributed import Dist
from .runlog import MetricsLog, fid_records, plot_fid_curves, save_synthetic_png
from .trainer import Trainer, cumulative_cpu_s


def hardware(d: Dist, device: torch.device) -> dict[str, Any]:
    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "processes": d.world,
            "device": str(device.type), "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def public_record(cfg: TrainConfig, commands: list[str],
                  data_info: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The configuration and commands as config.json and the weights' metadata record them: `--data` is the
    dataset's recorded name (training.data.pseudonyms.recorded_name), never the path it was read from. The run
    folder's train_config.json, which stays here, keeps the path (training.push finds the keys file by it)."""
    recorded = asdict(cfg)
    if not cfg.data:
        return recorded, list(commands)
    name = P.recorded_name(data_info.get("name", ""), bool(data_info.get("public")), data_info.get("sha256", ""))
    recorded["data"] = name
    return recorded, [P.recorded_command(command, "--data", name) for command in commands]


def export_model(trainer: Trainer, folder: Path, data_info: dict[str, Any], hw: dict[str, Any],
                 run_dir: Path) -> Path:
    """Write a medgan model folder: weights, config.json, samples.png, loss.png, README.md card, and the
    discriminator (for a later --init-from; training.gan.discriminator.DISCRIMINATOR_FILE)."""
    from ..publish.card import write_card  # here: huggingface_hub is slow to import, and only the export needs it

    cfg = trainer.cfg
    net = trainer.export_net()
    model_id = cfg.model_id or folder.name
    recorded, commands = public_record(cfg, trainer.commands, data_info)
    training = {"recipe": cfg.recipe, "command": commands[0] if commands else "",
                "resumed_with": commands[1:], "steps": trainer.step,
                "images_seen": trainer.step * cfg.batch_size, "wall_time_s": round(trainer.elapsed, 1),
                "cpu_time_s": round(trainer.cpu_elapsed, 1),
                "hardware": hw, "final_losses": trainer.last, "ema": cfg.ema > 0, "config": recorded}
    if trainer.private:
        training["dp"] = trainer.private.budget.record(trainer.step)
    if trainer.init_info:
        training["init_from"] = trainer.init_info
        training["cpu_time_total_s"] = round(cumulative_cpu_s(training), 1)
    curve = fid_records(run_dir)
    if curve:  # the cheap FID's quality-vs-CPU-time curve (training CPU minutes, FID on fid_images samples)
        training["fid_curve"] = [{"step": r["step"], "cpu_min": round(r["cpu_s"] / 60, 2), "fid": r["fid"],
                                  "images": r.get("fid_images")} for r in curve]
    axes = data_info.get("axes") or cfg.axes
    plane = cfg.plane or ({0: "sagittal", 1: "coronal", 2: "axial"}.get(axes[0], "") if len(axes) == 1 else "mixed")
    config = ModelConfig(id=model_id, title=cfg.title or model_id, modality=cfg.modality or data_info.get("modality", ""),
                         organ=cfg.organ or data_info.get("organ", ""), plane=plane,
                         description=cfg.description, generator=trainer.gcfg, training_data=data_info,
                         license="mit", training=training, extra={"architecture": ARCH_NAMES[cfg.arch]})
    save_model_folder(folder, config, net)
    save_discriminator(folder, trainer.D, {"model_id": model_id, "step": trainer.step, "d_width": cfg.d_width,
                                           "spectral_norm": cfg.spectral_norm, "d_batchnorm": cfg.d_batchnorm,
                                           "classes": trainer.classes})
    # The sample grid comes from the saved folder through medgan itself: exactly what users will see.
    images = Generator.from_folder(folder, device="cpu").generate(64, seed=cfg.sample_seed, output_type="np")
    save_synthetic_png(folder / "samples.png", grid(images), {"model_id": model_id, "seed": str(cfg.sample_seed)})
    MetricsLog(run_dir).plot(folder / "loss.png", title=model_id)
    plot_fid_curves(folder / "fid.png", {ARCH_NAMES[cfg.arch]: curve}, title=f"{model_id}: quality vs CPU time")
    write_card(folder)
    return folder
