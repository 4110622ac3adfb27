"""The model zoo as a browsable table: facets, filters, a sort by FID, table rows and a detail card.

Pure functions over the rows of `service.models_json()` (plain dicts), so any front end (the Gradio Models tab,
a script) filters and sorts the same way; nothing here touches the disk or loads a model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

ANY = "any"
FILTERS = ("modality", "organ", "source", "kind", "resolution")
OTHER_SIZE = "other"  # models without one square resolution (medigan's 1332×800 CycleGANs, …)
SORTS = ("catalogue order", "FID (low first)")
SOURCES = ("local", "hub", "medigan")  # always offered by the source filter, listed or not
COLUMNS = ["id", "title", "modality", "organ", "plane", "resolution", "source", "kind", "FID", "FID (published)",
           "KID", "precision", "recall", "TRTR", "TSTR", "low-data Δ (10 %)", "licence"]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def fid(row: dict[str, Any]) -> float | None:
    """The FID a row is sorted by: measured here (`fid`) when there is one, else the authors' published number
    (`fid_published`, medigan's catalogue); None when neither."""
    metrics = row.get("metrics") or {}
    measured = _number(metrics.get("fid"))
    return measured if measured is not None else _number(metrics.get("fid_published"))


def facet_value(row: dict[str, Any], key: str) -> str:
    """A row's value for one filter, as the dropdowns show it (resolution as "64²"; organs lower-cased)."""
    if key == "resolution":
        return f"{row['resolution']}²" if row.get("resolution") else OTHER_SIZE
    value = str(row.get(key) or "").strip()
    return value.lower() if key == "organ" else value


def facets(rows: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """The choices of each filter: "any", then the values present (resolutions by size, the rest by name)."""
    rows = list(rows)
    out = {}
    for key in FILTERS:
        values = ({facet_value(r, key) for r in rows} | (set(SOURCES) if key == "source" else set())) - {""}
        if key == "resolution":
            order = sorted(values - {OTHER_SIZE}, key=lambda v: int(v.rstrip("²")))
            order += [OTHER_SIZE] if OTHER_SIZE in values else []
        else:
            order = sorted(values, key=str.lower)
        out[key] = [ANY, *order]
    return out


def select(rows: Iterable[dict[str, Any]], filters: dict[str, object] | None = None,
           sort: str | None = None) -> list[dict[str, Any]]:
    """Rows matching every filter (a missing, empty or "any" filter matches all; organ ignores case) in
    catalogue order, or by FID ascending with models without one last (sort "FID (low first)" or "fid")."""
    wanted = {k: str(v).strip() for k, v in (filters or {}).items()
              if k in FILTERS and v is not None and str(v).strip() not in ("", ANY)}
    kept = [r for r in rows if all(facet_value(r, k).lower() == v.lower() for k, v in wanted.items())]
    if sort in (SORTS[1], "fid"):
        kept.sort(key=lambda r: (fid(r) is None, fid(r) or 0.0))  # stable: ties keep catalogue order
    return kept


def downstream_cells(metrics: dict[str, Any]) -> list[str]:
    """Balanced accuracy on held-out subjects: real-only (TRTR), synthetic-only (TSTR), and the gain from adding
    synthetic images to 10 % of the real slices, with 95 % CIs; from config.json metrics["downstream"]."""
    d = metrics.get("downstream")
    if not isinstance(d, dict):
        return ["", "", ""]
    row = (d.get("by_classifier") or {}).get(d.get("headline_classifier"), {})

    def cell(key: str) -> str:
        value, ci = row.get(key), row.get(f"{key}_ci95")
        if not isinstance(value, (int, float)):
            return ""
        text = f"{value:+.3f}" if key.endswith("gain") else f"{value:.3f}"
        if isinstance(ci, list) and len(ci) == 2:
            text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
        return text + (" (quick)" if d.get("quick") else "")
    return [cell("trtr"), cell("tstr"), cell("low10_gain")]


def table_rows(rows: Iterable[dict[str, Any]]) -> list[list]:
    """One table row (COLUMNS) per model row."""
    def metric(m: dict[str, Any], key: str) -> float | str:
        value = _number((m.get("metrics") or {}).get(key))
        return round(value, 3) if value is not None else ""
    return [[m["id"], m["title"], m["modality"], m["organ"], m["plane"], m["resolution"], m["source"], m["kind"],
             metric(m, "fid"), metric(m, "fid_published"), metric(m, "kid"), metric(m, "precision"),
             metric(m, "recall"), *downstream_cells(m.get("metrics") or {}), m["license"]] for m in rows]


def _training_facts(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, value) rows about the training data of a MedGAN Studio config.json."""
    subjects = data.get("subjects")
    parts = [str(data.get("name") or "")]
    if isinstance(subjects, int):
        train = data.get("train_subjects")
        parts.append(f"{subjects} subjects" + (f" ({train} for training)" if isinstance(train, int) else ""))
    if isinstance(data.get("train_slices"), int):
        parts.append(f"{data['train_slices']} training slices")
    named = sorted({str(s.get("subject")) for s in data.get("sources") or [] if isinstance(s, dict)
                    and s.get("subject")})
    rows = [("Training data", ", ".join(p for p in parts if p))]
    rows += [("Subjects", ", ".join(named))] if named else []
    rows += [("Split", str(data.get("split_rule") or data.get("split") or ""))]
    return rows


def detail_markdown(row: dict[str, Any], config: dict[str, Any] | None = None) -> str:
    """The detail panel of one model: its card's key facts (title, architecture, resolution, classes, training
    data and subjects, licences, FID/KID — measured here or published — and downstream numbers if any)."""
    metrics, config = row.get("metrics") or {}, config or {}
    data = config.get("training_data") if isinstance(config.get("training_data"), dict) else {}
    size = f"{row['resolution']}×{row['resolution']}" if row.get("resolution") else ""
    facts = [("Model id", f"`{row['id']}`"), ("Source", row.get("source", "")), ("Kind", row.get("kind", "")),
             ("Architecture", row.get("architecture", "")), ("Resolution", size),
             ("Modality / organ", " · ".join(p for p in (row.get("modality"), row.get("organ"), row.get("plane")) if p)),
             ("Classes", ", ".join(row.get("classes") or []))]
    facts += _training_facts(data) if data else [("Training data", row.get("dataset", ""))]
    facts += [("Model licence", row.get("license", ""))]
    for label, key in (("FID (measured here)", "fid"), ("KID (measured here)", "kid"),
                       ("FID (published by the authors)", "fid_published"),
                       ("FID RadImageNet (published)", "fid_radimagenet_published")):
        if _number(metrics.get(key)) is not None:
            facts.append((label, f"{metrics[key]:.4g}"))
    trtr, tstr, gain = downstream_cells(metrics)
    if trtr or tstr or gain:
        facts.append(("Downstream (balanced acc.)", f"real-only {trtr or '–'}, synthetic-only {tstr or '–'}, "
                                                     f"+synthetic at 10 % real {gain or '–'}"))
    table = "\n".join(f"| {k} | {str(v).replace('|', '/')} |" for k, v in facts if v)
    parts = [f"### {row.get('title') or row['id']}", "| Fact | Value |\n|---|---|\n" + table]
    licences = [str(x) for x in data.get("licences") or [] if x]
    if licences:
        parts.append("**Data licences**\n\n" + "\n".join(f"- {x}" for x in licences))
    if row.get("notice"):
        parts.append(f"*{row['notice']}*")
    return "\n\n".join(parts)


# --- the headline quality of a model, from its eval.json -----------------------------------------------
HELD_OUT = "held-out people"
HELD_OUT_SLAB = "a held-out slab"  # the split cut one person's volume: unseen anatomy, not an unseen person
TRAINING = "training people"


@dataclass(frozen=True)
class Quality:
    """FID of a model's images against real slices (`against`: people it never saw, a slab of a volume it never
    saw, or its own training people when the evaluation had none held out), beside the real floor: the FID of
    real training slices against the same real slices, at the same sample size `n`. A ratio at or below 1 means
    the synthetic slices are as close to those slices as real training slices are."""
    fid: float
    floor: float
    n: int
    against: str

    @property
    def ratio(self) -> float:
        return self.fid / self.floor

    def text(self) -> str:
        return f"FID {self.fid:.1f} vs {self.against} (real floor {self.floor:.1f}, n = {self.n})"


def _fid_of(block: object) -> float | None:
    return _number(block.get("fid")) if isinstance(block, dict) else None


def quality(evaluation: dict[str, Any] | None) -> Quality | None:
    """The headline quality recorded in an eval.json (`training.evaluate`), or None when it holds none.

    Preferred: `floor.vs_heldout` (synthetic vs held-out slices beside train vs the same held-out slices). Where the
    training split had one subject, the floor itself is train vs held-out (`floor.fallback`), so `model_same_n`
    is the model against the held-out split too. Otherwise only the floor between two halves of the training
    people is there (`against` = TRAINING). A split by slab (`real_data.split`) holds out anatomy, not people."""
    evaluation = evaluation or {}
    floor = evaluation.get("floor")
    if not isinstance(floor, dict):
        return None
    real_data = evaluation.get("real_data") if isinstance(evaluation.get("real_data"), dict) else {}
    unseen = HELD_OUT_SLAB if real_data.get("split") == "slab" else HELD_OUT
    held_out = floor.get("vs_heldout")
    if isinstance(held_out, dict):
        fid, real, n, against = (_fid_of(held_out.get("model")), _fid_of(held_out.get("floor_train_vs_heldout")),
                                 held_out.get("n"), unseen)
    else:
        fid, real, n = _fid_of(floor.get("model_same_n")), _fid_of(floor), floor.get("n")
        against = unseen if floor.get("fallback") is True else TRAINING
    if fid is None or not real or not isinstance(n, int):
        return None
    return Quality(fid=fid, floor=real, n=n, against=against)


def quality_rank(q: Quality | None) -> tuple[bool, bool, float]:
    """Sort key, best first: measured against held-out people, then against anything else (a held-out slab, the
    training people), then unmeasured; within each, the lowest FID relative to its real floor."""
    return (q is None, q is None or q.against != HELD_OUT, q.ratio if q else 0.0)


def best_model(qualities: dict[str, Quality | None]) -> str | None:
    """The id with the best `quality_rank` (the first listed on ties and when nothing is measured)."""
    return min(qualities, key=lambda model_id: quality_rank(qualities[model_id]), default=None)


def summary_line(row: dict[str, Any], q: Quality | None) -> str:
    """One Markdown line on what a model is (its title names modality, organ, architecture and size) and how
    good it measured: the Generate tab's."""
    classes = row.get("classes") or []
    if q is not None:
        measured = q.text()
    elif fid(row) is not None:
        which = "measured here" if _number((row.get("metrics") or {}).get("fid")) is not None else "published"
        measured = f"FID {fid(row):.1f} ({which})"
    else:
        measured = "no quality measured"
    parts = [f"**{row.get('title') or row['id']}** (`{row['id']}`)",
             f"{len(classes)} classes" if classes else "", measured]
    return " · ".join(p for p in parts if p)
