"""The JSON Schema of downstream.json."""
from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from ...data.labels import LABEL_KINDS
from .card_section import HEADLINE
from .design import CLASSIFIERS, METRICS, REGIMES, SCHEMA_VERSION

_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_INT = {"type": "integer", "minimum": 0}
_STR = {"type": "string"}
_STRS = {"type": "array", "items": _STR}
_INTS = {"type": "array", "items": _INT}
_STAT = {"type": "object", "description": "mean, sample std, 95 % t-interval of the mean over seeds (clipped to "
                                           "the metric's range), and the per-seed values",
         "required": ["mean", "std", "n", "ci95", "values"],
         "properties": {"mean": _NUM, "std": _NUM, "n": {"type": "integer", "minimum": 1},
                        "ci95": {"type": "array", "items": _NUM, "minItems": 2, "maxItems": 2},
                        "values": {"type": "array", "items": _NUM, "minItems": 1}}}
_MATRIX = {"type": "array", "items": _INTS, "description": "confusion[true][predicted], task class order"}
_RUN = {"type": "object", "description": "one seed of one regime",
        "required": ["seed", "synthetic_seed", "n_real", "n_synthetic", "steps", *METRICS, "per_class_recall",
                     "confusion", "cpu_s"],
        "properties": {"seed": {"type": "integer"}, "synthetic_seed": {"type": ["integer", "null"]},
                       "n_real": _INT, "n_synthetic": _INT, "steps": _INT,
                       **{m: {"type": "number", "minimum": 0, "maximum": 1} for m in METRICS},
                       "per_class_recall": {"type": "array", "items": _NUM_OR_NULL,
                                            "description": "null: class absent from the test set"},
                       "confusion": _MATRIX, "cpu_s": _NUM}}
_REGIME_RESULT = {"type": "object", "required": ["runs", "summary", "confusion_total"],
                  "properties": {"runs": {"type": "array", "items": _RUN, "minItems": 1},
                                 "summary": {"type": "object", "required": [*METRICS, "per_class_recall"],
                                             "properties": {**{m: _STAT for m in METRICS},
                                                            "per_class_recall": {"type": "array", "items": {
                                                                "anyOf": [_STAT, {"type": "null"}]}}}},
                                 "confusion_total": _MATRIX}}
_DELTA = {"type": "object", "required": ["minuend", "subtrahend", "metric", "stats", "verdict"],
          "properties": {"minuend": _STR, "subtrahend": _STR, "metric": {"const": HEADLINE},
                         "stats": {"type": "object", "required": list(METRICS),
                                   "properties": {m: _STAT for m in METRICS}},
                         "verdict": {"enum": ["gain", "loss", "no measurable effect"]}}}
