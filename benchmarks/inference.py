"""In-process generation: medgan vs the PyTorch-examples baseline, and what each optimisation pays.

What each contender's call includes (all on CPU, fp32, torch.inference_mode):
- medgan:    Generator.generate(n, seed, output_type="np") — per-index latents (numpy PCG64), forward on
             tiles of 8 through the BN-folded FastDCGAN, uint8 conversion into one preallocated array;
- reference: torch.randn(n, nz, 1, 1) + forward of the plain nn.Sequential (eval) + the same uint8 conversion.
"""
from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

from medgan.fastnet import FastDCGAN
from medgan.generator import Generator, fold_batchnorm, latents, load_weights, to_uint8

from .harness import interleaved, ratio, summary
from .models import BenchModel
from .reference_dcgan import load_reference, reference_generate

SEED = 1234


@contextmanager
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_pair(m: BenchModel) -> tuple[Generator, torch.nn.Module]:
    state = load_weights(m.folder, m.id)
    return Generator(m.config, state, device="cpu"), load_reference(m.config.generator, state)


def pixel_agreement(gen: Generator, ref: torch.nn.Module, count: int = 64) -> dict[str, Any]:
    """medgan's pixels vs the baseline's on the same latents: max and mean |difference| in grey levels."""
    nz = gen.config.generator.latent_dim
    z = torch.from_numpy(latents(SEED, count, nz)).view(count, nz, 1, 1)
    with torch.inference_mode():
        theirs = to_uint8(ref(z)).astype(np.int16)
    ours = gen.generate(count, SEED, output_type="np").astype(np.int16)
    diff = np.abs(ours - theirs)
    return {"images": count, "max_grey_levels": int(diff.max()), "mean_grey_levels": round(float(diff.mean()), 5),
            "pixels_differing": int((diff > 0).sum()), "tolerance_grey_levels": 1, "ok": bool(diff.max() <= 1)}


