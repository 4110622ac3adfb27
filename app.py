"""MedGAN Studio: a Gradio UI over the `medgan` package. UI only: widgets, wiring, error messages.

Run `python app.py` (honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT). API names for gradio_client:
/generate(model, seed, count, truncation, label), /download(model, seed, count, fmt, label, truncation, image_class)
(fmt "dataset": a parquet dataset with its card), /dataset_command(model, seed, count, truncation, image_class, label),
/interpolate(model, seed_a, seed_b, frames, truncation, label), /mix(model, row_seeds, col_seeds, crossover,
truncation, label), /models(), /stats(model). Scripts that want raw arrays fast: GET /medgan/v1/generate.npz
(see FAST_ROUTE), outside Gradio's queue.
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phone-home at start-up
# Gradio keeps a record of each of the last N events for its monitoring page (default 10,000, ~0.4 KiB each):
# a few hundred are plenty, and memory then levels off sooner.
os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "256")
# OpenMP's wait policy is chosen by `import medgan` (below, before torch loads): PASSIVE when the machine is
# busy at start-up, else OpenMP's default; each generation's thread count then follows the load
# (medgan.threads, measured by benchmarks "threads").

import functools
import importlib.util
import inspect
import random
import sys
import threading
import time
import traceback

try:  # ZeroGPU Spaces: imported before torch touches CUDA. Elsewhere it is absent, or a no-op off Spaces.
    import spaces
except ImportError:
    spaces = None

import medgan
from medgan import limits
from medgan.errors import ConfigError, MedganError

medgan.threads.cap_malloc_arenas()  # before the server starts its threads (see medgan.threads)


def check_settings() -> dict:
    """Read every numeric MEDGAN_* setting once, before anything uses one: run as `python app.py`, a malformed
    value stops start-up with one line naming the variable (exit status 2); imported, it raises ConfigError."""
    try:
        return limits.summary()
    except ConfigError as exc:
        if __name__ == "__main__":
            print(f"[medgan] cannot start: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        raise


SETTINGS = check_settings()

import gradio as gr  # noqa: E402 (after the settings check: a bad setting fails fast, before this slow import)

from medgan import service  # noqa: E402 (reads MEDGAN_MAX_COUNT at import; checked above)
from medgan import perf  # noqa: E402
from medgan import serving  # noqa: E402
from medgan import zoo  # noqa: E402
from medgan.files import prune_tree  # noqa: E402
from gradio.utils import get_upload_folder  # noqa: E402

# Downloads, GIFs and grids are written inside Gradio's cache: Gradio serves a file already there as it is and
# copies only files from elsewhere, so each download is stored once. MEDGAN_EXPORT_DIR still overrides.
os.environ.setdefault("MEDGAN_EXPORT_DIR", os.path.join(get_upload_folder(), "medgan-exports"))
SWEEP_EVERY_S = 10.0
_sweep = {"last": 0.0, "lock": threading.Lock()}


def sweep_caches(force: bool = False) -> int:
    """Bound Gradio's cache (gallery images and, by default, the downloads) by MEDGAN_CACHE_MAX_MB as well as by
    age (Gradio's own `delete_cache` goes by age only); oldest files first. Runs at most every SWEEP_EVERY_S,
    before each heavy request. Returns how many files were removed."""
    with _sweep["lock"]:
        if not force and time.monotonic() - _sweep["last"] < SWEEP_EVERY_S:
            return 0
        _sweep["last"] = time.monotonic()
        removed = prune_tree(get_upload_folder(), max_age_s=limits.gradio_cache()[1],
                             max_bytes=limits.cache_max_bytes())
        forget_removed_files()
        return removed


def forget_removed_files() -> None:
    """Drop the paths of deleted files from Gradio's per-component sets of the files it wrote (kept to delete
    them at shut-down; Gradio's own sweep skips a file that is already gone without dropping its path), so
    those sets do not grow by a path per image for ever."""
    for paths in getattr(demo, "temp_file_sets", []):
        for path in [p for p in list(paths) if not os.path.exists(p)]:
            paths.discard(path)

TITLE = "MedGAN Studio"
UI_MAX_SEED = 2**32 - 1  # the slider's range; the Python API accepts up to 2**63-1
# Gradio's Markdown sets `overflow-wrap: anywhere`, which splits words of narrow table columns ("Resolutio/n"):
# table cells break at spaces and hyphens only, so a column is at least as wide as its longest word.
CSS = ".prose th, .prose td { overflow-wrap: normal; word-break: normal; hyphens: none; }"


def checked_by_medgan(component: gr.components.Component) -> gr.components.Component:
    """Hand the component's value to our function untouched, where medgan.validation checks it and says what
    was wrong: Gradio's own Slider/Radio checks answer NaN, strings or nulls with an opaque "Error" and round
    values first. Set on the instance: a subclass would make Gradio write an app.pyi stub beside this file."""
    component.preprocess = lambda payload: payload
    return component


def on_gpu(fn):
    """Run `fn` on a ZeroGPU worker when the `spaces` package is importable; unchanged otherwise.
    Outermost, so errors leave the worker as gr.Error. Any GPU is used anyway: medgan picks CUDA when present."""
    if spaces is None:
        return fn
    return spaces.GPU(duration=limits.gpu_duration_s())(fn)


def launch_options() -> dict:
    """Same code locally and on Spaces: on a Space (SPACE_ID set) listen on 0.0.0.0 unless GRADIO_SERVER_NAME
    says otherwise. MEDGAN_MCP=1 also serves the API as MCP tools, if `gradio[mcp]` is installed (optional:
    it pins pydantic down)."""
    options: dict = {}
    if os.environ.get("SPACE_ID") and not os.environ.get("GRADIO_SERVER_NAME"):
        options["server_name"] = "0.0.0.0"
    if os.environ.get("MEDGAN_MCP", "").strip().lower() in ("1", "true", "yes", "on"):
        if importlib.util.find_spec("mcp") is not None:
            options["mcp_server"] = True
        else:
            print("[medgan] MEDGAN_MCP=1 but gradio[mcp] is not installed "
                  "(pip install 'gradio[mcp]==<gradio version>'); the MCP server stays off", flush=True)
    return options


def log(line: str) -> None:
    """A line of the server's log (stderr), prefixed like the app's other messages."""
    print(f"[medgan] {line}", file=sys.stderr, flush=True)


def one_line(text: str, limit: int = 300) -> str:
    """`text` for a log line: line breaks escaped (a request value cannot start a fake log line), capped."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit] + "…"


def _api(fn):
    """Turn medgan's typed errors into gr.Error (shown to the user); never leak a traceback or a path.

    Expected errors (MedganError: a bad argument, an unknown or broken model, a time limit) are logged as one
    line; unexpected ones with their full traceback. Gradio's own traceback of the gr.Error is switched off
    (print_exception=False): it would only show this wrapper, ~1.8 KB per rejected request. The wrapper keeps
    `fn`'s signature (functools.wraps), so Gradio's API page and gradio_client name the real parameters."""
    @functools.wraps(fn)
    def wrapper(*args):
        try:
            sweep_caches()
            return fn(*args)
        except MedganError as exc:
            log(f"{fn.__name__} refused: {type(exc).__name__}: {one_line(str(exc))}")
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:  # unexpected: log server-side, say little client-side
            log(f"unexpected {type(exc).__name__} in {fn.__name__}: {one_line(str(exc))}\n"
                f"{traceback.format_exc().rstrip()}")
            raise gr.Error(f"Internal error ({type(exc).__name__}); the request was not completed.",
                           print_exception=False) from None
    return wrapper


@on_gpu
@_api
def generate(model: str, seed: float, count: float, truncation: float = 1.0, label: str = "any"):
    """Generate `count` synthetic images of `model` from `seed`; returns a gallery of (image, caption).
    truncation ψ in [0, 2] (1 = none); label: a class of a conditional model, or "any" (a class per image)."""
    return limits.run_with_time_limit(service.generate, model, seed, count, truncation, label)


@on_gpu
@_api
def download(model: str, seed: float, count: float, fmt: str = "png", label: bool = False,
             truncation: float = 1.0, image_class: str = "any") -> str:
    """Generate a batch and return the path of a zip (images + metadata.json + README.txt). `label` burns a
    visible SYNTHETIC into each image; `image_class` is the class of a conditional model."""
    return str(limits.run_with_time_limit(service.export, model, seed, count, fmt, label, None, truncation,
                                          image_class))


@_api
def dataset_command(model: str, seed: float, count: float, truncation: float = 1.0, image_class: str = "any",
                    label: bool = False) -> str:
    """The command line that writes a parquet dataset of `count` images with these settings (any count)."""
    return service.dataset_command(model, seed, count, truncation, image_class, label)


def dataset_panel(fmt: str):
    """The command-line panel of the Download tab: shown for the dataset format."""
    return gr.update(visible=fmt == service.DATASET_FORMAT)


@on_gpu
@_api
def interpolate(model: str, seed_a: float, seed_b: float, frames: float = 8, truncation: float = 1.0,
                label: str = "any"):
    """Frames from image 0 of seed_a to image 0 of seed_b: (gallery, animated GIF path, zip path)."""
    images, gif, archive = limits.run_with_time_limit(service.interpolate, model, seed_a, seed_b, frames,
                                                      truncation, label)
    return images, str(gif), str(archive)


@on_gpu
@_api
def mix(model: str, row_seeds: str, col_seeds: str, crossover: float | None = None, truncation: float = 1.0,
        label: str = "any"):
    """Style mixing: (grid PNG path, gallery of cells, zip path). Seeds: "1, 2, 3" or "random 4"."""
    figure, images, archive = limits.run_with_time_limit(service.mix, model, row_seeds, col_seeds, crossover,
                                                         truncation, label)
    return str(figure), images, str(archive)


def class_choices(model: str):
    """The class dropdowns for `model`: shown with "any" + its classes when conditional, else hidden."""
    classes = service.model_classes(model)
    update = gr.update(choices=["any", *classes], value="any", visible=bool(classes))
    return update, update, update


@_api
def models() -> list[dict]:
    """Metadata of every model: id, title, modality, organ, resolution, source, license, metrics, …"""
    return service.models_json()


@_api
def model_info(model: str) -> str:
    return service.model_markdown(model)


def models_rows() -> list[list]:
    """The Models table of every model, in medgan.zoo's columns (the filters narrow it once the page loads)."""
    return zoo.table_rows(service.models_json())


def explore_models(modality: str, organ: str, source: str, kind: str, resolution: str, sort: str, picked: str | None):
    """The Models tab after a filter or the sort changed: table, count, thumbnails, the pick list (keeping the
    picked model while it is still listed) and its details."""
    filters = {"modality": modality, "organ": organ, "source": source, "kind": kind, "resolution": resolution}
    view = service.explore_models(filters, sort, picked)
    return (zoo.table_rows(view["rows"]), f"**{len(view['rows'])}** of {view['total']} models", view["samples"],
            gr.update(choices=[(f"{r['id']} · {r['title']}", r["id"]) for r in view["rows"]], value=view["picked"]),
            view["details"])


def pick_from_table(evt: gr.SelectData):
    """The model of the clicked table row (its first cell is the id)."""
    row = evt.row_value or []
    return row[0] if row else gr.update()


def model_details(model: str | None) -> str:
    return service.model_details(model) if model else ""


@_api
def stats(model: str | None = None) -> dict:
    """Aggregate performance of `model` (optional; an unknown id is refused): calls, images, p50/p95 model
    time, images/s, load time, device. Fields in medgan/perf.py; describing a model never loads it."""
    return perf.public_stats(model)


def performance_panel(model: str | None, session: list[dict], after_generate: bool = False):
    """The Performance tab; after a generation, this browser session's call is appended to its own series. Host
    details and every caller's calls only with MEDGAN_PERF_DETAILS (off on a Space)."""
    numbers = perf.model_stats(perf.listed(model))
    session = list(session or [])
    if after_generate and numbers["history"] and (not session or session[-1]["time"] != numbers["history"][-1]["time"]):
        session = (session + [numbers["history"][-1]])[-50:]
    import pandas as pd  # gradio's own dependency; only needed here
    frame = pd.DataFrame({"call": list(range(1, len(session) + 1)), "ms": [h["seconds"] * 1e3 for h in session]})
    return perf.panel_markdown(numbers, session, details=limits.perf_details()), frame, session


def source_notices() -> str:
    """One Markdown line per source that lists less than it could (e.g. medigan offline, no catalogue)."""
    return "\n\n".join(f"ℹ️ {n}" for n in service.source_notices())


MODEL_COLUMNS = zoo.COLUMNS


def steering_controls(classes: list[str], suffix: str) -> tuple[gr.Slider, gr.Dropdown]:
    """A truncation slider and a class dropdown (shown for conditional models) for one Explore panel."""
    psi = checked_by_medgan(gr.Slider(0, 2, value=1, step=0.05, label="Truncation ψ", elem_id=f"truncation-{suffix}"))
    label = checked_by_medgan(gr.Dropdown(["any", *classes], value="any", label="Class", visible=bool(classes),
                                          elem_id=f"class-{suffix}"))
    return psi, label


def column_widths(rows: list[list], headers: list[str], char_px: int = 9, pad_px: int = 28) -> list[int]:
    """Pixel widths of the Models table's columns: each fits the longest word of its header and its cells up to
    48 characters (Gradio sizes columns by their cells alone, so "modality" over "MR" broke mid-word)."""
    def longest_word(text: object) -> int:
        return max((len(w) for w in str(text).split()), default=0)
    return [char_px * max(longest_word(h), *(min(len(str(r[i])), 48) for r in rows), 1) + pad_px
            for i, h in enumerate(headers)]


def build_demo() -> gr.Blocks:
    choices = service.model_choices()
    default = service.default_model()  # the best-measured model (its eval.json), not the first listed
    # Gradio's cache (gallery PNGs, zip copies) is swept on a schedule; set here so any launcher gets it.
    with gr.Blocks(title=TITLE, delete_cache=limits.gradio_cache()) as demo:
        gr.Markdown(f"# {TITLE}\nSynthetic medical images from GANs trained on real, openly licensed scans.")
        gr.Markdown(f"⚠️ {service.NOTICE}", elem_id="synthetic-notice")
        if not choices:
            gr.Markdown("**No models are available.** Add model folders to `weights/` or set MEDGAN_WEIGHTS_DIRS.")
        with gr.Tab("Generate"):
            summary = gr.Markdown(service.model_summary(default) if default else "", elem_id="model-summary")
            with gr.Row():
                with gr.Column(scale=1):
                    model = gr.Dropdown(choices=choices, value=default, label="Model", allow_custom_value=True,
                                        elem_id="model")
                    seed = checked_by_medgan(gr.Slider(0, UI_MAX_SEED, value=42, step=1, label="Seed",
                                                       elem_id="seed"))
                    random_seed = gr.Button("Random seed", size="sm")
                    count = checked_by_medgan(gr.Slider(1, service.MAX_COUNT, value=8, step=1, label="Count",
                                                        elem_id="count"))
                    truncation = checked_by_medgan(gr.Slider(0, 2, value=1, step=0.05, label="Truncation ψ (1 = none; "
                                                             "lower = closer to the average image)",
                                                             elem_id="truncation"))
                    classes = service.model_classes(default) if default else []
                    image_class = checked_by_medgan(gr.Dropdown(["any", *classes], value="any", label="Class",
                                                                visible=bool(classes), elem_id="class"))
                    go = gr.Button("Generate", variant="primary", elem_id="generate")
                    info = gr.Markdown(service.model_markdown(default) if default else "", elem_id="model-info")
                with gr.Column(scale=2):
                    gallery = gr.Gallery(label="Synthetic images", format="png", columns=4, height="auto",
                                         buttons=["download", "fullscreen"], elem_id="gallery")
        with gr.Tab("Download"):
            gr.Markdown("Download the batch set on the Generate tab (model, seed, count) as a zip with "
                        "`metadata.json` and a README. Every file is marked synthetic.")
            fmt = checked_by_medgan(gr.Radio(service.download_formats(), value="png", label="Format",
                                             elem_id="format"))
            label = gr.Checkbox(False, label="Burn a visible “SYNTHETIC” label into each image "
                                "(off by default, for training use)", elem_id="label")
            build = gr.Button("Prepare download", variant="primary", elem_id="prepare-download")
            archive = gr.File(label="Zip", elem_id="archive")
            with gr.Column(visible=False, elem_id="dataset-cli") as dataset_cli:
                gr.Markdown(f"**dataset (parquet + card)**: a Hugging Face dataset (`data/*.parquet` and a dataset "
                            f"card `README.md`) that `datasets.load_dataset` reads. Up to {service.MAX_COUNT} "
                            "images download from here; any number with this command on your machine (seed, ψ "
                            "and class as set on the Generate tab; it resumes when interrupted and runs under "
                            "torchrun):")
                dataset_count = checked_by_medgan(gr.Number(service.DATASET_CLI_COUNT, precision=0, minimum=1,
                                                            label="Images", elem_id="dataset-count"))
                command = gr.Code(language="shell", label="Command", interactive=False, elem_id="dataset-command")
        with gr.Tab("Explore"):
            gr.Markdown("Explore the latent space of the model chosen on the Generate tab. Every image is synthetic.")
            with gr.Row():
                with gr.Column(scale=1):
                    gr.Markdown("### Interpolate")
                    seed_a = checked_by_medgan(gr.Number(1, label="Seed A", precision=0, elem_id="seed-a"))
                    seed_b = checked_by_medgan(gr.Number(2, label="Seed B", precision=0, elem_id="seed-b"))
                    frames = checked_by_medgan(gr.Slider(2, limits.max_frames(), value=8, step=1, label="Frames",
                                                         elem_id="frames"))
                    psi_i, class_i = steering_controls(classes, "i")
                    go_i = gr.Button("Interpolate", variant="primary", elem_id="interpolate")
                with gr.Column(scale=3):
                    filmstrip = gr.Gallery(label="Frames (SYNTHETIC)", format="png", columns=8, height=240,
                                           elem_id="filmstrip")
                    with gr.Row():
                        gif = gr.File(label="Animated GIF", elem_id="gif")
                        zip_i = gr.File(label="Frames (zip + metadata.json)", elem_id="zip-i")
            with gr.Row():
                with gr.Column(scale=1):
                    gr.Markdown("### Style mixing\nRows give the coarse styles (layers below the crossover: "
                                "overall anatomy), columns the fine ones (texture). Style-based models only.")
                    row_seeds = checked_by_medgan(gr.Textbox("1, 2, 3", label="Row seeds (or “random 4”)",
                                                             elem_id="row-seeds"))
                    col_seeds = checked_by_medgan(gr.Textbox("4, 5, 6, 7", label="Column seeds (or “random 4”)",
                                                             elem_id="col-seeds"))
                    crossover = checked_by_medgan(gr.Slider(1, 8, value=2, step=1, label="Crossover layer",
                                                            elem_id="crossover"))
                    psi_m, class_m = steering_controls(classes, "m")
                    go_m = gr.Button("Mix styles", variant="primary", elem_id="mix")
                with gr.Column(scale=3):
                    grid_image = gr.Image(label="Style-mixing grid (SYNTHETIC)", type="filepath", format="png",
                                          elem_id="mix-grid")
                    cells = gr.Gallery(label="Cells", format="png", columns=8, height="auto", visible=False,
                                       elem_id="mix-cells")
                    zip_m = gr.File(label="Cells (zip + metadata.json)", elem_id="zip-m")
        with gr.Tab("Models"):
            notices = gr.Markdown(source_notices(), elem_id="source-notices")
            choices_by = service.model_facets()
            with gr.Row():
                # Unchecked by Gradio (checked_by_medgan): medgan.zoo matches any text, and Gradio's own check
                # of a value outside the choices logs a full traceback per request.
                filters = [checked_by_medgan(gr.Dropdown(choices_by[key], value="any", label=key.title(),
                                                         elem_id=f"filter-{key}", min_width=120))
                           for key in zoo.FILTERS]
                sort = checked_by_medgan(gr.Dropdown(list(zoo.SORTS), value=zoo.SORTS[0], label="Sort",
                                                     elem_id="models-sort", min_width=150))
            count_note = gr.Markdown(elem_id="models-count")
            rows = models_rows()
            table = gr.Dataframe(value=rows, headers=MODEL_COLUMNS, interactive=False, wrap=True,
                                 column_widths=column_widths(rows, MODEL_COLUMNS), elem_id="models-table")
            gr.Markdown("FID: measured here (our models, against their training data) or *published* by the "
                        "authors (medigan's catalogue, on their own data): not comparable across datasets. "
                        "Click a row to see its details.")
            with gr.Row():
                with gr.Column(scale=2):
                    pick = checked_by_medgan(gr.Dropdown([], label="Details of", elem_id="model-pick"))
                    details = gr.Markdown(elem_id="model-detail")
                with gr.Column(scale=3):
                    samples = gr.Gallery(label="Samples of the listed local models (SYNTHETIC)", columns=2,
                                         height="auto", elem_id="model-samples")
            listing = gr.JSON(visible=False)
        with gr.Tab("Performance"):
            perf_summary = gr.Markdown(elem_id="perf-summary")
            perf_plot = gr.LinePlot(x="call", y="ms", title="Model time of your recent generations (ms)",
                                    height=240, elem_id="perf-plot")
            perf_refresh = gr.Button("Refresh", size="sm", elem_id="perf-refresh")
            perf_json = gr.JSON(visible=False)
            perf_session = gr.State([])

        random_seed.click(lambda: random.randint(0, UI_MAX_SEED), outputs=seed, api_visibility="private")
        model.change(model_info, inputs=model, outputs=info, queue=False, api_visibility="private")
        model.change(service.model_summary, inputs=model, outputs=summary, queue=False, api_visibility="private")
        model.change(class_choices, inputs=model, outputs=[image_class, class_i, class_m], queue=False,
                     api_visibility="private")
        # One shared pool of MEDGAN_CONCURRENCY workers for every heavy event.
        go_i.click(interpolate, inputs=[model, seed_a, seed_b, frames, psi_i, class_i], outputs=[filmstrip, gif, zip_i],
                   api_name="interpolate", concurrency_limit=limits.concurrency(), concurrency_id="generation")
        go_m.click(mix, inputs=[model, row_seeds, col_seeds, crossover, psi_m, class_m], outputs=[grid_image, cells, zip_m],
                   api_name="mix", concurrency_limit=limits.concurrency(), concurrency_id="generation")
        go.click(generate, inputs=[model, seed, count, truncation, image_class], outputs=gallery, api_name="generate",
                 concurrency_limit=limits.concurrency(), concurrency_id="generation").success(
            lambda m, sess: performance_panel(m, sess, True), inputs=[model, perf_session],
            outputs=[perf_summary, perf_plot, perf_session], api_visibility="private")
        perf_refresh.click(stats, inputs=model, outputs=perf_json, api_name="stats").then(
            performance_panel, inputs=[model, perf_session], outputs=[perf_summary, perf_plot, perf_session],
            api_visibility="private")
        demo.load(performance_panel, inputs=[model, perf_session], outputs=[perf_summary, perf_plot, perf_session],
                  api_visibility="private")
        build.click(download, inputs=[model, seed, count, fmt, label, truncation, image_class], outputs=archive,
                    api_name="download",
                    concurrency_limit=limits.concurrency(), concurrency_id="generation")
        fmt.change(dataset_panel, inputs=fmt, outputs=dataset_cli, queue=False, api_visibility="private")
        command_inputs = [model, seed, dataset_count, truncation, image_class, label]
        dataset_count.change(dataset_command, inputs=command_inputs, outputs=command, queue=False,
                             api_name="dataset_command")
        for control in (model, seed, truncation, image_class, label):
            control.change(dataset_command, inputs=command_inputs, outputs=command, queue=False,
                           api_visibility="private")
        demo.load(dataset_command, inputs=command_inputs, outputs=command, queue=False, api_visibility="private")
        demo.load(models, outputs=listing, api_name="models", queue=False)
        # The Models tab only reads listings: off the queue, so it never waits behind a generation.
        explorer_inputs, explorer_outputs = [*filters, sort, pick], [table, count_note, samples, pick, details]
        for control in [*filters, sort]:
            control.change(explore_models, inputs=explorer_inputs, outputs=explorer_outputs, queue=False,
                           api_visibility="private")
        demo.load(explore_models, inputs=explorer_inputs, outputs=explorer_outputs, queue=False,
                  api_visibility="private")
        table.select(pick_from_table, outputs=pick, queue=False, api_visibility="private")
        pick.change(model_details, inputs=pick, outputs=details, queue=False, api_visibility="private")
        demo.load(source_notices, outputs=notices, queue=False, api_visibility="private")
    # The queue is configured at build time, so it also holds when a Space runner launches `demo` itself.
    demo.queue(max_size=limits.queue_size(), default_concurrency_limit=limits.concurrency())
    return serve_with_limits(demo)


def serve_with_limits(demo: gr.Blocks) -> gr.Blocks:
    """Wrap `demo.launch` so that whoever launches `demo` (a Space runner included) gets, unless they pass
    their own: the edge (medgan.serving.Edge: body and text bounds, closed routes, per-client fairness) as
    middleware of the app Gradio serves; the queue-free route (FAST_ROUTE); Gradio's upload cap
    (MEDGAN_MAX_UPLOAD_MB); the bound on sessions kept in memory (MEDGAN_MAX_SESSIONS); run history off.
    Gradio takes these only as `launch` arguments (middleware and routes through `app_kwargs`, FastAPI's own:
    routes are matched before Gradio's, middleware wraps them all). `gr.mount_gradio_app` needs them given by
    hand: `app.edge_middleware()` on the parent app, `app.fast_routes()`, `max_file_size=`."""
    launch = demo.launch

    @functools.wraps(launch)
    def launch_with_limits(*args, **kwargs):
        if kwargs.get("max_file_size") is None:
            kwargs["max_file_size"] = limits.max_upload_bytes()
        kwargs["css"] = CSS + (kwargs.get("css") or "")
        kwargs.setdefault("state_session_capacity", limits.max_sessions())
        kwargs.setdefault("run_history", False)  # nothing to review: the same seed gives the same images
        app_kwargs = dict(kwargs.get("app_kwargs") or {})
        app_kwargs["routes"] = [*fast_routes(), *app_kwargs.get("routes", [])]
        app_kwargs["middleware"] = [edge_middleware(), *app_kwargs.get("middleware", [])]
        kwargs["app_kwargs"] = app_kwargs
        return launch(*args, **kwargs)

    demo.launch = launch_with_limits
    demo.max_file_size = limits.max_upload_bytes()
    return demo


def endpoints() -> list[serving.Endpoint]:
    """The event handlers as medgan.serving checks calls to them (read per request: cheap, and always current)."""
    return [serving.Endpoint(index=index, name=fn.api_name, inputs=len(fn.inputs),
                             api_inputs=sum(not block.skip_api for block in fn.inputs),
                             private=getattr(fn, "api_visibility", "public") != "public",
                             parameters=parameter_names(fn.fn))
            for index, fn in demo.fns.items()]


@functools.lru_cache(maxsize=64)
def parameter_names(fn) -> tuple[str, ...]:
    """The parameter names of an event handler (through its wrappers), () when they cannot be read."""
    try:
        return tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return ()


def forget_finished_sessions() -> None:
    """Drop what Gradio keeps of sessions with no event left: its per-session set of pending event ids, kept
    (empty) after the last result was delivered, and that session's empty message queue. Gradio 6.31 removes
    them only on cancel, so every API call without a session of its own (plain-HTTP /call/…) left ~2 KiB for
    ever. Runs on the event loop (medgan.serving.Edge's housekeeping), where Gradio's queue code, which reads
    these between awaits, cannot interleave with it."""
    queue = demo._queue
    for session, ids in list(queue.pending_event_ids_session.items()):
        messages = queue.pending_messages_per_session.get(session)
        if not ids and (messages is None or messages.empty()):
            queue.pending_event_ids_session.pop(session, None)
            queue.pending_messages_per_session.pop(session, None)


def pending(event_id: str) -> bool:
    """Whether Gradio's queue still holds this event (queued or running): a private attribute of the queue,
    the one place Gradio keeps that (tests/test_edge.py checks it behaves so)."""
    return event_id in demo._queue.event_ids_to_events


def edge_middleware():
    from starlette.middleware import Middleware
    return Middleware(serving.Edge, policy=serving.Policy.from_limits(), endpoints=endpoints, is_pending=pending,
                      log=log, housekeeping=forget_finished_sessions)


# --- the queue-free route for scripts ---------------------------------------------------------------
# GET /medgan/v1/generate.npz?model=ID&seed=0&count=16[&truncation=1][&label=any]: the batch of /generate as
# one .npz (medgan.service.arrays_npz), answered at once: no queue, no SSE, no PNG encoding, no cached files.
# It has its own MEDGAN_CONCURRENCY slots; when they are taken it answers 429 with Retry-After instead of
# queueing, so it cannot build a backlog. Same validation, count limit and time limit as /generate.
FAST_ROUTE = "/medgan/v1/generate.npz"
FAST_PARAMS = ("model", "seed", "count", "truncation", "label")
_fast_slots = threading.BoundedSemaphore(limits.concurrency())
ERROR_STATUS = {"UnknownModelError": 404, "GenerationError": 503, "SourceUnavailableError": 503}


def fast_routes() -> list:
    from starlette.routing import Route
    return [Route(FAST_ROUTE, generate_npz, methods=["GET"])]


def generate_npz(request):
    """The starlette handler of FAST_ROUTE (sync: Starlette runs it in its thread pool)."""
    from starlette.responses import JSONResponse, Response
    query = request.query_params
    unknown = sorted(set(query) - set(FAST_PARAMS))
    if unknown or "model" not in query:
        problem = f"unknown parameter(s) {', '.join(unknown)}" if unknown else "the model parameter is required"
        return JSONResponse({"error": f"{problem}; parameters: {', '.join(FAST_PARAMS)}"}, status_code=400)
    if not _fast_slots.acquire(blocking=False):
        return JSONResponse({"error": "busy: all generation slots of this route are in use; retry shortly"},
                            status_code=429, headers={"Retry-After": "1"})
    try:
        data, name = limits.run_with_time_limit(
            service.arrays_npz, query["model"], query.get("seed", "0"), query.get("count", "16"),
            query.get("truncation", "1"), query.get("label", "any"))
    except MedganError as exc:
        log(f"generate.npz refused: {type(exc).__name__}: {one_line(str(exc))}")
        return JSONResponse({"error": str(exc)}, status_code=ERROR_STATUS.get(type(exc).__name__, 400))
    except Exception as exc:
        log(f"unexpected {type(exc).__name__} in generate.npz: {one_line(str(exc))}\n"
            f"{traceback.format_exc().rstrip()}")
        return JSONResponse({"error": f"Internal error ({type(exc).__name__})"}, status_code=500)
    finally:
        _fast_slots.release()
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "X-MedGAN-Synthetic": "true"})


demo = build_demo()

if __name__ == "__main__":
    if os.environ.get("SPACE_ID"):
        print(f"[medgan] Space {os.environ['SPACE_ID']}: device {medgan.generator.default_device()}, "
              f"ZeroGPU {'on' if spaces else 'off'}", flush=True)
    # Load the default model and run it once while the server starts, so the first request is fast.
    default = service.default_model()
    perf.warm_up_in_background(default if default in {m.id for m in service.models() if m.source == "local"} else None)
    demo.launch(theme=gr.themes.Soft(), **launch_options())
