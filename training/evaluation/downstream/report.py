"""The study's outputs besides downstream.json: the figure, the summary for config.json, the text summary."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .card_section import CLASSIFIER_NAMES, HEADLINE, fmt_stat


def plot(report: dict[str, Any], path: Path) -> Path:
    """Balanced accuracy per regime (bars: mean over seeds, whiskers: 95 % CI), one panel per classifier."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clfs = list(report["results"])
    k = len(report["task"]["classes"])
    fig, axes = plt.subplots(1, len(clfs), figsize=(6.5 * len(clfs), 4.2), squeeze=False)
    titles = {r["id"]: r["title"] for r in report["regimes"]}
    for ax, clf in zip(axes[0], clfs):
        ids = list(report["results"][clf])
        stats = [report["results"][clf][i]["summary"][HEADLINE] for i in ids]
        means = np.array([s["mean"] for s in stats])
        err = np.array([[s["mean"] - s["ci95"][0], s["ci95"][1] - s["mean"]] for s in stats]).T
        colours = ["#4c72b0" if i == "trtr" else "#dd8452" if i == "tstr" else "#55a868" for i in ids]
        ax.bar(range(len(ids)), means, yerr=err, capsize=3, color=colours)
        ax.axhline(1 / k, color="grey", ls=":", lw=1, label=f"chance (1/{k})")
        ax.axhline(report["results"][clf]["trtr"]["summary"][HEADLINE]["mean"], color="#4c72b0", ls="--", lw=1,
                   label="TRTR mean")
        ax.set_xticks(range(len(ids)), [titles.get(i, i) for i in ids], rotation=40, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("balanced accuracy (held-out subjects)")
        n = len(report["settings"]["seeds"])
        ax.set_title(f"{CLASSIFIER_NAMES[clf]}: {report['task']['name']}, {n} seeds, 95 % CI", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{report['model']['id']}: downstream usefulness" + (" (QUICK)" if report["settings"]["quick"]
                                                                       else ""), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def config_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The compact block stored in config.json metrics["downstream"] (what the app's Models table shows)."""
    out: dict[str, Any] = {"task": report["task"]["name"], "metric": HEADLINE,
                           "labels_from": report["synthetic"]["labels_from"],
                           "seeds": len(report["settings"]["seeds"]), "quick": report["settings"]["quick"],
                           "leakage_check": report["leakage_check"]["status"], "file": "downstream.json",
                           "by_classifier": {}}
    for clf, res in report["results"].items():
        row: dict[str, Any] = {}
        for rid in ("trtr", "tstr", "mix_1_1"):
            if rid in res:
                s = res[rid]["summary"][HEADLINE]
                row[rid], row[f"{rid}_ci95"] = s["mean"], s["ci95"]
        for name in ("low10_gain", "low25_gain"):
            d = report["deltas"][clf].get(name)
            if d:
                row[name], row[f"{name}_ci95"] = d["stats"][HEADLINE]["mean"], d["stats"][HEADLINE]["ci95"]
        out["by_classifier"][clf] = row
    out["headline_classifier"] = "resnet18" if "resnet18" in out["by_classifier"] else next(iter(out["by_classifier"]))
    return out


def summary_text(report: dict[str, Any]) -> str:
    lines = [f"{report['model']['id']}: task {report['task']['name']}, test {report['data']['test']['slices']} "
             f"slices of {', '.join(report['data']['test']['subjects'])}; leakage check: "
             f"{report['leakage_check']['message']}",
             f"synthetic labels: {report['synthetic']['labels_from']}"]
    for clf, res in report["results"].items():
        for rid, r in res.items():
            lines.append(f"  {clf:8s} {rid:18s} balanced accuracy {fmt_stat(r['summary'][HEADLINE])}")
        for name, d in report["deltas"][clf].items():
            s = d["stats"][HEADLINE]
            lines.append(f"  {clf:8s} {name:18s} {s['mean']:+.3f} [{s['ci95'][0]:+.3f}, {s['ci95'][1]:+.3f}] "
                         f"{d['verdict']}")
    lines += [f"note: {n}" for n in report["notes"]]
    lines.append(f"CPU time {report['timing']['cpu_time_s']:.1f} s, wall {report['timing']['wall_time_s']:.1f} s")
    return "\n".join(lines)
