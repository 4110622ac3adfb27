"""The Models tab's logic (medgan.zoo, service.explore_models): facets, filters, the FID sort, rows, details."""
from __future__ import annotations

import json

import pytest

from helpers import ROOT, SHIPPED, make_model_folder
from medgan import service, zoo
from medgan.registry import Registry
from medgan.sources.local import LocalSource
from medgan.sources.medigan import MediganSource


def row(model_id, *, modality="MR", organ="brain", source="local", kind="noise-to-image", resolution=64, **metrics):
    return {"id": model_id, "title": model_id.title(), "modality": modality, "organ": organ, "plane": "axial",
            "resolution": resolution, "source": source, "kind": kind, "license": "mit", "metrics": metrics,
            "architecture": "DCGAN", "dataset": "d", "classes": [], "notice": ""}


ROWS = [row("a", fid=50.0), row("b", modality="CT", organ="Head", resolution=128),
        row("c", source="medigan", organ="Brain", kind="image-to-image", resolution=None, fid_published=20.0),
        row("d", source="medigan", modality="MG", organ="breast", resolution=128, fid_published=50.0),
        row("e", fid=10.0, fid_published=99.0)]


def ids(rows):
    return [r["id"] for r in rows]


def test_facets_list_what_is_there_any_first_sizes_by_size():
    f = zoo.facets(ROWS)
    assert f["modality"] == ["any", "CT", "MG", "MR"] and f["organ"] == ["any", "brain", "breast", "head"]
    assert f["source"] == ["any", "hub", "local", "medigan"]  # the three sources, always
    assert f["kind"] == ["any", "image-to-image", "noise-to-image"]
    assert f["resolution"] == ["any", "64²", "128²", "other"]


def test_filters_combine_and_any_or_empty_match_all():
    assert ids(zoo.select(ROWS)) == ids(zoo.select(ROWS, {k: "any" for k in zoo.FILTERS})) == list("abcde")
    assert ids(zoo.select(ROWS, {"organ": "BRAIN"})) == ["a", "c", "e"]  # organ ignores case
    assert ids(zoo.select(ROWS, {"organ": "brain", "source": "medigan"})) == ["c"]
    assert ids(zoo.select(ROWS, {"resolution": "128²"})) == ["b", "d"]
    assert ids(zoo.select(ROWS, {"resolution": "other"})) == ["c"]
    assert ids(zoo.select(ROWS, {"kind": "noise-to-image", "modality": "MR"})) == ["a", "e"]
    assert ids(zoo.select(ROWS, {"source": "hub"})) == []
    assert ids(zoo.select(ROWS, {"modality": "", "bogus": "x", "kind": None})) == list("abcde")


def test_sort_by_fid_ascending_measured_first_then_published_missing_last_ties_stable():
    # e: measured 10 (its published 99 is not used); c: published 20; a: 50 measured, d: 50 published (a first:
    # catalogue order on ties); b: none, last.
    assert ids(zoo.select(ROWS, sort="FID (low first)")) == ["e", "c", "a", "d", "b"]
    assert ids(zoo.select(ROWS, sort="fid")) == ["e", "c", "a", "d", "b"]
    assert ids(zoo.select(ROWS, sort="catalogue order")) == list("abcde")
    assert ids(zoo.select(ROWS, {"source": "local"}, "fid")) == ["e", "a", "b"]
    odd = [row("nan", fid=float("nan")), row("bool", fid=True), row("ok", fid=3)]
    assert ids(zoo.select(odd, sort="fid")) == ["ok", "nan", "bool"]  # not numbers: as missing


