"""Targets (PASS/FAIL) and the printed table of a benchmark run."""
from __future__ import annotations

from typing import Any


def _target(name: str, value: float | None, limit: float, higher_is_better: bool, unit: str) -> dict[str, Any]:
    if value is None:
        status = "N/A"
    else:
        status = "PASS" if (value >= limit if higher_is_better else value <= limit) else "FAIL"
    return {"target": name, "value": value, "limit": limit, "unit": unit,
            "rule": ">=" if higher_is_better else "<=", "status": status}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    s = results["sections"]
    out = []
    for entry in s.get("inference", {}).get("models", []):
        if entry["resolution"] != 64:
            continue
        for batch in (16, 64):
            row = next((b for b in entry["batches"] if b["batch"] == batch), None)
            out.append(_target(f"generate vs reference, batch {batch}, {entry['model']}",
                               row["speedup"] if row else None, 1.5, True, "x"))
            out.append(_target(f"  same, 1 thread, CPU time (noise-robust), batch {batch}",
                               row.get("speedup_1thread_cpu") if row else None, 1.5, True, "x"))
    for row in s.get("threads", {}).get("rows", []):
        adaptive = row.get("adaptive (app)", {})
        out.append(_target(f"generate vs reference, adaptive threads, {row['load']} machine, batch {row['count']}",
                           adaptive.get("vs_reference"), 1.5, True, "x"))
    app = s.get("app", {})
    out.append(_target("/generate 16 images @64²: server's answer p50", app.get("answer", {}).get("p50_ms"),
                       100, False, "ms"))
    out.append(_target("  queue-free GET /medgan/v1/generate.npz, same 16 images, p50",
                       app.get("fast_route", {}).get("p50_ms"), 100, False, "ms"))
    cold = s.get("cold_start", {})
    out.append(_target("cold start: python app.py -> first /generate answer", cold.get("median_to_first_answer_s"),
                       8, False, "s"))
    out.append(_target("app RSS with all local models loaded", cold.get("max_rss_all_models_loaded_mb"),
                       1536, False, "MiB"))
    soak = s.get("soak", {}).get("soak", {})
    out.append(_target(f"app RSS slope over the last half of {soak.get('calls', '?')} plain-HTTP /generate calls",
                       soak.get("slope_last_half_kib_per_call"), 4, False, "KiB/call"))
    style = s.get("style", {})
    row = next(iter(style.get("vs_reference", [])[-1:]), None)
    out.append(_target(f"style generate vs its plain reference, batch {row['batch'] if row else '?'}",
                       row["ratio"] if row else None, 1.3, True, "x"))
    out.append(_target("  same, 1 thread, CPU time (noise-robust)", row["ratio_1thread_cpu"] if row else None, 1.3,
                       True, "x"))
    row = next(iter(style.get("vs_dcgan", [])), None)
    out.append(_target("style time per image / DCGAN's, 1 thread CPU time", row["ratio_1thread_cpu"] if row else None,
                       2.0, False, "x"))
    for row in style.get("explore", []):
        out.append(_target(f"{row['call']} time / generate of the same {row['images']} images",
                           row["ratio_1thread_cpu"], 1.5, False, "x"))
    for row in s.get("detail_block", {}).get("rows", []):
        out.append(_target(f"128² detail block: fast layout vs plain module, batch {row['batch']}, 1 thread CPU time",
                           row["ratio_1thread_cpu"], 1.3, True, "x"))
    train = next((r for r in s.get("training", {}).get("rows", []) if r["contender"] == "medgan dcgan"), None)
    out.append(_target("training img/s vs reference loop (dcgan recipe)", train["vs_reference"] if train else None,
                       1.0, True, "x"))
    return out + _ingest_targets(s.get("ingest", {}))


def _ingest_targets(sec: dict[str, Any]) -> list[dict[str, Any]]:
    """Only when the ingest section ran (runs recorded before it existed keep their targets table)."""
    if "speed" not in sec:
        return []
    return [_target(f"ingest peak RSS, {sec['files_large']} files / {sec['files_small']} files", sec["rss_growth"],
                    1.15, False, "x"),
            _target("ingest files/s, --workers 2 vs a plain loop", sec["speed"]["speedup"], 1.6, True, "x"),
            _target("training img/s from shards vs in memory", sec["training"]["shards_vs_memory"], 0.9, True, "x")]


