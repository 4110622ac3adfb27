"""The model card's "Downstream usefulness" section, from a downstream.json report (training/evaluation/downstream/).

Its own module so the card (training.publish.card) needs neither torch nor the study to render it.
"""
from __future__ import annotations

from typing import Any

HEADLINE = "balanced_accuracy"
CLASSIFIER_NAMES = {"cnn": "small CNN", "resnet18": "ResNet-18"}


def fmt_number(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}"


def fmt_stat(s: dict[str, Any]) -> str:
    return f"{s['mean']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]"


def card_section(report: dict[str, Any]) -> str:
    """Markdown for the model card's "Downstream usefulness" section ("" when the report is unusable)."""
    try:
        return _card_section(report)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return ""


def _card_section(report: dict[str, Any]) -> str:
    task, data, leak = report["task"], report["data"], report["leakage_check"]
    k = len(task["classes"])
    n_seeds = len(report["settings"]["seeds"])
    titles = {r["id"]: r["title"] for r in report["regimes"]}
    medigan = {r["id"]: r.get("medigan") for r in report["regimes"]}
    out = [f"Does training on this model's images help a classifier of the slice's **{task['name']}** "
           f"({k} classes: {', '.join(task['classes'])}) on real slices of **held-out subjects**? Measured by "
           f"`python -m training.downstream` (full record: `downstream.json`): {n_seeds} seeds per regime, mean and "
           f"95 % t-interval over seeds; headline metric balanced accuracy (chance {1 / k:.2f}).",
           "",
           f"- Real data: **{data['dataset']}**, classifiers trained on {data['train']['slices']} slices of "
           f"{', '.join(data['train']['subjects'])}; tested on {data['test']['slices']} slices of "
           f"{', '.join(data['test']['subjects'])}.",
           f"- Leakage check: **{leak['status']}** — {leak['message']} (generator subjects by {leak['basis']}).",
           f"- Synthetic labels: {report['synthetic']['note']}."]
    out += [f"- **Note:** {n}" for n in report.get("notes", []) if not n.startswith("Synthetic labels:")]
    rows = ["| classifier | regime | medigan field | real / synthetic images | balanced accuracy [95 % CI] | "
            "accuracy | macro-F1 |", "|---|---|---|---|---|---|---|"]
    for clf, res in report["results"].items():
        for rid, r in res.items():
            s, run = r["summary"], r["runs"][0]
            rows.append(f"| {CLASSIFIER_NAMES.get(clf, clf)} | {titles.get(rid, rid)} | "
                        f"{'`' + medigan[rid] + '`' if medigan.get(rid) else '–'} | {run['n_real']} / "
                        f"{run['n_synthetic']} | {fmt_stat(s[HEADLINE])} | {fmt_number(s['accuracy']['mean'])} | "
                        f"{fmt_number(s['macro_f1']['mean'])} |")
    out += ["", *rows, "", "Effect of the synthetic images (paired differences over seeds, balanced accuracy; a "
            "CI that includes 0 is no measurable effect):", ""]
    words = {"tstr_vs_trtr": "synthetic only vs real only", "mix_1_1_vs_trtr": "real + synthetic 1:1 vs real only",
             "mix_1_4_vs_trtr": "real + synthetic 1:4 vs real only",
             "low10_gain": "10 % real: adding synthetic", "low25_gain": "25 % real: adding synthetic",
             "pretrain_vs_trtr": "synthetic pre-training vs real only", "init_vs_trtr": "--init checkpoint vs real only"}
    for clf, ds in report["deltas"].items():
        for name, d in ds.items():
            s = d["stats"][HEADLINE]
            out.append(f"- {CLASSIFIER_NAMES.get(clf, clf)}, {words.get(name, name)}: {s['mean']:+.3f} "
                       f"[{s['ci95'][0]:+.3f}, {s['ci95'][1]:+.3f}] — **{d['verdict']}**")
    timing = report.get("timing", {})
    if isinstance(timing.get("cpu_time_s"), (int, float)):
        out += ["", f"CPU time of the study: {timing['cpu_time_s'] / 60:.1f} min ({timing.get('threads', '?')} "
                f"thread(s)). Reproduce:", "", "```bash", str(report.get("command", "")), "```"]
    return "\n".join(out)
