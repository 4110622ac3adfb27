"""Training pipeline: export, exact resume, SIGTERM, torchrun, model card, augmentation, bad input.

Tiny everything: 32x32 phantom slices from two "subjects", widths of 8, a handful of steps.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_process_group
from huggingface_hub import ModelCard
from safetensors.torch import load_file

import medgan
from medgan.generator import Generator
from medgan.sources import card_summary
from training.gan import checkpoint as ckpt
from training.gan.augment import AdaptiveP, cutout, diff_augment, parse_policy, translation
from training.publish.card import render_card, write_card
from training.data import SliceDataset
from training.gan.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--size", "32", "--batch-size", "8", "--base-width", "8", "--d-width", "8", "--threads", "1",
        "--log-every", "2", "--sample-every", "4", "--ckpt-every", "4"]


def phantom_slices(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Head-like ellipses with a darker ventricle and noise: enough structure for a GAN to see."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    out = np.zeros((n, 1, size, size), np.uint8)
    for i in range(n):
        head = ((xx / rng.uniform(0.6, 0.85)) ** 2 + (yy / rng.uniform(0.7, 0.9)) ** 2 < 1) * 0.7
        vent = (((xx - rng.uniform(-.1, .1)) / 0.15) ** 2 + (yy / 0.3) ** 2 < 1) * -0.4
        out[i, 0] = np.clip((head + vent + rng.normal(0, 0.03, xx.shape)) * 255, 0, 255).astype(np.uint8)
    return out


def make_npz(path: Path, n_train: int = 32, n_heldout: int = 8) -> Path:
    n = n_train + n_heldout
    split = np.array(["train"] * n_train + ["heldout"] * n_heldout)
    subject = np.where(split == "train", "subj-A", "subj-B")
    ds = SliceDataset(phantom_slices(n), source=np.array([f"{s}.nii.gz" for s in subject]), subject=subject,
                      axis=np.full(n, 2, np.int8), index=np.arange(n, dtype=np.int32), split=split,
                      level=(np.arange(n) % 5).astype(np.int8),
                      meta={"dataset": "phantom", "size": 32, "axes": [2], "split": "subject",
                            "sources": [{"id": "subj-A.nii.gz", "subject": "subj-A", "licence": "CC0-1.0"},
                                        {"id": "subj-B.nii.gz", "subject": "subj-B", "licence": "CC0-1.0"}],
                            "counts": {"subjects": 2, "heldout": n_heldout}})
    return ds.save(path)


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    return make_npz(tmp_path_factory.mktemp("data") / "phantom.npz")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, npz) -> Path:
    """One short small-data run (adaptive augmentation, lazy R1 every 2 steps, EMA) exported to weights/."""
    root = tmp_path_factory.mktemp("train")
    rc = main(["--data", str(npz), *TINY, "--steps", "6", "--r1-every", "2", "--ada-target", "0.6",
               "--out", str(root / "run"), "--export", str(root / "weights" / "phantom-gan-32"),
               "--title", "Phantom GAN", "--modality", "MR", "--organ", "brain"])
    assert rc == 0
    return root / "weights" / "phantom-gan-32"


@pytest.mark.slow
def test_training_exports_a_loadable_model(exported):
    run = exported.parent.parent / "run"
    for name in ("model.safetensors", "config.json", "samples.png", "loss.png", "README.md"):
        assert (exported / name).is_file(), name
    config = json.loads((exported / "config.json").read_text())
    assert config["id"] == "phantom-gan-32" and config["plane"] == "axial" and config["license"] == "mit"
    assert config["training_data"]["licences"] == ["CC0-1.0"]
    assert config["training_data"]["train_slices"] == 32  # the held-out subject was not trained on
    t = config["training"]
    assert t["steps"] == 6 and t["recipe"] == "small-data" and t["ema"] is True
    assert t["command"].startswith("python -m training.train --data ") and "--steps 6" in t["command"]
    assert t["config"]["r1_every"] == 2 and t["hardware"]["threads"] == 1 and t["final_losses"]["loss_d"] > 0

    gen = Generator.from_folder(exported, device="cpu")
    images = gen.generate(4, seed=3, output_type="np")
    assert images.shape == (4, 32, 32) and images.dtype == np.uint8 and images.std() > 0
    loaded = medgan.load_model("phantom-gan-32", extra_folders=[exported.parent])
    assert np.array_equal(loaded.generate(4, seed=3, output_type="np"), images)

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6] and all(r["img_per_s"] > 0 for r in records)
    assert (run / "metrics.csv").read_text().splitlines()[0].startswith("step,kimg")
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["synthetic_step0000004.png"]
    from PIL import Image
    with Image.open(exported / "samples.png") as img:
        assert img.info.get("synthetic") == "true" and img.size == (8 * 34 + 2, 8 * 34 + 2)


def _checkpoint_tensors(path: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(path)[0]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["small-data", "dcgan", "style"])
def test_resume_is_bit_identical(tmp_path, npz, recipe):
    """N steps straight == N/2, stop, --resume, N/2 more: weights, optimiser and RNG states (each arch)."""
    arch = ["--arch", "style", "--condition", "level", "--w-dim", "16"] if recipe == "style" else []
    recipe = "small-data" if recipe == "style" else recipe
    common = ["--data", str(npz), *TINY, "--recipe", recipe, "--r1-every", "2", "--seed", "7", *arch]
    if recipe == "small-data":
        common += ["--ada-target", "0.6", "--ada-kimg", "0.05"]  # p moves a lot, and must resume exactly
    assert main([*common, "--steps", "8", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--steps", "4", "--out", str(tmp_path / "b")]) == 0
    assert main(["--resume", str(tmp_path / "b"), "--steps", "8"]) == 0

    a, b = _checkpoint_tensors(tmp_path / "a"), _checkpoint_tensors(tmp_path / "b")
    assert set(a) == set(b)
    groups = {"G.", "D.", "opt_g.state.", "opt_d.state.", "gen."} | ({"G_ema."} if recipe == "small-data" else set())
    for group in groups:
        assert any(k.startswith(group) for k in a), group
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert differing == []
    ma, mb = ckpt.load_checkpoint(tmp_path / "a")[1], ckpt.load_checkpoint(tmp_path / "b")[1]
    assert ma["step"] == mb["step"] == 8 and ma["ada"] == mb["ada"]
    wa, wb = (load_file(str(tmp_path / f"{r}/model/model.safetensors")) for r in "ab")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # exported weights too
    assert [r["step"] for r in map(json.loads, (tmp_path / "b/metrics.jsonl").read_text().splitlines())] == [2, 4, 6, 8]
    config = json.loads((tmp_path / "b/model/config.json").read_text())
    assert config["training"]["resumed_with"] == [f"python -m training.train --resume {tmp_path / 'b'} --steps 8"]
    # A different model (recipe option) cannot sneak in on resume.
    assert main(["--resume", str(tmp_path / "b"), "--steps", "10", "--r1", "5"]) == 2
    if recipe == "small-data":
        assert main(["--resume", str(tmp_path / "b"), "--steps", "10", "--ema", "0"]) == 2


@pytest.mark.slow
def test_resume_can_anneal_learning_rates_and_ema(tmp_path, npz):
    """An annealing phase: lower rates reach the optimisers (the saved state carries the old ones), a longer EMA
    is used, and the command that did it is recorded."""
    common = ["--data", str(npz), *TINY, "--steps", "4", "--seed", "3"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    before = ckpt.load_checkpoint(tmp_path / "a")[1]
    anneal = ["--resume", str(tmp_path / "a"), "--steps", "6", "--lr-g", "1e-5", "--lr-d", "2e-5", "--ema", "0.9999"]
    assert main(anneal) == 0
    meta = ckpt.load_checkpoint(tmp_path / "a")[1]
    assert [g["lr"] for g in meta["opt_g"]["param_groups"]] == [1e-5]
    assert [g["lr"] for g in meta["opt_d"]["param_groups"]] == [2e-5]
    assert before["opt_g"]["param_groups"][0]["lr"] != 1e-5
    config = json.loads((tmp_path / "a/model/config.json").read_text())
    assert config["training"]["config"]["ema"] == 0.9999 and config["training"]["config"]["lr_g"] == 1e-5
    assert config["training"]["resumed_with"] == ["python -m training.train " + " ".join(anneal)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_torchrun_two_processes_exports(tmp_path, npz):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training.train", "--data", str(npz), *TINY, "--steps", "4", "--out", str(out)]
    proc = run_process_group(cmd, _env(), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stdout = proc.stdout
    config = json.loads((out / "model/config.json").read_text())
    assert config["training"]["hardware"]["processes"] == 2
    assert config["training"]["command"].startswith("torchrun --nproc_per_node 2 -m training.train")
    tensors, meta = ckpt.load_checkpoint(out)
    assert meta["world"] == 2 and {"gen.noise.0", "gen.noise.1", "gen.aug.1"} <= set(tensors)
    # Ranks draw different latents (independent streams), yet end with one model.
    assert not torch.equal(tensors["gen.noise.0"], tensors["gen.noise.1"])
    assert Generator.from_folder(out / "model", device="cpu").generate(2, seed=0, output_type="np").shape == (2, 32, 32)
    assert stdout.count("exported 4 steps") == 1  # only rank 0 writes


@pytest.mark.slow
def test_card_round_trips_through_modelcard(exported, tmp_path):
    """The card of a freshly trained folder (wording is training/publish/card.py's business; facts are checked)."""
    text = render_card(exported)
    assert "model-index" not in text  # nothing measured yet, so no metrics claimed
    summary = card_summary(exported / "README.md")
    assert summary.startswith("`phantom-gan-32` is a DCGAN that generates synthetic 32×32") and "synthetic" in summary

    folder = tmp_path / "phantom-gan-32"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((exported / name).read_bytes())
    (folder / "eval.json").write_text(json.dumps({
        "fid": 41.5, "kid": {"mean": 0.031, "std": 0.004}, "precision": 0.62, "recall": 0.35,
        "ms_ssim_synthetic": 0.21, "ms_ssim_real": 0.25,
        "memorization": {"median_synthetic": 0.12, "fraction_closer": 0.0},
        "floor": {"fid": 9.8, "kid": 0.002, "precision": 0.9, "recall": 0.88}}))
    path = write_card(folder)
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["license"] == "mit" and data["library_name"] == "medgan"
    assert data["pipeline_tag"] == "unconditional-image-generation"
    assert {"medical-imaging", "gan", "synthetic-data", "mri", "brain"} <= set(data["tags"])
    assert "datasets" not in data  # ours are not Hub datasets
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert metrics == {"fid": 41.5, "kid": 0.031, "precision": 0.62, "recall": 0.35}
    body = card.text
    assert "41.5 | 9.8" in body and "0.031 ± 0.004" in body  # the model next to its real-vs-real floor
    for section in ("## Intended use", "## Out-of-scope use", "## Training data", "## Training procedure",
                    "## Evaluation", "## Limitations and biases", "## How to use", "samples.png"):
        assert section in body, section
    assert "CC0-1.0" in body and "python -m training.train --data" in body and "/generate" in body
    assert ModelCard.load(path).data.to_dict() == data  # stable round trip


def test_bad_input_exits_2_without_traceback(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "missing.npz"), *TINY, "--out", str(tmp_path / "r")]) == 2
    assert "dataset file not found" in capsys.readouterr().err
    empty = make_npz(tmp_path / "empty.npz", n_train=0, n_heldout=4)
    assert main(["--data", str(empty), *TINY, "--out", str(tmp_path / "r")]) == 2
    assert "no training images" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert main(["--data", str(tmp_path / "junk.npz"), *TINY, "--out", str(tmp_path / "r")]) == 2
    assert "cannot load dataset" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "nowhere")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["--dataset", "no-such-dataset", *TINY, "--out", str(tmp_path / "r")]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_training_reads_the_generator_defaults_from_medgan_config():
    """TrainConfig's generator sizes are medgan.config's; a style run caps widths at STYLE_TRAINING_MAX_WIDTH."""
    from medgan.config import STYLE_TRAINING_MAX_WIDTH, GeneratorConfig
    from training.gan.config import TrainConfig, make_config
    from training.gan.trainer import generator_config
    for name in ("latent_dim", "w_dim", "mapping_layers"):
        assert getattr(TrainConfig(), name) == getattr(GeneratorConfig(), name), name
    wide = generator_config(make_config({"arch": "style", "base_width": 64, "out": "x"}), 1, [])
    assert wide.max_width == STYLE_TRAINING_MAX_WIDTH < GeneratorConfig().max_width
    assert max(wide.widths) == STYLE_TRAINING_MAX_WIDTH


