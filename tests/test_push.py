"""Publishing: training.push validates a model folder, uploads it with the real huggingface_hub client to a fake
Hub on 127.0.0.1, pins the commit in the Hub catalogue; then the model is "pulled" from an offline HF cache built
from the uploaded bytes, through medgan's registry, with sha256 verification (a tampered blob is refused)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from card_fixtures import make_evaluated_model
from fake_hub import fake_hub
from helpers import ROOT, build_hf_cache, run_push

from medgan.errors import SourceUnavailableError, WeightsError
from medgan.generator import Generator
from medgan.registry import Registry, default_sources
from training.publish import push as push_mod

REPO = "medgan-test/tiny-card"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """An evaluated model of a public (made-up) dataset: no membership audit needed to publish it (test_push_audit
    covers the non-public case)."""
    from medgan.config import ModelConfig
    from training.publish.card import write_card

    folder = make_evaluated_model(tmp_path_factory.mktemp("push") / "weights")
    config = ModelConfig.load(folder)
    config.training_data["public"] = True
    config.save(folder)
    write_card(folder)
    return folder


def test_dry_run_validates_and_lists_files_without_network(model, capsys):
    assert push_mod.main([str(model), "--repo", REPO, "--dry-run", "--catalogue", str(model / "x.json")]) == 0
    out = capsys.readouterr().out
    for name in ("README.md", "config.json", "eval.json", "model.safetensors", "samples.png"):
        size = (model / name).stat().st_size
        assert f"{name}" in out and f"{size:,d} bytes" in out
    assert "in 5 files" in out and "dry run: nothing uploaded" in out
    assert not (model / "x.json").exists()


def test_upload_is_refused_offline_and_without_a_token(model, capsys, monkeypatch):
    # this process has HF_HUB_OFFLINE=1 (conftest): the push must say so instead of failing obscurely
    assert push_mod.main([str(model), "--repo", REPO]) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    assert push_mod.main([str(model), "--repo", REPO]) == 2
    assert "no Hugging Face token: set HF_TOKEN or run `hf auth login`" in capsys.readouterr().err


def test_the_exported_discriminator_is_never_uploaded(model, tmp_path):
    """discriminator.safetensors (training state for --init-from) is neither an error nor uploaded."""
    import shutil
    from training.gan.discriminator import DISCRIMINATOR_FILE, DCGANDiscriminator, save_discriminator
    folder = shutil.copytree(model, tmp_path / "with-d")
    save_discriminator(folder, DCGANDiscriminator(32, 1, 4), {"step": 1})
    assert (folder / DISCRIMINATOR_FILE).is_file()
    assert push_mod.validate_folder(folder) == push_mod.validate_folder(model)


def test_validation_names_every_problem(model, tmp_path):
    import shutil
    bad = shutil.copytree(model, tmp_path / "bad")
    (bad / "optimizer.pt").write_bytes(b"\x80\x04junk")           # a pickle: never published
    (bad / "notes.txt").write_text("scratch")                       # not a model file
    (bad / "runs").mkdir()                                          # folders are not uploaded
    (bad / "README.md").write_text("---\nlicense: mit\n---\n# x\n")  # a card without the Hub metadata
    with pytest.raises(push_mod.PushError) as err:
        push_mod.validate_folder(bad)
    msg = str(err.value)
    assert "optimizer.pt: pickle-format" in msg and "notes.txt: not an expected model file" in msg
    assert "runs: only plain files" in msg
    assert "README.md: model card metadata: library_name is missing; pipeline_tag is missing" in msg
    assert "python -m training.card" in msg  # says how to fix it

    (bad / "README.md").unlink()
    (bad / "model.safetensors").write_bytes(b"PK\x03\x04 torch.save zip")  # pickled weights under our name
    with pytest.raises(push_mod.PushError, match="(?s)model.safetensors: is a pickle/zip archive.*README.md is missing"):
        push_mod.validate_folder(bad)

    stale = shutil.copytree(model, tmp_path / "stale")
    config = json.loads((stale / "config.json").read_text())
    config["metrics"]["fid"] = 99.0
    (stale / "config.json").write_text(json.dumps(config))
    with pytest.raises(push_mod.PushError, match="card's FID 123.456 is not config.json's 99.0"):
        push_mod.validate_folder(stale)
    with pytest.raises(push_mod.PushError, match="must look like ORG/NAME"):
        push_mod.check_repo_id("no-slash")


@pytest.mark.slow
def test_push_to_fake_hub_then_pull_from_offline_cache_verified(model, tmp_path, monkeypatch):
    catalogue = tmp_path / "hub.json"
    catalogue.write_text(json.dumps({"models": [{"id": "other", "repo_id": "x/other", "revision": "b" * 40}]}))
    with fake_hub() as hub:
        result = run_push(str(model), "--repo", REPO, "--private", "--revision", "v1", "--endpoint", hub.url,
                          "--catalogue", str(catalogue), "--id", "hub-tiny", "--message", "Release tiny v1")
        assert result.returncode == 0, result.stderr
    # what the Hub received: the repo (private), the branch, one commit with exactly the validated files
    create = next(r for r in hub.requests if r["path"] == "/api/repos/create")
    assert create["body"]["name"] == "tiny-card" and create["body"]["organization"] == "medgan-test"
    assert create["body"]["visibility"] == "private"
    assert create["auth"] == "Bearer hf_test_token"
    assert hub.branches == [f"{REPO}@v1"]
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert (commit.repo_id, commit.revision, commit.summary) == (REPO, "v1", "Release tiny v1")
    uploaded = hub.files(REPO)
    assert sorted(uploaded) == ["README.md", "config.json", "eval.json", "model.safetensors", "samples.png"]
    assert all(uploaded[n] == (model / n).read_bytes() for n in uploaded)
    # the CLI printed the commit URL and the sha to pin; the catalogue holds it with each file's sha256
    assert f"commit: {hub.url}/{REPO}/commit/{commit.oid}" in result.stdout
    assert f"revision: {commit.oid}" in result.stdout
    entries = {m["id"]: m for m in json.loads(catalogue.read_text())["models"]}
    assert set(entries) == {"hub-tiny", "other"}  # other entries are kept
    assert entries["hub-tiny"] == {"id": "hub-tiny", "repo_id": REPO, "revision": commit.oid,
                                   "sha256": {n: hashlib.sha256(b).hexdigest() for n, b in uploaded.items()}}

    # pull: a HF cache holding exactly the uploaded bytes at the returned commit, read offline via the registry
    cache = tmp_path / "hf-cache"
    build_hf_cache(cache, REPO, uploaded, commit=commit.oid)
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("MEDGAN_HUB_CATALOGUE", str(catalogue))
    monkeypatch.setenv("MEDGAN_MEDIGAN", "0")
    registry = Registry(default_sources())
    info = registry.info("hub-tiny")
    assert (info.source, info.revision, info.resolution) == ("hub", commit.oid, 32)
    assert info.metrics["fid"] == pytest.approx(123.456)
    other = registry.info("other")
    assert "not downloaded yet" in other.notice
    gen = registry.load("hub-tiny")
    assert gen.revision == commit.oid
    local = Generator.from_folder(model).generate(4, seed=7, output_type="np")
    assert np.array_equal(gen.generate(4, seed=7, output_type="np"), local)
    with pytest.raises(SourceUnavailableError, match="not in the local Hugging Face cache.*offline"):
        registry.load("other")
    # the model card's "From the Hugging Face Hub" snippet, against the same cache
    from huggingface_hub import snapshot_download
    snapshot = snapshot_download(REPO, revision=commit.oid, allow_patterns=["*.json", "*.safetensors", "README.md"])
    assert {"README.md", "config.json", "model.safetensors"} <= {p.name for p in Path(snapshot).iterdir()}
    assert np.array_equal(Generator.from_folder(snapshot).generate(4, seed=7, output_type="np"), local)

    # an entry without the weights' sha256 is refused rather than loaded unverified
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(json.dumps({"models": [{**entries["hub-tiny"], "sha256": {}}]}))
    monkeypatch.setenv("MEDGAN_HUB_CATALOGUE", str(incomplete))
    with pytest.raises(WeightsError, match="no sha256 for model.safetensors.*refusing unverified weights"):
        Registry(default_sources()).load("hub-tiny")
    monkeypatch.setenv("MEDGAN_HUB_CATALOGUE", str(catalogue))

    # tamper with the cached weights blob: refused, naming the model and the file
    blob = cache / f"models--{REPO.replace('/', '--')}" / "blobs" / hashlib.sha256(uploaded["model.safetensors"]).hexdigest()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="'hub-tiny': model.safetensors from medgan-test/tiny-card@.*fails its sha256"):
        Registry(default_sources()).load("hub-tiny")


@pytest.mark.slow
def test_space_deploy_uploads_the_app_with_models_from_the_catalogue(tmp_path):
    catalogue = tmp_path / "hub.json"
    catalogue.write_text(json.dumps({"models": [{"id": "hub-tiny", "repo_id": REPO, "revision": "c" * 40}]}))
    with fake_hub() as hub:
        dry = run_push("--space", "medgan-test/studio", "--dry-run", "--catalogue", str(catalogue))
        assert dry.returncode == 0, dry.stderr
        assert "dry run: nothing uploaded" in dry.stdout and not hub.requests
        result = run_push("--space", "medgan-test/studio", "--endpoint", hub.url, "--catalogue", str(catalogue))
        assert result.returncode == 0, result.stderr
    create = next(r for r in hub.requests if r["path"] == "/api/repos/create")["body"]
    assert (create["type"], create["sdk"], create["name"]) == ("space", "gradio", "studio")
    assert "/api/validate-yaml" in hub.paths()  # the Space README's metadata was checked by the "Hub"
    files = hub.files("medgan-test/studio", "spaces")
    tracked = set(push_mod.space_files(ROOT))
    assert set(files) == tracked
    assert {"app.py", "requirements.txt", "README.md", "medgan/__init__.py", "medgan/generator.py"} <= tracked
    assert not any(f.startswith(("tests/", "training/", "runs/", "benchmarks/")) for f in files)
    assert files["app.py"] == (ROOT / "app.py").read_bytes()
    meta = push_mod.front_matter(files["README.md"].decode())
    assert meta["models"] == [REPO]
    assert meta["sdk"] == "gradio" and str(meta["sdk_version"]) == push_mod.gradio_pin(
        (ROOT / "requirements.txt").read_text())
    body = files["README.md"].decode().split("\n---\n", 1)[1]
    assert body == (ROOT / "README.md").read_text().split("\n---\n", 1)[1]  # only the front matter changed
    assert f"commit: {hub.url}/spaces/medgan-test/studio/commit/" in result.stdout
