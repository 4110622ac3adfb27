"""Test and benchmark fixtures shared by tests/ and benchmarks/: tiny random model folders and the app on a port.

    make_model_folder(parent, "tiny-test")            # a DCGAN folder (config.json + model.safetensors + README.md)
    make_style_folder(parent, "style-tiny")           # a style-based (conditional) one
    with running_app({"MEDGAN_WEIGHTS_DIRS": …}) as proc:   # `python app.py` on a free 127.0.0.1 port
        Client(proc.url)
        call_api(httpx.Client(base_url=proc.url), "generate", [...])   # a plain-HTTP API call
        tree_rss(proc.pid); post_oversized(proc.url, path, 20 << 20, chunked=True); under_flood(proc.url, 8, …)

Random weights only: these folders are for tests and speed measurements, never for images anyone looks at.
Imports torch and medgan's own modules (httpx and psutil where used), never gradio or gradio_client (the app
runs in a subprocess).
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from .config import GeneratorConfig, ModelConfig
from .generator import save_model_folder
from .nets import DCGANGenerator

ROOT = Path(__file__).resolve().parent.parent  # the repository: app.py, weights/
APP = ROOT / "app.py"
# Debian's chromium driven by Playwright (tests, scripts/screenshots.py): headless, and kept off the network.
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def _readme(model_id: str, what: str) -> str:
    return f"---\nlicense: mit\n---\n# {model_id}\n\n{what}\n"


def make_model_folder(parent: Path, model_id: str, resolution: int = 32, base_width: int = 8, seed: int = 0,
                      modality: str = "MR", *, title: str | None = None, plane: str = "axial", description: str = "",
                      readme: str = "A tiny random test model.", init_std: float | None = None) -> Path:
    """A random DCGAN model folder `parent/model_id`, with non-trivial BatchNorm statistics (so folding is
    exercised). `init_std` also draws the transposed-conv weights from N(0, init_std) (DCGAN's init, as
    trained weights look) instead of torch's default."""
    torch.manual_seed(seed)
    cfg = ModelConfig(id=model_id, title=title or f"Test {model_id}", modality=modality, organ="brain", plane=plane,
                      description=description, generator=GeneratorConfig(resolution=resolution, base_width=base_width))
    net = DCGANGenerator(cfg.generator)
    with torch.no_grad():
        for m in net.modules():
            if init_std is not None and isinstance(m, torch.nn.ConvTranspose2d):
                torch.nn.init.normal_(m.weight, 0.0, init_std)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    folder = Path(parent) / model_id
    save_model_folder(folder, cfg, net.eval())
    (folder / "README.md").write_text(_readme(model_id, readme))
    return folder


def make_style_folder(parent: Path, model_id: str = "style-tiny", classes: tuple[str, ...] = ("dark", "bright"),
                      resolution: int = 32, seed: int = 0) -> Path:
    """A tiny random style-based (conditional unless classes=()) model folder, parameters moved off init."""
    from .stylenet import StyleGenerator
    gen = GeneratorConfig(arch="style", latent_dim=16, resolution=resolution, base_width=4, max_width=32, w_dim=16,
                          classes=list(classes), condition="level" if classes else "")
    cfg = ModelConfig(id=model_id, title=f"Tiny style {model_id}", modality="MR", organ="brain", plane="axial",
                      generator=gen)
    torch.manual_seed(seed)
    net = StyleGenerator(gen)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        net.mapping.w_avg.normal_()
    folder = Path(parent) / model_id
    save_model_folder(folder, cfg, net.eval())
    (folder / "README.md").write_text(_readme(model_id, "A tiny random style model."))
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(proc: subprocess.Popen) -> str:
    try:
        return Path(proc.log_path).read_text(errors="replace")[-3000:]  # type: ignore[attr-defined]
    except OSError:
        return ""


@contextlib.contextmanager
def launched_app(env: dict[str, str] | None = None, lifetime: int = 600,
                 script: Path | None = None) -> Iterator[subprocess.Popen]:
    """`python app.py` (or `script`) in a subprocess on a free 127.0.0.1 port, not yet waited for; always
    stopped. The process carries `url`, `log_path` (its stdout and stderr) and `spawned` (perf_counter).

    `env` is added to this process's environment and wins over the defaults (GRADIO_SERVER_NAME/PORT,
    PYTHONUNBUFFERED). coreutils `timeout` stops the app after `lifetime` s even if this process dies.
    """
    port = free_port()
    child_env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
                 "PYTHONUNBUFFERED": "1", **(env or {})}
    gradio_tmp = child_env.get("GRADIO_TEMP_DIR")
    log = (Path(gradio_tmp).parent if gradio_tmp else Path(tempfile.gettempdir())) / f"app-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    spawned = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(["timeout", str(lifetime), sys.executable, str(script or APP)], cwd=ROOT,
                                env=child_env, stdout=out, stderr=subprocess.STDOUT)
    proc.url, proc.log_path, proc.spawned = f"http://127.0.0.1:{port}", log, spawned  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for_port(proc: subprocess.Popen, timeout: float = 180.0, poll: float = 0.2) -> None:
    """Until the app accepts connections; RuntimeError (with its log's tail) if it exits or times out."""
    port = int(proc.url.rsplit(":", 1)[1])  # type: ignore[attr-defined]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}:\n{_log_tail(proc)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=min(0.5, poll * 2.5)):
            return
        time.sleep(poll)
    raise RuntimeError(f"app did not open port {port} in {timeout}s:\n{_log_tail(proc)}")


