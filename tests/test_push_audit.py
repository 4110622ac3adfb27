"""training.push and the membership-inference audit: a model of a dataset not marked public is refused, saying why
and what to do, without privacy.json, with an audit of other weights or with an audit whose attack beats both
controls beyond the threshold; a DP-trained model passes on its ε; --accept-privacy-risk publishes it to the (fake)
Hub and the uploaded card says so."""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
from fake_hub import fake_hub
from helpers import run_push
from test_train import TINY, make_npz

from training.evaluation.audit import main as audit_main
from training.evaluation.audit_report import LEAK_THRESHOLD, PRIVACY_FILE
from training.gan.cli import main as train_main
from training.publish import push as push_mod
from training.publish.privacy_record import OVERRIDE_KEY

REPO = "medgan-test/private-phantom"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Two tiny models of the phantom dataset (not public): a plain one, audited, and a DP-trained one."""
    root = tmp_path_factory.mktemp("push-audit")
    make_npz(root / "phantom.npz", n_train=32, n_heldout=8)
    common = ["--data", "phantom.npz", *TINY, "--steps", "2"]
    with contextlib.chdir(root):   # relative paths: a non-public dataset's folder may hold no absolute path
        assert train_main([*common, "--out", "run", "--export", "plain"]) == 0
        assert audit_main(["plain", "--data", "phantom.npz", "--spaces", "pixel", "--num", "64",
                           "--bootstrap", "100"]) == 0
        assert train_main([*common, "--out", "dprun", "--export", "dp", "--dp-epsilon", "5", "--dp-delta", "1e-3"]) == 0
    return {"plain": root / "plain", "dp": root / "dp"}


@pytest.fixture
def plain(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained["plain"], tmp_path / "plain"))


def refusal(folder: Path) -> str:
    with pytest.raises(push_mod.PushError) as err:
        push_mod.validate_folder(folder)
    return str(err.value)


def test_an_audit_without_a_leak_passes(plain, capsys):
    report = json.loads((plain / PRIVACY_FILE).read_text())
    assert not report["verdict"]["leak"]
    assert PRIVACY_FILE in push_mod.validate_folder(plain)
    assert "no membership advantage beyond the threshold" in capsys.readouterr().err


def test_no_audit_is_refused_saying_why_and_what_to_do(plain, capsys):
    (plain / PRIVACY_FILE).unlink()
    msg = refusal(plain)
    assert "no privacy.json: this model was trained on '" in msg and "', which is not marked public" in msg
    assert "python -m training.audit FOLDER --data DATA.npz" in msg and "--dp-epsilon" in msg
    assert "--accept-privacy-risk" in msg
    assert push_mod.main([str(plain), "--repo", REPO, "--dry-run"]) == 2
    assert "cannot be published" in capsys.readouterr().err


def test_a_leaky_or_stale_audit_is_refused(plain):
    report = json.loads((plain / PRIVACY_FILE).read_text())
    leaky = json.loads(json.dumps(report))   # an attack that beats both controls by 0.30 at the lower bound
    leaky["black_box"]["pixel"]["advantage"]["tpr_at_fpr"]["over_both"] = {"value": 0.4, "ci95": [0.3, 0.5]}
    (plain / PRIVACY_FILE).write_text(json.dumps(leaky))
    msg = refusal(plain)
    assert "the membership-inference attack beats both controls in pixels, TPR at 1 % FPR" in msg
    assert f"+0.300, above the threshold {LEAK_THRESHOLD:+.2f}" in msg and "retrain with --dp-epsilon" in msg
    # just under the threshold passes
    leaky["black_box"]["pixel"]["advantage"]["tpr_at_fpr"]["over_both"]["ci95"] = [LEAK_THRESHOLD, 0.5]
    (plain / PRIVACY_FILE).write_text(json.dumps(leaky))
    push_mod.validate_folder(plain)
    # an audit of other weights does not count
    (plain / PRIVACY_FILE).write_text(json.dumps({**report, "weights_sha256": "0" * 64}))
    assert "privacy.json audits other weights than this model.safetensors" in refusal(plain)
    (plain / PRIVACY_FILE).write_text("{}")
    assert "privacy.json does not follow privacy.schema.json" in refusal(plain)


def test_a_dp_trained_model_passes_on_its_epsilon(trained, tmp_path, capsys):
    folder = Path(shutil.copytree(trained["dp"], tmp_path / "dp"))
    assert not (folder / PRIVACY_FILE).exists()
    assert PRIVACY_FILE not in push_mod.validate_folder(folder)
    dp = json.loads((folder / "config.json").read_text())["training"]["dp"]
    assert f"differentially private training (ε = {dp['epsilon']:.3g}" in capsys.readouterr().err
    assert f"(ε = {dp['epsilon']:.3g}, δ = 0.001)" in (folder / "README.md").read_text()
    config = json.loads((folder / "config.json").read_text())
    config["training"]["dp"]["epsilon"] = dp["epsilon"] / 10   # a record that is not the training's
    (folder / "config.json").write_text(json.dumps(config))
    assert "but Opacus' accountant gives" in refusal(folder)


def test_accept_privacy_risk_publishes_and_the_card_says_so(plain, capsys):
    (plain / PRIVACY_FILE).unlink()
    before = (plain / "README.md").read_text()
    assert push_mod.main([str(plain), "--repo", REPO, "--dry-run", "--accept-privacy-risk"]) == 0
    assert "publishing it because --accept-privacy-risk was given" in capsys.readouterr().err
    assert (plain / "README.md").read_text() == before   # a dry run writes nothing
    with fake_hub() as hub:
        result = run_push(str(plain), "--repo", REPO, "--endpoint", hub.url, "--accept-privacy-risk")
        assert result.returncode == 0, result.stderr
    uploaded = hub.files(REPO)
    card = uploaded["README.md"].decode()
    assert "**Published with `--accept-privacy-risk`.** The push would have been refused: no privacy.json" in card
    assert OVERRIDE_KEY in json.loads(uploaded["config.json"])   # ModelConfig keeps extra keys at the top level
    assert uploaded["README.md"] == (plain / "README.md").read_bytes()
