"""The HTTP edge (medgan.serving.Edge) in front of a stand-in for Gradio's routes: body and text bounds checked
before the app reads anything, closed routes, endpoint and input-count checks, per-client fairness with
trusted proxies. Then the audit of every route the real app mounts: each body-accepting one is classified."""
from __future__ import annotations

import ipaddress
import itertools
import json

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from medgan import limits, serving

ENDPOINTS = [serving.Endpoint(0, "generate", 5, 5, False, ("model", "seed", "count", "truncation", "label")),
             serving.Endpoint(1, "stats", 1, 1, False),
             serving.Endpoint(2, "performance_panel", 2, 1, True)]
POLICY = serving.Policy(max_body=1024, max_upload=0, max_text=64, max_per_client=2,
                        trusted=(ipaddress.ip_network("10.0.0.0/8"),))


class Stand:
    """Gradio's routes as the edge sees them: what reached the app, and a queue whose events the test ends."""

    def __init__(self, policy: serving.Policy = POLICY):
        self.bodies: list[bytes] = []
        self.queued: set[str] = set()
        self.ids = (f"event-{i}" for i in itertools.count())
        self.lines: list[str] = []
        routes = [Route("/gradio_api/queue/join", self.join, methods=["POST"]),
                  Route("/gradio_api/call/{name}", self.join, methods=["POST"]),
                  Route("/gradio_api/{rest:path}", self.echo, methods=["GET", "POST"])]
        middleware = [Middleware(serving.Edge, policy=policy, endpoints=lambda: ENDPOINTS,
                                 is_pending=self.queued.__contains__, log=self.lines.append)]
        self.app = Starlette(routes=routes, middleware=middleware)

    async def join(self, request: Request):
        self.bodies.append(await request.body())
        event = next(self.ids)
        self.queued.add(event)
        return JSONResponse({"event_id": event})

    async def echo(self, request: Request):
        self.bodies.append(await request.body())
        return JSONResponse({"ok": True})

    def client(self, peer: str = "203.0.113.1") -> TestClient:
        """A client at address `peer` (all clients of one Stand share its edge)."""
        return TestClient(self.app, client=(peer, 5000))


def generate(seed: int = 1, **extra) -> dict:
    return {"data": ["tiny", seed, 1, 1.0, "any"], "fn_index": 0, "session_hash": "s", **extra}


def test_bodies_over_the_bound_are_refused_unread_declared_or_streamed():
    stand = Stand()
    client = stand.client()
    big = json.dumps(generate(text="x" * 60) | {"pad": ["y" * 60] * 40}).encode()
    answer = client.post("/gradio_api/queue/join", content=big, headers={"content-type": "application/json"})
    assert answer.status_code == 413 and "at most 1024" in answer.json()["detail"]
    streamed = iter([b"[" + b"1," * 300] * 10)  # no Content-Length: chunked, counted as it arrives
    answer = client.post("/gradio_api/queue/join", content=streamed)
    assert answer.status_code == 413 and "refused unread" in answer.json()["detail"]
    assert stand.bodies == []  # the app read nothing of either
    assert client.post("/gradio_api/queue/join", json=generate()).status_code == 200
    assert json.loads(stand.bodies[-1]) == generate()  # a body within bounds reaches the app whole
    assert len(stand.lines) == 2 and all(line.startswith("refused POST /gradio_api/queue/join: HTTP 413")
                                         for line in stand.lines)


def test_every_string_has_a_length_bound_naming_where_it_was():
    stand = Stand()
    client = stand.client()
    answer = client.post("/gradio_api/call/stats", json={"data": ["m" * 65]})
    assert answer.status_code == 400
    assert answer.json()["detail"] == "body.data[0]: text of 65 characters; at most 64 are accepted (MEDGAN_MAX_TEXT_CHARS)"
    assert client.post("/gradio_api/call/stats", json={"data": ["m" * 64]}).status_code == 200
    assert client.post("/gradio_api/call/stats", json={"data": ["m"], "k" * 70: 1}).status_code == 400  # keys too
    answer = client.get("/gradio_api/queue/data", params={"session_hash": "s" * 65})
    assert answer.status_code == 400 and "query parameter 'session_hash'" in answer.json()["detail"]
    assert client.post("/gradio_api/call/stats", content=b"{not json", headers={"content-type": "application/json"}
                       ).json()["detail"] == "the request body is not valid JSON"
    deep = b"[" * 500 + b"]" * 500  # nesting: walked without recursion here
    assert client.post("/gradio_api/cancel", content=deep, headers={"content-type": "application/json"}).status_code == 200
    deeper = Stand(serving.Policy(**{**vars(POLICY), "max_body": 60_000})).client()
    answer = deeper.post("/gradio_api/cancel", content=b"[" * 20_000 + b"]" * 20_000,
                         headers={"content-type": "application/json"})  # deeper than json's own recursion limit
    assert answer.status_code == 400 and answer.json()["detail"] == "the request body is not valid JSON"


