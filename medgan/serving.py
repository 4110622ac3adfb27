"""The HTTP edge of the app: every request passes `Edge` before Gradio reads, parses or queues it.

`Edge` is an ASGI middleware (standard library only; app.py installs it on the app that Gradio serves):

- **Body size.** A declared Content-Length over the bound (MEDGAN_MAX_BODY_KB) is answered 413 before any of
  the body is read. A body without one (chunked) is counted as it streams and refused as soon as it passes
  the bound. Bodies are read here, at most the bound, and handed on only once every check has passed. An
  upload (only when MEDGAN_MAX_UPLOAD_MB > 0) must declare its length: Gradio's parser writes it to disk as
  it arrives, and only its own size errors clean that file up.
- **Text length.** Every string of a JSON body (keys too) and every query-string value: at most
  MEDGAN_MAX_TEXT_CHARS characters, else 400 naming the field.
- **Routes.** `ROUTES` classifies every body-accepting route Gradio mounts; the ones this app does not use
  are closed (404). tests/test_edge.py lists the mounted routes and fails on one that is not classified.
- **Endpoints.** An event must name a known endpoint and carry its number of inputs (400, where Gradio
  would log a full traceback). Private endpoints (the page's own events) answer by fn_index, which is how
  the page calls them, but not by name: the named API is exactly the public one.
- **Fairness.** A client (its address; the X-Forwarded-For address when the peer is a trusted proxy,
  MEDGAN_TRUSTED_PROXIES) may have at most MEDGAN_MAX_PER_CLIENT events queued or running in Gradio's
  queue; beyond that it gets 429 with Retry-After, and other clients are served as before.

Each refusal is a JSON `{"detail": message}` and one line in the server log (429s: once per client per
episode, not per request).
"""
from __future__ import annotations

import ipaddress
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator
from urllib.parse import parse_qsl

API_PREFIX = "/gradio_api"
UPLOAD_OVERHEAD = 64 * 1024  # multipart boundaries and part headers around an upload's file
FORGET_AFTER = 1024  # clients remembered before the finished ones are swept out
HOUSEKEEPING_S = 5.0
EVENT, DIRECT, PLAIN, UPLOAD, CLOSED = "event", "direct", "plain", "upload", "closed"
# Every route of Gradio that accepts a body (path after the app's root; `{…}` parts as regex groups), what it
# is for here, and why. EVENT joins Gradio's queue, DIRECT runs a queue-free endpoint at once.
ROUTES: tuple[tuple[str, str, str], ...] = (
    (r"/gradio_api/queue/join", EVENT, "the page and gradio_client start every event here"),
    (r"/gradio_api/call/(?:v2/)?(?P<name>[^/]+)", EVENT, "plain-HTTP API calls (two-step: POST, then GET)"),
    (r"/gradio_api/(?:run|api)/(?P<name>[^/]+)", DIRECT, "queue-free endpoints (/models, the Models tab)"),
    (r"/gradio_api/(?:cancel|reset)", PLAIN, "the page cancels or resets its events"),
    (r"/login", PLAIN, "Gradio's login form (only used when launched with auth)"),
    (r"/gradio_api/upload", UPLOAD, "file uploads: closed unless MEDGAN_MAX_UPLOAD_MB > 0 (no upload widget)"),
    (r"/gradio_api/process_recording", CLOSED, "screen recordings: writes to the system temp folder; unused"),
    (r"/gradio_api/stream/[^/]+(?:/close)?", CLOSED, "streaming inputs: no component here streams"),
    (r"/gradio_api/component_server", CLOSED, "component server functions: no component here has one"),
    (r"/gradio_api/(?:vibe-edit|undo-vibe-edit|vibe-code|vibe-starter-queries)", CLOSED, "Gradio's vibe mode: off"),
    (r"/gradio_api/run-history/connect", CLOSED, "run history in a Hub bucket: run history is off"),
    (r"/gradio_api/profiling/clear", CLOSED, "Gradio's profiler: off"),
)
_ROUTES = [(re.compile(pattern + "/?"), kind) for pattern, kind, _ in ROUTES]
TOO_MANY = ("Too many requests from this client: {n} events of yours are queued or running, the most one client "
            "may have (MEDGAN_MAX_PER_CLIENT={n}). Wait for one to finish, then retry; other clients are served "
            "meanwhile.")


