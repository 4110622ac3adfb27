"""The optimised inference path vs the plain reference (pixels, tiles), and `python -m benchmarks --quick`."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import ROOT, make_model_folder
from medgan import Generator
from medgan.config import GeneratorConfig
from medgan.fastnet import FastDCGAN
from medgan.generator import fold_batchnorm, latents, load_weights, to_uint8
from medgan.nets import DCGANGenerator

sys.path.insert(0, str(ROOT))
from benchmarks.reference_dcgan import load_reference, reference_generate  # noqa: E402

# Stated tolerance: the optimised path reorders float sums (~1e-6), which can move a pixel that sits on a
# .5 rounding boundary by one grey level; nothing more.
TOLERANCE_GREY_LEVELS = 1


@pytest.fixture(scope="module")
def model64(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("w"), "bench-64", resolution=64, base_width=16)


def reference_pixels(folder, count, seed, start=0):
    gen = Generator.from_folder(folder, optimize=False)
    ref = load_reference(gen.config.generator, load_weights(folder, gen.id))
    nz = gen.config.generator.latent_dim
    with torch.inference_mode():
        return to_uint8(ref(torch.from_numpy(latents(seed, count, nz, start)).view(count, nz, 1, 1)))


def test_optimised_generate_matches_the_pytorch_examples_reference(model64):
    ours = Generator.from_folder(model64).generate(40, 7, output_type="np").astype(int)
    theirs = reference_pixels(model64, 40, 7).astype(int)
    assert ours.shape == theirs.shape == (40, 64, 64)
    assert np.abs(ours - theirs).max() <= TOLERANCE_GREY_LEVELS
    assert (ours != theirs).mean() < 1e-3  # flips are rare, not systematic
    assert ours.std() > 1  # not a blank image that would match anything


@pytest.mark.parametrize("resolution,channels", [(32, 1), (64, 3), (128, 1)])
def test_fastnet_matches_the_folded_module(resolution, channels):
    torch.manual_seed(resolution)
    net = DCGANGenerator(GeneratorConfig(resolution=resolution, channels=channels, base_width=8)).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    folded = fold_batchnorm(net).eval()
    z = torch.randn(9, 100, 1, 1)
    with torch.inference_mode():
        fast, want = FastDCGAN(folded)(z), net(z)
    assert fast.shape == want.shape == (9, channels, resolution, resolution)
    assert torch.allclose(fast, want, atol=1e-5)
    kinds = [kind for kind, _, _ in FastDCGAN(folded).plan]
    assert kinds[0] == "first" and kinds[1] == "col2im" and kinds[-1] == "fold"


def test_unusual_layouts_fall_back_to_the_folded_module():
    bad = torch.nn.Sequential(torch.nn.ConvTranspose2d(100, 8, 3, 1, 0), torch.nn.ReLU(),
                              torch.nn.ConvTranspose2d(8, 1, 4, 2, 1), torch.nn.Tanh())
    with pytest.raises(ValueError, match="unexpected layer 0"):
        FastDCGAN(bad)


def test_pixels_do_not_depend_on_count_start_or_threads(model64):
    """Fixed tiles aligned to absolute indices make the prefix property exact, also with 2 threads."""
    gen = Generator.from_folder(model64)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        full = gen.generate(48, 3, output_type="np")
        for count, start in [(1, 0), (3, 0), (5, 2), (13, 7), (1, 47), (30, 17)]:
            assert np.array_equal(gen.generate(count, 3, start=start, output_type="np"), full[start:start + count])
        torch.set_num_threads(1)
        assert np.array_equal(gen.generate(11, 3, start=5, output_type="np"), full[5:16])
    finally:
        torch.set_num_threads(before)
    floats = gen.generate(3, 3, start=6, output_type="pt")
    assert floats.shape == (3, 1, 64, 64) and np.array_equal(to_uint8(floats), full[6:9])


def test_reduced_precision_paths_run_and_stay_close(model64):
    """bf16/fp16 are meant for GPUs; on CPU they must still work and stay within a few grey levels."""
    ref = Generator.from_folder(model64).generate(8, 1, output_type="np").astype(int)
    for precision in ("bf16", "fp16"):
        gen = Generator.from_folder(model64, precision=precision)
        out = gen.generate(8, 1, output_type="np").astype(int)
        assert out.shape == ref.shape and gen.precision == precision
        assert np.abs(out - ref).mean() < 2 and np.abs(out - ref).max() <= 32
    with pytest.raises(Exception, match="precision must be one of"):
        Generator.from_folder(model64, precision="int4")


def test_reference_generate_is_the_baseline_call(model64):
    gen = Generator.from_folder(model64)
    ref = load_reference(gen.config.generator, load_weights(model64, gen.id))
    out = reference_generate(ref, 4, 100)
    assert out.shape == (4, 64, 64) and out.dtype == np.uint8


@pytest.mark.slow
def test_quick_benchmark_writes_every_section(tmp_path):
    out = tmp_path / "quick.json"
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    sections = results["sections"]
    want = {"inference", "variants", "profile", "roofline", "scaling", "threads", "cold_start", "app", "training",
            "export", "dataset_formats", "compile", "soak", "ingest"}
    assert want <= set(sections)
    errors = {k: v["error"] for k, v in sections.items() if "error" in v}
    assert not errors, errors
    assert sections["inference"]["models"][0]["pixels"]["ok"]
    assert sections["app"]["answer"]["p50_ms"] > 0 and sections["app"]["model_time"]["samples"] >= 5
    assert sections["app"]["fast_route"]["p50_ms"] > 0
    assert sections["cold_start"]["runs"][0]["rss_all_models_loaded_mb"] > 0
    formats = {r["contender"]: r for r in sections["dataset_formats"]["rows"]}
    assert set(formats) == {"generate only", "png", "parquet"} and formats["parquet"]["images_per_s"] > 0
    assert sections["ingest"]["speed"]["same_slices"] and sections["ingest"]["rss_growth"] > 0
    soak = sections["soak"]
    assert soak["soak"]["calls"] == 200 and soak["soak"]["failed"] == 0 and soak["soak"]["rss_peak_mb"] > 0
    assert soak["bodies"]["content_length"]["statuses"] == soak["bodies"]["chunked"]["statuses"] == [413]
    assert soak["fairness"]["generate"]["calls"] >= 1 and soak["fairness"]["flooder"].get("429", 0) > 0
    assert {t["status"] for t in results["targets"]} <= {"PASS", "FAIL", "N/A"} and len(results["targets"]) >= 5
    assert "## Targets" in proc.stdout


def test_report_renders_the_committed_run_as_markdown_and_docs_performance_holds_those_tables():
    """docs/performance.md's reference tables are `python -m benchmarks.report … --markdown` of the committed
    run, so they cannot drift from benchmarks/results/reference-2core.json."""
    from benchmarks.report import report

    results = json.loads((ROOT / "benchmarks" / "results" / "reference-2core.json").read_text())
    text = report(results, markdown=True)
    tables = [block.split("\n", 1)[1] for block in text.split("\n## ")[1:]]
    assert len(tables) >= 8
    for table in tables:
        widths = {line.count(" | ") for line in table.splitlines() if not line.startswith("|---")}
        assert len(widths) == 1, table  # every row has the header's columns (a "|" in a cell is escaped)
    performance = (ROOT / "docs" / "performance.md").read_text()
    assert [t for t in tables if t not in performance] == []
    assert report(results).count("\n## ") == len(tables)  # the plain-text report has the same sections