def test_unused_routes_are_closed_and_uploads_closed_unless_enabled():
    stand = Stand()
    client = stand.client()
    for path in ("/gradio_api/process_recording", "/gradio_api/upload", "/gradio_api/component_server",
                 "/gradio_api/stream/abc", "/gradio_api/stream/abc/close", "/gradio_api/vibe-edit/",
                 "/gradio_api/run-history/connect"):
        answer = client.post(path, files={"video": ("a.mp4", b"\0" * 10)})
        assert answer.status_code == 404 and answer.json()["detail"] == f"{path} is not served by this app", path
    assert stand.bodies == []
    opened = Stand(serving.Policy(**{**vars(POLICY), "max_upload": 1000})).client()
    assert opened.post("/gradio_api/upload", files={"files": ("a.bin", b"\1" * 500)}).status_code == 200
    too_big = opened.post("/gradio_api/upload", files={"files": ("a.bin", b"\1" * 70_000)})
    assert too_big.status_code == 413 and "MEDGAN_MAX_UPLOAD_MB" in too_big.json()["detail"]
    chunked = opened.post("/gradio_api/upload", content=iter([b"--x\r\n"] * 3),
                          headers={"content-type": "multipart/form-data; boundary=x"})
    assert chunked.status_code == 411 and "Content-Length" in chunked.json()["detail"]


def test_events_need_a_known_endpoint_and_their_inputs_private_ones_answer_by_fn_index_only():
    stand = Stand()
    client = stand.client()
    wrong = client.post("/gradio_api/queue/join", json={**generate(), "data": ["tiny", 1, 2]})
    assert wrong.status_code == 400 and wrong.json()["detail"] == "generate takes 5 inputs, got 3"
    assert client.post("/gradio_api/queue/join", json={**generate(), "fn_index": 9}).status_code == 404
    assert client.post("/gradio_api/queue/join", json={"data": [], "session_hash": "s"}).status_code == 400
    by_name = client.post("/gradio_api/call/performance_panel", json={"data": ["tiny"]})
    assert by_name.status_code == 404
    assert by_name.json()["detail"] == "no API endpoint named 'performance_panel'; the API: /generate, /stats"
    # the page calls it by fn_index, with every input (its gr.State too) or the API's share of them
    for data in (["tiny", None], ["tiny"]):
        stand.queued.clear()
        assert client.post("/gradio_api/queue/join", json={"data": data, "fn_index": 2, "session_hash": "s"}
                           ).status_code == 200
    assert client.post("/gradio_api/call/v2/generate", json={"model": "tiny", "seed": 1}).status_code == 200
    bogus = client.post("/gradio_api/call/v2/generate", json={"model": "tiny", "bogus": 1})
    assert bogus.status_code == 400 and bogus.json()["detail"] == ("generate has no parameter 'bogus'; its parameters: "
                                                                   "model, seed, count, truncation, label")
    assert client.post("/gradio_api/call/generate", json={"data": ["tiny", 1, 1, 1, "any"]}).status_code == 200


def test_one_client_is_bounded_others_are_not_and_the_bound_frees_as_events_end():
    stand = Stand()
    flooder, other = stand.client(peer="198.51.100.7"), stand.client(peer="198.51.100.8")
    assert [flooder.post("/gradio_api/queue/join", json=generate(i)).status_code for i in range(4)] == [200, 200, 429, 429]
    refused = flooder.post("/gradio_api/call/generate", json={"data": generate()["data"]})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "MEDGAN_MAX_PER_CLIENT=2" in refused.json()["detail"] and "other clients are served" in refused.json()["detail"]
    assert [other.post("/gradio_api/queue/join", json=generate()).status_code for _ in range(2)] == [200, 200]
    assert stand.lines == ["client 198.51.100.7 reached MEDGAN_MAX_PER_CLIENT=2; refusing its new events (429) until "
                           "one finishes"]  # one line for three refusals
    stand.queued.discard("event-0")  # one of the flooder's events finished
    assert flooder.post("/gradio_api/queue/join", json=generate()).status_code == 200
    assert flooder.post("/gradio_api/queue/join", json=generate()).status_code == 429
    assert flooder.post("/gradio_api/call/stats", json={"data": ["x"]}).status_code == 429  # any queued event counts


