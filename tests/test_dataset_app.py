"""The app's "dataset (parquet + card)" download and its command line for larger counts, through gradio_client
against `python app.py`: the zip is the folder the CLI writes (same bytes), `datasets` loads it, the command
names the model, seed, ψ and class and writes what it says; bad requests get clear errors."""
from __future__ import annotations

import shlex
import zipfile
from pathlib import Path

import datasets
import numpy as np
import pytest
from gradio_client import Client

from helpers import make_model_folder, running_app
from medgan import Generator
from medgan.dataset import main as dataset_main
from medgan.testing import ROOT

pytestmark = pytest.mark.slow  # starts the app

STYLE = "brain-t1-style-64"


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_command(command: str, out: Path) -> None:
    """Run an app-given `python -m medgan.dataset …` command in this process, with --out replaced by `out`."""
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "medgan.dataset"]
    args = argv[3:]
    args[args.index("--out") + 1] = str(out)
    assert dataset_main([*args, "--quiet"]) == 0


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    extra = tmp_path_factory.mktemp("weights")
    make_model_folder(extra, "tiny-test")
    with running_app({"MEDGAN_WEIGHTS_DIRS": str(extra)}) as proc:
        yield proc


def test_dataset_download_is_the_cli_folder_and_loads(app, tmp_path):
    client = Client(app.url, download_files=str(tmp_path / "dl"), verbose=False)
    zip_path = client.predict(STYLE, 42, 8, "dataset", False, 0.7, "upper", api_name="/download")
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(zip_path) as zf:
        assert sorted(zf.namelist()) == ["README.md", "data/train-00000-of-00001.parquet", "dataset.json"]
        zf.extractall(folder)
    ds = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "cache"))
    gen = Generator.from_folder(ROOT / "weights" / STYLE)
    assert len(ds) == 8 and ds.features["label"].names == gen.classes
    expected = gen.generate(8, 42, truncation=0.7, label="upper", output_type="np")
    assert np.array_equal(np.stack([np.asarray(im) for im in ds["image"]]), expected)
    assert set(ds["label"]) == {gen.classes.index("upper")} and all(ds["synthetic"])
    # The card's own command writes the same bytes.
    card = (folder / "README.md").read_text()
    command = next(line for line in card.splitlines() if line.startswith("python -m medgan.dataset "))
    out = tmp_path / "again" / shlex.split(command)[shlex.split(command).index("--out") + 1]
    run_command(command, out)
    assert tree(out) == tree(folder)


def test_the_command_for_larger_counts_names_every_setting_and_writes_them(app, tmp_path):
    client = Client(app.url, verbose=False)
    command = client.predict(STYLE, 7, 100000, 0.5, "lower", False, api_name="/dataset_command")
    assert command == (f"python -m medgan.dataset {STYLE} --count 100000 --out datasets/{STYLE}-seed7 "
                       "--format parquet --seed 7 --truncation 0.5 --class lower")
    small = command.replace("--count 100000", "--count 12")  # what it writes, at a size a test can afford
    run_command(small, tmp_path / "ds")
    from medgan.dataset import ParquetDataset
    ds = ParquetDataset(tmp_path / "ds")
    gen = Generator.from_folder(ROOT / "weights" / STYLE)
    assert np.array_equal(np.stack([ds.read(i) for i in range(12)]),
                          gen.generate(12, 7, truncation=0.5, label="lower", output_type="np"))
    # a download above the app's limit answers with the command instead
    with pytest.raises(Exception, match=r"count must be between 1 and \d+, got 500; a larger dataset is written "
                                        r"on your machine by: python -m medgan\.dataset brain-t1-style-64 --count 500"):
        client.predict(STYLE, 7, 500, "dataset", False, 1.0, "any", api_name="/download")


def test_bad_dataset_requests_are_refused_clearly(app, tmp_path):
    client = Client(app.url, download_files=str(tmp_path), verbose=False)
    with pytest.raises(Exception, match="model 'tiny-test' is unconditional"):
        client.predict("tiny-test", 1, 100, 1.0, "upper", False, api_name="/dataset_command")
    with pytest.raises(Exception, match="truncation must be between 0 and 2"):
        client.predict(STYLE, 1, 100, 5, "any", False, api_name="/dataset_command")
    with pytest.raises(Exception, match="Unknown model id 'nope'"):
        client.predict("nope", 1, 4, "dataset", False, 1.0, "any", api_name="/download")
    zip_path = client.predict("tiny-test", 1, 3, "dataset", False, 1.0, "any", api_name="/download")
    with zipfile.ZipFile(zip_path) as zf:  # the server kept serving; an unconditional model has no label column
        assert "label" not in zf.read("README.md").decode().split("---")[1]
