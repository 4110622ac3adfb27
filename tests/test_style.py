"""The style-based, class-conditional generator (generator.arch = "style"): loading, sampling controls,
exact inference layout, round trips (folder, Hub cache, medigan package), and labels that are honoured."""
from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import medgan
from helpers import ROOT, SHIPPED_DCGAN, SHIPPED_DCGANS, build_hf_cache, make_style_folder
from medgan.config import GeneratorConfig, ModelConfig
from medgan.errors import ConfigError, InvalidArgumentError
from medgan.generator import Generator
from medgan.registry import Registry
from medgan.sources.hub import HubSource
from medgan.stylefast import FastStyle
from medgan.stylenet import StyleGenerator, style_param_count
from training.gan.cli import main

CLASSES = ["dark", "bright"]


def style_config(classes=CLASSES) -> ModelConfig:
    return ModelConfig.load(make_style_folder(Path(tempfile.mkdtemp()), classes=tuple(classes)))


def random_style_net(config: ModelConfig) -> StyleGenerator:
    folder = make_style_folder(Path(tempfile.mkdtemp()), classes=tuple(config.generator.classes))
    return Generator.from_folder(folder, device="cpu").reference_net


@pytest.fixture(scope="module")
def style_folder(tmp_path_factory) -> Path:
    return make_style_folder(tmp_path_factory.mktemp("style"))


def test_param_count_matches_the_module_and_config_round_trips():
    for classes in ([], CLASSES):
        config = style_config(classes)
        net = StyleGenerator(config.generator)
        assert style_param_count(config.generator) == sum(p.numel() for p in net.parameters())
        again = ModelConfig.from_dict(json.loads(config.to_json()))
        assert again.generator == config.generator and again.generator.num_blocks == 4  # 4², 8², 16², 32²


def test_old_config_without_arch_loads_as_dcgan(tmp_path):
    """Folders written before generator.arch existed (a shipped DCGAN's config with the key removed)."""
    for name in SHIPPED_DCGANS:
        folder = tmp_path / name
        folder.mkdir()
        config = json.loads((ROOT / "weights" / name / "config.json").read_text())
        config["generator"].pop("arch", None)
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "model.safetensors").write_bytes((ROOT / "weights" / name / "model.safetensors").read_bytes())
        gen = Generator.from_folder(folder, device="cpu")
        assert gen.arch == "dcgan" and gen.classes == []
    with pytest.raises(ConfigError, match="arch"):
        GeneratorConfig(arch="vae")
    with pytest.raises(ConfigError, match="unconditional"):
        GeneratorConfig(classes=["a"])


def test_fast_layout_matches_the_reference_module():
    config = style_config()
    net = random_style_net(config)
    fast = FastStyle(net)
    z, labels = torch.randn(8, 16), torch.tensor([0, 1] * 4)
    with torch.no_grad():
        for psi in (1.0, 0.6):
            assert torch.allclose(net(z, labels, psi), fast(z, labels, psi), atol=1e-4)
        ws = net.mapping(z, labels).unsqueeze(1).repeat(1, net.num_ws, 1)
        ws[:, 2:] = net.mapping(torch.randn(8, 16), labels).unsqueeze(1)  # mixed styles take the other path
        assert torch.allclose(net.synthesis(ws), fast.synthesis(ws), atol=1e-4)


def test_determinism_prefix_truncation_and_labels(style_folder):
    gen = Generator.from_folder(style_folder, device="cpu")
    assert gen.classes == CLASSES
    for kwargs in ({}, {"truncation": 0.7}, {"label": "bright"}, {"truncation": 0.5, "label": 0}):
        full = gen.generate(20, seed=11, output_type="np", **kwargs)
        assert np.array_equal(full[:5], gen.generate(5, seed=11, output_type="np", **kwargs))
        assert np.array_equal(full[13:17], gen.generate(4, seed=11, start=13, output_type="np", **kwargs))
    assert not np.array_equal(gen.generate(4, 11, output_type="np"), gen.generate(4, 11, truncation=0.3, output_type="np"))
    # label=None draws a class per image from (seed, i): recorded, reproducible, both classes occur
    drawn = gen.labels(64, seed=3)
    assert set(drawn.tolist()) == {0, 1} and np.array_equal(drawn[10:20], gen.labels(10, seed=3, start=10))
    fixed = gen.generate(64, 3, label=1, output_type="np")
    free = gen.generate(64, 3, output_type="np")
    ones = drawn == 1
    assert np.array_equal(free[ones], fixed[ones]) and not np.array_equal(free[~ones], fixed[~ones])
    # truncation 0 gives the class's mean image, whatever the seed
    assert np.array_equal(gen.generate(1, 1, truncation=0, label=0, output_type="np"),
                          gen.generate(1, 2, truncation=0, label=0, output_type="np"))