def _table(headers: list[str], rows: list[list[Any]], markdown: bool = False) -> str:
    """Aligned plain-text columns, or a Markdown table (docs/performance.md is made of these)."""
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    if markdown:
        lines = ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in cells]
        lines.insert(1, "|" + "---|" * len(headers))
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _inference(sec: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    rows = []
    for e in sec["models"]:
        for b in e["batches"]:
            rows.append([e["model"], b["batch"], b["medgan"]["median_ms"], b["medgan"]["items_per_s"],
                         b["reference"]["median_ms"], b["reference"]["items_per_s"], f"{b['speedup']}x",
                         f"{b.get('speedup_1thread_cpu', '')}x"])
        p = e["pixels"]
        rows.append([e["model"], "pixels", f"max |diff| {p['max_grey_levels']} grey level(s)",
                     f"mean {p['mean_grey_levels']}", "", "", "OK" if p["ok"] else "OUT OF TOLERANCE", ""])
    return ("In-process generate(n, output_type='np') vs PyTorch-examples reference",
            ["model", "batch", "medgan ms", "img/s", "reference ms", "img/s", "speedup",
             "speedup (1 thread, CPU time)"], rows)


def _variants(sec: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    rows = [[f["batch"], k, v["median_ms"], v["items_per_s"], f"{v['vs_plain']}x"]
            for f in sec["forward"] for k, v in f.items() if isinstance(v, dict)]
    rows += [[t["count"], f"generate, {k}", v["median_ms"], v["items_per_s"], ""]
             for t in sec["tiles"] for k, v in t.items() if isinstance(v, dict)]
    return ("What each optimisation pays (forward only) and the cost of fixed tiles",
            ["batch", "variant", "ms", "img/s", "vs plain"], rows)


def _profile(sec: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    rows = [[k, v["median_ms"]] for k, v in sec["steps"].items()]
    return "Where a /generate of 16 goes, without the web layer", ["step", "ms"], rows


def _roofline(sec: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    rows = [[r["model"], r["gflop_per_image"], r["images_per_s"], r["achieved_gflops"], r["peak_gflops"],
             f"{r['fraction_of_peak']:.0%}"] for r in sec["rows"]]
    return (f"Roofline (peak = {sec['rows'][0]['matmul_size']}² fp32 matmul, same threads)",
            ["model", "GFLOP/img", "img/s", "GFLOP/s", "peak GFLOP/s", "of peak"], rows)


def _scaling(sec: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    rows = [[r["model"], " ".join(f"{p['count']}:{p['ms']}" for p in r["points"]), r["fit"]["ms_per_image"],
             r["fit"]["fixed_ms"], r["fit"]["r2"]] for r in sec["rows"]]
    return "generate(count) time (ms) and a linear fit", ["model", "count:ms", "ms/image", "fixed ms", "R²"], rows


def _threads(sec: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    rows = [[r.get("load", ""), r["count"], k, v["median_ms"], v["items_per_s"], v.get("vs_reference", "")]
            for r in sec["rows"] for k, v in r.items() if isinstance(v, dict)]
    return (f"Thread settings (fresh process each; quiet = the machine as it is, busy = every core kept busy; "
            f"adaptive chose OMP {sec.get('adaptive_policy', {})})",
            ["load", "count", "setting", "ms", "img/s", "reference ms / ours"], rows)


def _cold_start(sec: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    rows = [[i + 1, r["to_port_s"], r["to_first_answer_s"], r["app_cpu_s_to_first_answer"], r["rss_at_port_mb"],
             r["rss_after_first_answer_mb"], r["rss_all_models_loaded_mb"], r["local_models_loaded"]]
            for i, r in enumerate(sec["runs"])]
    return ("Cold start (python app.py) and memory",
            ["start", "to port s", "to 1st answer s", "app CPU s", "RSS port MiB", "RSS 1st MiB",
             "RSS all MiB", "models"], rows)


def _app(app: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    rows = [[label, app[k]["p50_ms"], app[k]["p95_ms"], app[k].get("app_cpu_ms_p50", ""),
             app[k].get("client_cpu_ms_p50", "")]
            for label, k in (("server's answer (download_files=False)", "answer"),
                             ("full round trip (PNGs downloaded)", "round_trip"),
                             ("queue-free GET /medgan/v1/generate.npz", "fast_route")) if k in app]
    rows += [["model time (from /stats)", app["model_time"]["p50_ms"], app["model_time"]["p95_ms"], "", ""],
             ["framework overhead (answer - model)", app["framework_overhead_p50_ms"], "", "", ""],
             ["download overhead (round trip - answer)", app["download_overhead_p50_ms"], "", "", ""]]
    if "fast_route_overhead_p50_ms" in app:
        rows.append(["queue-free route overhead (route - model)", app["fast_route_overhead_p50_ms"], "", "", ""])
    return (f"/generate of {app['count']} images over HTTP, {app['calls_each']} calls each",
            ["", "p50 ms", "p95 ms", "app CPU ms/call", "client CPU ms/call"], rows)


def _training(t: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    rows = [[r["contender"], r["median_ms"], r["items_per_s"], f"{r.get('vs_reference', 1.0)}x"] for r in t["rows"]]
    return f"Training step, {t['size']}², batch {t['batch']}", ["", "ms/step", "img/s", "vs ref"], rows


def _export(e: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    rows = [[r["workers"], r["seconds"], r["images_per_min"]] for r in e["rows"]]
    return f"Dataset export, {e['count']} PNGs (whole command)", ["workers", "s", "images/min"], rows


def _dataset_formats(d: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    rows = [[r["contender"], r["median_s"], r["images_per_s"], r["bytes_per_image"] or "", f"{r['vs_png']}x"]
            for r in d["rows"]]
    return (f"Dataset formats, {d['count']} images of {d['model']} (shards of {d['shard_size']}, 1 thread, in-process)",
            ["", "s", "images/s", "bytes/image", "speed vs png"], rows)


def _style(st: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    rows = [[f"batch {r['batch']}", "medgan vs plain", r["medgan"]["median_ms"], r["reference"]["median_ms"],
             f"{r['ratio']}x", f"{r['ratio_1thread_cpu']}x"] for r in st["vs_reference"]]
    rows += [[f"batch {r['batch']}", f"style vs DCGAN ({st['dcgan_model']})", r["style"]["median_ms"],
              r["dcgan"]["median_ms"], f"{r['ratio']}x", f"{r['ratio_1thread_cpu']}x"] for r in st["vs_dcgan"]]
    rows += [[f"{r['images']} images", f"{r['call']} vs generate", r[r["call"]]["median_ms"],
              r["generate"]["median_ms"], f"{r['ratio']}x", f"{r['ratio_1thread_cpu']}x"] for r in st["explore"]]
    return f"Style generator ({st['model']})", ["", "pair", "A ms", "B ms", "A/B or B/A", "1 thread CPU"], rows


def _detail_block(sec: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    rows = [[f"batch {r['batch']}", r["fast"]["median_ms"], r["plain"]["median_ms"], f"{r['ratio']}x",
             f"{r['ratio_1thread_cpu']}x"] for r in sec["rows"]]
    return "128² detail block: fast layout vs plain module", ["", "fast ms", "plain ms", "speed-up",
                                                              "1 thread CPU"], rows


def _training_arch(sec: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    rows = [[r["arch"], f"{r['size']}²", r["batch"], r["cpu_s_per_step"], r["kimg_per_cpu_hour"]] for r in sec["rows"]]
    return ("Training throughput per architecture (small-data recipe, 1 thread)",
            ["arch", "size", "batch", "CPU s/step", "kimg per CPU-hour"], rows)


def _soak(sec: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    soak, bodies, fair = sec["soak"], sec["bodies"], sec["fairness"]
    rows = [[f"{soak['calls']} plain-HTTP /generate calls ({soak['failed']} failed)",
             f"RSS {soak['rss_start_mb']} -> {soak['rss_end_mb']} MiB, peak {soak['rss_peak_mb']} MiB",
             f"slope over the last half {soak['slope_last_half_kib_per_call']} KiB/call"]]
    for key, label in (("content_length", "declared"), ("chunked", "chunked")):
        b = bodies[key]
        rows.append([f"{b['bodies']} × {b['body_mb']} MB bodies, {label}",
                     f"HTTP {', '.join(map(str, b['statuses']))}", f"at most {b['max_sent_kib']} KiB sent before the answer"])
    rows.append(["RSS around the big bodies", f"{bodies['rss_before_mb']} -> {bodies['rss_after_mb']} MiB",
                 f"change {bodies['rss_change_mb']} MiB"])
    for name in ("generate", "models"):
        f = fair[name]
        rows.append([f"second client's /{name} during an {fair['seconds']:g} s flood", f"{f['calls']} calls",
                     f"p50 {f['p50_s']} s, max {f['max_s']} s"])
    rows.append(["the flooder's answers", ", ".join(f"{k}: {v}" for k, v in fair["flooder"].items()), ""])
    return f"Serving limits ({sec['model']}, default settings)", ["", "measured", ""], rows


def _ingest(sec: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    speed, train = sec["speed"], sec["training"]
    rows = [[f"ingest {speed['files']} DICOM files of {sec['side']}², {r['contender']}", f"{r['items_per_s']} files/s",
             f"{speed['speedup']}x" if r["contender"] != "plain loop" else "1x"] for r in speed["rows"]]
    rows += [[f"python -m training.data --workers {sec['workers']}, {m['files']} files",
              f"peak RSS {m['tree_peak_mb']} MiB (all processes), {m['parent_peak_mb']} MiB (main)",
              f"{m['files_per_s']} files/s"] for m in sec["memory"]]
    rows += [[f"training {train['size']}², batch {train['batch']}, {r['contender']}", f"{r['items_per_s']} img/s",
              f"{train['shards_vs_memory']}x" if r["contender"] == "shards" else "1x"] for r in train["rows"]]
    return "Ingestion at scale (synthetic DICOM corpus) and training from shards", ["", "measured", "ratio"], rows


def _compile(c: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    return ("torch.compile (inductor) of the BN-folded network vs FastDCGAN", ["compile s", "compiled vs FastDCGAN"],
            [[c["compile_seconds"], f"{c['compiled_vs_fast']}x"]])


# (section, the key that shows it ran, its renderer), in the printed order.
_RENDERERS = (("inference", "models", _inference), ("variants", "forward", _variants), ("profile", "steps", _profile),
              ("roofline", "rows", _roofline), ("scaling", "rows", _scaling), ("threads", "rows", _threads),
              ("cold_start", "runs", _cold_start), ("app", "answer", _app), ("training", "rows", _training),
              ("export", "rows", _export), ("dataset_formats", "rows", _dataset_formats), ("style", "vs_reference", _style), ("detail_block", "rows", _detail_block),
              ("training_arch", "rows", _training_arch), ("soak", "soak", _soak),
              ("compile", "compile_seconds", _compile), ("ingest", "speed", _ingest))


def report(results: dict[str, Any], markdown: bool = False) -> str:
    """The run as text: the machine, every section that ran (in _RENDERERS order) and the targets."""
    m, s = results["machine"], results["sections"]
    out = [f"# MedGAN Studio benchmarks{' (quick)' if results['quick'] else ''} — {results['started_utc']}",
           f"{m['cpu']} · {m['cpu_count']} CPUs · torch {m['torch']} ({m['torch_threads']} threads) · "
           f"load average {m.get('load_average')} → {m.get('load_average_end')}"]
    for name, sec in s.items():
        if "error" in sec:
            out.append(f"\n## {name}\nERROR: {sec['error']}")
        elif "skipped" in sec:
            out.append(f"\n## {name}\nskipped: {sec['skipped']}")
    for name, key, render in _RENDERERS:
        if key in s.get(name, {}):
            title, headers, rows = render(s[name])
            out.append(f"\n## {title}\n{_table(headers, rows, markdown)}")
    rows = [[t["status"], t["target"], f"{t['value']} {t['unit']}" if t["value"] is not None else "—",
             f"{t['rule']} {t['limit']} {t['unit']}"] for t in results["targets"]]
    out.append(f"\n## Targets\n{_table(['', 'target', 'measured', 'required'], rows, markdown)}")
    return "\n".join(out)


def print_report(results: dict[str, Any]) -> None:
    print(report(results))


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.report RESULTS.json [--markdown]`: print a saved run again, e.g. as the Markdown
    tables of docs/performance.md."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m benchmarks.report", description=main.__doc__.split(":")[0])
    ap.add_argument("results", help="a JSON file written by `python -m benchmarks --out`")
    ap.add_argument("--markdown", action="store_true", help="Markdown tables instead of aligned text")
    args = ap.parse_args(argv)
    with open(args.results) as f:
        print(report(json.load(f), markdown=args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
