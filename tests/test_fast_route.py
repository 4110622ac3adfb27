"""The queue-free route for scripts, GET /medgan/v1/generate.npz: the same pixels as /generate, the same
validation, clear errors with HTTP statuses, and a 429 instead of a backlog when its slots are taken."""
import io
import json

import httpx
import numpy as np
import pytest

from helpers import make_model_folder, make_style_folder, running_app
from medgan.generator import Generator

ROUTE = "/medgan/v1/generate.npz"


@pytest.mark.slow
def test_route_answers_the_same_images_as_generate_with_their_classes_and_clear_errors(tmp_path):
    weights = tmp_path / "weights"
    make_model_folder(weights, "tiny-test")
    make_style_folder(weights, "style-tiny")
    with running_app({"MEDGAN_WEIGHTS_DIRS": str(weights)}) as app:
        for model, extra in (("tiny-test", {}), ("style-tiny", {"truncation": "0.7", "label": "bright"}),
                             ("style-tiny", {})):
            answer = httpx.get(app.url + ROUTE, params={"model": model, "seed": "7", "count": "12", **extra}, timeout=60)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-medgan-synthetic"] == "true"
            assert 'filename="synthetic_' in answer.headers["content-disposition"]
            with np.load(io.BytesIO(answer.content), allow_pickle=False) as z:
                images, classes, prov = z["images"], z["classes"].tolist(), json.loads(str(z["provenance"]))
            gen = Generator.from_folder(weights / model, device="cpu")
            kwargs = {"truncation": float(extra["truncation"]), "label": extra["label"]} if extra else {}
            assert np.array_equal(images, gen.generate(12, 7, output_type="np", **kwargs))
            expected = gen.class_names(gen.labels(12, 7, label=kwargs.get("label"))) if gen.classes else [""] * 12
            assert classes == expected
            assert prov["synthetic"] is True and all(f["Synthetic"] == "true" for f in prov["images"])
            assert [f["Index"] for f in prov["images"]] == [str(i) for i in range(12)]
        bad = {"seed": ({"model": "tiny-test", "seed": "abc"}, 400, "seed"),
               "count": ({"model": "tiny-test", "count": "100000"}, 400, "count"),
               "model": ({"model": "no-such-model"}, 404, "no-such-model"),
               "missing": ({"seed": "1"}, 400, "model parameter is required"),
               "unknown": ({"model": "tiny-test", "size": "9"}, 400, "unknown parameter(s) size"),
               "label": ({"model": "tiny-test", "label": "bright"}, 400, "unconditional")}
        for name, (params, status, words) in bad.items():
            answer = httpx.get(app.url + ROUTE, params=params, timeout=60)
            assert answer.status_code == status and words in answer.json()["error"], (name, answer.text)
        assert httpx.get(app.url + "/config", timeout=60).status_code == 200  # still serving
        # the README's example, as written (its URL and model swapped for this app's)
        from test_readme_examples import DOC_MODEL, DOC_URL, blocks, section
        (code,) = [b for b in blocks(section("Use from Python"), "python") if ROUTE in b]
        namespace: dict = {}
        exec(compile(code.replace(DOC_URL, app.url).replace(DOC_MODEL, "tiny-test"), "README route", "exec"),
             namespace)
        assert namespace["images"].shape == (16, 32, 32) and namespace["images"].dtype == np.uint8


def test_route_answers_429_while_its_slots_are_taken_and_serves_again_after():
    """In process (starlette's TestClient): with every slot held, a request is refused at once, not queued."""
    from starlette.applications import Starlette
    from starlette.testclient import TestClient
    import app

    client = TestClient(Starlette(routes=app.fast_routes()))
    held = 0
    while app._fast_slots.acquire(blocking=False):
        held += 1
    try:
        assert held >= 1
        busy = client.get(ROUTE, params={"model": "anything"})
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1" and "busy" in busy.json()["error"]
    finally:
        for _ in range(held):
            app._fast_slots.release()
    after = client.get(ROUTE, params={"model": "no-such-model"})
    assert after.status_code == 404 and "no-such-model" in after.json()["error"]