@pytest.mark.parametrize("kwargs, match", [
    ({"truncation": float("nan")}, "truncation"), ({"truncation": -0.1}, "truncation"),
    ({"truncation": 2.5}, "truncation"), ({"truncation": "abc"}, "truncation"),
    ({"label": "grey"}, "unknown class 'grey'"), ({"label": 5}, "unknown class"),
])
def test_bad_controls_are_refused_by_name(style_folder, kwargs, match):
    gen = Generator.from_folder(style_folder, device="cpu")
    with pytest.raises(InvalidArgumentError, match=match):
        gen.generate(1, 0, **kwargs)


def test_dcgan_truncation_scales_z_and_labels_are_refused():
    gen = medgan.load_model(SHIPPED_DCGAN)
    assert np.array_equal(gen.generate(3, 5, truncation=1.0, output_type="np"), gen.generate(3, 5, output_type="np"))
    assert not np.array_equal(gen.generate(3, 5, truncation=0.5, output_type="np"), gen.generate(3, 5, output_type="np"))
    with pytest.raises(InvalidArgumentError, match="unconditional"):
        gen.generate(1, 0, label="superior")


def test_interpolation_ends_and_mixing_grid(style_folder):
    gen = Generator.from_folder(style_folder, device="cpu")
    frames, meta = gen.interpolate(4, 9, 7, index_a=2, truncation=0.8, output_type="np", return_meta=True)
    assert frames.shape == (7, 32, 32) and meta["t"][0] == 0 and meta["t"][-1] == 1
    assert np.array_equal(frames[0], gen.generate(3, 4, truncation=0.8, output_type="np")[2])
    assert np.array_equal(frames[-1], gen.generate(1, 9, truncation=0.8, output_type="np")[0])
    assert np.array_equal(frames, gen.interpolate(4, 9, 7, index_a=2, truncation=0.8, output_type="np"))
    grid, meta = gen.mix([1, 2, 3], [4, 5], crossover=2, output_type="np", return_meta=True)
    assert grid.shape == (3, 2, 32, 32) and meta["crossover"] == 2
    # Crossover at the last layer: cells are the row seed's image but for the finest layer's styles,
    # so each cell is closer to its row source than to its column source.
    rows = gen.generate(1, 1, output_type="np")[0].astype(int)
    late = gen.mix([1], [4], crossover=3, output_type="np")[0, 0].astype(int)
    cols = gen.generate(1, 4, output_type="np")[0].astype(int)
    assert np.abs(late - rows).mean() < np.abs(late - cols).mean()
    for bad, match in (({"crossover": 0}, "crossover"), ({"crossover": 4}, "crossover")):
        with pytest.raises(InvalidArgumentError, match=match):
            gen.mix([1], [2], **bad)
    with pytest.raises(InvalidArgumentError, match="row_seeds"):
        gen.mix("1, x", [2])
    with pytest.raises(InvalidArgumentError, match="frames"):
        gen.interpolate(1, 2, 10**6)
    dcgan = medgan.load_model(SHIPPED_DCGAN)
    with pytest.raises(InvalidArgumentError, match=f"{SHIPPED_DCGAN}.*DCGAN"):
        dcgan.mix([1], [2])
    dc_frames = dcgan.interpolate(1, 2, 4, output_type="np")
    assert np.array_equal(dc_frames[0], dcgan.generate(1, 1, output_type="np")[0])


