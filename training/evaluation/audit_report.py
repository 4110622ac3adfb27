"""privacy.json, the membership-inference audit's record (training.audit writes it): its schema, the leak verdict,
the model card's "Privacy audit" section and the README's cell.

Its own module, without torch, so that the card (publish.card) and the push check (publish.privacy) read the
audit without the audit's machinery.

The verdict. The attack's score is compared with two controls: the member-only control (the same attack between
two halves of the training slices: both are members, so whatever it finds is split bias) and the real-data
reference (the same distance, to real training slices of the other half instead of generated images: how far a
generator that knew the training population but copied no slice would get). A leak is claimed only when, in some
space and for some metric (ROC AUC, TPR at 1 % FPR), the lower bound of the 95 % bootstrap interval of the
attack's advantage over the larger of the two controls is above 0. `training.push` refuses a model of a dataset
not marked public when that lower bound exceeds LEAK_THRESHOLD.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PRIVACY_FILE = "privacy.json"
SCHEMA_FILE = Path(__file__).with_name("privacy.schema.json")
SCHEMA_ID = "medgan-privacy/1"
# The push refuses when the lower 95 % bound of the black-box advantage over both controls exceeds this, in ROC
# AUC or in TPR at 1 % FPR: 0.05 AUC, or 5 % of the training slices picked out beyond what the controls explain.
LEAK_THRESHOLD = 0.05
METRICS = {"auc": "ROC AUC", "tpr_at_fpr": "TPR at 1 % FPR"}
SPACES = {"pixel": "pixels", "inception": "Inception features"}


class AuditError(Exception):
    """privacy.json is missing, unreadable or not of the schema; the message says which."""


def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def validate(report: dict[str, Any]) -> dict[str, Any]:
    """The report, after jsonschema checked it against privacy.schema.json (AuditError names the first problem)."""
    import jsonschema

    try:
        jsonschema.validate(report, schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise AuditError(f"{PRIVACY_FILE} does not follow {SCHEMA_FILE.name} at {where}: {exc.message}") from None
    return report


def read(folder: str | Path) -> dict[str, Any] | None:
    """The folder's privacy.json, checked against the schema; None when there is none."""
    path = Path(folder) / PRIVACY_FILE
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AuditError(f"{PRIVACY_FILE} is unreadable ({exc})") from None
    return validate(report)


def largest_lower_bound(black_box: dict[str, Any]) -> tuple[float, str]:
    """The largest lower 95 % bound of the advantage over both controls, over spaces and metrics, and where."""
    bounds = [(block["advantage"][metric]["over_both"]["ci95"][0], f"{SPACES.get(space, space)}, {name}")
              for space, block in black_box.items() for metric, name in METRICS.items()]
    return max(bounds)


def verdict(black_box: dict[str, Any], threshold: float = LEAK_THRESHOLD) -> dict[str, Any]:
    """privacy.json's "verdict": a leak is claimed when the largest lower bound is above 0."""
    bound, where = largest_lower_bound(black_box)
    if bound > 0:
        text = (f"membership leak shown: in {where} the attack beats both controls, lower 95 % bound of its "
                f"advantage {bound:+.3f}")
    else:
        text = (f"no leak shown beyond the controls (largest lower 95 % bound of the advantage {bound:+.3f}, in "
                f"{where}); this does not prove that there is none")
    return {"leak": bound > 0, "largest_lower_bound": round(bound, 4), "where": where, "threshold": threshold,
            "text": text}


def split_caveat(report: dict[str, Any]) -> str:
    """What the verdict cannot separate when held-out slices come from a training person (a slab split): "" else."""
    data = report["data"]
    shared = sorted(set(data["member_subjects"]) & set(data["nonmember_subjects"]))
    if not shared:
        return ""
    return (f"the held-out slices are another part of {', '.join(shared)}, a person the model was trained on, so "
            "members and non-members differ in anatomy (another slab, other levels) as well as in membership, and "
            "neither control splits the training slices that way: an advantage here can be that anatomy gap rather "
            "than copying")


# --- what the card and the README show ----------------------------------------------------------------------------

