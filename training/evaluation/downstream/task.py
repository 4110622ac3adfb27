"""The task's real data (labelled from real slices, split by subject), the leakage check, and the synthetic images
with their labels."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...data import BUILTIN_DATASETS, DatasetError, load_dataset, recorded_name
from ...data.labels import LABEL_KINDS
from .design import GEN_CHUNK, DownstreamError, LeakageError


@dataclass
class Task:
    name: str
    classes: list[str]
    x_train: np.ndarray          # uint8 [n, 1, N, N]
    y_train: np.ndarray          # int64 [n]
    subject_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    subject_test: np.ndarray
    dataset: str
    source: str
    split: str | None
    notes: list[str] = field(default_factory=list)
    split_modes: list[str] = field(default_factory=list)  # a stratified split's per-contrast modes (brain-mr)


def task_axes(task: str, training_data: dict[str, Any]) -> tuple[int, ...]:
    if task == "plane":
        return (0, 1, 2)
    axes = training_data.get("axes")
    return tuple(int(a) for a in axes) if isinstance(axes, list) and axes else (2,)


def load_task(task: str, source: str, size: int, axes: tuple[int, ...]):
    """(Task, the full SliceDataset) from a built-in name or an .npz, at the generator's size."""

    if task not in LABEL_KINDS:
        raise DownstreamError(f"unknown task {task!r}; choose from {', '.join(LABEL_KINDS)}")
    try:
        ds = load_dataset(source, size, axes=axes)
    except DatasetError as exc:
        raise DownstreamError(str(exc)) from None
    labels, classes = ds.labels(task)
    if task == "plane" and len(classes) < 2:
        raise DownstreamError(f"--task plane needs slices along several planes; {source} has only "
                              f"{', '.join(classes) or 'none'} (build it with --axes 0,1,2, or use --task level)")
    keep = labels >= 0
    if not keep.any():
        raise DownstreamError(f"{source} has no {task} labels (native 2-D images have no level)")
    train = keep & (ds.split == "train")
    test = keep & (ds.split == "heldout")
    if not train.any() or not test.any():
        raise DownstreamError(f"{source}: the task needs labelled slices in both splits (train {int(train.sum())}, "
                              f"held-out {int(test.sum())})")
    recorded = recorded_name(ds, source)  # never the path it was read from: file names can name a patient
    name = source if source in BUILTIN_DATASETS else str(ds.meta.get("dataset") or ds.meta.get("name") or recorded)
    t = Task(task, list(classes), ds.images[train], labels[train], ds.subject[train].astype(str),
             ds.images[test], labels[test], ds.subject[test].astype(str), name, recorded, ds.meta.get("split"),
             split_modes=sorted(set(ds.meta.get("split_by_contrast", {}).values())))
    return t, ds


def generator_subjects(training_data: dict[str, Any], ds, gen_axes: tuple[int, ...]) -> tuple[set[str], str, bool]:
    """(subjects the generator may have trained on, how that is known, whether its split is verified)."""
    for key in ("train_subject_names", "train_subject_ids", "train_subjects", "subjects_train"):
        value = training_data.get(key)
        if isinstance(value, list) and value:
            return {str(v) for v in value}, f"recorded list training_data[{key!r}]", True
    recorded = training_data.get("sha256")
    if isinstance(recorded, str) and recorded:
        # as load_dataset selects slices for training: the generator's axes plus native 2-D images (axis -1)
        mask = (ds.split == "train") & ((ds.axis < 0) | np.isin(ds.axis, gen_axes))
        digest = hashlib.sha256(np.ascontiguousarray(ds.images[mask]).tobytes()).hexdigest()
        if digest == recorded:
            return ({str(s) for s in ds.subject[mask]},
                    "training-split sha256 in config.json matches this dataset's train split", True)
    sources = training_data.get("sources")
    if isinstance(sources, list):
        subjects = {str(s["subject"]) for s in sources if isinstance(s, dict) and s.get("subject")}
        if subjects:
            return (subjects, "every subject of the model's recorded sources (which of them it held out is not "
                    "recorded, so all are treated as possibly trained on)", False)
    raise LeakageError("cannot check for leakage: the model's config.json records neither its training subjects "
                       "(training_data.sources / train_subject_names) nor a training-split sha256")


def leakage_check(training_data: dict[str, Any], ds, task: Task, gen_axes: tuple[int, ...],
                  allow_slab: bool) -> dict[str, Any]:
    """Stop (LeakageError) when a test subject is one the generator or the classifier trained on."""
    gen_subjects, basis, verified = generator_subjects(training_data, ds, gen_axes)
    test_subjects = sorted(set(task.subject_test.tolist()))
    overlap = sorted((gen_subjects | set(task.subject_train.tolist())) & set(test_subjects))
    check = {"generator_subjects": sorted(gen_subjects), "basis": basis, "test_subjects": test_subjects,
             "overlap": overlap, "generator_split_verified": verified}
    if not overlap:
        return {**check, "status": "passed",
                "message": f"no test subject ({', '.join(test_subjects)}) is among the generator's training "
                           f"subjects ({', '.join(sorted(gen_subjects))}) or the classifier's"}
    slab = "slab" in (task.split, training_data.get("split")) or "slab" in task.split_modes
    if allow_slab and slab:
        return {**check, "status": "slab-split",
                "message": f"NOT subject-independent: {', '.join(overlap)} is in training and test as two disjoint "
                           "slabs of one volume (single-subject slab split, --allow-slab-split); "
                           + ("the generator's split is verified to be this one" if verified else
                              "whether the generator held out this same slab is not verified")}
    hint = (" The dataset is a single-subject slab split: --allow-slab-split runs it anyway, reported as not "
            "subject-independent." if slab else "")
    raise LeakageError(f"leakage: test subject(s) {', '.join(overlap)} were trained on (generator subjects by "
                       f"{basis}: {', '.join(sorted(gen_subjects))}).{hint}")


def synth_labels_source(gen, task: Task) -> str:
    """'generator' when the model is conditional on this task's labels with the same class names."""
    cond = gen.config.generator.condition
    if gen.classes and cond == task.name:
        if list(gen.classes) != list(task.classes):
            raise DownstreamError(f"the generator's {cond} classes {gen.classes} are not the task's classes "
                                  f"{task.classes}")
        return "generator"
    return "classifier"


def generate_pool(gen, labels: np.ndarray | None, count: int, seed: int, truncation: float) -> np.ndarray:
    """uint8 [count, 1, N, N]: with `labels`, image j has class labels[j] (class blocks take consecutive
    indices of `seed`); without, images 0..count-1 of `seed` with the model's own draw."""
    out = np.empty((count, gen.config.generator.resolution, gen.config.generator.resolution), np.uint8)
    groups = [(None, np.arange(count))] if labels is None else \
        [(int(k), np.flatnonzero(labels == k)) for k in np.unique(labels)]
    start = 0
    for label, idx in groups:
        parts = [gen.generate(min(GEN_CHUNK, len(idx) - i), seed, start=start + i, truncation=truncation,
                              label=label, output_type="np") for i in range(0, len(idx), GEN_CHUNK)]
        out[idx] = np.concatenate(parts)
        start += len(idx)
    return out[:, None]


def stratified_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of about `fraction` of each class (at least one per class present), chosen by `seed`."""
    rng = np.random.default_rng([seed, 7])
    picks = []
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        picks.append(rng.choice(idx, max(1, int(round(fraction * len(idx)))), replace=False))
    return np.sort(np.concatenate(picks))
