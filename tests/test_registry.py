"""Registry and sources: local folders, env folders, LRU bound, stale-cache reload, Hub from an offline cache."""
import dataclasses
import json

import numpy as np
import pytest

import medgan
from medgan import Registry, SourceUnavailableError, UnknownModelError, WeightsError
from medgan.registry import default_sources
from medgan.sources.hub import HubSource, sha256_file
from medgan.sources.local import LocalSource

from helpers import SHIPPED, build_hf_cache, make_model_folder


def test_local_listing_is_typed_and_labelled(tiny_model):
    infos = LocalSource([tiny_model.parent]).list_models()
    assert [i.id for i in infos] == ["tiny-test"]
    info = infos[0]
    assert (info.modality, info.organ, info.resolution, info.source) == ("MR", "brain", 32, "local")
    assert info.generatable and "32²" in info.label() and "MR" in info.label()
    assert info.card_summary == "A tiny random test model."


def test_list_and_load_with_extra_folders_and_env(tiny_model, monkeypatch):
    ids = [m.id for m in medgan.list_models(extra_folders=[tiny_model.parent])]
    assert "tiny-test" in ids and set(SHIPPED) <= set(ids)
    gen = medgan.load_model("tiny-test", extra_folders=[tiny_model.parent])
    assert gen.generate(2, seed=0, output_type="np").shape == (2, 32, 32)
    monkeypatch.setenv("MEDGAN_WEIGHTS_DIRS", str(tiny_model.parent))
    assert "tiny-test" in [m.id for m in Registry(default_sources()).list_models()]


def test_unknown_and_path_like_ids(tiny_model):
    reg = Registry([LocalSource([tiny_model.parent])])
    for bad in ["nope", "../tiny-test", str(tiny_model), "tiny-test/../tiny-test", "ü" * 500]:
        with pytest.raises(UnknownModelError, match="Unknown model id"):
            reg.load(bad)
    with pytest.raises(medgan.InvalidArgumentError):
        reg.load("")


def test_broken_folder_does_not_hide_the_others(tmp_path):
    make_model_folder(tmp_path, "good")
    bad = make_model_folder(tmp_path, "bad", seed=1)
    (bad / "model.safetensors").write_bytes(b"garbage")
    broken_cfg = make_model_folder(tmp_path, "broken-config", seed=2)
    (broken_cfg / "config.json").write_text("[]")
    source = LocalSource([tmp_path])
    reg = Registry([source])
    assert sorted(m.id for m in reg.list_models()) == ["bad", "good"]
    assert "broken-config" in source.problems
    with pytest.raises(WeightsError, match="'bad'"):
        reg.load("bad")
    assert reg.load("good").generate(1, 0, output_type="np").shape == (1, 32, 32)


def test_lru_bound_and_reload_after_change(tmp_path):
    for i in range(3):
        make_model_folder(tmp_path, f"m{i}", seed=i)
    reg = Registry([LocalSource([tmp_path])], max_loaded=2)
    first = reg.load("m0")
    assert reg.load("m0") is first
    reg.load("m1"), reg.load("m2")
    assert reg.loaded_ids() == ["m1", "m2"]
    # A model folder replaced on disk while running is reloaded, not served stale.
    before = reg.load("m2").generate(1, 0, output_type="np")
    make_model_folder(tmp_path, "m2", seed=99)
    after = reg.load("m2").generate(1, 0, output_type="np")
    assert not np.array_equal(before, after)
    # …and one deleted while running becomes an unknown id.
    import shutil
    shutil.rmtree(tmp_path / "m1")
    with pytest.raises(UnknownModelError):
        reg.load("m1")


def _hub_fixture(tmp_path, tiny_model, tamper=False):
    files = {name: (tiny_model / name).read_bytes() for name in ("config.json", "model.safetensors", "README.md")}
    cache = tmp_path / "hf-cache"
    commit = build_hf_cache(cache, "medgan-test/tiny", files)
    sha = sha256_file(tiny_model / "model.safetensors")
    if tamper:
        blob = next(p for p in (cache / "models--medgan-test--tiny" / "blobs").iterdir()
                    if p.read_bytes() == files["model.safetensors"])
        data = bytearray(blob.read_bytes())
        data[-1] ^= 0xFF
        blob.write_bytes(bytes(data))
    catalogue = tmp_path / "hub.json"
    catalogue.write_text(json.dumps({"models": [{"id": "hub-tiny", "repo_id": "medgan-test/tiny",
                                                 "revision": commit, "sha256": {"model.safetensors": sha}}]}))
    return HubSource([catalogue], cache_dir=cache)


def test_hub_model_loads_from_offline_cache_through_hf_hub_download(tmp_path, tiny_model):
    source = _hub_fixture(tmp_path, tiny_model)
    [info] = source.list_models()
    assert (info.id, info.source, info.resolution, info.revision) == ("hub-tiny", "hub", 32, "a" * 40)
    gen = Registry([source]).load("hub-tiny")
    assert gen.id == "hub-tiny" and gen.revision == "a" * 40
    local = medgan.Generator.from_folder(tiny_model)
    assert np.array_equal(gen.generate(3, 9, output_type="np"), local.generate(3, 9, output_type="np"))


def test_hub_tampered_blob_is_refused(tmp_path, tiny_model):
    source = _hub_fixture(tmp_path, tiny_model, tamper=True)
    with pytest.raises(WeightsError, match="sha256"):
        Registry([source]).load("hub-tiny")


def test_hub_unreachable_without_cache_is_a_clear_error(tmp_path, tiny_model):
    source = _hub_fixture(tmp_path, tiny_model)
    source.cache_dir = str(tmp_path / "empty-cache")
    [info] = source.list_models()
    assert "not downloaded" in info.notice
    reg = Registry([LocalSource([tiny_model.parent]), source])
    with pytest.raises(SourceUnavailableError, match="hub-tiny.*not in the local Hugging Face cache") as err:
        reg.load("hub-tiny")
    assert str(tmp_path) not in str(err.value)  # no server path in the message
    assert reg.load("tiny-test").generate(1, 0, output_type="np").shape == (1, 32, 32)  # the others still load


def test_model_info_serialises(tiny_model):
    info = LocalSource([tiny_model.parent]).list_models()[0]
    data = info.to_dict()
    assert json.loads(json.dumps(data))["generatable"] is True
    assert dataclasses.replace(info, kind="image-to-image").generatable is False