def _stat(s: dict[str, Any], signed: bool = False) -> str:
    f = ("{:+.3f}" if signed else "{:.3f}").format
    value, low, high = (x + 0.0 for x in (s["value"], *s["ci95"]))   # + 0.0: no "-0.000"
    return f"{f(value)} [{f(low)}, {f(high)}]"


def _black_box_rows(report: dict[str, Any]) -> list[str]:
    rows = ["| space | metric | attack | member-only control | real-data reference | advantage over both |",
            "|---|---|---|---|---|---|"]
    for space, block in report["black_box"].items():
        for metric, name in METRICS.items():
            rows.append(f"| {SPACES.get(space, space)} (nearest of {block['generated']:,d}) | {name} | "
                        f"{_stat(block['attack'][metric])} | {_stat(block['member_only_control'][metric])} | "
                        f"{_stat(block['real_data_reference'][metric])} | "
                        f"{_stat(block['advantage'][metric]['over_both'], signed=True)} |")
    return rows


def _white_box(report: dict[str, Any]) -> list[str]:
    white = report["white_box"]
    if not white["available"]:
        return [f"White-box attack (the discriminator's logits): not run — {white['reason']}."]
    return [f"White-box attack ({white['score']}): ROC AUC {_stat(white['attack']['auc'])} against the "
            f"member-only control's {_stat(white['member_only_control']['auc'])} (advantage "
            f"{_stat(white['advantage']['auc'], signed=True)}); TPR at 1 % FPR {_stat(white['attack']['tpr_at_fpr'])}."]


def card_section(report: dict[str, Any]) -> str:
    """Markdown for the model card's "Privacy audit" section."""
    data, settings, timing = report["data"], report["settings"], report["timing"]
    halves = data["halves"]
    out = [f"A membership-inference audit (`python -m training.audit`, full record `{PRIVACY_FILE}`): can an "
           "attacker tell this model's **training slices** from **held-out slices** by how close the model's "
           "images come to them? Members: the "
           f"{data['members']} training slices ({', '.join(data['member_subjects'])}); non-members: the "
           f"{data['nonmembers']} held-out slices ({', '.join(data['nonmember_subjects'])}) of **{data['dataset']}**. "
           "Each slice scores by its distance to the nearest generated image; each number is measured on all the "
           f"slices, with its 95 % bootstrap interval over slices ({settings['bootstrap']:,d} resamples).", "",
           f"**Verdict: {report['verdict']['text']}.**"
           + (f" Caveat: {split_caveat(report)}." if split_caveat(report) else ""), "", *_black_box_rows(report), "",
           f"The member-only control runs the same attack between two halves of the training slices (split by "
           f"{halves['by']}: {halves['a']['slices']} and {halves['b']['slices']} slices), so it measures split "
           "bias; the real-data reference scores each slice by its distance to real training slices of the other "
           "half instead of generated images, so it measures how much closer a training slice is to the training "
           "population than a held-out one is, without the generator. A leak is claimed only when the advantage "
           "over both stays above 0 across its interval. With few subjects the intervals are over slices, which "
           "are not independent: MedGAN Studio's docs/privacy.md explains what these numbers can and cannot show.",
           "", *_white_box(report), "",
           f"Audit CPU time {timing['cpu_s'] / 60:.1f} min ({timing['threads']} thread(s)), of which "
           f"{timing['cpu_s_embedding_real'] / 60:.1f} min embedding {timing['real_embedded_now']} real slices not "
           "yet in the dataset's feature cache. Reproduce:", "",
           "```bash", report["command"], "```"]
    return "\n".join(out)


def readme_cell(report: dict[str, Any]) -> str:
    """The README models table's cell: pixel-space attack AUC / control / reference, and the verdict (with where a
    leak shows, which may be another space or metric)."""
    pixel = report["black_box"]["pixel"]
    auc = [pixel[k]["auc"]["value"] for k in ("attack", "member_only_control", "real_data_reference")]
    shown = f"leak shown ({report['verdict']['where']})" if report["verdict"]["leak"] else "none shown"
    return f"{auc[0]:.2f} / {auc[1]:.2f} / {auc[2]:.2f}: {shown}"
