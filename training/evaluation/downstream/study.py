"""Downstream usefulness of a generator: does training a classifier on its images help on real scans?

Regimes (design.REGIMES), each over >= 3 seeds (classifier init, data order, low-data subset and synthetic seed
all change with the seed; regimes share them within a seed, so differences are paired), as mean and 95 %
t-interval over seeds. `run_study` runs every regime x classifier x seed and returns the downstream.json report.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..model_folder import versions
from .card_section import HEADLINE
from .classifiers import apply_init, fit, make_classifier, predict, read_init
from .design import (FINETUNE_LR_FACTOR, IMAGENET_NOTE, INIT_REGIME, METRICS, POOL_RATIO, REGIMES, DELTAS,
                     SCHEMA_VERSION, SYNTHETIC_SEED_OFFSET, TASK_DESCRIPTIONS, DownstreamError)
from .schema import validate
from .stats import scores, summarize, verdict
from .synthetic import SyntheticImages
from .task import Task, generate_pool, stratified_subset, synth_labels_source


@dataclass
class Settings:
    seeds: list[int]
    classifiers: list[str]
    steps: dict[str, int]
    batch_size: int = 32
    lr: float = 1e-3
    threads: int = 1
    device: str = "cpu"
    truncation: float = 1.0
    quick: bool = False
    init: str | None = None
    progress: bool = True
    balanced: bool = False     # class-balanced batches (see fit)


def regimes_for(settings: Settings) -> list[dict[str, Any]]:
    return [*REGIMES, *([INIT_REGIME] if settings.init else [])]


@dataclass
class _Study:
    """What every run of one study shares."""
    gen: Any
    task: Task
    settings: Settings
    device: Any
    labels_from: str                     # "generator" | "classifier" | "dataset"
    regimes: list[dict[str, Any]]
    init_tensors: dict[str, Any] | None = None
    init_info: dict[str, Any] | None = None
    init_fits: dict[str, bool] = field(default_factory=dict)
    bar: Any = None
    synthetic: SyntheticImages | None = None   # --synthetic: prepared images instead of generating

    @property
    def k(self) -> int:
        return len(self.task.classes)


def _check_init(study: _Study) -> None:
    """Read --init and find which classifiers it fits (a ResNet-18 checkpoint fits no CNN); none: an error."""
    settings = study.settings
    if not settings.init:
        return
    study.init_tensors = read_init(settings.init)
    study.init_info = {"path": str(settings.init), "applied_to": {},
                       "sha256": hashlib.sha256(Path(settings.init).read_bytes()).hexdigest()}
    for clf in settings.classifiers:
        try:
            study.init_info["applied_to"][clf] = apply_init(make_classifier(clf, study.k), study.init_tensors)
            study.init_fits[clf] = True
        except DownstreamError as exc:
            study.init_info["applied_to"][clf] = {"error": str(exc)}
            study.init_fits[clf] = False
    if not any(study.init_fits.values()):
        raise DownstreamError(f"--init {Path(settings.init).name} fits none of the classifiers "
                              f"({'; '.join(v['error'] for v in study.init_info['applied_to'].values())})")


def _regimes_of(study: _Study, clf: str) -> list[dict[str, Any]]:
    return [r for r in study.regimes if r["phases"] != "init-finetune" or study.init_fits.get(clf)]


def _synthetic_pool(study: _Study, seed: int) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """This seed's synthetic images (POOL_RATIO x the real training count) and, for a conditional model, their
    labels: POOL_RATIO shuffled copies of the real training labels, so every block of n_real has the real
    class proportions. With --synthetic: rows of the prepared dataset, labels from its `label` column."""
    synth_seed = SYNTHETIC_SEED_OFFSET + seed
    pool_n = POOL_RATIO * len(study.task.y_train)
    if study.synthetic is not None:  # --synthetic: drawn from the prepared dataset, in an order set by synth_seed
        pool_x, pool_y = study.synthetic.pool(synth_seed, pool_n)
        pool_y = pool_y if study.labels_from == "dataset" else None
    else:
        pool_y = None
        if study.labels_from == "generator":
            rng = np.random.default_rng([seed, 2])
            pool_y = np.concatenate([rng.permutation(study.task.y_train) for _ in range(POOL_RATIO)])
        pool_x = generate_pool(study.gen, pool_y, pool_n, synth_seed, study.settings.truncation)
    record = {"seed": seed, "synthetic_seed": synth_seed, "sha256": hashlib.sha256(pool_x.tobytes()).hexdigest(),
              "label_counts": {}}
    return pool_x, pool_y, record


def _train_regime(study: _Study, regime: dict[str, Any], net, data: dict[str, Any], steps: int,
                  order_seed: int) -> tuple[int, int]:
    """Train `net` as the regime says; returns (real images, synthetic images) it was trained on."""
    import torch

    s, n_real = study.settings, len(data["yr"])
    common = {"batch": s.batch_size, "device": study.device, "desc": regime["id"], "progress": study.bar,
              "balanced": s.balanced}
    ft_lr = s.lr * FINETUNE_LR_FACTOR
    n_syn = int(round(regime["synthetic_ratio"] * n_real))
    if regime["phases"] == "pretrain-finetune":
        fit(net, data["xs"][:n_syn], torch.from_numpy(data["ys"][:n_syn]), steps=steps, lr=s.lr, seed=order_seed,
            **common)
        fit(net, data["xr"], data["yr"], steps=steps, lr=ft_lr, seed=order_seed + 1, **common)
        return n_real, n_syn
    if regime["phases"] == "init-finetune":
        apply_init(net, study.init_tensors)
        fit(net, data["xr"], data["yr"], steps=steps, lr=ft_lr, seed=order_seed, **common)
        return n_real, 0
    frac = regime["real_fraction"]
    real_idx = np.arange(n_real) if frac >= 1.0 else data["subsets"][frac] if frac > 0 else np.arange(0)
    x_parts, y_parts = [data["xr"][real_idx]], [data["yr"][real_idx]]
    if n_syn:
        x_parts.append(data["xs"][:n_syn])
        y_parts.append(torch.from_numpy(data["ys"][:n_syn]))
    fit(net, torch.cat(x_parts), torch.cat(y_parts), steps=steps, lr=s.lr, seed=order_seed, **common)
    return len(real_idx), n_syn


def _classifier_runs(study: _Study, clf: str, index: int, seed: int, data: dict[str, Any],
                     record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every regime of one classifier and seed (same init and data order in each: differences are paired).
    For a model not conditional on the task, the TRTR classifier labels the synthetic pool first."""
    import torch

    steps, task = study.settings.steps[clf], study.task
    runs = {}
    data = {**data, "ys": data["pool_y"]}
    for regime in _regimes_of(study, clf):
        t_run = time.process_time()
        torch.manual_seed(seed * 1000 + index)
        net = make_classifier(clf, study.k).to(study.device)
        n_real, n_syn = _train_regime(study, regime, net, data, steps, order_seed=seed * 1000 + 17)
        pred = predict(net, torch.from_numpy(task.x_test), study.device).argmax(1)
        runs[regime["id"]] = {"seed": seed, "synthetic_seed": record["synthetic_seed"] if n_syn else None,
                              "n_real": n_real, "n_synthetic": n_syn,
                              "steps": steps * (2 if regime["phases"] == "pretrain-finetune" else 1),
                              **scores(task.y_test, pred, study.k), "cpu_s": round(time.process_time() - t_run, 2)}
        if regime["id"] == "trtr" and study.labels_from == "classifier":
            probs = predict(net, data["xs"], study.device)
            data["ys"] = probs.argmax(1).astype(np.int64)
            record.setdefault("label_confidence", {})[clf] = round(float(probs.max(1).mean()), 4)
    record["label_counts"][clf] = np.bincount(data["ys"], minlength=study.k).tolist()
    return runs


