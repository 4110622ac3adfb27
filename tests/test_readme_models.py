"""README.md's models table says what each shipped model's files say: one row per model in weights/, best first
(medgan.zoo.quality_rank, the order the app picks its default by), each cell recomputed here from the model's
config.json, eval.json, downstream.json and privacy.json."""
from __future__ import annotations

import json
import re

from helpers import ROOT, SHIPPED
from medgan import zoo
from training.evaluation.audit_report import read, readme_cell

README = (ROOT / "README.md").read_text()
# FID against unseen people beside the real floor; the marks say when the unseen data is something else.
AGAINST_MARK = {zoo.HELD_OUT: "", zoo.HELD_OUT_SLAB: " †", zoo.TRAINING: " ‡"}


def files(model_id: str) -> tuple[dict, dict, dict]:
    folder = ROOT / "weights" / model_id
    return tuple(json.loads((folder / name).read_text()) for name in ("config.json", "eval.json", "downstream.json"))


def with_ci(summary: dict) -> str:
    low, high = summary["ci95"]
    return f"{summary['mean']:.2f} [{low:.2f}, {high:.2f}]"


def expected_row(model_id: str) -> list[str]:
    config, evaluation, downstream = files(model_id)
    generator, data = config["generator"], config["training_data"]
    quality = zoo.quality(evaluation)
    classifier = config["metrics"]["downstream"]["headline_classifier"]
    tstr, trtr = (downstream["results"][classifier][regime]["summary"]["balanced_accuracy"]
                  for regime in ("tstr", "trtr"))
    return [f"[`{model_id}`](weights/{model_id}/README.md)", f"{generator['resolution']}²",
            f"{generator['condition']} ({len(generator['classes'])})" if generator.get("classes") else "–",
            f"{data['train_subjects']} ({data['train_slices']} slices)",
            f"{quality.fid:.1f} ({quality.floor:.1f}){AGAINST_MARK[quality.against]}",
            f"{100 * evaluation['memorization']['fraction_closer']:.1f} %",
            f"{with_ci(tstr)} vs {with_ci(trtr)} ({downstream['task']['name']}, {classifier}, {tstr['n']} seeds)",
            readme_cell(read(ROOT / "weights" / model_id))]


def expected_rows() -> list[list[str]]:
    order = sorted(SHIPPED, key=lambda m: zoo.quality_rank(zoo.quality(files(m)[1])))
    return [expected_row(m) for m in order]


def readme_rows() -> list[list[str]]:
    section = re.search(r"^## Models\n(.*?)(?=^## )", README, re.S | re.M).group(1)
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| [`")]


def test_readme_models_table_matches_the_shipped_files():
    assert SHIPPED and readme_rows() == expected_rows()