@contextlib.contextmanager
def running_app(env: dict[str, str] | None = None, timeout: float = 180.0, lifetime: int = 600,
                script: Path | None = None) -> Iterator[subprocess.Popen]:
    """launched_app, once its port is open: yields the process (`proc.url`); always stopped.

    `script` replaces app.py (e.g. a launcher that injects faults before running it).
    """
    with launched_app(env, lifetime=lifetime, script=script) as proc:
        wait_for_port(proc, timeout)
        yield proc


# --- driving a running app over plain HTTP (soak, body limits, fairness: tests/test_serving.py, benchmarks) ----

def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its children (bytes): `launched_app` runs `timeout python app.py`."""
    import psutil
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def rss_slope_kib(samples: list[tuple[int, int]]) -> float:
    """Least-squares slope of (call number, RSS bytes) samples, in KiB per call: ≈ 0 once memory has levelled off."""
    import statistics
    xs, ys = [x for x, _ in samples], [y for _, y in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in samples) / sum((x - mx) ** 2 for x in xs) / 1024


def call_api(http, name: str, data: list, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One plain-HTTP API call (POST /gradio_api/call/NAME, then its result stream) on an httpx.Client:
    (HTTP status of the POST, the result's event: "complete", "error", or "" when the POST was refused).
    Every such call opens a session of its own in Gradio, as a script without gradio_client does."""
    posted = http.post(f"/gradio_api/call/{name}", json={"data": data}, headers=headers)
    if posted.status_code != 200:
        return posted.status_code, ""
    event = ""
    with http.stream("GET", f"/gradio_api/call/{name}/{posted.json()['event_id']}", headers=headers) as answer:
        for line in answer.iter_lines():
            if line.startswith("event: ") and line[7:] in ("complete", "error"):
                event = line[7:]
    return posted.status_code, event


def post_oversized(url: str, path: str, size: int, chunked: bool, piece: int = 1 << 16,
                   timeout: float = 30.0) -> tuple[int | None, int]:
    """POST a `size`-byte body to `path` over a raw socket, declared (Content-Length) or `chunked`, a piece at a
    time, each sent only once the server has not answered within 50 ms of the last. Returns (the HTTP status,
    or None if the server closed without one; body bytes sent before its answer)."""
    import select
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{framing}\r\n"
            "Connection: close\r\n\r\n").encode()
    sent, block = 0, b"x" * piece
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head)
        deadline = time.monotonic() + timeout
        while sent < size and time.monotonic() < deadline and not select.select([sock], [], [], 0.05)[0]:
            data = block[:size - sent]
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            except OSError:  # the server answered and closed while we were sending
                break
            sent += len(data)
        select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        try:
            reply = sock.recv(4096)
        except OSError:
            reply = b""
    first = reply.split(b"\r\n", 1)[0].split()
    return (int(first[1]) if len(first) > 1 and first[1].isdigit() else None), sent


def under_flood(url: str, seconds: float, calls: dict[str, Callable[[], object]], flooder: dict[str, str],
                data: list) -> dict[str, object]:
    """For `seconds`, one client (`flooder`: its headers, e.g. an X-Forwarded-For) posts /generate with `data` as
    fast as it can (plain HTTP, never reading a result), while another runs each of `calls` in turn (at least
    once each): {name: {"calls", "p50_s", "max_s"}, …, "flooder": {HTTP status: count}}. A call that raises
    stops the run with its error."""
    import statistics
    import threading

    import httpx
    stop, codes = threading.Event(), {}

    def flood() -> None:
        with httpx.Client(base_url=url, timeout=30, headers=flooder) as http:
            while not stop.is_set():
                code = http.post("/gradio_api/call/generate", json={"data": data}).status_code
                codes[code] = codes.get(code, 0) + 1

    thread = threading.Thread(target=flood, daemon=True, name="flooder")
    thread.start()
    times: dict[str, list[float]] = {name: [] for name in calls}
    ends = time.monotonic() + seconds
    try:
        while time.monotonic() < ends or not all(times.values()):
            for name, call in calls.items():
                began = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - began)
    finally:
        stop.set()
        thread.join(30)
    return {**{name: {"calls": len(t), "p50_s": round(statistics.median(t), 3), "max_s": round(max(t), 3)}
               for name, t in times.items()}, "flooder": dict(sorted(codes.items()))}


__all__ = ["APP", "CHROMIUM_ARGS", "ROOT", "call_api", "free_port", "launched_app", "make_model_folder",
           "make_style_folder", "post_oversized", "rss_slope_kib", "running_app", "tree_rss", "under_flood",
           "wait_for_port"]
