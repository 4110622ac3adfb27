"""A tiny model folder that looks like a trained and evaluated one: provenance in config.json (as
training.gan.export writes it) and an eval.json with training.evaluate's schema, applied through evaluate's own
update path."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import make_model_folder

from medgan.config import ModelConfig

TRAIN_COMMAND = "python -m training.train --dataset toy-brain --size 32 --steps 10 --out runs/tiny"
EVAL_COMMAND = "python -m training.evaluate weights/{id} --dataset toy-brain --num 64"


def fake_eval_report(model_id: str, fid: float = 123.456) -> dict[str, Any]:
    """The keys training.evaluate writes to eval.json (values made up; the structure is what matters)."""
    headline = {"fid": 80.5, "kid": {"mean": 0.012, "std": 0.003}, "precision": 0.9, "recall": 0.85}
    return {
        "fid": fid, "kid": {"mean": 0.105, "std": 0.01}, "precision": 0.42, "recall": 0.31,
        "ms_ssim_synthetic": 0.41, "ms_ssim_real": 0.37,
        "floor": {"split": "train split, subjects divided into two disjoint halves A and B", "fallback": False,
                  "subjects": [1, 1], "n": 32, **headline,
                  "model_same_n": {"fid": 150.0, "kid": {"mean": 0.2, "std": 0.02}, "precision": 0.4, "recall": 0.3}},
        "memorization": {"primary_distance": "pixel RMS", "median_synthetic": 0.081, "median_heldout": 0.064,
                         "heldout_percentile": 5, "threshold": 0.03, "fraction_closer": 0.02,
                         "fraction_exact_copies": 0.0, "expected_fraction_if_no_copying": 0.05,
                         "n_heldout_queries": 16},
        "samples": {"n_synthetic": 64, "synthetic_seed": 0, "n_real": 48, "real": "train split (all of it)"},
        "real_data": {"dataset": "toy-brain", "slices": 64, "train_slices": 48, "heldout_slices": 16,
                      "train_subjects": 2, "heldout_subjects": 1},
        "feature_extractor": {"name": "inception-v3 (test stand-in)", "feature_dim": 2048},
        "setup": {"model_id": model_id, "evaluated_at": "2026-11-22T00:00:00+00:00",
                  "command": EVAL_COMMAND.format(id=model_id)},
        "versions": {"python": "3.11", "medgan": "0.1.0"},
    }


def make_evaluated_model(parent: Path, model_id: str = "tiny-card") -> Path:
    """make_model_folder + train.py-style provenance + eval.json, then evaluate.update_model_folder (-> card)."""
    from training.evaluation.evaluate import update_model_folder
    from training.evaluation.model_folder import write_json

    folder = make_model_folder(parent, model_id)
    config = ModelConfig.load(folder)
    config.training_data = {"name": "toy-brain", "description": "Two made-up subjects.",
                            "licences": ["CC0-1.0"], "sources": [{"id": "a.nii.gz", "subject": "A", "slices": 24,
                                                                   "licence": "CC0-1.0"}],
                            "train_slices": 48, "train_subjects": 2, "heldout_slices": 16}
    config.training = {"recipe": "small-data", "command": TRAIN_COMMAND, "steps": 10, "images_seen": 80,
                       "wall_time_s": 3.0, "ema": True, "config": {"batch_size": 8, "lr_g": 0.0002}}
    config.save(folder)
    report = fake_eval_report(model_id)
    write_json(folder / "eval.json", report)
    update_model_folder(folder, report, EVAL_COMMAND.format(id=model_id))
    return folder


def card_metadata(folder: Path) -> dict[str, Any]:
    from huggingface_hub import ModelCard

    return ModelCard.load(folder / "README.md").data.to_dict()


