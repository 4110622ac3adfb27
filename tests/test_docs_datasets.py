"""docs/datasets.md works as written: every command parses with the real CLI, and the Python blocks run against a
parquet dataset of the shipped conditional model."""
from __future__ import annotations

import re
import shlex

from helpers import ROOT
from medgan.dataset import build_parser, export_dataset
from training.evaluation.downstream import cli as downstream
from training.publish import push

PAGE = (ROOT / "docs" / "datasets.md").read_text()
DOC_DIR = "data/brain-t1-synthetic"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", PAGE, re.S | re.M)


PARSERS = {"medgan.dataset": lambda args: build_parser().parse_args(args),
           "training.push": push.parse_args, "training.downstream": downstream.parse_args}


def test_every_command_parses_with_its_cli():
    commands = [shlex.split(line) for block in blocks("bash") for line in block.splitlines() if line.strip()]
    assert len(commands) >= 6
    for argv in commands:
        module = argv[argv.index("-m") + 1]
        args = PARSERS[module](argv[argv.index("-m") + 2:])
        assert args is not None, argv


def test_the_python_blocks_load_a_dataset(tmp_path):
    folder = tmp_path / "brain-t1-synthetic"
    export_dataset(str(ROOT / "weights" / "brain-t1-style-64"), 8, folder, "parquet", progress=False)
    python = blocks("python")
    assert len(python) == 2
    namespace: dict = {}
    for code in python:
        exec(compile(code.replace(DOC_DIR, str(folder)), "docs/datasets.md", "exec"), namespace)
    assert len(namespace["ds"]) == 8
    assert namespace["ds"].features["label"].names == ["inferior", "lower", "middle", "upper", "superior"]
    assert tuple(namespace["images"].shape[1:]) == (1, 64, 64) and len(namespace["labels"]) == len(namespace["images"])


def test_the_page_is_linked_from_the_readme():
    assert "(docs/datasets.md)" in (ROOT / "README.md").read_text()
