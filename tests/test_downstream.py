"""Downstream usefulness (training/evaluation/downstream/): a --quick study on a tiny conditional model and a tiny labelled
dataset (every regime, distinct seeds, t-intervals, schema), the leakage stop (exit 2), the card section, and an
unconditional model whose images are labelled by the real-data classifier. Tiny sizes, one thread; the tests
that train (a --quick study each, a few seconds) are marked slow."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from helpers import ROOT, make_model_folder, make_style_folder
from medgan.config import ModelConfig
from training.evaluation.downstream.card_section import card_section
from training.evaluation.downstream.classifiers import apply_init, batch_sampler, make_classifier, read_init
from training.evaluation.downstream.cli import main
from training.evaluation.downstream.design import DownstreamError, LeakageError, REGIMES
from training.evaluation.downstream.schema import SCHEMA, validate
from training.evaluation.downstream.stats import scores, summarize, verdict
from training.evaluation.downstream.task import leakage_check, load_task
from training.publish.card import render_card
from training.data import LEVEL_NAMES, SliceDataset

SIZE = 32
QUICK = ["--quick", "--steps", "6", "--batch-size", "16", "--threads", "1", "--quiet"]


def level_slices(levels: np.ndarray, seed: int) -> np.ndarray:
    """A disc whose radius and brightness grow with the level, plus noise: learnable, not trivial."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:SIZE * 1j, -1:1:SIZE * 1j]
    out = np.zeros((len(levels), 1, SIZE, SIZE), np.uint8)
    for i, lv in enumerate(levels.astype(int)):
        r = 0.3 + 0.12 * lv + rng.uniform(-0.04, 0.04)
        disc = (xx ** 2 + yy ** 2 < r ** 2) * (90 + 25 * lv)
        out[i, 0] = np.clip(disc + rng.normal(0, 8, xx.shape), 0, 255).astype(np.uint8)
    return out


def make_level_npz(path: Path, split: str = "subject") -> Path:
    """Subjects A and B for training, C held out; 15 slices each, 3 per level band."""
    subjects = ["subj-A"] * 15 + ["subj-B"] * 15 + ["subj-C"] * 15
    level = np.tile(np.arange(5), 9).astype(np.int8)
    split_arr = np.array(["train"] * 30 + ["heldout"] * 15)
    ds = SliceDataset(level_slices(level, 0), source=np.array([f"{s}.nii.gz" for s in subjects]),
                      subject=np.array(subjects), axis=np.full(45, 2, np.int8), index=np.arange(45, dtype=np.int32),
                      split=split_arr, level=level,
                      meta={"dataset": "tiny-levels", "size": SIZE, "axes": [2], "split": split,
                            "sources": [{"id": f"{s}.nii.gz", "subject": s, "licence": "CC0-1.0"}
                                        for s in ("subj-A", "subj-B", "subj-C")]})
    return ds.save(path)


def set_training_data(folder: Path, subjects: list[str]) -> Path:
    config = ModelConfig.load(folder)
    config.training_data = {"name": "tiny-levels", "axes": [2], "split": "subject",
                            "sources": [{"id": f"{s}.nii.gz", "subject": s, "slices": 15} for s in subjects]}
    config.save(folder)
    return folder


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    return make_level_npz(tmp_path_factory.mktemp("data") / "levels.npz")


@pytest.fixture(scope="module")
def conditional_study(tmp_path_factory, npz):
    root = tmp_path_factory.mktemp("cond")
    folder = make_style_folder(root / "weights", "style-levels", classes=tuple(LEVEL_NAMES[2]), resolution=SIZE)
    set_training_data(folder, ["subj-A", "subj-B"])
    rc = main([str(folder), "--task", "level", "--data", str(npz), "--out", str(root / "out"), *QUICK])
    assert rc == 0
    return folder, root / "out"


