"""The membership-inference audit (training.audit -> privacy.json): it finds the slices a model was trained on, its
controls and bootstrap intervals behave, a planted copier is caught beyond the intervals, the white-box attack runs
on an exported discriminator, every shipped model's privacy.json follows the schema and its card shows it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import ROOT, SHIPPED
from test_evaluate import PixelExtractor, disc_slices
from test_train import TINY, make_npz

from medgan.config import ModelConfig
from medgan.generator import Generator
from training.evaluation import audit as A
from training.evaluation.audit_report import (LEAK_THRESHOLD, PRIVACY_FILE, AuditError, card_section, read,
                                              readme_cell, validate)
from training.evaluation.evaluate import RealData, load_real

# Planted copies in a model of 3 training people (halves by subject) are a leak beyond both controls; in a model of
# one person (halves are interleaved slabs of that person) the real-data reference explains as much: no claim.
PLANTED = [("brain-t1-style-64", True), ("brain-t1-dcgan-64", False)]


class PlantedCopies:
    """A shipped model of which every 20th image (5 %) is one of its training slices, drawn per index: a copier."""

    def __init__(self, gen, slices: np.ndarray, every: int = 20):
        self.gen, self.slices, self.every = gen, slices, every
        self.config = gen.config

    def generate(self, count=16, seed=0, *, start=0, output_type="np"):
        images = np.array(self.gen.generate(count, seed, start=start, output_type="np"))
        for k in range(count):
            if (start + k) % self.every == 0:
                images[k] = self.slices[np.random.default_rng([seed, start + k]).integers(len(self.slices))]
        return images


@pytest.mark.slow
@pytest.mark.parametrize("model_id, flagged", PLANTED)
def test_planted_copies_raise_auc_and_tpr_beyond_their_intervals(model_id, flagged):
    assert model_id in SHIPPED, f"the planted-copy test wraps the shipped {model_id}, which is no longer shipped"
    gen = Generator.from_folder(ROOT / "weights" / model_id)
    config = gen.config
    real = load_real(config.training_data["name"], config.generator.resolution)
    settings = A.Settings(spaces=("pixel",))   # the documented defaults: 2,000 images, 1,000 resamples
    plain = A.audit(gen, real, config, settings=settings)
    members, _ = A.find_members(real, config.training_data["sha256"])
    planted = A.audit(PlantedCopies(gen, real.images[members]), real, config, settings=settings)
    for metric in ("auc", "tpr_at_fpr"):
        before, after = (r["black_box"]["pixel"]["attack"][metric] for r in (plain, planted))
        assert after["ci95"][0] > before["ci95"][1], (metric, before, after)
    assert not plain["verdict"]["leak"]
    assert planted["verdict"]["leak"] is flagged
    if flagged:   # and the push of such a model (were its data not public) would be refused
        assert planted["verdict"]["largest_lower_bound"] > LEAK_THRESHOLD


# --- the logic on small made-up data ----------------------------------------------------------------------------

def toy_real(n_per: int = 24) -> RealData:
    """Three train subjects and one held-out subject of distinct discs."""
    images = disc_slices(4 * n_per, 32, 7)
    subject = np.repeat(["a", "b", "c", "h"], n_per)
    return RealData(images, np.where(subject == "h", "heldout", "train"), subject, "toy")


class Copier:
    """Generates exactly the given slices, in turn."""

    def __init__(self, slices):
        self.slices = slices

    def generate(self, count=16, seed=0, *, start=0, output_type="np"):
        return self.slices[(np.arange(start, start + count)) % len(self.slices)]


def toy_config(sha: str) -> ModelConfig:
    from medgan.config import GeneratorConfig
    return ModelConfig(id="toy", generator=GeneratorConfig(resolution=32), training_data={"sha256": sha})


def test_members_are_found_by_the_recorded_hash_even_for_a_subset_of_subjects():
    real = toy_real()
    ab = np.flatnonzero(np.isin(real.subject, ["a", "b"]))
    members, how = A.find_members(real, A._sha256(real.images[ab]))
    assert members.tolist() == ab.tolist() and "a, b" in how
    whole, how = A.find_members(real, A._sha256(real.images[real.split == "train"]))
    assert len(whole) == 72 and how.startswith("the dataset's train split")
    with pytest.raises(AuditError, match="the dataset changed since this model was trained"):
        A.find_members(real, "0" * 64)


def test_halves_split_by_subject_or_into_interleaved_slabs():
    real = toy_real()
    members = np.flatnonzero(real.split == "train")
    half_a, by = A.member_halves(real, members, seed=0)
    assert by == "subject" and not set(real.subject[members][half_a]) & set(real.subject[members][~half_a])
    one = np.flatnonzero(real.subject == "a")
    half_a, by = A.member_halves(real, one, seed=0)
    assert by == "interleaved slabs" and half_a[:A.SLAB].all() and not half_a[A.SLAB:2 * A.SLAB].any()


def test_a_copier_is_flagged_and_an_outsider_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDGAN_CACHE_DIR", str(tmp_path / "cache"))
    real = toy_real()
    train = real.images[real.split == "train"]
    config = toy_config(A._sha256(train))
    settings = A.Settings(num=72, num_features=72, bootstrap=200)
    copier = A.audit(Copier(train), real, config, settings=settings, extractor=PixelExtractor())
    for space in ("pixel", "inception"):
        attack = copier["black_box"][space]["attack"]
        assert attack["auc"]["value"] == 1.0 and attack["tpr_at_fpr"]["value"] == 1.0
    # a generator that only makes held-out-like images: no advantage over the real-data reference
    outsider = A.audit(Copier(disc_slices(72, 32, 99)), real, config, settings=settings, extractor=PixelExtractor())
    assert not outsider["verdict"]["leak"] and "does not prove that there is none" in outsider["verdict"]["text"]
    assert copier["white_box"] == {"available": False, "reason": copier["white_box"]["reason"]}
    assert copier["data"]["halves"]["by"] == "subject" and copier["timing"]["cpu_s"] >= 0
    text = card_section(copier)
    assert "member-only control" in text and "| pixels (nearest of 72) | ROC AUC | 1.000" in text


def small_report() -> dict:
    real = toy_real()
    train = real.images[real.split == "train"]
    return A.audit(Copier(train), real, toy_config(A._sha256(train)),
                   settings=A.Settings(num=72, bootstrap=20, spaces=("pixel",)))


def test_held_out_slices_of_a_training_person_get_a_caveat():
    report = small_report()
    assert "Caveat:" not in card_section(report)
    report["data"]["nonmember_subjects"] = ["a"]   # a slab split: the held-out part of a training person
    assert "Caveat: the held-out slices are another part of a, a person the model was trained on" in \
        card_section(report)


def test_schema_refuses_a_report_missing_its_controls():
    report = small_report()
    broken = json.loads(json.dumps(report))
    del broken["black_box"]["pixel"]["member_only_control"]
    with pytest.raises(AuditError, match="black_box/pixel.*member_only_control"):
        validate(broken)
    broken = json.loads(json.dumps(report))
    broken["black_box"]["pixel"]["attack"]["auc"]["ci95"] = [0.5]
    with pytest.raises(AuditError, match="ci95"):
        validate(broken)


@pytest.mark.slow
def test_cli_audits_an_exported_model_with_its_discriminator(tmp_path, capsys, monkeypatch):
    """Train a tiny model (it keeps discriminator.safetensors), audit it on its data: the white-box attack runs,
    privacy.json is written and the card re-rendered with the section."""
    monkeypatch.setenv("MEDGAN_CACHE_DIR", str(tmp_path / "cache"))
    from training.gan.cli import main as train_main
    npz = make_npz(tmp_path / "phantom.npz", n_train=32, n_heldout=8)
    folder = tmp_path / "weights" / "phantom-32"
    assert train_main(["--data", str(npz), *TINY, "--steps", "2", "--out", str(tmp_path / "run"),
                       "--export", str(folder)]) == 0
    assert A.main([str(folder), "--num", "64"]) == 2   # config.json records the data by name, not by path
    assert "give the data the model was trained on with --data FILE" in capsys.readouterr().err
    assert A.main([str(folder), "--data", str(npz), "--num", "64", "--bootstrap", "50", "--spaces", "pixel"]) == 0
    out = capsys.readouterr().out
    assert "32 members vs 8 held-out slices of dataset-" in out and f"wrote {folder / PRIVACY_FILE}" in out
    assert str(npz) not in read(folder)["command"]   # the path is not recorded
    report = read(folder)
    white = report["white_box"]
    assert white["available"] and 0 <= white["attack"]["auc"]["value"] <= 1
    assert report["data"]["halves"]["by"] == "interleaved slabs"   # one training subject
    assert "## Privacy audit" in (folder / "README.md").read_text()
    assert A.main([str(tmp_path / "nowhere")]) == 2
    assert "is neither a model folder nor a known model id" in capsys.readouterr().err


# --- the shipped models ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_id", SHIPPED)
def test_every_shipped_model_has_a_valid_audit_shown_on_its_card(model_id):
    folder = ROOT / "weights" / model_id
    report = read(folder)
    assert report is not None, f"{model_id} has no {PRIVACY_FILE}: python -m training.audit weights/{model_id}"
    assert report["model_id"] == model_id
    from medgan.files import file_digest
    assert report["weights_sha256"] == file_digest(folder / "model.safetensors")
    for block in report["black_box"].values():
        for metric in ("auc", "tpr_at_fpr"):
            low, high = block["attack"][metric]["ci95"]
            assert low <= block["attack"][metric]["value"] <= high
    assert card_section(report) in (folder / "README.md").read_text()
    assert readme_cell(report)