@dataclass(frozen=True)
class Endpoint:
    """One Gradio event handler, as the edge checks calls to it."""
    index: int          # fn_index
    name: str           # api_name
    inputs: int         # every input, as the page sends them (gr.State included)
    api_inputs: int     # the inputs a caller by name sends (gr.State excluded)
    private: bool       # not part of the named API
    parameters: tuple[str, ...] = ()  # its parameter names (/call/v2 takes them as keywords); () = unchecked


@dataclass(frozen=True)
class Policy:
    """The limits an Edge enforces (medgan.limits reads them from MEDGAN_* variables)."""
    max_body: int
    max_upload: int                     # 0: the upload route is closed
    max_text: int
    max_per_client: int
    trusted: tuple[Any, ...] = ()       # ipaddress networks of trusted reverse proxies

    @classmethod
    def from_limits(cls) -> "Policy":
        from . import limits
        return cls(max_body=limits.max_body_bytes(), max_upload=limits.max_upload_bytes(),
                   max_text=limits.max_text_chars(), max_per_client=limits.max_per_client(),
                   trusted=limits.trusted_proxies())


class Refusal(Exception):
    """A request the edge answers itself: HTTP `status` with `message` (and extra headers)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def classify(path: str) -> str:
    """What `path` (relative to the app's root) is for: one of ROUTES' kinds, PLAIN when unlisted."""
    return next((kind for pattern, kind in _ROUTES if pattern.fullmatch(path)), PLAIN)


def route_name(path: str) -> str | None:
    """The endpoint name in an EVENT or DIRECT path (`/gradio_api/call/generate` -> "generate")."""
    for pattern, _ in _ROUTES:
        match = pattern.fullmatch(path)
        if match:
            return match.groupdict().get("name")
    return None


def _trusted(address: str, networks: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_of(scope: dict[str, Any], trusted: tuple[Any, ...]) -> str:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the right-most address of
    X-Forwarded-For that is not itself a trusted proxy (the one the first trusted proxy saw)."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if not trusted or not _trusted(peer, trusted):
        return peer
    chain = [a.strip() for name, value in scope.get("headers", []) if name == b"x-forwarded-for"
             for a in value.decode("latin-1").split(",") if a.strip()]
    for address in reversed(chain):
        if not _trusted(address, trusted):
            return address[:64]
    return chain[0][:64] if chain else peer


def strings(value: Any, where: str = "body") -> Iterator[tuple[str, str]]:
    """(where, text) for every string of a parsed JSON document, keys included (iterative: any depth)."""
    stack = [(where, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            yield path, item
        elif isinstance(item, dict):
            for key, sub in item.items():
                yield f"{path} key", str(key)
                stack.append((f"{path}.{key}"[:80], sub))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", sub) for i, sub in enumerate(item))


def check_text(pairs: Iterator[tuple[str, str]], limit: int) -> None:
    for where, text in pairs:
        if len(text) > limit:
            raise Refusal(400, f"{where}: text of {len(text)} characters; at most {limit} are accepted "
                               "(MEDGAN_MAX_TEXT_CHARS)")


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == name), None)


def declared_length(scope: dict[str, Any]) -> int | None:
    """Content-Length as declared (None: not declared, e.g. chunked); a malformed one is refused."""
    raw = _header(scope, b"content-length")
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,18}", raw.strip()):  # ASCII digits only: "٣".isdigit() is true too
        raise Refusal(400, "malformed Content-Length header")
    return int(raw)


async def read_body(receive: Callable[[], Awaitable[dict]], limit: int) -> bytes:
    """The whole body, or a 413 Refusal as soon as more than `limit` bytes have arrived."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: what came is handed on, then that
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Refusal(413, f"request body over {limit} bytes (MEDGAN_MAX_BODY_KB); refused unread")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def replay(body: bytes, receive: Callable[[], Awaitable[dict]]) -> Callable[[], Awaitable[dict]]:
    """A `receive` that gives `body` once, then whatever the connection says next (a disconnect)."""
    given = False

    async def again() -> dict:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return again


async def respond(send: Callable[[dict], Awaitable[None]], refusal: Refusal) -> None:
    body = json.dumps({"detail": refusal.message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *((k.lower().encode(), v.encode()) for k, v in refusal.headers.items())]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Edge:
    """The ASGI middleware described in the module docstring.

    `endpoints`: a callable giving the app's event handlers (read when a request needs them: the app is
    built before it is launched); `is_pending(event_id)`: whether Gradio's queue still holds that event
    (queued or running); `log`: one line per refusal; `housekeeping`: run on the event loop, between
    requests, at most every HOUSEKEEPING_S (the app drops what Gradio keeps of finished sessions)."""

    def __init__(self, app: Any, *, policy: Policy, endpoints: Callable[[], list[Endpoint]],
                 is_pending: Callable[[str], bool], log: Callable[[str], None] = lambda line: None,
                 housekeeping: Callable[[], None] = lambda: None):
        self.app, self.policy, self.endpoints, self.is_pending, self.log = app, policy, endpoints, is_pending, log
        self.housekeeping, self.last_housekeeping = housekeeping, 0.0
        self.pending: dict[str, set[str]] = {}    # client -> event ids it has in Gradio's queue
        self.reserved: dict[str, int] = {}        # client -> joins under way (their event id not yet known)
        self.throttled: set[str] = set()          # clients refused since their last accepted event

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if time.monotonic() - self.last_housekeeping > HOUSEKEEPING_S:
            self.last_housekeeping = time.monotonic()
            self.housekeeping()
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        path = path[len(root):] if root and path.startswith(root) else path
        kind = classify(path)
        try:
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            check_text(((f"query parameter {k[:40]!r}", text) for k, v in query for text in (k, v)),
                       self.policy.max_text)
            if kind == CLOSED or (kind == UPLOAD and not self.policy.max_upload):
                raise Refusal(404, f"{path} is not served by this app")
            if kind == UPLOAD:
                self.check_upload(scope)
                await self.app(scope, receive, send)
                return
            receive, event = await self.check_body(scope, receive, path, kind)
        except Refusal as refusal:
            if refusal.status != 429:  # those are logged once per client by `admit`
                self.log(f"refused {scope.get('method', '?')} {path[:80]}: HTTP {refusal.status}: {refusal.message}")
            await respond(send, refusal)
            return
        if event is None:
            await self.app(scope, receive, send)
        else:
            await self.run_event(scope, receive, send, event)

    def check_upload(self, scope: dict[str, Any]) -> None:
        size, limit = declared_length(scope), self.policy.max_upload + UPLOAD_OVERHEAD
        if size is None:
            raise Refusal(411, "an upload must declare its Content-Length")
        if size > limit:
            raise Refusal(413, f"upload of {size} bytes; at most {limit} (MEDGAN_MAX_UPLOAD_MB + form overhead)")

    async def check_body(self, scope: dict[str, Any], receive: Callable, path: str,
                         kind: str) -> tuple[Callable, str | None]:
        """(the receive to hand on, the client whose event this is or None). Reads the body, at most the
        bound, when there is one; raises Refusal for anything over a limit or malformed."""
        size = declared_length(scope)
        chunked = "chunked" in (_header(scope, b"transfer-encoding") or "").lower()
        if size is not None and size > self.policy.max_body:
            raise Refusal(413, f"request body of {size} bytes; at most {self.policy.max_body} are accepted "
                               "(MEDGAN_MAX_BODY_KB)")
        if not size and not chunked:
            return receive, None
        body = await read_body(receive, self.policy.max_body)
        if "json" in (_header(scope, b"content-type") or "").lower() or kind in (EVENT, DIRECT):
            try:
                document = json.loads(body) if body.strip() else None
            except (ValueError, RecursionError):
                raise Refusal(400, "the request body is not valid JSON") from None
            check_text(strings(document), self.policy.max_text)
            if kind in (EVENT, DIRECT):
                self.check_event(document, route_name(path), keywords="/call/v2/" in path)
        client = client_of(scope, self.policy.trusted) if kind == EVENT else None
        if client is not None:
            self.admit(client)
        return replay(body, receive), client

    def check_event(self, document: Any, name: str | None, keywords: bool = False) -> None:
        """The endpoint exists (by fn_index, or by name when public) and gets its number of inputs
        (`keywords`: /call/v2 takes them by name and fills in defaults itself)."""
        if not isinstance(document, dict):
            raise Refusal(400, "the request body must be a JSON object")
        endpoints = self.endpoints()
        index = document.get("fn_index")
        if index is not None:
            found = next((e for e in endpoints if e.index == index and not isinstance(index, bool)), None)
            if found is None:
                raise Refusal(404, f"no event handler with fn_index {str(index)[:20]}")
        elif name in (None, "predict"):  # /queue/join and /run/predict name no endpoint: Gradio needs fn_index
            raise Refusal(400, "fn_index is required here")
        else:
            found = next((e for e in endpoints if e.name == name and not e.private), None)
            if found is None:
                public = ", ".join(f"/{e.name}" for e in endpoints if not e.private)
                raise Refusal(404, f"no API endpoint named {name[:60]!r}; the API: {public}")
        if keywords:  # Gradio fills in the missing ones from the components' defaults
            unknown = sorted(set(document) - set(found.parameters) - {"oauth_token"}) if found.parameters else []
            if unknown:
                raise Refusal(400, f"{found.name} has no parameter {unknown[0][:40]!r}; its parameters: "
                                   f"{', '.join(found.parameters)}")
            return
        data = document.get("data", [])
        if not isinstance(data, list):
            raise Refusal(400, f"{found.name}: data must be a list of its inputs")
        if len(data) not in (found.inputs, found.api_inputs):
            raise Refusal(400, f"{found.name} takes {found.api_inputs} inputs, got {len(data)}")

    def count(self, client: str) -> int:
        """The client's events still in Gradio's queue (finished ones are forgotten here)."""
        events = {e for e in self.pending.get(client, ()) if self.is_pending(e)}
        if events:
            self.pending[client] = events
        else:
            self.pending.pop(client, None)
        return len(events) + self.reserved.get(client, 0)

    def admit(self, client: str) -> None:
        """Reserve a place for the client's new event, or refuse it (429)."""
        limit = self.policy.max_per_client
        if self.count(client) >= limit:
            if client not in self.throttled:
                self.throttled.add(client)
                self.log(f"client {client} reached MEDGAN_MAX_PER_CLIENT={limit}; refusing its new events (429) "
                         "until one finishes")
            raise Refusal(429, TOO_MANY.format(n=limit), {"Retry-After": "1"})
        self.throttled.discard(client)
        self.reserved[client] = self.reserved.get(client, 0) + 1
        if len(self.pending) + len(self.throttled) > FORGET_AFTER:  # clients that never came back
            for other in list(self.pending):
                self.count(other)
            self.throttled.clear()

    async def run_event(self, scope: dict[str, Any], receive: Callable, send: Callable, client: str) -> None:
        """Hand the event on; the event id of a successful join joins the client's pending events."""
        status, chunks = [0], []

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and status[0] == 200 and sum(map(len, chunks)) < 4096:
                chunks.append(message.get("body", b""))
            await send(message)
        try:
            await self.app(scope, receive, watch)
        finally:
            self.reserved[client] -= 1
            if not self.reserved[client]:
                del self.reserved[client]
            try:
                event_id = json.loads(b"".join(chunks) or b"null")
            except ValueError:
                event_id = None
            if isinstance(event_id, dict) and isinstance(event_id.get("event_id"), str):
                self.pending.setdefault(client, set()).add(event_id["event_id"])


__all__ = ["Edge", "Endpoint", "Policy", "ROUTES", "Refusal", "classify", "client_of"]