@pytest.mark.slow  # trains classifiers (a --quick study)
def test_quick_study_has_every_regime_distinct_seeds_cis_and_a_valid_schema(conditional_study):
    folder, out = conditional_study
    report = json.loads((out / "downstream.json").read_text())
    assert validate(report) == []
    Draft202012Validator.check_schema(SCHEMA)  # the schema itself is valid JSON Schema 2020-12

    assert report["model"]["conditional"] and report["synthetic"]["labels_from"] == "generator"
    assert report["leakage_check"]["status"] == "passed" and report["leakage_check"]["overlap"] == []
    assert report["data"]["test"]["subjects"] == ["subj-C"] and report["data"]["train"]["slices"] == 30
    assert report["settings"]["classifiers"] == ["cnn"] and report["settings"]["quick"] is True
    results = report["results"]["cnn"]
    assert set(results) == {r["id"] for r in REGIMES}  # TRTR, TSTR, 1:1, 1:4, 10/25 % ± synthetic, pre-train
    for rid, res in results.items():
        runs = res["runs"]
        assert len({r["seed"] for r in runs}) == 3, rid
        syn = [r["synthetic_seed"] for r in runs]
        assert (len(set(syn)) == 3) if runs[0]["n_synthetic"] else syn == [None] * 3, rid
        s = res["summary"]["balanced_accuracy"]
        assert s["n"] == 3 and s["ci95"][0] <= s["mean"] <= s["ci95"][1], rid
        assert np.isclose(s["mean"], np.mean([r["balanced_accuracy"] for r in runs]), atol=1e-5)
        assert np.array(res["confusion_total"]).sum() == 3 * 15
    n_real = {rid: results[rid]["runs"][0]["n_real"] for rid in results}
    n_syn = {rid: results[rid]["runs"][0]["n_synthetic"] for rid in results}
    assert n_real["trtr"] == 30 and n_syn["trtr"] == 0 and n_real["tstr"] == 0 and n_syn["tstr"] == 30
    assert n_syn["mix_1_1"] == 30 and n_syn["mix_1_4"] == 120 and n_real["low10_real"] == 5
    assert n_real["low25_real"] == 10 and n_syn["low10_mix"] == 30 and n_syn["pretrain_finetune"] == 120
    # different synthetic images per seed, in the real training split's class proportions
    pools = report["synthetic"]["seeds"]
    assert len({p["sha256"] for p in pools}) == 3
    assert all(p["label_counts"]["cnn"] == [4 * 6] * 5 for p in pools)
    assert set(report["deltas"]["cnn"]) >= {"tstr_vs_trtr", "low10_gain", "low25_gain", "mix_1_1_vs_trtr"}
    assert set(report["medigan"]["cnn"]) == {"trained_on_real", "trained_on_fake", "trained_on_real_and_fake",
                                              "CLF_delta"}
    assert report["timing"]["cpu_time_s"] > 0 and report["command"].startswith("python -m training.downstream ")
    assert any("QUICK" in n for n in report["notes"])
    assert (out / "downstream.png").stat().st_size > 1000
    # also written into the model folder, with a summary in config.json
    assert json.loads((folder / "downstream.json").read_text())["results"] == report["results"]
    summary = ModelConfig.load(folder).metrics["downstream"]
    assert summary["by_classifier"]["cnn"]["tstr"] == results["tstr"]["summary"]["balanced_accuracy"]["mean"]


@pytest.mark.slow  # trains classifiers (a --quick study)
def test_schema_rejects_a_broken_report(conditional_study):
    report = json.loads((conditional_study[1] / "downstream.json").read_text())
    report["results"]["cnn"]["trtr"]["summary"]["accuracy"]["ci95"] = [0.1]
    del report["leakage_check"]["overlap"]
    problems = validate(report)
    assert any("ci95" in p for p in problems) and any("overlap" in p for p in problems)


@pytest.mark.slow  # trains classifiers (a --quick study)
def test_card_shows_the_section_with_the_numbers_and_nothing_without_the_file(conditional_study):
    folder, _ = conditional_study
    report = json.loads((folder / "downstream.json").read_text())
    card = (folder / "README.md").read_text()  # re-rendered by the study
    assert card == render_card(folder) and "## Downstream usefulness" in card
    for field in ("trained_on_real", "trained_on_fake", "trained_on_real_and_fake"):
        assert f"`{field}`" in card
    trtr = report["results"]["cnn"]["trtr"]["summary"]["balanced_accuracy"]
    assert f"{trtr['mean']:.3f} [{trtr['ci95'][0]:.3f}, {trtr['ci95'][1]:.3f}]" in card
    gain = report["deltas"]["cnn"]["low10_gain"]
    assert f"{gain['stats']['balanced_accuracy']['mean']:+.3f}" in card and f"**{gain['verdict']}**" in card
    assert "Leakage check: **passed**" in card and "QUICK" in card
    (folder / "downstream.json").rename(folder / "downstream.json.off")
    try:
        assert "Downstream usefulness" not in render_card(folder)
    finally:
        (folder / "downstream.json.off").rename(folder / "downstream.json")


