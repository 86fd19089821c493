"""The explorer's HTTP server: one static page and a few JSON routes over a
:class:`~vaelab.explore.space.LatentSpace`.

It is the standard library's :class:`http.server.ThreadingHTTPServer`: no dependency to
install, and a page of one file plus seven small JSON routes needs no web framework. Routes
are a fixed table (method, path) -> handler; no part of a request ever names a file, so
``/../config.toml`` is just another unknown path (404). Bodies are bounded (413), JSON is
checked field by field (400 with a JSON message), and errors never show a traceback."""

from __future__ import annotations

import json
import math
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import urlsplit

import torch

from vaelab.explore.space import LatentSpace, pixel_list

Z_BOUND = 1e3
"""The largest |z_i| (and plane coordinate) a request may give: far beyond any trained code."""
MAX_STEPS = 16
"""The most images one interpolation decodes."""
CLOSE_WAIT = 5.0
"""Seconds :meth:`ExplorerServer.server_close` waits for requests still being answered."""
BODY_LIMIT = 64 * 1024
"""The largest request body in bytes (more for images above 1,600 pixels: 40 bytes a pixel)."""
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class RequestError(Exception):
    """A request the explorer refuses: an HTTP status and a one-line message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------ request fields


def number(body: dict, key: str, bound: float = Z_BOUND) -> float:
    """The finite number ``body[key]`` with |value| <= ``bound``."""
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(400, f"{key!r} must be a number")
    if not math.isfinite(value) or abs(value) > bound:
        raise RequestError(400, f"{key!r} must be a finite number with |{key}| <= {bound:g}")
    return float(value)


def vector(body: dict, key: str, n: int, low: float = -Z_BOUND, high: float = Z_BOUND):
    """``body[key]`` as a float64 tensor (n,): exactly n finite numbers in [low, high]."""
    values = body.get(key)
    if not isinstance(values, list) or len(values) != n:
        raise RequestError(400, f"{key!r} must be a list of {n} numbers")
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        raise RequestError(400, f"{key!r} must hold numbers only")
    if not all(math.isfinite(v) and low <= v <= high for v in values):
        raise RequestError(400, f"{key!r}: every value must be finite, in [{low:g}, {high:g}]")
    return torch.tensor(values, dtype=torch.float64)  # (n,)


def whole(body: dict, key: str, low: int, high: int) -> int:
    """The integer ``body[key]`` in [low, high]."""
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(400, f"{key!r} must be a whole number from {low} to {high}")
    return value


def label(space: LatentSpace, body: dict) -> int | None:
    """The condition label index of a conditional model (required); None otherwise."""
    if not space.conditions:
        if body.get("label") is not None:
            raise RequestError(400, "this model is not conditional: give no 'label'")
        return None
    if body.get("label") is None:
        raise RequestError(400, "this model is conditional: give a 'label' (an index)")
    return whole(body, "label", 0, len(space.conditions) - 1)


# ------------------------------------------------------------------ routes


def info(space: LatentSpace) -> dict:
    p = space.projection
    return {"run": space.name, "family": space.family, "latent_dim": space.dim,
            "image_shape": list(space.shape), "count": len(space.codes),
            "classes": space.classes, "conditional": bool(space.conditions),
            "conditions": space.conditions, "ranges": space.ranges(),
            "projection": {"kind": p.kind, "explained": p.explained, "mean": p.mean.tolist(),
                           "basis": p.basis.tolist()},
            "limits": {"z": Z_BOUND, "steps": MAX_STEPS, "body": body_limit(space)}}  # fmt: skip


def points(space: LatentSpace) -> dict:
    labels = None if space.labels is None else space.labels.tolist()
    return {"points": space.points.tolist(), "labels": labels,
            "index": list(range(len(space.points)))}  # fmt: skip


def decode(space: LatentSpace, body: dict) -> dict:
    z = vector(body, "z", space.dim)  # (Z,)
    return {"pixels": pixel_list(space.decode(z[None], label(space, body))[0])}


def point(space: LatentSpace, body: dict) -> dict:
    i = whole(body, "index", 0, len(space.codes) - 1)
    z, lab = space.codes[i], space.label_of(i)
    own = lab if space.conditions else None  # the condition the code was encoded with
    return {"index": i, "z": z.tolist(), "point": space.points[i].tolist(), "label": lab,
            "pixels": pixel_list(space.decode(z[None], own)[0]),
            "original": pixel_list(space.pixels[i])}  # fmt: skip


def lift(space: LatentSpace, body: dict) -> dict:
    plane = torch.tensor([number(body, "x"), number(body, "y")], dtype=torch.float64)  # (2,)
    z, nearest = space.lift(plane)
    return {"z": z.tolist(), "nearest": nearest, "point": plane.tolist()}


def interpolate(space: LatentSpace, body: dict) -> dict:
    a, b = vector(body, "a", space.dim), vector(body, "b", space.dim)  # (Z,), (Z,)
    steps = whole(body, "steps", 2, MAX_STEPS)
    t = torch.linspace(0, 1, steps, dtype=torch.float64)[:, None]  # (steps, 1)
    zs = (1 - t) * a + t * b  # (steps, Z)
    images = space.decode(zs, label(space, body))  # (steps, C, H, W)
    return {"images": [pixel_list(x) for x in images], "z": zs.tolist()}


def encode(space: LatentSpace, body: dict) -> dict:
    c, h, w = space.shape
    grey = vector(body, "pixels", h * w, 0.0, 1.0)  # (H * W,) row-major
    image = grey.reshape(1, h, w).expand(c, h, w)  # (C, H, W): the same grey in each channel
    z = space.encode(image, label(space, body)).double()  # (Z,)
    return {"z": z.tolist(), "point": space.projection.project(z[None])[0].tolist()}


def page(space: LatentSpace) -> bytes:
    return resources.files("vaelab.explore").joinpath("page.html").read_bytes()


GET: dict[str, Callable[[LatentSpace], dict | bytes]] = {
    "/": page, "/api/info": info, "/api/points": points,
}  # fmt: skip
POST: dict[str, Callable[[LatentSpace, dict], dict]] = {
    "/api/decode": decode, "/api/point": point, "/api/lift": lift,
    "/api/interpolate": interpolate, "/api/encode": encode,
}  # fmt: skip
"""The only routes: a request path is looked up here as it is, never resolved on disk."""


def body_limit(space: LatentSpace) -> int:
    c, h, w = space.shape
    return max(BODY_LIMIT, 40 * h * w)


# ------------------------------------------------------------------ HTTP


def _reject_constant(name: str) -> float:
    raise RequestError(400, f"the body holds {name}: numbers must be finite")


class Handler(BaseHTTPRequestHandler):
    """Answers GET and POST from the route tables; everything else is a JSON error."""

    server: ExplorerServer
    server_version = "vaelab-explore"
    sys_version = ""
    timeout = 30  # seconds a client may take to send its request

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self._answer(GET, lambda fn: fn(self.server.space))

    def do_POST(self) -> None:  # noqa: N802
        self._answer(POST, lambda fn: fn(self.server.space, self._json()))

    def _answer(self, table: dict, call: Callable) -> None:
        path = urlsplit(self.path).path
        try:
            self._check_host()
            fn = table.get(path)
            if fn is None:
                other = POST if table is GET else GET
                if path in other:
                    raise RequestError(405, f"{path} answers {'GET' if other is GET else 'POST'}")
                raise RequestError(404, f"no route {path}")
            result = call(fn)
        except RequestError as e:
            return self._send(e.status, {"error": str(e)})
        except Exception as e:  # a bug or a model failure: one line here, none to the client
            print(f"vaelab: explore: {self.command} {path}: {type(e).__name__}: {e}",
                  file=sys.stderr)  # fmt: skip
            return self._send(500, {"error": "internal error (see the server's output)"})
        if isinstance(result, bytes):
            return self._send(200, result, "text/html; charset=utf-8")
        self._send(200, result)

    def _check_host(self) -> None:
        """On a loopback address only loopback names may be asked for: a web page that
        rebinds its own domain name to 127.0.0.1 cannot read the explorer."""
        if self.server.server_address[0] not in ("127.0.0.1", "::1"):
            return
        host = self.headers.get("Host")
        try:
            name = urlsplit(f"//{host}").hostname if host else None
        except ValueError:  # e.g. an unclosed "[" of an IPv6 address
            name = None
        if host and name not in LOOPBACK:
            raise RequestError(403, f"host {host!r} is not this machine's loopback name")

    def _json(self) -> dict:
        """The request body as a JSON object: sent as application/json, bounded in size."""
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise RequestError(415, "send the body as application/json")
        text = self.headers.get("Content-Length")
        if text is None:
            raise RequestError(411, "a Content-Length is required")
        if not text.isdigit():
            raise RequestError(400, "Content-Length must be a whole number")
        limit = body_limit(self.server.space)
        if int(text) > limit:
            self.close_connection = True
            raise RequestError(413, f"the body may hold at most {limit} bytes")
        try:
            raw = self.rfile.read(int(text))
        except TimeoutError as e:
            self.close_connection = True
            raise RequestError(408, "the body did not arrive in time") from e
        try:
            body = json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, too deep
            raise RequestError(400, f"the body is not valid JSON ({type(e).__name__})") from e
        if not isinstance(body, dict):
            raise RequestError(400, "the body must be a JSON object")
        return body

    def _send(self, status: int, content: dict | bytes, kind: str = "application/json") -> None:
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (a malformed request line, an unknown
        method) as JSON too."""
        self.close_connection = True
        self._send(code, {"error": message or HTTPStatus(code).phrase})

    def log_message(self, format: str, *args) -> None:  # quiet: no line per request
        pass