def test_table_rows_and_details():
    downstream = {"headline_classifier": "logreg", "quick": False, "by_classifier": {"logreg": {
        "trtr": 0.81, "trtr_ci95": [0.7, 0.9], "tstr": 0.62, "low10_gain": 0.04}}}
    rows = zoo.table_rows([row("x", fid=12.3456, kid=0.01, downstream=downstream)])
    assert len(rows[0]) == len(zoo.COLUMNS) and rows[0][zoo.COLUMNS.index("FID")] == 12.346
    assert rows[0][zoo.COLUMNS.index("TRTR")] == "0.810 [0.70, 0.90]"
    assert rows[0][zoo.COLUMNS.index("low-data Δ (10 %)")] == "+0.040"
    text = zoo.detail_markdown({**row("x", fid=12.3456, downstream=downstream), "classes": ["upper", "lower"]},
                               {"training_data": {"name": "brain-t1", "subjects": 5, "train_subjects": 3,
                                                  "train_slices": 698, "licences": ["CC0 (test)"],
                                                  "sources": [{"subject": "S1"}, {"subject": "S2"}]}})
    for fact in ("### X", "| Classes | upper, lower |", "5 subjects (3 for training), 698 training slices",
                 "| Subjects | S1, S2 |", "- CC0 (test)", "| FID (measured here) | 12.35 |", "real-only 0.810"):
        assert fact in text, fact
    published = zoo.detail_markdown(row("m", source="medigan", resolution=None, fid_published=67.6))
    assert "FID (published by the authors) | 67.6" in published and "Resolution" not in published


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """The shipped models plus medigan's snapshot (an empty medigan home)."""
    return Registry([LocalSource([ROOT / "weights"]), MediganSource(tmp_path_factory.mktemp("empty-home"),
                                                                    refresh=False)])


@pytest.mark.skipif(not SHIPPED, reason="no shipped models in weights/")
def test_explore_models_through_the_service(registry):
    view = service.explore_models({"source": "local"}, "fid", registry=registry)
    assert ids(view["rows"]) == sorted(SHIPPED, key=lambda m: registry.info(m).metrics["fid"])
    assert view["total"] == len(SHIPPED) + 23 and view["picked"] == view["rows"][0]["id"]
    assert [c for _, c in view["samples"]] == [f"SYNTHETIC · {m}" for m in SHIPPED]
    assert all(p.endswith("samples.png") for p, _ in view["samples"])
    assert "| Subjects |" in view["details"] and "FID (measured here)" in view["details"]
    xray = service.explore_models({"modality": "DX"}, "fid", picked="medigan:00019_PGGAN_CHEST_XRAY",
                                  registry=registry)
    assert ids(xray["rows"]) == ["medigan:00020_PGGAN_CHEST_XRAY", "medigan:00019_PGGAN_CHEST_XRAY",
                                 "medigan:00017_DCGAN_XRAY_LUNG_NODULES", "medigan:00018_WGANGP_XRAY_LUNG_NODULES"]
    assert xray["picked"] == "medigan:00019_PGGAN_CHEST_XRAY" and xray["samples"] == []
    assert "downloads on first use (needs internet)" in xray["details"]
    assert ids(service.browse_models({"modality": "DX"}, "fid", registry=registry)) == ids(xray["rows"])
    assert service.model_facets(registry)["source"] == ["any", "hub", "local", "medigan"]
    none = service.explore_models({"source": "hub"}, registry=registry)
    assert none["rows"] == [] and none["picked"] is None and none["details"] == ""
    assert service.model_details("../../etc/passwd", registry) == "" and service.model_details(None, registry) == ""


# --- the first look: the headline quality and the default model -----------------------------------------
def evaluation(fid, floor, n=100, *, held_out=None, fallback=False, split="subject"):
    """An eval.json as training.evaluate writes it: the floor, and (`held_out`: (model, floor)) vs_heldout."""
    block = {"fid": floor, "n": n, "fallback": fallback, "model_same_n": {"fid": fid}}
    if held_out:
        block["vs_heldout"] = {"n": n, "model": {"fid": held_out[0]}, "floor_train_vs_heldout": {"fid": held_out[1]}}
    return {"floor": block, "real_data": {"split": split}}