def test_leakage_stops_with_exit_2_naming_the_subject(tmp_path, npz, capsys):
    folder = make_style_folder(tmp_path / "weights", "style-leaky", classes=tuple(LEVEL_NAMES[2]), resolution=SIZE)
    set_training_data(folder, ["subj-A", "subj-B", "subj-C"])  # trained on the held-out subject too
    rc = main([str(folder), "--data", str(npz), "--out", str(tmp_path / "out"), *QUICK])
    assert rc == 2
    err = capsys.readouterr().err
    assert "leakage" in err and "subj-C" in err
    assert not (tmp_path / "out" / "downstream.json").exists() and not (folder / "downstream.json").exists()


@pytest.mark.slow
def test_leakage_exit_status_of_the_command(tmp_path, npz):
    folder = make_style_folder(tmp_path / "weights", "style-leaky", classes=tuple(LEVEL_NAMES[2]), resolution=SIZE)
    set_training_data(folder, ["subj-C"])
    proc = subprocess.run([sys.executable, "-m", "training.downstream", str(folder), "--data", str(npz),
                           "--out", str(tmp_path / "out"), *QUICK], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: leakage: test subject(s) subj-C" in proc.stderr


def test_leakage_bases_and_the_slab_split(tmp_path, npz):
    task, ds = load_task("level", str(npz), SIZE, (2,))
    # the training-split sha256 proves which subjects the generator saw
    sha = __import__("hashlib").sha256(np.ascontiguousarray(ds.train().images).tobytes()).hexdigest()
    ok = leakage_check({"sha256": sha, "sources": [{"subject": "subj-C"}]}, ds, task, (2,), False)
    assert ok["status"] == "passed" and ok["generator_split_verified"] and ok["generator_subjects"] == ["subj-A",
                                                                                                        "subj-B"]
    with pytest.raises(LeakageError, match="records neither"):
        leakage_check({}, ds, task, (2,), False)
    # one subject cut into slabs: refused unless allowed, then reported as not subject-independent
    slab_npz = tmp_path / "slab.npz"
    one = SliceDataset.load(make_level_npz(tmp_path / "tmp.npz", split="slab"))
    one.subject[:] = "solo"
    one.save(slab_npz)
    task, ds = load_task("level", str(slab_npz), SIZE, (2,))
    with pytest.raises(LeakageError, match="solo.*--allow-slab-split"):
        leakage_check({"sources": [{"subject": "solo"}], "split": "slab"}, ds, task, (2,), False)
    slab = leakage_check({"sources": [{"subject": "solo"}], "split": "slab"}, ds, task, (2,), True)
    assert slab["status"] == "slab-split" and "NOT subject-independent" in slab["message"]


def test_plane_task_needs_several_planes(tmp_path, npz):
    with pytest.raises(DownstreamError, match="several planes"):
        load_task("plane", str(npz), SIZE, (0, 1, 2))
    two = SliceDataset.load(npz)
    two.axis[::2] = 0  # half the slices sagittal
    two.save(tmp_path / "planes.npz")
    task, _ = load_task("plane", str(tmp_path / "planes.npz"), SIZE, (0, 1, 2))
    assert task.classes == ["axial", "sagittal"] and set(task.y_test.tolist()) == {0, 1}


@pytest.mark.slow  # trains classifiers (a --quick study)
def test_init_checkpoint_adds_a_fine_tuned_regime(tmp_path, npz):
    from safetensors.torch import save_file

    folder = set_training_data(make_style_folder(tmp_path / "weights", "style-init", classes=tuple(LEVEL_NAMES[2]),
                                                 resolution=SIZE), ["subj-A", "subj-B"])
    save_file({k: v.contiguous() for k, v in make_classifier("cnn", 5).state_dict().items()},
              str(tmp_path / "cnn.safetensors"))
    out = tmp_path / "out"
    assert main([str(folder), "--data", str(npz), "--out", str(out), "--no-write", "--init",
                   str(tmp_path / "cnn.safetensors"), *QUICK]) == 0
    report = json.loads((out / "downstream.json").read_text())
    assert validate(report) == [] and "init_finetune" in report["results"]["cnn"]
    assert report["settings"]["init"]["applied_to"]["cnn"]["loaded_tensors"] > 0
    assert "init_vs_trtr" in report["deltas"]["cnn"] and "cannot be downloaded" in report["settings"]["pretrained_note"]


@pytest.mark.slow  # trains classifiers (a --quick study)
def test_unconditional_model_is_labelled_by_the_real_data_classifier(tmp_path, npz):
    folder = set_training_data(make_model_folder(tmp_path / "weights", "dcgan-tiny", resolution=SIZE),
                               ["subj-A", "subj-B"])
    out = tmp_path / "out"
    assert main([str(folder), "--data", str(npz), "--out", str(out), "--no-write", *QUICK]) == 0
    report = json.loads((out / "downstream.json").read_text())
    assert validate(report) == []
    assert not report["model"]["conditional"] and report["synthetic"]["labels_from"] == "classifier"
    assert "labelled by the TRTR classifier" in report["synthetic"]["note"]
    assert any(n.startswith("Synthetic labels:") and "TRTR classifier" in n for n in report["notes"])
    for pool in report["synthetic"]["seeds"]:
        assert sum(pool["label_counts"]["cnn"]) == 4 * 30
    assert not (folder / "downstream.json").exists()  # --no-write
    section = card_section(report)
    assert "labelled by the TRTR classifier" in section


def test_scores_and_intervals():
    s = scores(np.array([4, 4, 4, 4]), np.array([4, 4, 3, 0]), 5)
    assert s["accuracy"] == 0.5 and s["balanced_accuracy"] == 0.5  # only class 4 is present
    assert s["per_class_recall"] == [None, None, None, None, 0.5]
    assert np.isclose(s["macro_f1"], 2 * 1 * 0.5 / 1.5) and s["confusion"][4] == [1, 0, 0, 1, 2]
    stat = summarize([0.5, 0.6, 0.7])
    half = 4.302653 * 0.1 / np.sqrt(3)  # t(0.975, 2)
    assert np.allclose(stat["ci95"], [0.6 - half, 0.6 + half], atol=1e-5) and verdict(stat) == "gain"
    assert verdict(summarize([-0.1, 0.1, 0.0])) == "no measurable effect"


def test_balanced_batches_draw_every_class_equally_often():
    import torch
    y = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    for balanced, expected in ((False, [0.90, 0.09, 0.01]), (True, [1 / 3] * 3)):
        draw = batch_sampler(y, 64, torch.Generator().manual_seed(0), balanced)
        share = torch.bincount(y[torch.cat([draw() for _ in range(300)])], minlength=3).double() / (300 * 64)
        assert np.allclose(share.numpy(), expected, atol=0.02), (balanced, share)


def test_resnet18_has_one_input_channel_and_init_loads_safetensors_only(tmp_path):
    import torch
    from safetensors.torch import save_file

    net = make_classifier("resnet18", 5)
    assert net.conv1.in_channels == 1 and net(torch.zeros(2, 1, SIZE, SIZE)).shape == (2, 5)
    rgb = make_classifier("resnet18", 1000).state_dict()  # an "ImageNet-shaped" checkpoint: 3-channel conv1
    rgb["conv1.weight"] = torch.randn(64, 3, 7, 7)
    save_file({k: v.contiguous() for k, v in rgb.items()}, str(tmp_path / "init.safetensors"))
    info = apply_init(net, read_init(tmp_path / "init.safetensors"))
    assert info["adapted_to_1_channel"] == ["conv1.weight"] and "fc.weight" in info["skipped"]
    assert torch.allclose(net.conv1.weight, rgb["conv1.weight"].sum(1, keepdim=True))
    with pytest.raises(DownstreamError, match="fits"):
        apply_init(make_classifier("cnn", 5), read_init(tmp_path / "init.safetensors"))
    (tmp_path / "init.pt").write_bytes(b"not opened")
    with pytest.raises(DownstreamError, match="pickle"):
        read_init(tmp_path / "init.pt")


@pytest.mark.parametrize("path", sorted((ROOT / "weights").glob("*/downstream.json")), ids=lambda p: p.parent.name)
def test_shipped_downstream_records_match_the_schema(path):
    """Every shipped downstream.json conforms, so the card and the app read what the schema promises."""
    assert validate(json.loads(path.read_text())) == []


def synthetic_study_model(tmp_path: Path, count: int) -> tuple[Path, Path]:
    """A conditional model trained (on paper) on subjects A and B, and a parquet dataset of `count` of its images."""
    from medgan.dataset import main as export_main

    folder = set_training_data(make_style_folder(tmp_path / "weights", "style-data", classes=tuple(LEVEL_NAMES[2]),
                                                 resolution=SIZE), ["subj-A", "subj-B"])
    data = tmp_path / "synthetic"
    assert export_main([str(folder), "--count", str(count), "--out", str(data), "--format", "parquet", "--seed", "11",
                        "--quiet"]) == 0
    return folder, data


@pytest.mark.slow  # trains classifiers (two --quick studies)
def test_a_synthetic_dataset_gives_the_numbers_of_the_same_images_generated(tmp_path, npz):
    from medgan import Generator
    from training.evaluation.downstream.design import METRICS
    from training.evaluation.downstream.study import Settings, run_study
    from training.evaluation.downstream.synthetic import SyntheticImages

    folder, data = synthetic_study_model(tmp_path, 150)  # the pools take 4 x 30 = 120 per seed
    assert main([str(folder), "--data", str(npz), "--out", str(tmp_path / "out"), "--synthetic", str(data),
                 *QUICK]) == 0
    from_dir = json.loads((tmp_path / "out" / "downstream.json").read_text())
    assert validate(from_dir) == [] and from_dir["synthetic"]["labels_from"] == "dataset"
    assert from_dir["synthetic"]["source"]["count"] == 150 and from_dir["synthetic"]["source"]["seed"] == 11
    assert not (folder / "downstream.json").exists()  # the model's own study is not replaced

    # The same study on the same images, generated in this process by Generator.generate.
    gen = Generator.from_folder(folder)
    same = SyntheticImages(gen.generate(150, 11, output_type="np")[:, None], gen.labels(150, 11), gen.classes, "level")
    task, ds = load_task("level", str(npz), SIZE, (2,))
    leakage = leakage_check(ModelConfig.load(folder).training_data, ds, task, (2,), False)
    settings = Settings(seeds=[0, 1, 2], classifiers=["cnn"], steps={"cnn": 6}, batch_size=16, quick=True,
                        progress=False)
    generated = run_study(gen, task, settings, leakage, synthetic=same)

    def numbers(report):
        return {rid: [{k: run[k] for k in ("n_real", "n_synthetic", *METRICS, "per_class_recall", "confusion")}
                      for run in res["runs"]] for rid, res in report["results"]["cnn"].items()}
    assert numbers(from_dir) == numbers(generated)
    assert [p["sha256"] for p in from_dir["synthetic"]["seeds"]] == [p["sha256"] for p in generated["synthetic"]["seeds"]]
    assert len({p["sha256"] for p in generated["synthetic"]["seeds"]}) == 3  # each seed draws its own pool
    assert from_dir["deltas"] == generated["deltas"]


def test_a_synthetic_dataset_must_be_of_this_model_and_large_enough(tmp_path, npz, capsys):
    folder, data = synthetic_study_model(tmp_path, 40)
    out = ["--data", str(npz), "--out", str(tmp_path / "out"), *QUICK]
    assert main([str(folder), *out, "--synthetic", str(data)]) == 2
    assert "--synthetic holds 40 images; the study draws 120 per seed" in capsys.readouterr().err
    other = set_training_data(make_style_folder(tmp_path / "other", "style-data", classes=tuple(LEVEL_NAMES[2]),
                                                resolution=SIZE, seed=1), ["subj-A", "subj-B"])
    assert main([str(other), *out, "--synthetic", str(data)]) == 2
    assert "generated by style-data at revision sha256:" in capsys.readouterr().err
    assert main([str(folder), *out, "--synthetic", str(tmp_path)]) == 2
    assert "no readable dataset.json" in capsys.readouterr().err
