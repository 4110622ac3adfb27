"""Generator: determinism, prefix property, shapes, BN folding, and every loading error path."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from medgan import ConfigError, Generator, InvalidArgumentError, ModelConfig, WeightsError
from medgan.config import GeneratorConfig
from medgan.generator import latents
from medgan.nets import DCGANGenerator, generator_flops


def test_same_seed_same_pixels_and_other_seed_differs(tiny_model):
    a = Generator.from_folder(tiny_model).generate(8, seed=7, output_type="np")
    b = Generator.from_folder(tiny_model).generate(8, seed=7, output_type="np")
    c = Generator.from_folder(tiny_model).generate(8, seed=8, output_type="np")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_prefix_property_and_start_offset(tiny_model):
    gen = Generator.from_folder(tiny_model)
    many = gen.generate(100, seed=3, output_type="np")  # spans two forward chunks (batch 64)
    assert np.array_equal(gen.generate(4, seed=3, output_type="np"), many[:4])
    assert np.array_equal(gen.generate(10, seed=3, start=70, output_type="np"), many[70:80])


def test_images_differ_within_a_batch(tiny_model):
    arrays = Generator.from_folder(tiny_model).generate(4, seed=0, output_type="np")
    assert len({a.tobytes() for a in arrays}) == 4


def test_shapes_dtype_range_and_pil(tiny_model):
    gen = Generator.from_folder(tiny_model)
    arrays = gen.generate(5, seed=1, output_type="np")
    assert arrays.shape == (5, 32, 32) and arrays.dtype == np.uint8
    assert arrays.min() >= 0 and arrays.max() <= 255 and arrays.std() > 0
    images = gen.generate(5, seed=1)
    assert len(images) == 5 and all(isinstance(i, Image.Image) and i.mode == "L" and i.size == (32, 32)
                                    for i in images)
    assert np.array_equal(np.asarray(images[2]), arrays[2])
    floats = gen.generate(2, seed=1, output_type="pt")
    assert floats.shape == (2, 1, 32, 32) and floats.min() >= -1 and floats.max() <= 1


def test_folded_batchnorm_matches_reference_module(tiny_model):
    fast = Generator.from_folder(tiny_model, optimize=True)
    slow = Generator.from_folder(tiny_model, optimize=False)
    a = fast.generate(32, seed=5, output_type="pt")
    b = slow.generate(32, seed=5, output_type="pt")
    assert torch.allclose(a, b, atol=1e-4)
    diff = np.abs(fast.generate(32, 5, output_type="np").astype(int) - slow.generate(32, 5, output_type="np"))
    assert diff.max() <= 1  # stated tolerance: at most one grey level, from float rounding at .5 boundaries


def test_latents_are_per_index_streams():
    z = latents(11, 5, 100)
    assert z.shape == (5, 100) and z.dtype == np.float32
    assert np.array_equal(latents(11, 2, 100, start=3), z[3:5])
    assert abs(float(z.std()) - 1) < 0.2


@pytest.mark.parametrize("count", [0, -1, 10**9, 2.5, "x", None, True, float("nan")])
def test_bad_count_is_refused(tiny_model, count):
    with pytest.raises(InvalidArgumentError, match="count"):
        Generator.from_folder(tiny_model).generate(count, seed=0)


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, float("nan"), float("inf"), "abc", None, [1]])
def test_bad_seed_is_refused(tiny_model, seed):
    with pytest.raises(InvalidArgumentError, match="seed"):
        Generator.from_folder(tiny_model).generate(1, seed=seed)


def test_integral_float_and_max_seed_are_accepted(tiny_model):
    gen = Generator.from_folder(tiny_model)
    assert np.array_equal(gen.generate(1, 5.0, output_type="np"), gen.generate(1, 5, output_type="np"))
    assert gen.generate(1, 2**63 - 1, output_type="np").shape == (1, 32, 32)


def test_missing_weights(tiny_model):
    (tiny_model / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="tiny-test.*model.safetensors is missing"):
        Generator.from_folder(tiny_model)


def test_pickle_weights_are_refused_not_opened(tiny_model):
    (tiny_model / "model.safetensors").unlink()
    marker = tiny_model / "pwned"
    # A pickle that would create a file if it were ever unpickled.
    payload = (b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    (tiny_model / "pytorch_model.bin").write_bytes(payload)
    with pytest.raises(WeightsError, match="not safetensors.*pytorch_model.bin"):
        Generator.from_folder(tiny_model)
    assert not marker.exists()


def test_corrupt_weights(tiny_model):
    path = tiny_model / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(WeightsError, match="tiny-test.*corrupt"):
        Generator.from_folder(tiny_model)


def test_weights_that_disagree_with_config(tiny_model):
    other = DCGANGenerator(GeneratorConfig(resolution=32, base_width=16))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tiny_model / "model.safetensors"))
    with pytest.raises(WeightsError, match="tiny-test.*do not match config.json"):
        Generator.from_folder(tiny_model)


def test_missing_and_invalid_config(tiny_model):
    (tiny_model / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        Generator.from_folder(tiny_model)
    (tiny_model / "config.json").write_text(json.dumps({"id": "x", "generator": {"resolution": 48}}))
    with pytest.raises(ConfigError, match="resolution"):
        Generator.from_folder(tiny_model)
    (tiny_model / "config.json").unlink()
    with pytest.raises(ConfigError, match="missing"):
        Generator.from_folder(tiny_model)


def test_config_round_trip_keeps_unknown_keys(tmp_path):
    cfg = ModelConfig.from_dict({"id": "m", "modality": "CT", "generator": {"resolution": 128}, "future": 1})
    cfg.save(tmp_path)
    again = ModelConfig.load(tmp_path)
    assert again == cfg and again.extra == {"future": 1}
    assert again.generator.widths == [512, 512, 256, 128, 64]
    assert json.loads((tmp_path / "config.json").read_text())["future"] == 1


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_resolutions_build_and_flops(resolution):
    cfg = GeneratorConfig(resolution=resolution, base_width=8)
    out = DCGANGenerator(cfg).eval()(torch.randn(2, cfg.latent_dim))
    assert out.shape == (2, 1, resolution, resolution)
    assert generator_flops(GeneratorConfig()) == pytest.approx(0.205e9, rel=0.01)  # the classic 64² DCGAN