def test_forwarded_address_counts_only_from_a_trusted_proxy():
    stand = Stand()
    proxy = stand.client(peer="10.1.2.3")  # a trusted proxy: X-Forwarded-For names the client
    for client_address in ("192.0.2.1", "192.0.2.2"):
        codes = [proxy.post("/gradio_api/queue/join", json=generate(),
                            headers={"X-Forwarded-For": f"6.6.6.6, {client_address}, 10.9.9.9"}).status_code
                 for _ in range(3)]
        assert codes == [200, 200, 429], client_address  # the right-most untrusted hop; the spoofable left one ignored
    untrusted = stand.client(peer="203.0.113.9")  # not a proxy: its X-Forwarded-For is its own claim, ignored
    codes = [untrusted.post("/gradio_api/queue/join", json=generate(), headers={"X-Forwarded-For": f"192.0.2.{i + 50}"}
                            ).status_code for i in range(3)]
    assert codes == [200, 200, 429]
    scope = {"client": ("10.0.0.1", 1), "headers": [(b"x-forwarded-for", b"10.0.0.2")]}
    assert serving.client_of(scope, POLICY.trusted) == "10.0.0.2"  # only proxies: the first hop


def test_trusted_proxies_setting(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("MEDGAN_TRUSTED_PROXIES", raising=False)
    assert limits.trusted_proxies() == ()
    monkeypatch.setenv("SPACE_ID", "org/space")  # behind Hugging Face's proxies: private peers are trusted
    assert ipaddress.ip_address("10.20.30.40") in limits.trusted_proxies()[0]
    monkeypatch.setenv("MEDGAN_TRUSTED_PROXIES", "none")
    assert limits.trusted_proxies() == ()
    monkeypatch.setenv("MEDGAN_TRUSTED_PROXIES", "127.0.0.1, 192.168.0.0/16")
    assert [str(n) for n in limits.trusted_proxies()] == ["127.0.0.1/32", "192.168.0.0/16"]
    monkeypatch.setenv("MEDGAN_TRUSTED_PROXIES", "127.0.0.1, proxy.local")
    with pytest.raises(limits.ConfigError, match="^MEDGAN_TRUSTED_PROXIES must be comma-separated IP"):
        limits.summary()


def test_perf_details_setting_is_off_on_a_space(monkeypatch):
    monkeypatch.delenv("MEDGAN_PERF_DETAILS", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert limits.perf_details() is True
    monkeypatch.setenv("SPACE_ID", "org/space")
    assert limits.perf_details() is False
    monkeypatch.setenv("MEDGAN_PERF_DETAILS", "yes")
    assert limits.perf_details() is True
    monkeypatch.setenv("MEDGAN_PERF_DETAILS", "maybe")
    with pytest.raises(limits.ConfigError, match="^MEDGAN_PERF_DETAILS must be 1 or 0"):
        limits.summary()


def mounted_routes(app) -> list[tuple[str, set[str]]]:
    """(path, methods) of every route of a FastAPI app, through included routers."""
    out = []
    for route in app.routes:
        inner = getattr(route, "original_router", None)
        for sub in (inner.routes if inner is not None else [route]):
            out.append((getattr(sub, "path", ""), set(getattr(sub, "methods", None) or ())))
    return out


def test_every_body_accepting_route_gradio_mounts_is_classified(tiny_model, monkeypatch):
    """The audit: each route that takes a body is in serving.ROUTES, so a Gradio upgrade that adds one fails
    here until someone decides what it is for. Listed from the app as Gradio builds it, run history off."""
    monkeypatch.setenv("MEDGAN_WEIGHTS_DIRS", str(tiny_model.parent))
    import app
    from gradio.routes import App

    app.demo.run_history = False
    built = App.create_app(app.demo, app_kwargs={"routes": app.fast_routes(), "middleware": [app.edge_middleware()]})
    routes = mounted_routes(built)
    assert any(path == "/gradio_api/queue/join" for path, _ in routes)
    listed = [pattern for pattern, _, _ in serving.ROUTES]
    unclassified = []
    for path, methods in routes:
        if methods & {"POST", "PUT", "PATCH", "DELETE"}:
            sample = path.replace("{api_name}", "generate").replace("{event_id}", "e1")
            if not any(serving.re.fullmatch(pattern + "/?", sample) for pattern in listed):
                unclassified.append(path)
    assert unclassified == []
    assert not any(path.startswith("/gradio_api/run-history/connect") for path, _ in routes)
