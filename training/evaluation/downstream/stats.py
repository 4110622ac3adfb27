"""Statistics over seeds (mean, 95 % t-interval, paired-difference verdicts) and a classifier's scores."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def t_quantile(p: float, df: int) -> float:
    try:
        from scipy.stats import t
        return float(t.ppf(p, df))
    except ImportError:  # two-sided 95 % only
        table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
        return table.get(df, 2.228 if df <= 10 else 2.0)


def summarize(values: Sequence[float], bounds: tuple[float, float] = (-math.inf, math.inf)) -> dict[str, Any]:
    """Mean, sample std and the 95 % t-interval of the mean over seeds (clipped to `bounds`, the metric's range:
    with 3 seeds the interval is wide and would otherwise run past 0 or 1)."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    half = t_quantile(0.975, len(v) - 1) * std / math.sqrt(len(v)) if len(v) > 1 else 0.0
    lo, hi = max(mean - half, bounds[0]), min(mean + half, bounds[1])
    return {"mean": round(mean, 6), "std": round(std, 6), "n": int(len(v)),
            "ci95": [round(lo, 6), round(hi, 6)], "values": [round(float(x), 6) for x in v]}


def verdict(stat: dict[str, Any]) -> str:
    lo, hi = stat["ci95"]
    return "gain" if lo > 0 else "loss" if hi < 0 else "no measurable effect"


def scores(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Accuracy; balanced accuracy and macro-F1 over the classes present in y_true; per-class recall (None for
    absent classes); confusion[true][pred]."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    support, predicted, hits = cm.sum(1), cm.sum(0), np.diag(cm)
    present = np.flatnonzero(support)
    recall = [float(hits[i] / support[i]) if support[i] else None for i in range(num_classes)]
    f1 = []
    for i in present:
        p = hits[i] / predicted[i] if predicted[i] else 0.0
        r = hits[i] / support[i]
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    return {"accuracy": float(hits.sum() / max(cm.sum(), 1)),
            "balanced_accuracy": float(np.mean([recall[i] for i in present])),
            "macro_f1": float(np.mean(f1)), "per_class_recall": recall, "confusion": cm.tolist()}
