"""The Models tab's logic (medgan.zoo, service.explore_models): facets, filters, the FID sort, rows, details."""
from __future__ import annotations

import pytest

from helpers import ROOT, SHIPPED
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