def test_quality_reads_held_out_then_fallback_then_training_halves():
    q = zoo.quality(evaluation(110.0, 115.0, 267, held_out=(135.7, 136.7)))
    assert (q.fid, q.floor, q.against) == (135.7, 136.7, zoo.HELD_OUT) and q.ratio < 1
    assert q.text() == "FID 135.7 vs held-out people (real floor 136.7, n = 267)"
    q = zoo.quality(evaluation(184.6, 133.8, 128, fallback=True))  # one training subject: B is the held-out split
    assert (q.fid, q.floor, q.n, q.against) == (184.6, 133.8, 128, zoo.HELD_OUT)
    assert zoo.quality(evaluation(242.1, 209.7, fallback=True, split="slab")).against == zoo.HELD_OUT_SLAB
    q = zoo.quality(evaluation(217.5, 241.1))  # two halves of the training people only
    assert (q.fid, q.floor, q.against) == (217.5, 241.1, zoo.TRAINING)
    for broken in (None, {}, {"floor": "x"}, {"floor": {"fid": 0, "n": 3, "model_same_n": {"fid": 1}}},
                   {"floor": {"fid": 100, "n": "3", "model_same_n": {"fid": 1}}},
                   {"floor": {"fid": 100, "n": 3, "model_same_n": {"fid": float("nan")}}}):
        assert zoo.quality(broken) is None, broken


def test_best_model_prefers_held_out_people_then_ratio_then_unmeasured():
    q = {"train-only": zoo.quality(evaluation(50.0, 200.0)),              # ratio 0.25, but no unseen people
         "slab": zoo.quality(evaluation(60.0, 200.0, fallback=True, split="slab")),
         "held-worse": zoo.quality(evaluation(1.0, 1.0, held_out=(150.0, 100.0))),
         "held-best": zoo.quality(evaluation(1.0, 1.0, held_out=(99.0, 100.0))),
         "none": None}
    assert zoo.best_model(q) == "held-best"
    assert sorted(q, key=lambda m: zoo.quality_rank(q[m])) == ["held-best", "held-worse", "train-only", "slab",
                                                                "none"]
    assert zoo.best_model({"a": None, "b": None}) == "a" and zoo.best_model({}) is None


def test_summary_line_names_the_model_and_its_headline_quality():
    q = zoo.quality(evaluation(1.0, 1.0, 163, held_out=(135.7, 136.7)))
    line = zoo.summary_line({**row("brain-x"), "classes": ["upper", "lower"], "title": "Brain X"}, q)
    assert line == "**Brain X** (`brain-x`) · 2 classes · FID 135.7 vs held-out people (real floor 136.7, n = 163)"
    assert zoo.summary_line(row("m", source="medigan", fid_published=67.6), None).endswith("FID 67.6 (published)")
    assert zoo.summary_line(row("a", fid=50.0), None).endswith("FID 50.0 (measured here)")
    assert zoo.summary_line(row("b"), None).endswith("no quality measured")


def test_default_model_is_the_best_measured_not_the_first_listed(tmp_path):
    weights = tmp_path / "weights"
    for name, evaluated in (("a-first", None), ("b-worse", (150.0, 100.0)), ("c-best", (99.0, 100.0))):
        folder = make_model_folder(weights, name)
        if evaluated:
            (folder / "eval.json").write_text(json.dumps(evaluation(1.0, 1.0, held_out=evaluated)))
    reg = Registry([LocalSource([weights])])
    assert service.default_model(reg) == "c-best"
    assert service.model_summary("c-best", reg).endswith("FID 99.0 vs held-out people (real floor 100.0, n = 100)")
    assert service.model_summary("a-first", reg).endswith("no quality measured")
    assert service.model_summary("../x", reg) == "" and service.model_summary("nope", reg) == ""
    (weights / "c-best" / "eval.json").write_text("{not json")  # unreadable: as unmeasured
    assert service.model_quality("c-best", reg) is None and service.default_model(reg) == "b-worse"
    assert service.default_model(Registry([LocalSource([tmp_path / "empty"])])) is None


@pytest.mark.skipif(not SHIPPED, reason="no shipped models in weights/")
def test_the_shipped_default_is_the_closest_to_held_out_people(registry):
    """Computed here from each shipped eval.json, independently of medgan.zoo: the lowest FID against held-out
    people relative to the real train-vs-held-out floor, among the models evaluated against held-out people."""
    ratios = {}
    for model_id in SHIPPED:
        data = json.loads((ROOT / "weights" / model_id / "eval.json").read_text())
        held_out = data["floor"].get("vs_heldout")
        if held_out:
            ratios[model_id] = held_out["model"]["fid"] / held_out["floor_train_vs_heldout"]["fid"]
    assert ratios, "no shipped model is evaluated against held-out people"
    assert service.default_model(registry) == min(ratios, key=ratios.get)
