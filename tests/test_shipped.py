"""The shipped models are what their files say: each draws at the resolution it is listed with (not an up-sampled
smaller model), and config.json's metrics are the numbers of eval.json and downstream.json beside it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import ROOT, SHIPPED
from medgan.config import ModelConfig
from medgan.generator import Generator
from training.evaluation.downstream.report import config_summary
from training.evaluation.evaluate import config_metrics

# Share of an image's spectral power (mean removed) at frequencies a grid of half its side cannot hold. Real brain
# T1 slices: 0.019 at 64², 0.005-0.007 at 128²; the shipped 64² models: 0.024-0.079; their images bilinearly
# up-sampled to 128² (what a 64² model grown to 128² without training its new layer draws): 0.0006-0.0025.
MIN_UPPER_BAND = 0.003


def upper_band_share(images: np.ndarray) -> float:
    x = images.astype(np.float64)
    power = np.abs(np.fft.fft2(x - x.mean(axis=(1, 2), keepdims=True))) ** 2
    f = np.abs(np.fft.fftfreq(x.shape[-1]))
    upper = (f[:, None] > 0.25) | (f[None, :] > 0.25)
    return float(power[:, upper].sum() / power.sum())


@pytest.mark.parametrize("model_id", SHIPPED)
def test_every_shipped_model_draws_at_its_listed_resolution(model_id):
    """Its images hold detail a half-size grid cannot; the same images up-sampled 2x would not pass."""
    gen = Generator.from_folder(ROOT / "weights" / model_id, device="cpu")
    images = gen.generate(16, seed=0, output_type="np")
    assert images.shape[1:] == (gen.config.resolution,) * 2
    assert upper_band_share(images) >= MIN_UPPER_BAND, f"{model_id} draws no detail beyond half its resolution"
    up_sampled = F.interpolate(torch.from_numpy(images).float()[:, None], scale_factor=2, mode="bilinear")
    assert upper_band_share(up_sampled[:, 0].numpy()) < MIN_UPPER_BAND


@pytest.mark.parametrize("model_id", SHIPPED)
def test_config_metrics_are_the_numbers_of_the_records_beside_them(model_id):
    folder = ROOT / "weights" / model_id
    metrics = ModelConfig.load(folder).metrics
    evaluation = json.loads((folder / "eval.json").read_text())
    expected = config_metrics(evaluation, evaluation["setup"]["command"])
    for key in ("fid", "kid", "precision", "recall", "ms_ssim_synthetic", "memorization_median_synthetic",
                "memorization_fraction_closer_than_heldout_p5", "floor", "n_synthetic", "dataset"):
        assert metrics[key] == expected[key], key
    if (folder / "downstream.json").is_file():
        assert metrics["downstream"] == config_summary(json.loads((folder / "downstream.json").read_text()))