def test_diff_augment_is_differentiable_and_black_filled():
    gen = torch.Generator().manual_seed(0)
    x = torch.full((6, 1, 16, 16), 0.5, requires_grad=True)
    y = diff_augment(x, parse_policy("color,translation,cutout"), gen, p=1.0)
    y.sum().backward()
    assert y.shape == x.shape and x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(diff_augment(x, ["translation", "cutout"], gen, p=0.0), x)  # p=0: identity
    cut = cutout(torch.zeros(4, 1, 16, 16), gen)
    assert ((cut == -1).sum(dim=(1, 2, 3)) > 0).all() and ((cut == -1).sum(dim=(1, 2, 3)) <= 64).all()
    shifted = translation(torch.zeros(64, 1, 16, 16), gen)
    assert (shifted == -1).any() and set(shifted.unique().tolist()) <= {0.0, -1.0}
    with pytest.raises(ValueError, match="unknown augmentation"):
        parse_policy("color,rotate")


def test_adaptive_p_follows_the_overfitting_heuristic():
    ada = AdaptiveP(target=0.6, speed_kimg=1.0, interval=4)
    for step in range(1, 13):  # the trainer reports each step's sum(sign(D(real))) and count
        ada.observe(16.0, 16, step, batch_size=64)  # D sure every real is real: r_t = 1 > 0.6
    assert ada.rt == 1.0 and ada.p == pytest.approx(3 * 64 * 4 / 1000)  # adjusted at steps 4, 8, 12
    ada.update(batch_size=64, sign_sum=-64.0, count=64)  # all-reduced sums, as under DDP
    assert ada.p == pytest.approx(2 * 64 * 4 / 1000)


def test_checkpoint_rejects_foreign_and_keeps_optimizer_state(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    tensors, meta = ckpt.flatten_optimizer(opt.state_dict(), "opt")
    path = ckpt.save_checkpoint(tmp_path / "c.safetensors", tensors, {"opt": meta})
    back, bmeta = ckpt.load_checkpoint(path)
    restored = ckpt.unflatten_optimizer(back, bmeta["opt"], "opt")
    fresh = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=5.0)
    fresh.load_state_dict(restored)
    assert fresh.param_groups[0]["lr"] == 1e-3
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ckpt.CheckpointError, match="not a MedGAN training checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.safetensors")