def _summaries(results: dict[str, dict[str, Any]], k: int) -> None:
    for per_clf in results.values():
        for res in per_clf.values():
            runs = res["runs"]
            res["summary"] = {
                **{m: summarize([r[m] for r in runs], (0.0, 1.0)) for m in METRICS},
                "per_class_recall": [None if runs[0]["per_class_recall"][i] is None else
                                     summarize([r["per_class_recall"][i] for r in runs], (0.0, 1.0))
                                     for i in range(k)]}
            res["confusion_total"] = np.sum([r["confusion"] for r in runs], axis=0).tolist()


def _deltas(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Paired differences over seeds (DELTAS), each with a verdict on the headline metric."""
    deltas: dict[str, dict[str, Any]] = {}
    for clf, per_clf in results.items():
        deltas[clf] = {}
        for name, a, b in DELTAS:
            if a in per_clf and b in per_clf:
                ra = {r["seed"]: r for r in per_clf[a]["runs"]}
                rb = {r["seed"]: r for r in per_clf[b]["runs"]}
                common = sorted(set(ra) & set(rb))
                stats = {m: summarize([ra[s][m] - rb[s][m] for s in common], (-1.0, 1.0)) for m in METRICS}
                deltas[clf][name] = {"minuend": a, "subtrahend": b, "metric": HEADLINE, "stats": stats,
                                     "verdict": verdict(stats[HEADLINE])}
    return deltas


def _medigan(results: dict[str, dict[str, Any]], deltas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """medigan's CLF field names (trained_on_real / _fake / _real_and_fake, CLF_delta) with our means."""
    def block(s: dict[str, Any]) -> dict[str, float]:
        return {"accuracy": s["accuracy"]["mean"], "balanced_accuracy": s[HEADLINE]["mean"],
                "f1": s["macro_f1"]["mean"]}
    return {clf: {"trained_on_real": block(res["trtr"]["summary"]), "trained_on_fake": block(res["tstr"]["summary"]),
                  "trained_on_real_and_fake": block(res["mix_1_1"]["summary"]),
                  "CLF_delta": deltas[clf]["mix_1_1_vs_trtr"]["stats"][HEADLINE]["mean"]}
            for clf, res in results.items()}


def _synthetic_note(labels_from: str) -> str:
    if labels_from == "generator":
        return ("labels from the conditional generator (`label=`), drawn in the real training split's class "
                "proportions")
    if labels_from == "dataset":
        return ("images and labels from a prepared synthetic dataset of this model (--synthetic): each image's "
                "class is the one the conditional generator drew it with, in the dataset's class proportions")
    return ("this model is not conditional on the task's labels: its images were labelled by the TRTR classifier "
            "(real data only, same architecture and seed), so TSTR measures agreement with that classifier rather "
            "than the generator's own class fidelity")


def _notes(study: _Study, leakage: dict[str, Any], present: list[str], missing: list[str]) -> list[str]:
    notes = list(study.task.notes)
    if missing:
        notes.append(f"The held-out test set covers {len(present)} of {study.k} classes ({', '.join(present)}); "
                     "balanced accuracy and macro-F1 are over the classes present and per-class recall is null for "
                     f"{', '.join(missing)}: the test cannot tell how well those are recognised."
                     + (f" With one class, a classifier that always answers {present[0]} scores 1.0, so these "
                        "numbers cannot rank the regimes." if len(present) == 1 else ""))
    if leakage["status"] != "passed":
        notes.append(f"The test set is {leakage['message']}.")
    if study.labels_from == "classifier":
        notes.append("Synthetic labels: " + _synthetic_note(study.labels_from) + ".")
    if study.settings.quick:
        notes.append("QUICK run (smoke test: tiny step counts, CNN only): these numbers are not a measurement.")
    return notes + [IMAGENET_NOTE]


def _data_block(task: Task, present: list[str], missing: list[str]) -> dict[str, Any]:
    def counts(y: np.ndarray) -> list[int]:
        return np.bincount(y, minlength=len(task.classes)).tolist()
    return {"dataset": task.dataset, "source": task.source, "size": int(task.x_train.shape[-1]), "split": task.split,
            "train": {"slices": int(len(task.x_train)), "subjects": sorted(set(task.subject_train.tolist())),
                      "class_counts": counts(task.y_train)},
            "test": {"slices": int(len(task.x_test)), "subjects": sorted(set(task.subject_test.tolist())),
                     "class_counts": counts(task.y_test), "classes_present": present, "classes_missing": missing}}


def run_study(gen, task: Task, settings: Settings, leakage: dict[str, Any], *, model_folder: Path | None = None,
              command: str = "", synthetic: SyntheticImages | None = None) -> dict[str, Any]:
    """Every regime x classifier x seed; returns the downstream.json report (validated against SCHEMA).
    `synthetic`: prepared images of this model to draw the pools from instead of generating them."""
    import torch
    from tqdm.auto import tqdm

    cpu0, wall0 = time.process_time(), time.time()
    labels_from = synthetic.labels_source(task.name, task.classes) if synthetic is not None else \
        synth_labels_source(gen, task)
    study = _Study(gen, task, settings, torch.device(settings.device), labels_from, regimes_for(settings),
                   synthetic=synthetic)
    _check_init(study)
    phases = {"train": 1, "pretrain-finetune": 2, "init-finetune": 1}
    total = len(settings.seeds) * sum(settings.steps[c] * phases[r["phases"]] for c in settings.classifiers
                                      for r in _regimes_of(study, c))
    study.bar = tqdm(total=total, desc="downstream (optimiser steps)", unit="step", disable=not settings.progress)
    results: dict[str, dict[str, Any]] = {c: {r["id"]: {"runs": []} for r in _regimes_of(study, c)}
                                          for c in settings.classifiers}
    records, cpu = [], {"generation": 0.0, **{c: 0.0 for c in settings.classifiers}}
    data = {"xr": torch.from_numpy(task.x_train), "yr": torch.from_numpy(task.y_train.astype(np.int64))}
    for seed in settings.seeds:
        t0 = time.process_time()
        pool_x, pool_y, record = _synthetic_pool(study, seed)
        cpu["generation"] += time.process_time() - t0
        data.update(xs=torch.from_numpy(pool_x), pool_y=pool_y,
                    subsets={f: stratified_subset(task.y_train, f, seed) for f in (0.1, 0.25)})
        for index, clf in enumerate(settings.classifiers):
            t0 = time.process_time()
            for rid, run in _classifier_runs(study, clf, index, seed, data, record).items():
                results[clf][rid]["runs"].append(run)
            cpu[clf] += time.process_time() - t0
        records.append(record)
    study.bar.close()
    _summaries(results, study.k)
    deltas = _deltas(results)
    present = [c for i, c in enumerate(task.classes) if (task.y_test == i).any()]
    missing = [c for c in task.classes if c not in present]
    report = {
        "schema_version": SCHEMA_VERSION, "kind": "medgan-downstream",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"id": gen.config.id, "arch": gen.config.generator.arch, "conditional": bool(gen.classes),
                  "classes": list(gen.classes), "condition": gen.config.generator.condition,
                  "resolution": gen.config.generator.resolution,
                  "folder": str(model_folder) if model_folder else None},
        "task": {"name": task.name, "classes": task.classes, "description": TASK_DESCRIPTIONS[task.name]},
        "data": _data_block(task, present, missing), "leakage_check": leakage,
        "synthetic": _synthetic_block(study, records),
        "settings": {**_settings_block(settings), "init": study.init_info},
        "regimes": [dict(r) for r in study.regimes],
        "results": results, "deltas": deltas, "medigan": _medigan(results, deltas),
        "notes": _notes(study, leakage, present, missing),
        "timing": {"cpu_time_s": round(time.process_time() - cpu0, 2), "wall_time_s": round(time.time() - wall0, 2),
                   "threads": settings.threads, "cpu_s_by_part": {k: round(v, 2) for k, v in cpu.items()}},
        "command": command, "versions": versions("torch", "torchvision", "numpy"), "figure": None,
    }
    problems = validate(report)
    if problems:  # a bug here, not a user error
        raise AssertionError("downstream.json does not match its schema: " + "; ".join(problems[:5]))
    return report


def _synthetic_block(study: _Study, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's `synthetic`: where the labels came from, the pools, and the --synthetic dataset if any."""
    block = {"labels_from": study.labels_from, "note": _synthetic_note(study.labels_from),
             "pool_per_seed": POOL_RATIO * len(study.task.x_train), "truncation": study.settings.truncation,
             "seeds": records}
    if study.synthetic is not None:
        block.update(truncation=study.synthetic.source.get("truncation", 1.0), source=study.synthetic.source)
    return block


def _settings_block(settings: Settings) -> dict[str, Any]:
    return {"seeds": settings.seeds, "classifiers": settings.classifiers, "steps": settings.steps,
            "batch_size": settings.batch_size, "lr": settings.lr, "finetune_lr": settings.lr * FINETUNE_LR_FACTOR,
            "optimizer": "AdamW (weight decay 1e-4), cosine decay to 0, batches drawn with replacement"
                         + (", class-balanced" if settings.balanced else "") + ", no augmentation, final weights "
                         "tested",
            "balanced_batches": settings.balanced,
            "quick": settings.quick, "threads": settings.threads, "device": settings.device,
            "pretrained_note": IMAGENET_NOTE}
