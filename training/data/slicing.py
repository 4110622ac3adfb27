"""From read files to dataset rows: which files, which slices, which subject, which split (training.data's
ingestion helpers; training.data.readers only reads files into `Item`s and converts pixels)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .readers import Item, SkipFile, display_slice, intensity_range, normalise, slice_spacing, to_square, to_uint8

BIDS_SUBJECT = re.compile(r"(?:^|[/_])sub-([A-Za-z0-9]+)")


def subject_from_path(file_id: str) -> str | None:
    """BIDS-style `sub-XX` in a relative path names the subject (sub-01/anat/sub-01_T1w.nii.gz)."""
    m = BIDS_SUBJECT.search(file_id)
    return f"sub-{m.group(1)}" if m else None


def collect_files(inputs) -> tuple[list[tuple[Path, str, str]], list[dict]]:
    """(path, file id, input as given: the file or its folder) for every file; ids are relative to the folder
    given."""
    files, skipped, seen = [], [], set()
    for given in map(str, inputs):
        p = Path(given).expanduser()
        if p.is_dir():
            root = p.resolve().name or "input"
            found = sorted(f for f in p.rglob("*") if f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            entries = [(f, f"{root}/{f.relative_to(p).as_posix()}", given) for f in found]
        elif p.is_file():
            entries = [(p, p.name, given)]
        else:
            skipped.append({"file": given, "reason": "no such file or folder"})
            continue
        for f, fid, g in entries:
            base, n = fid, 2
            while fid in seen:
                fid, n = f"{base}#{n}", n + 1
            seen.add(fid)
            files.append((f, fid, g))
    return files, skipped


def file_slices(item: Item, size, axes, window, square, percentiles, min_fg, fg_level):
    """([(uint8 image, axis, index, position mm, thickness mm)], slices looked at)."""
    lo, hi = intensity_range(item.data, window or item.window, percentiles)
    if not hi > lo:
        raise SkipFile("constant image: no intensity range to normalise")
    kept, total = [], 0

    def add(plane, spacing, ax, k, pos, thick):
        s = normalise(plane, lo, hi, item.invert)
        if np.count_nonzero(s > fg_level) >= min_fg * s.size:
            kept.append((to_uint8(to_square(s, size, spacing, square)), ax, k, pos, thick))

    if item.kind == "volume":
        for ax in axes:
            for k in range(item.data.shape[ax]):
                total += 1
                add(display_slice(item.data, ax, k), slice_spacing(item.spacing, ax), ax, k,
                    item.origin[ax] + k * item.spacing[ax], item.spacing[ax])
    else:
        for frame, k in zip(item.data, item.indices):
            total += 1
            add(frame, item.spacing, -1, k, float(k), 1.0)
    return kept, total


SPLIT_RULES = {
    "subject": "whole subjects held out (seeded shuffle, greedy towards the held-out fraction)",
    "slab": "ONE subject: contiguous slabs per axis by world position, held-out slab at one end, "
            "gap slices dropped between; not an independent test set",
    "none": "no held-out set",
    "stratified": "the rule above applied within each contrast on its own (whole subjects where a contrast has "
                  "several individuals, else slabs of its one subject), so every contrast is in both sets",
}


def assign_split_by(group, subject, axis, pos, thick, heldout, seed, gap, templates=frozenset()):
    """assign_split within each value of `group` (a contrast per row) separately: a greedy split over all
    subjects could hold out every subject of a rare contrast. Mode "stratified" with the groups' own modes."""
    split, keep, warnings, modes = np.full(len(subject), "train", dtype="<U7"), np.ones(len(subject), bool), [], {}
    for value in np.unique(group):
        rows = np.flatnonzero(group == value)
        part, kept, modes[str(value)], notes = assign_split(subject[rows], axis[rows], pos[rows], thick[rows],
                                                            heldout, seed, gap, templates)
        split[rows], keep[rows] = part, kept
        warnings += [f"{value}: {note}" for note in notes]
    return split, keep, "stratified", warnings, modes


def assign_split(subject, axis, pos, thick, heldout, seed, gap, templates=frozenset()):
    """(split labels, keep mask, mode, warnings) — see the module docstring for the rule. Subjects named in
    `templates` (averages of many people) always stay in train and do not count as individuals."""
    n, rng = len(subject), np.random.default_rng(seed)
    split, keep, warnings = np.full(n, "train", dtype="<U7"), np.ones(n, bool), []
    individual = ~np.isin(subject, list(templates))
    names, counts = np.unique(subject[individual], return_counts=True)
    if heldout <= 0 or not len(names):
        return split, keep, "none", warnings
    if len(names) >= 2:
        held, total = [], 0
        target = heldout * n
        for i in rng.permutation(len(names)):
            if len(held) < len(names) - 1 and abs(total + counts[i] - target) < abs(total - target):
                held.append(names[i])
                total += counts[i]
        if not held:  # every subject alone overshoots: take the one closest to the target
            held = [names[np.argmin(np.abs(counts - target))]]
        split[np.isin(subject, held)] = "heldout"
        return split, keep, "subject", warnings
    high = bool(rng.integers(2))  # which end of the volume is held out
    for ax in np.unique(axis):
        m = np.flatnonzero((axis == ax) & individual)
        if not len(m):
            continue
        p = pos[m] if high else -pos[m]
        n_held = max(1, round(heldout * len(m)))
        boundary = np.sort(p)[-n_held]
        train_ok = p <= boundary - (gap + 1) * thick[m].max() + 1e-6
        if not train_ok.any():
            warnings.append(f"only one subject ({names[0]}) with {len(m)} slices along axis {int(ax)}: too few "
                            "for a slab split, all of them are in train and the held-out set is EMPTY")
            continue
        split[m[p >= boundary]] = "heldout"
        keep[m[(p < boundary) & ~train_ok]] = False
    if (split == "heldout").any():
        warnings.insert(0, f"only ONE subject ({names[0]}): train/held-out are two contiguous slabs of the "
                           f"same volume ({gap} slices dropped between), NOT an independent test set")
        if len(np.unique(axis)) > 1:
            warnings.append("slab split over several axes: held-out slices along one axis share voxels "
                            "with training slices along another axis")
        return split, keep, "slab", warnings
    return split, keep, "none", warnings