def test_round_trip_through_hub_cache(tmp_path, style_folder):
    from medgan.sources.hub import sha256_file
    files = {name: (style_folder / name).read_bytes() for name in ("config.json", "model.safetensors", "README.md")}
    commit = build_hf_cache(tmp_path / "hf", "medgan-test/style", files)
    catalogue = tmp_path / "hub.json"
    catalogue.write_text(json.dumps({"models": [{"id": "hub-style", "repo_id": "medgan-test/style", "revision": commit,
                                                 "sha256": {"model.safetensors": sha256_file(style_folder / "model.safetensors")}}]}))
    gen = Registry([HubSource([catalogue], cache_dir=tmp_path / "hf")]).load("hub-style")
    local = Generator.from_folder(style_folder, device="cpu")
    assert gen.classes == CLASSES
    assert np.array_equal(gen.generate(9, 5, label="dark", output_type="np"), local.generate(9, 5, label="dark", output_type="np"))


def test_round_trip_through_a_medigan_package(tmp_path, style_folder):
    from training.publish.export_medigan import export
    mid, entry, zip_path = export(style_folder, tmp_path / "out")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path / "pkg")
    spec = importlib.util.spec_from_file_location(mid, tmp_path / "pkg" / mid / "__init__.py",
                                                  submodule_search_locations=[str(tmp_path / "pkg" / mid)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[mid] = module
    try:
        spec.loader.exec_module(module)
        assert module.Generator.__module__ == f"{mid}._medgan.generator"  # its own copy, not our medgan
        got = module.sample(tmp_path / "pkg" / mid / "model.safetensors", 12, seed=3, truncation=0.7, label="bright")
    finally:
        for name in [n for n in sys.modules if n == mid or n.startswith(mid + ".")]:
            del sys.modules[name]
    want = Generator.from_folder(style_folder, device="cpu").generate(12, 3, truncation=0.7, label="bright",
                                                                      output_type="np")
    assert np.array_equal(got, want)


def _two_class_npz(path: Path, n: int = 48, size: int = 32) -> Path:
    """Class 0: dark discs, class 1: bright discs, otherwise alike (trivially different classes)."""
    from training.data import SliceDataset
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    disc = (xx ** 2 + yy ** 2 < 0.6).astype(np.float32)
    level = (np.arange(n) % 2).astype(np.int8)
    rng = np.random.default_rng(0)
    images = np.stack([np.clip((disc * (60 if c == 0 else 230) + rng.normal(0, 4, disc.shape)), 0, 255)
                       for c in level]).astype(np.uint8)[:, None]
    split = np.array(["train"] * n)
    return SliceDataset(images, np.array(["a"] * n), np.array(["a"] * n), np.full(n, 2, np.int8),
                        np.arange(n, dtype=np.int32), split, meta={"dataset": "two-class", "size": size},
                        level=level).save(path)


@pytest.mark.slow
def test_a_model_trained_on_two_trivial_classes_produces_them(tmp_path):
    npz = _two_class_npz(tmp_path / "two.npz")
    rc = main(["--data", str(npz), "--arch", "style", "--condition", "level", "--size", "32", "--batch-size", "16",
               "--base-width", "4", "--d-width", "8", "--w-dim", "32", "--latent-dim", "16", "--steps", "300",
               "--threads", "1", "--log-every", "50", "--sample-every", "1000", "--ckpt-every", "1000",
               "--augment-policy", "translation", "--out", str(tmp_path / "run"), "--model-id", "two-class"])
    assert rc == 0
    gen = Generator.from_folder(tmp_path / "run" / "model", device="cpu")
    names = gen.classes
    assert len(names) == 5  # level names; only bands 0 and 1 occur in this data
    dark = gen.generate(32, 0, label=0, output_type="np").astype(float)
    bright = gen.generate(32, 0, label=1, output_type="np").astype(float)
    centre = (slice(None), slice(12, 20), slice(12, 20))
    assert bright[centre].mean() > dark[centre].mean() + 40, (dark[centre].mean(), bright[centre].mean())


def test_warm_start_grows_a_model_and_records_its_cpu_time(tmp_path):
    """--init-from: a 32² model grows to 64² (shared widths): before any step the grown generator draws the
    source's images up-sampled, and the export adds the source's CPU time to its own."""
    from training.gan.config import make_config
    from training.gan.trainer import Trainer
    from medgan.stylenet import upsample
    npz = _two_class_npz(tmp_path / "two.npz", n=8, size=64)
    common = ["--data", str(npz), "--arch", "style", "--condition", "level", "--batch-size", "8", "--d-width", "8",
              "--w-dim", "32", "--latent-dim", "16", "--threads", "1", "--sample-every", "1000", "--ckpt-every", "1000"]
    assert main([*common, "--size", "32", "--base-width", "4", "--steps", "2", "--out", str(tmp_path / "small")]) == 0
    source = Generator.from_folder(tmp_path / "small" / "model", device="cpu")
    cfg = make_config({"arch": "style", "size": 64, "base_width": 2, "d_width": 8, "w_dim": 32, "latent_dim": 16,
                       "condition": "level", "out": str(tmp_path / "grown")})
    images = np.zeros((4, 1, 64, 64), np.float32)
    trainer = Trainer(cfg, images, labels=np.zeros(4), classes=source.classes)
    info = trainer.warm_start(tmp_path / "small" / "model")
    assert info["new"] and all(k.startswith(("layers.4.", "to_image.4.")) for k in info["new"]), info["new"]
    z, labels = torch.randn(6, 16), torch.tensor([0, 1, 0, 1, 2, 3])
    with torch.no_grad():
        grown = trainer.G_ema(z, labels)
        small = source.reference_net(z, labels)
    assert torch.allclose(grown, upsample(small), atol=1e-5)
    with pytest.raises(Exception, match="does not match"):
        Trainer(make_config({"arch": "style", "size": 64, "out": str(tmp_path / "x")}), images).warm_start(
            tmp_path / "small" / "model")
    rc = main([*common, "--size", "64", "--base-width", "2", "--steps", "1", "--init-from",
               str(tmp_path / "small" / "model"), "--out", str(tmp_path / "grown")])
    assert rc == 0
    training = json.loads((tmp_path / "grown" / "model" / "config.json").read_text())["training"]
    prior = source.config.training["cpu_time_s"]
    assert training["init_from"]["model"] == source.id and training["init_from"]["cpu_time_s"] == prior
    assert training["cpu_time_total_s"] == pytest.approx(prior + training["cpu_time_s"], abs=0.2)
    card = (tmp_path / "grown" / "model" / "README.md").read_text()
    assert f"| `{source.id}` at 32² (its whole lineage) |" in card and "grown from 32²" in card


def test_a_fresh_discriminator_behind_strong_augmentation_gets_a_note(tmp_path, capsys):
    """--init-from without the source's discriminator, behind fixed p=1 augmentation, prints a note pointing at ADA
    and the card says the discriminator started fresh; with ADA there is no note. Removed options are refused."""
    npz = _two_class_npz(tmp_path / "two.npz", n=8, size=32)
    common = ["--data", str(npz), "--arch", "style", "--condition", "level", "--batch-size", "8", "--d-width", "8",
              "--w-dim", "32", "--latent-dim", "16", "--threads", "1", "--sample-every", "1000", "--ckpt-every", "1",
              "--size", "32", "--base-width", "4"]
    assert main([*common, "--steps", "2", "--out", str(tmp_path / "src")]) == 0
    (tmp_path / "src" / "model" / "discriminator.safetensors").unlink()
    assert main([*common, "--steps", "1", "--init-from", str(tmp_path / "src" / "model"),
                 "--out", str(tmp_path / "warm")]) == 0
    assert "may never leave chance" in capsys.readouterr().out
    assert "the discriminator started fresh" in (tmp_path / "warm" / "model" / "README.md").read_text()
    assert main([*common, "--steps", "1", "--ada-target", "0.6", "--init-from", str(tmp_path / "src" / "model"),
                 "--out", str(tmp_path / "ada")]) == 0
    assert "may never leave chance" not in capsys.readouterr().out
    for removed in ("--d-warmup", "--train-new-only", "--balance-up"):
        with pytest.raises(SystemExit):
            main([*common, removed, "1", "--out", str(tmp_path / "bad")])
        assert "unrecognized arguments" in capsys.readouterr().err


def test_warm_start_continues_with_the_exported_discriminator(tmp_path, capsys):
    """An export carries its discriminator; --init-from continues with it when it fits (so a model can be
    trained on after its run folder is gone), and starts D fresh when it does not."""
    from training.gan.discriminator import DISCRIMINATOR_FILE
    from training.gan.config import make_config
    from training.gan.trainer import Trainer
    npz = _two_class_npz(tmp_path / "two.npz", n=8, size=32)
    common = ["--data", str(npz), "--arch", "style", "--condition", "level", "--batch-size", "8", "--threads", "1",
              "--w-dim", "32", "--latent-dim", "16", "--sample-every", "1000", "--ckpt-every", "1000", "--size", "32",
              "--base-width", "4"]
    assert main([*common, "--d-width", "8", "--steps", "3", "--out", str(tmp_path / "src")]) == 0
    source = tmp_path / "src" / "model"
    assert (source / DISCRIMINATOR_FILE).is_file()
    from training.gan import checkpoint as ckpt
    run_d = ckpt.subdict(ckpt.load_checkpoint(tmp_path / "src")[0], "D")
    images, classes = np.zeros((4, 1, 32, 32), np.float32), Generator.from_folder(source, device="cpu").classes

    def warm(d_width: int) -> tuple[dict, Trainer]:
        cfg = make_config({"arch": "style", "size": 32, "base_width": 4, "d_width": d_width, "w_dim": 32,
                           "latent_dim": 16, "condition": "level", "out": str(tmp_path / "w")})
        trainer = Trainer(cfg, images, labels=np.zeros(4), classes=classes)
        return trainer.warm_start(source), trainer

    info, trainer = warm(8)
    assert info["discriminator"] == "restored (step 3)"
    assert all(torch.equal(v, run_d[k]) for k, v in trainer.D.state_dict().items())
    info, trainer = warm(4)
    assert info["discriminator"].startswith("fresh: the saved discriminator's tensors do not fit")
    assert main([*common, "--d-width", "8", "--steps", "1", "--init-from", str(source),
                 "--out", str(tmp_path / "cont")]) == 0
    assert "discriminator restored (step 3)" in capsys.readouterr().out
    card = (tmp_path / "cont" / "model" / "README.md").read_text()
    assert "the discriminator continued from the source's exported discriminator" in card
    assert main([*common, "--resume", str(source / DISCRIMINATOR_FILE)]) != 0
    assert "holds only an exported discriminator" in capsys.readouterr().err
    (source / DISCRIMINATOR_FILE).unlink()
    assert warm(8)[0]["discriminator"] == f"fresh: the source has no {DISCRIMINATOR_FILE}"


def test_balanced_classes_and_a_warm_start_across_class_sets(tmp_path, capsys):
    """--balance-classes draws a rare class as often as a common one; --init-from a model with other classes
    copies everything but the class tensors (which start new) and records the source's classes."""
    from training.gan.config import make_config
    from training.gan.trainer import Trainer
    npz = _two_class_npz(tmp_path / "two.npz", n=8, size=32)
    assert main(["--data", str(npz), "--arch", "style", "--condition", "level", "--size", "32", "--batch-size", "8",
                 "--base-width", "4", "--d-width", "8", "--w-dim", "32", "--latent-dim", "16", "--steps", "1",
                 "--threads", "1", "--out", str(tmp_path / "src")]) == 0
    labels = np.array([0] * 30 + [1] * 2)
    images = np.zeros((32, 1, 32, 32), np.uint8)
    cfg = make_config({"arch": "style", "size": 32, "base_width": 4, "d_width": 8, "w_dim": 32, "latent_dim": 16,
                       "condition": "contrast", "balance_classes": True, "out": str(tmp_path / "mr")})
    trainer = Trainer(cfg, images, labels=labels, classes=["T1", "PD"])
    drawn = labels[trainer.stream.take(4000).numpy()]
    assert 0.45 < drawn.mean() < 0.55, drawn.mean()
    plain = Trainer(make_config({**vars(cfg), "balance_classes": False}), images, labels=labels, classes=["T1", "PD"])
    assert labels[plain.stream.take(3200).numpy()].mean() == pytest.approx(2 / 32)
    info = trainer.warm_start(tmp_path / "src" / "model")
    assert info["classes"] == Generator.from_folder(tmp_path / "src" / "model", device="cpu").classes
    assert info["new"] and all("embed" in k or "w_avg" in k for k in info["new"]), info["new"]
    assert main(["--data", str(npz), "--arch", "style", "--balance-classes", "--out", str(tmp_path / "bad")]) == 2
    assert "--balance-classes needs --condition" in capsys.readouterr().err
