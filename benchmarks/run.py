"""MedGAN Studio benchmarks: one command, a table on stdout, JSON in benchmarks/results/latest.json.

    python -m benchmarks                       # everything (~10 min on 2 cores)
    python -m benchmarks --quick               # every section, tiny sizes (CI: ~1 min)
    python -m benchmarks --sections inference,app --out results.json

Contenders alternate within each section (see harness.py), so ratios hold up on a busy machine; absolute
numbers are only as quiet as the machine. Targets are printed with PASS/FAIL at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# As the app does (app.py): idle OpenMP threads sleep. With the default (spinning) policy a busy machine
# makes 2-thread runs several times slower and very noisy; the "threads" section measures both policies.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from benchmarks import (app_bench, export_bench, inference, ingest_bench, roofline, soak_bench,  # noqa: E402
                        style_bench, training_bench)
from benchmarks.harness import machine  # noqa: E402
from benchmarks.models import ROOT, BenchModel, bench_models  # noqa: E402
from benchmarks.report import print_report, targets  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# name -> runner(models, quick); the app runner fills two sections (cold_start, app) from one set of starts.
SECTIONS: dict[str, Callable[[list[BenchModel], bool], dict[str, Any]]] = {
    "inference": inference.run_inference,
    "variants": inference.run_variants,
    "profile": roofline.run_profile,
    "roofline": roofline.run_roofline,
    "scaling": roofline.run_scaling,
    "threads": inference.run_threads,
    "app": app_bench.run_app,
    "soak": soak_bench.run_soak,
    "training": lambda models, quick: training_bench.run_training(quick),
    "export": export_bench.run_export,
    "dataset_formats": export_bench.run_dataset_formats,
    "style": style_bench.run_style,
    "detail_block": style_bench.run_detail_block,
    "training_arch": style_bench.run_training_arch,
    "compile": inference.run_compile,
    "ingest": lambda models, quick: ingest_bench.run_ingest(quick),
}
ALL_KEYS = [*SECTIONS, "cold_start"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="every section at tiny sizes (CI)")
    ap.add_argument("--sections", default="all", help=f"comma-separated subset of: {', '.join(SECTIONS)}")
    ap.add_argument("--out", default=str(RESULTS / "latest.json"), help="JSON output path")
    args = ap.parse_args(argv)
    wanted = list(SECTIONS) if args.sections == "all" else [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")

    models = bench_models(args.quick)
    results: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick, "started_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(), "models": [{"id": m.id, "resolution": m.config.resolution, "shipped": m.shipped,
                                          "widths": m.config.generator.widths} for m in models],
        "seconds": {}, "sections": {},
    }
    for name in wanted:
        print(f"[benchmarks] {name} …", file=sys.stderr, flush=True)
        began = time.perf_counter()
        try:
            section = SECTIONS[name](models, args.quick)
        except Exception as exc:  # one broken section must not lose the others' numbers
            traceback.print_exc()
            section = {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}
        results["seconds"][name] = round(time.perf_counter() - began, 1)
        if name == "app":
            if "error" in section:
                section = {"cold_start": section, "app": section}
            results["sections"].update(section)
        else:
            results["sections"][name] = section
    results["machine"]["load_average_end"] = machine().get("load_average")
    results["targets"] = targets(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print_report(results)
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