def run_inference(models: list[BenchModel], quick: bool) -> dict[str, Any]:
    batches = [1, 16] if quick else [1, 4, 16, 64]
    rounds, min_s = (3, 0.02) if quick else (11, 0.1)
    out: dict[str, Any] = {"includes": __doc__.split("\n\n", 1)[1].strip(), "models": []}
    for m in models:
        gen, ref = load_pair(m)
        nz = m.config.generator.latent_dim
        entry: dict[str, Any] = {"model": m.id, "shipped": m.shipped, "resolution": m.config.resolution,
                                 "widths": m.config.generator.widths, "pixels": pixel_agreement(gen, ref),
                                 "batches": []}
        for n in batches:
            times = interleaved({
                "medgan": lambda n=n: gen.generate(n, SEED, output_type="np"),
                "reference": lambda n=n: reference_generate(ref, n, nz),
            }, rounds, min_s)
            row = {"batch": n, "medgan": summary(times["medgan"], n), "reference": summary(times["reference"], n),
                   "speedup": round(ratio(times, "reference", "medgan"), 3)}
            # The same pair on one thread, timed by this thread's CPU clock: unaffected by other processes.
            with one_thread():
                cpu = interleaved({"medgan": lambda n=n: gen.generate(n, SEED, output_type="np"),
                                   "reference": lambda n=n: reference_generate(ref, n, nz)},
                                  rounds, min_s, clock=time.thread_time)
            row["speedup_1thread_cpu"] = round(ratio(cpu, "reference", "medgan"), 3)
            row["medgan_1thread_cpu_img_per_s"] = round(n / sorted(cpu["medgan"])[len(cpu["medgan"]) // 2], 1)
            entry["batches"].append(row)
        out["models"].append(entry)
    return out


def forward_variants(m: BenchModel) -> dict[str, torch.nn.Module]:
    """Each inference-time change alone, forward pass only, so each one's gain is visible."""
    state = load_weights(m.folder, m.id)
    ref = load_reference(m.config.generator, state)
    folded = fold_batchnorm(ref).eval()
    return {"plain (reference)": ref, "bn-folded": folded,
            "bn-folded + channels_last": copy.deepcopy(folded).to(memory_format=torch.channels_last),
            "FastDCGAN (shipped)": FastDCGAN(folded)}


def run_variants(models: list[BenchModel], quick: bool) -> dict[str, Any]:
    """Forward-only throughput of each variant vs plain, and the cost of fixed tiles in generate()."""
    m = models[0]
    nz = m.config.generator.latent_dim
    rounds, min_s = (3, 0.02) if quick else (11, 0.1)
    variants = forward_variants(m)
    out: dict[str, Any] = {"model": m.id, "forward": [], "tiles": []}
    with torch.inference_mode():
        for n in ([16] if quick else [1, 16, 64]):
            z = torch.randn(n, nz, 1, 1)
            zc = z.contiguous(memory_format=torch.channels_last)
            times = interleaved({k: (lambda v=v, k=k: v(zc if "channels_last" in k else z))
                                 for k, v in variants.items()}, rounds, min_s)
            out["forward"].append({"batch": n, **{k: {**summary(t, n), "vs_plain": round(
                ratio(times, "plain (reference)", k), 3)} for k, t in times.items()}})
    gen, _ = load_pair(m)
    for n in ([1] if quick else [1, 4, 16, 64]):
        def at(tile: int, n: int = n):
            gen.tile = tile
            return gen.generate(n, SEED, output_type="np")
        times = interleaved({"tile 8 (shipped)": lambda: at(8), "tile 64": lambda: at(64),
                             "no tiles (chunk = count)": lambda n=n: at(n)}, 2 if quick else rounds, min_s)
        out["tiles"].append({"count": n, **{k: summary(t, n) for k, t in times.items()},
                             "tile8_vs_untiled": round(ratio(times, "no tiles (chunk = count)", "tile 8 (shipped)"), 3)})
    gen.tile = 8
    return out


# (name, torch threads or "adaptive", OMP_WAIT_POLICY or None = OpenMP's default; "adaptive" = medgan.threads
# as the app runs it: the policy chosen at import, the thread count per call by fair_share)
THREAD_CONFIGS = [("1 thread", "1", None), ("2 threads, OMP default (spins)", "2", None),
                  ("2 threads, OMP_WAIT_POLICY=PASSIVE", "2", "PASSIVE"), ("adaptive (app)", "adaptive", None)]
PROBE = """
import json, sys, time
from medgan import threads  # before torch, as the app imports it: the wait policy is chosen here
import torch
from medgan.generator import Generator, load_weights
from benchmarks.reference_dcgan import load_reference, reference_generate
gen, seconds, out = Generator.from_folder(sys.argv[1], device="cpu"), float(sys.argv[4]), {}
from pathlib import Path
ref = load_reference(gen.config.generator, load_weights(Path(sys.argv[1]), gen.id))
adaptive = sys.argv[2] == "adaptive"
if not adaptive:
    torch.set_num_threads(int(sys.argv[2]))

def timed(fn, n):
    with (threads.fair_share() if adaptive else torch.inference_mode()):
        began = time.perf_counter(); fn(n); return time.perf_counter() - began

def median(fn, n):
    timed(fn, n)
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        times.append(timed(fn, n))
    return sorted(times)[len(times) // 2]

with torch.inference_mode():
    for n in map(int, sys.argv[3].split(",")):
        ours = median(lambda k: gen.generate(k, 0, output_type="np"), n)
        theirs = median(lambda k: reference_generate(ref, k, gen.config.generator.latent_dim), n)
        out[n] = [ours, theirs]
print(json.dumps({"times": out, "policy": __import__("os").environ.get("OMP_WAIT_POLICY", "DEFAULT")}))
"""


def _busy(count: int) -> list:
    """`count` processes that keep one core each busy (a machine with other work on it)."""
    import subprocess
    import sys
    import time
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    time.sleep(0.5)  # running before the probe starts, as a machine already at work would be
    return hogs


def run_threads(models: list[BenchModel], quick: bool) -> dict[str, Any]:
    """generate(n) and the reference DCGAN in fresh processes per thread setting (OMP's wait policy is fixed at
    start-up), on the machine as it is ("quiet") and with every core kept busy by other processes ("busy");
    settings alternate round by round; each sample is the median call time over ~1 s."""
    import os
    m = models[0]
    counts, rounds, seconds = ([16], 1, 0.2) if quick else ([16, 64], 2, 1.0)
    out: dict[str, Any] = {"model": m.id, "cpu_count": os.cpu_count(), "rows": []}
    for load in ("quiet", "busy"):
        hogs = _busy(os.cpu_count() or 1) if load == "busy" else []
        try:
            result = _thread_rounds(m, counts, rounds, seconds)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
        if "error" in result:
            return result
        out["rows"] += [{"load": load, **row} for row in result["rows"]]
        out.setdefault("adaptive_policy", {})[load] = result["adaptive_policy"]
    return out


def _thread_rounds(m: BenchModel, counts: list[int], rounds: int, seconds: float) -> dict[str, Any]:
    import json
    import os
    import subprocess
    import sys
    from .models import ROOT
    times = {n: {name: [] for name, _, _ in THREAD_CONFIGS} for n in counts}
    refs = {n: {name: [] for name, _, _ in THREAD_CONFIGS} for n in counts}
    adaptive_policy = ""
    for r in range(rounds):
        k = r % len(THREAD_CONFIGS)
        for name, threads, policy in THREAD_CONFIGS[k:] + THREAD_CONFIGS[:k]:
            env = {key: v for key, v in os.environ.items() if key != "OMP_WAIT_POLICY"}
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            proc = subprocess.run([sys.executable, "-c", PROBE, str(m.folder), threads, ",".join(map(str, counts)),
                                   str(seconds)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                return {"error": proc.stderr[-400:]}
            answer = json.loads(proc.stdout.strip().splitlines()[-1])
            adaptive_policy = answer["policy"] if threads == "adaptive" else adaptive_policy
            for n, (ours, theirs) in answer["times"].items():
                times[int(n)][name].append(ours)
                refs[int(n)][name].append(theirs)
    rows = []
    for n in counts:
        row: dict[str, Any] = {"count": n, **{k: summary(v, n) for k, v in times[n].items()}}
        for name, _, _ in THREAD_CONFIGS:
            row[name]["vs_reference"] = round(ratio({"ref": refs[n][name], "ours": times[n][name]}, "ref", "ours"), 3)
        for name, _, _ in THREAD_CONFIGS[1:]:
            row[f"{name} vs 1 thread"] = round(ratio(times[n], "1 thread", name), 3)
        rows.append(row)
    return {"rows": rows, "adaptive_policy": adaptive_policy}


def run_compile(models: list[BenchModel], quick: bool) -> dict[str, Any]:
    """torch.compile (inductor) of the folded module: compile time and speed vs FastDCGAN at batch 16."""
    if quick:
        return {"skipped": "quick mode (compiling takes minutes on 2 cores)"}
    import os
    import tempfile
    m = models[0]
    variants = forward_variants(m)
    # A fresh inductor cache, so compile_seconds is what a new machine (or a Space) would pay.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="medgan-bench-inductor-")
    began = time.perf_counter()
    try:
        compiled = torch.compile(variants["bn-folded"])
        z = torch.randn(16, m.config.generator.latent_dim, 1, 1)
        with torch.inference_mode():
            compiled(z)
    except Exception as exc:  # no compiler on the machine, etc.
        return {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    seconds = time.perf_counter() - began
    fast = variants["FastDCGAN (shipped)"]
    with torch.inference_mode():
        diff = float((compiled(z) - fast(z)).abs().max())
        times = interleaved({"torch.compile(bn-folded)": lambda: compiled(z), "FastDCGAN": lambda: fast(z)}, 9, 0.1)
    return {"model": m.id, "compile_seconds": round(seconds, 1), "inductor_cache": "fresh", "max_abs_diff": diff,
            **{k: summary(v, 16) for k, v in times.items()},
            "compiled_vs_fast": round(ratio(times, "FastDCGAN", "torch.compile(bn-folded)"), 3)}