_MEDIGAN_SCORES = {"type": "object", "required": ["accuracy", "balanced_accuracy", "f1"],
                   "properties": {"accuracy": _NUM, "balanced_accuracy": _NUM, "f1": _NUM}}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "downstream.json (MedGAN Studio, training/evaluation/downstream/)",
    "type": "object",
    "required": ["schema_version", "kind", "model", "task", "data", "leakage_check", "synthetic", "settings",
                 "regimes", "results", "deltas", "medigan", "notes", "timing", "command", "versions"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "kind": {"const": "medgan-downstream"},
        "created_utc": _STR,
        "model": {"type": "object", "required": ["id", "arch", "conditional", "classes", "condition", "resolution"],
                  "properties": {"id": _STR, "arch": _STR, "conditional": {"type": "boolean"}, "classes": _STRS,
                                 "condition": _STR, "resolution": _INT, "folder": {"type": ["string", "null"]}}},
        "task": {"type": "object", "required": ["name", "classes", "description"],
                 "properties": {"name": {"enum": list(LABEL_KINDS)}, "classes": {**_STRS, "minItems": 2},
                                "description": _STR}},
        "data": {"type": "object", "description": "real slices: classifier training (train) and test (heldout)",
                 "required": ["dataset", "source", "size", "split", "train", "test"],
                 "properties": {"dataset": _STR, "source": _STR, "size": _INT, "split": {"type": ["string", "null"]},
                                **{part: {"type": "object",
                                          "required": ["slices", "subjects", "class_counts"],
                                          "properties": {"slices": _INT, "subjects": _STRS, "class_counts": _INTS,
                                                         "classes_present": _STRS, "classes_missing": _STRS}}
                                   for part in ("train", "test")}}},
        "leakage_check": {"type": "object",
                          "required": ["status", "generator_subjects", "basis", "test_subjects", "overlap",
                                       "message"],
                          "properties": {"status": {"enum": ["passed", "slab-split"]},
                                         "generator_subjects": _STRS, "basis": _STR, "test_subjects": _STRS,
                                         "overlap": _STRS, "message": _STR, "generator_split_verified":
                                             {"type": "boolean"}}},
        "synthetic": {"type": "object",
                      "required": ["labels_from", "note", "pool_per_seed", "truncation", "seeds"],
                      "properties": {"labels_from": {"enum": ["generator", "classifier", "dataset"]}, "note": _STR,
                                     "source": {"type": "object", "description": "--synthetic: the dataset the "
                                                "pools were drawn from (folder, model, revision, seed, count, "
                                                "truncation, class)"},
                                     "pool_per_seed": _INT, "truncation": _NUM,
                                     "seeds": {"type": "array", "items": {
                                         "type": "object", "required": ["seed", "synthetic_seed", "sha256",
                                                                        "label_counts"],
                                         "properties": {"seed": {"type": "integer"},
                                                        "synthetic_seed": {"type": "integer"}, "sha256": _STR,
                                                        "label_counts": {"type": "object",
                                                                         "additionalProperties": _INTS}}}}}},
        "settings": {"type": "object",
                     "required": ["seeds", "classifiers", "steps", "batch_size", "lr", "finetune_lr", "optimizer",
                                  "quick", "threads", "device", "init", "pretrained_note"],
                     "properties": {"seeds": {"type": "array", "items": {"type": "integer"}, "minItems": 3},
                                    "classifiers": {"type": "array", "items": {"enum": list(CLASSIFIERS)},
                                                    "minItems": 1},
                                    "steps": {"type": "object", "additionalProperties": _INT},
                                    "batch_size": _INT, "lr": _NUM, "finetune_lr": _NUM, "optimizer": _STR,
                                    "quick": {"type": "boolean"}, "balanced_batches": {"type": "boolean"}, "threads": _INT, "device": _STR,
                                    "init": {"type": ["object", "null"]}, "pretrained_note": _STR}},
        "regimes": {"type": "array", "minItems": len(REGIMES), "items": {
            "type": "object", "required": ["id", "title", "real_fraction", "synthetic_ratio", "phases", "medigan"],
            "properties": {"id": _STR, "title": _STR, "real_fraction": _NUM, "synthetic_ratio": _NUM,
                           "phases": _STR, "medigan": {"type": ["string", "null"]}}}},
        "results": {"type": "object", "description": "classifier -> regime id -> runs and summary",
                    "additionalProperties": {"type": "object", "additionalProperties": _REGIME_RESULT}},
        "deltas": {"type": "object", "description": "classifier -> paired differences over seeds",
                   "additionalProperties": {"type": "object", "additionalProperties": _DELTA}},
        "medigan": {"type": "object", "description": "medigan's CLF field names, per classifier (means)",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["trained_on_real", "trained_on_fake", "trained_on_real_and_fake", "CLF_delta"],
                        "properties": {"trained_on_real": _MEDIGAN_SCORES, "trained_on_fake": _MEDIGAN_SCORES,
                                       "trained_on_real_and_fake": _MEDIGAN_SCORES, "CLF_delta": _NUM}}},
        "notes": _STRS,
        "timing": {"type": "object", "required": ["cpu_time_s", "wall_time_s", "threads"],
                   "properties": {"cpu_time_s": _NUM, "wall_time_s": _NUM, "threads": _INT,
                                  "cpu_s_by_part": {"type": "object", "additionalProperties": _NUM}}},
        "command": _STR,
        "versions": {"type": "object", "additionalProperties": _STR},
        "figure": {"type": ["string", "null"]},
    },
}


def validate(report: Any) -> list[str]:
    """Problems of a downstream.json report against SCHEMA (JSON Schema 2020-12, checked by jsonschema), each
    with its JSON path; [] when it conforms."""
    errors = Draft202012Validator(SCHEMA).iter_errors(report)
    return [f"{error.json_path}: {error.message}" for error in sorted(errors, key=lambda e: list(map(str, e.path)))]
