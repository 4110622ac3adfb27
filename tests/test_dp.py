"""Differentially private training (training.gan.dp): DP-SGD on the discriminator with Opacus. A tiny DP run records an
ε that Opacus' own accountant reproduces from the recorded noise multiplier, batch size, dataset size and steps;
training stops when the budget is spent; the recipe options DP-SGD cannot run with are refused; the card says it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from opacus.accountants import RDPAccountant
from test_train import TINY, make_npz

from medgan.generator import Generator
from training.gan.cli import main
from training.gan.discriminator import DISCRIMINATOR_FILE


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    return make_npz(tmp_path_factory.mktemp("dpdata") / "phantom.npz", n_train=40, n_heldout=8)


def train_dp(root: Path, npz: Path, *extra: str) -> dict:
    folder = root / "weights" / "dp-32"
    assert main(["--data", str(npz), *TINY, "--out", str(root / "run"), "--export", str(folder),
                 "--dp-delta", "1e-3", *extra]) == 0
    return json.loads((folder / "config.json").read_text())


def accountant_epsilon(dp: dict) -> float:
    """ε recomputed by Opacus from what config.json records: σ, q = batch / slices, steps, at δ."""
    accountant = RDPAccountant()
    accountant.history = [(dp["noise_multiplier"], dp["expected_batch_size"] / dp["dataset_size"], dp["steps"])]
    return accountant.get_epsilon(dp["delta"])


def test_dp_run_records_an_epsilon_the_accountant_reproduces(tmp_path, npz):
    config = train_dp(tmp_path, npz, "--steps", "6", "--dp-epsilon", "8")
    dp = config["training"]["dp"]
    assert dp["dataset_size"] == 40 and dp["expected_batch_size"] == 8 and dp["steps"] == 6
    assert dp["epsilon"] == pytest.approx(accountant_epsilon(dp), rel=1e-5)
    assert 7.0 < dp["epsilon"] <= 8.0 and dp["budget_spent"]   # the noise was chosen to spend ε over --steps
    cfg = config["training"]["config"]
    assert (cfg["spectral_norm"], cfg["d_batchnorm"], cfg["r1"], cfg["dp_epsilon"]) == (False, False, 0.0, 8.0)
    folder = tmp_path / "weights" / "dp-32"
    images = Generator.from_folder(folder).generate(4, seed=0, output_type="np")
    assert images.shape == (4, 32, 32)
    assert (folder / DISCRIMINATOR_FILE).is_file()   # its tensors keep D's names (the hooks are on D itself)
    card = (folder / "README.md").read_text()
    assert f"(ε = {dp['epsilon']:.3g}, δ = 0.001)" in card and "DP-SGD" in card and "no R1 penalty" in card


def test_training_stops_when_the_budget_is_spent(tmp_path, npz, capsys):
    config = train_dp(tmp_path, npz, "--steps", "200", "--dp-epsilon", "2", "--dp-noise-multiplier", "1.5")
    dp = config["training"]["dp"]
    assert dp["budget_spent"] and dp["steps"] == dp["max_steps"] < 200
    assert dp["epsilon"] <= 2.0 and dp["epsilon"] == pytest.approx(accountant_epsilon(dp), rel=1e-5)
    # one more step would have spent more than the budget
    assert accountant_epsilon({**dp, "steps": dp["steps"] + 1}) > 2.0
    assert "privacy budget spent" in capsys.readouterr().out


@pytest.mark.parametrize("flags, says", [
    (["--r1", "0.2"], "--r1 0.2"), (["--spectral-norm"], "--spectral-norm True"),
    (["--ada-target", "0.6"], "--ada-target 0.6"), (["--dp-delta", "0.5"], "--dp-delta must be in (0, 1/slices)"),
])
def test_options_dp_sgd_cannot_run_with_are_refused(tmp_path, npz, capsys, flags, says):
    argv = ["--data", str(npz), *TINY, "--steps", "2", "--out", str(tmp_path / "run"), "--dp-epsilon", "4",
            "--dp-delta", "1e-3", *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