class ExplorerServer(ThreadingHTTPServer):
    """A threading HTTP server holding the latent space its handlers answer from."""

    daemon_threads = True  # an idle connection does not keep the process alive

    def __init__(self, address: tuple[str, int], space: LatentSpace | None = None):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._handlers: weakref.WeakSet[threading.Thread] = weakref.WeakSet()  # before binding:
        super().__init__(address, Handler)  # a port in use calls server_close
        self.space = space  # what the handlers answer from: set before serving

    def process_request(self, request, client_address) -> None:
        """Answer on a daemon thread of its own, remembered so that closing can wait for it."""
        t = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                             daemon=True)  # fmt: skip
        self._handlers.add(t)
        t.start()

    def server_close(self) -> None:
        """Stop listening, then wait up to CLOSE_WAIT seconds for requests still being
        answered: a daemon thread inside a torch call when the interpreter exits would be
        ended mid-call (CPython stops such threads in place), which can abort the process."""
        super().server_close()
        deadline = time.monotonic() + CLOSE_WAIT
        for t in list(self._handlers):
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request, client_address) -> None:
        """A client gone mid-answer is no error; anything else is one line, no traceback."""
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError | TimeoutError):
            print(f"vaelab: explore: a request from {client_address[0]} failed: "
                  f"{type(error).__name__}: {error}", file=sys.stderr)  # fmt: skip

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"
