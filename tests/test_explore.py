"""``vaelab explore`` (#21): the server's routes against the model computed here, its
refusals (paths, bodies), the command's start and stop, and the page in a real browser
(Debian's chromium driven by Playwright), all on a VAE trained in seconds on real MNIST."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab import cli
from vaelab.explore import server as explorer_server
from vaelab.explore.server import BODY_LIMIT, ExplorerServer
from vaelab.explore.space import grey, load_space
from vaelab.runs.load import load_run, load_test_batches

LIMIT = 300
"""Test images the served space encodes."""
TINY = ["--no-progress", "--set", "data.limit=500", "--set", "data.test_limit=200", "--set",
        "model.widths=[64]", "--set", "model.bottleneck=4", "--set", "train.epochs=1"]  # fmt: skip


def train(config: str, out: Path, cache: Path, *extra: str) -> Path:
    argv = ["train", config, "--out", str(out), "--cache", str(cache), *TINY, *extra]
    assert cli.main(argv) == 0
    return out


@pytest.fixture(scope="module")
def run_dir(mnist_cache, tmp_path_factory) -> Path:
    return train("configs/mnist_vae.toml", tmp_path_factory.mktemp("explore") / "vae", mnist_cache)


class Served:
    """A running explorer: the server, its latent space, and requests to it."""

    def __init__(self, server: ExplorerServer):
        self.server, self.space = server, server.space
        self.port = server.server_address[1]

    def request(self, method: str, path: str, body: bytes | None = None, headers=None):
        """(status, JSON answer or raw bytes) of one request sent as given (path unchanged)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            answer = conn.getresponse()
            data = answer.read()
        finally:
            conn.close()
        is_json = answer.getheader("Content-Type") == "application/json"
        return answer.status, json.loads(data) if is_json else data

    def post(self, path: str, payload) -> tuple[int, object]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.request("POST", path, body, {"Content-Type": "application/json"})

    def ok(self, method: str, path: str, payload=None) -> dict:
        status, answer = self.post(path, payload) if method == "POST" else self.request("GET", path)
        assert status == 200, answer
        return answer


def start(space) -> ExplorerServer:
    server = ExplorerServer(("127.0.0.1", 0), space)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def served(run_dir, mnist_cache):
    server = start(load_space(run_dir, mnist_cache, LIMIT))
    yield Served(server)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def reference(run_dir, mnist_cache):
    """(model, test images, their codes) computed here, without the explorer."""
    cfg, model = load_run(run_dir)
    batches = load_test_batches(cfg, mnist_cache, LIMIT)
    with torch.no_grad():
        codes = torch.cat([model.encode(x) for x, _ in batches])  # (N, Z)
    return model, batches.images, codes


def decoded(model, z) -> np.ndarray:
    """Grey values 0-255 of model.decode, as ints (B, H * W) of codes (B, Z)."""
    with torch.no_grad():
        x = model.decode(torch.atleast_2d(torch.as_tensor(z, dtype=torch.float32)))
    return grey(x).reshape(len(x), -1).numpy().astype(int)


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize("path", ["/../config.toml", "/config.toml", "/api/../x", "/api/nothing",
                                  "/page.html", "/%2e%2e/config.toml", "/api/info/../../state.json",
                                  "/api", "/api/", "//config.toml", "/model.safetensors"])  # fmt: skip
def test_only_the_route_table_answers(served, path):
    for method in ("GET", "POST"):
        status, answer = served.request(method, path, b"{}", {"Content-Type": "application/json"})
        assert status == 404 and "error" in answer, (method, path, answer)
    assert served.request("GET", "/api/decode")[0] == 405  # a POST route
    assert served.post("/api/info", {})[0] == 405


Z4 = [0.1, -0.2, 0.3, 0.0]
HOSTILE = [
    ("/api/decode", b'{"z": [NaN, 0, 0, 0]}', 400), ("/api/decode", b'{"z": [Infinity, 0, 0, 0]}', 400),
    ("/api/decode", {"z": [1e9, 0, 0, 0]}, 400), ("/api/decode", {"z": [1e999, 0, 0, 0]}, 400),
    ("/api/decode", {"z": [0.1, 0.2]}, 400), ("/api/decode", {"z": [0] * 5}, 400),
    ("/api/decode", {"z": "0,0,0,0"}, 400), ("/api/decode", {"z": [True, 0, 0, 0]}, 400),
    ("/api/decode", {"z": ["0", 0, 0, 0]}, 400), ("/api/decode", {"z": [[0], 0, 0, 0]}, 400),
    ("/api/decode", {}, 400), ("/api/decode", {"z": Z4, "label": 3}, 400),
    ("/api/decode", b'{"z": [0, 0, 0, 0]', 400), ("/api/decode", b"[1, 2]", 400),
    ("/api/decode", b"\xff\xfe", 400), ("/api/decode", b"[" * 50_000 + b"]" * 10_000, 400),
    ("/api/decode", b'{"z": [' + b"9" * 5000 + b", 0, 0, 0]}", 400),
    ("/api/decode", b"{" + b" " * (BODY_LIMIT + 1) + b"}", 413),
    ("/api/point", {"index": -1}, 400), ("/api/point", {"index": LIMIT}, 400),
    ("/api/point", {"index": 1.0}, 400), ("/api/point", {"index": "1"}, 400),
    ("/api/lift", {"x": float("nan"), "y": 0}, 400), ("/api/lift", {"x": 1e9, "y": 0}, 400),
    ("/api/lift", {"x": 0}, 400), ("/api/interpolate", {"a": Z4, "b": Z4, "steps": 17}, 400),
    ("/api/interpolate", {"a": Z4, "b": Z4, "steps": 1}, 400),
    ("/api/interpolate", {"a": Z4, "b": [0] * 3, "steps": 4}, 400),
    ("/api/encode", {"pixels": [0.5] * 783}, 400), ("/api/encode", {"pixels": [1.5] * 784}, 400),
    ("/api/encode", {"pixels": [-0.1] * 784}, 400),
]  # fmt: skip


@pytest.mark.parametrize("path, payload, status", HOSTILE)
def test_hostile_bodies_are_refused_with_a_json_message(served, path, payload, status):
    got, answer = served.post(path, payload)
    assert got == status, answer
    assert isinstance(answer["error"], str) and "Traceback" not in answer["error"]
    assert "\n" not in answer["error"]


def test_bodies_must_be_json_of_a_stated_length_and_hosts_loopback_names(served):
    assert served.request("POST", "/api/decode", b"{}", {"Content-Type": "text/plain"})[0] == 415
    conn = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    conn.sendall(b"POST /api/decode HTTP/1.0\r\nContent-Type: application/json\r\n\r\n{}")
    assert conn.recv(100).startswith(b"HTTP/1.0 411")
    conn.close()
    status, answer = served.request("GET", "/api/info", headers={"Host": "evil.example:80"})
    assert status == 403, answer  # a page that rebinds its name to 127.0.0.1 reads nothing
    local = {"Host": f"localhost:{served.port}"}
    assert served.request("GET", "/api/info", headers=local)[0] == 200
    assert served.request("PUT", "/api/decode")[0] == 501


# ------------------------------------------------------------------ the routes


def test_points_are_the_projected_codes_of_every_encoded_image(served, reference):
    _, images, codes = reference
    answer = served.ok("GET", "/api/points")
    info = served.ok("GET", "/api/info")
    assert len(answer["points"]) == len(answer["labels"]) == len(images) == LIMIT == info["count"]
    assert answer["index"] == list(range(LIMIT))
    mean, basis = np.array(info["projection"]["mean"]), np.array(info["projection"]["basis"])
    np.testing.assert_allclose(answer["points"], (codes.double().numpy() - mean) @ basis, atol=1e-5)
    assert info["latent_dim"] == 4 and info["image_shape"] == [1, 28, 28]
    assert info["classes"] == [str(d) for d in range(10)] and info["conditional"] is False


def test_the_plane_is_the_codes_principal_components(served, reference):
    codes = reference[2].double().numpy()
    values, vectors = np.linalg.eigh(np.cov(codes, rowvar=False, bias=True))
    info = served.ok("GET", "/api/info")["projection"]
    assert info["kind"] == "pca"
    np.testing.assert_allclose(info["explained"], values[[-1, -2]] / values.sum(), rtol=1e-6)
    basis = np.array(info["basis"])
    np.testing.assert_allclose(basis.T @ basis, np.eye(2), atol=1e-10)
    np.testing.assert_allclose(np.abs(basis), np.abs(vectors[:, [-1, -2]]), atol=1e-6)
    np.testing.assert_allclose(info["mean"], codes.mean(0), atol=1e-10)


def test_decode_is_the_models_decode(served, reference):
    model = reference[0]
    for z in (Z4, [1.5, -2.0, 0.0, 0.7], [-1000.0, 1000.0, 0.0, 3.0]):
        pixels = served.ok("POST", "/api/decode", {"z": z})["pixels"]
        assert np.abs(np.array(pixels) - decoded(model, z)[0]).max() <= 1


def test_point_gives_the_code_and_both_images(served, reference):
    model, images, codes = reference
    answer = served.ok("POST", "/api/point", {"index": 7})
    np.testing.assert_allclose(answer["z"], codes[7].numpy(), atol=1e-6)
    assert np.abs(np.array(answer["pixels"]) - decoded(model, codes[7])[0]).max() <= 1
    original = (images[7] * 255).round().flatten().numpy()
    assert np.array_equal(answer["original"], original)


def test_lift_moves_the_nearest_code_within_the_plane(served, reference):
    codes = reference[2].double().numpy()
    info = served.ok("GET", "/api/info")["projection"]
    mean, basis = np.array(info["mean"]), np.array(info["basis"])
    plane = (codes - mean) @ basis
    target = plane[11] + [0.01, -0.02]
    answer = served.ok("POST", "/api/lift", {"x": target[0], "y": target[1]})
    near = int(np.argmin(((plane - target) ** 2).sum(1)))
    assert answer["nearest"] == near
    z = np.array(answer["z"])
    np.testing.assert_allclose((z - mean) @ basis, target, atol=1e-9)  # lands on the point
    moved = z - codes[near]
    np.testing.assert_allclose(moved, basis @ (basis.T @ moved), atol=1e-9)  # in the plane only


def test_interpolate_decodes_the_line_between_two_codes(served, reference):
    model, _, codes = reference
    a, b = codes[0].tolist(), codes[1].tolist()
    answer = served.ok("POST", "/api/interpolate", {"a": a, "b": b, "steps": 5})
    assert len(answer["images"]) == 5
    expected = decoded(model, np.linspace(0, 1, 5)[:, None] * (np.array(b) - a) + a)
    assert np.abs(np.array(answer["images"]) - expected).max() <= 1


def test_encode_is_the_models_code_of_the_image_received(served, reference):
    model, images, _ = reference
    pixels = images[3].flatten().tolist()
    answer = served.ok("POST", "/api/encode", {"pixels": pixels})
    with torch.no_grad():
        z = model.encode(torch.tensor(pixels, dtype=torch.float32).reshape(1, 1, 28, 28))[0]
    np.testing.assert_allclose(answer["z"], z.numpy(), atol=1e-6)
    projected = served.space.projection.project(z[None])[0]
    np.testing.assert_allclose(answer["point"], projected.numpy(), atol=1e-9)


def test_a_conditional_model_decodes_with_the_label_given(mnist_cache, tmp_path):
    run = train("configs/mnist_cvae.toml", tmp_path / "cvae", mnist_cache)
    server = start(load_space(run, mnist_cache, 50))
    try:
        s = Served(server)
        info = s.ok("GET", "/api/info")
        assert info["conditional"] and info["conditions"] == [str(d) for d in range(10)]
        assert s.post("/api/decode", {"z": Z4})[0] == 400  # the label is required
        assert s.post("/api/decode", {"z": Z4, "label": 10})[0] == 400
        model = server.space.model
        with torch.no_grad():
            x = model.decode(torch.tensor([Z4]), model.condition(torch.tensor([7])))
        pixels = s.ok("POST", "/api/decode", {"z": Z4, "label": 7})["pixels"]
        assert np.abs(np.array(pixels) - grey(x).flatten().numpy()).max() <= 1
        assert s.ok("POST", "/api/point", {"index": 0})["label"] == int(server.space.labels[0])
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------ the command


def test_the_default_address_is_this_machine_only():
    args = cli.build_parser().parse_args(["explore", "runs/x"])
    assert (args.host, args.port, args.limit) == ("127.0.0.1", 8765, 5000)


@pytest.mark.parametrize("host, sig", [(None, signal.SIGTERM), ("0.0.0.0", signal.SIGINT)])
def test_the_command_serves_until_a_signal_then_says_it_stopped(run_dir, mnist_cache, host, sig):
    argv = [sys.executable, "-m", "vaelab", "explore", str(run_dir), "--port", "0", "--limit",
            "50", "--cache", str(mnist_cache), *(["--host", host] if host else [])]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}  # stacks on an abort
    pipe = subprocess.PIPE
    proc = subprocess.Popen(argv, stdout=pipe, stderr=pipe, text=True, env=env)
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://([\d.]+):(\d+)/", line)
        assert url, line + proc.stderr.read()
        assert url.group(1) == (host or "127.0.0.1")
        conn = http.client.HTTPConnection("127.0.0.1", int(url.group(2)), timeout=30)
        conn.request("GET", "/api/info")
        assert json.loads(conn.getresponse().read())["count"] == 50
        conn.close()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        proc.kill()
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1] == "vaelab: explorer stopped"
    assert ("exposed to the network" in err) == (host is not None)
    assert "Traceback" not in err


def one_error_line(argv: list[str], capsys) -> str:
    assert cli.main(argv) == 1
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("vaelab: error")]
    assert len(lines) == 1
    return lines[0]


def test_closing_waits_for_a_request_being_answered(monkeypatch):
    """A handler still inside the model when the server closes is waited for (a daemon
    thread in a torch call at interpreter exit can abort the process)."""
    started, finished = threading.Event(), threading.Event()

    def slow(space):
        started.set()
        time.sleep(0.5)
        finished.set()
        return {"ok": True}

    monkeypatch.setitem(explorer_server.GET, "/api/info", slow)
    server = start(None)
    asker = threading.Thread(target=Served(server).request, args=("GET", "/api/info"), daemon=True)
    asker.start()
    assert started.wait(30)
    server.shutdown()
    server.server_close()
    assert finished.is_set()


def test_refusals_before_serving_are_one_line(run_dir, mnist_cache, tmp_path, capsys):
    from vaelab.cli.train import CLASSIFIER_CONFIG

    assert "run folder" in one_error_line(["explore", str(tmp_path / "none")], capsys).lower()
    classifier = train(str(CLASSIFIER_CONFIG), tmp_path / "clf", mnist_cache,
                       "--set", "model.channels=[2]", "--set", "model.widths=[8]")  # fmt: skip
    line = one_error_line(["explore", str(classifier), "--cache", str(mnist_cache)], capsys)
    assert "does not encode and decode" in line
    vq = train("configs/mnist_vq.toml", tmp_path / "vq", mnist_cache, "--set", "model.codebook=8",
               "--set", "model.code_prior.width=8", "--set", "model.code_prior.heads=2")  # fmt: skip
    line = one_error_line(["explore", str(vq), "--cache", str(mnist_cache)], capsys)
    assert "entries of a codebook" in line
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        port = str(taken.getsockname()[1])
        argv = ["explore", str(run_dir), "--port", port, "--cache", str(mnist_cache)]
        assert "cannot listen" in one_error_line(argv, capsys)
    finally:
        taken.close()
    assert "--host" in one_error_line(["explore", str(run_dir), "--host", "a b"], capsys)
    with pytest.raises(SystemExit):
        cli.main(["explore", str(run_dir), "--port", "65536"])


# ------------------------------------------------------------------ the page in a browser


def browser_or_skip():
    """(chromium's path, Playwright's sync_playwright), or a skip saying how to get them."""
    exe = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if exe is None or sync_playwright is None:
        pytest.skip("the browser test needs Debian's chromium and Playwright for Python: "
                    "apt-get install chromium; pip install playwright")  # fmt: skip
    return exe, sync_playwright


DISPLAYED = """() => { const c = document.getElementById("decoded");
  return Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data)
    .filter((_, k) => k % 4 === 0); }"""
"""The decoded image as the page shows it: the red channel of the #decoded canvas."""


def isolated(points: np.ndarray) -> int:
    """The point farthest from its nearest neighbour (hovering it can mean no other)."""
    d = ((points[:, None] - points[None]) ** 2).sum(-1) + np.eye(len(points)) * 1e9
    return int(d.min(1).argmax())


def at(page, selector: str, fx: float, fy: float) -> tuple[float, float]:
    box = page.locator(selector).bounding_box()
    return box["x"] + fx * box["width"], box["y"] + fy * box["height"]


def hover_point(page, i: int) -> None:
    x, y = page.evaluate("i => explorer.toCanvas(i)", i)
    page.mouse.move(*at(page, "#scatter", x / 560, y / 560))


def test_the_page_in_a_real_browser(served, reference, tmp_path):
    exe, sync_playwright = browser_or_skip()
    model, _, codes = reference
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(served.server.url)
            page.wait_for_function("window.explorer && explorer.ready", timeout=30_000)
            assert page.evaluate("explorer.drawn") == LIMIT
            assert page.get_attribute("#scatter", "data-points") == str(LIMIT)
            assert "PCA" in page.inner_text("#projection")
            check_hover_and_slider(page, model, served.space.points.numpy())
            check_interpolation(page, served.space.points.numpy())
            check_drawing(page, model, served.space)
            page.screenshot(path=str(tmp_path / "explore.png"), full_page=True)
            shutil.copy(tmp_path / "explore.png", "/tmp/explore-shot.png")
            assert errors == []
        finally:
            browser.close()


def check_hover_and_slider(page, model, points: np.ndarray) -> None:
    """Hovering a point shows model.decode of its code; moving slider 0 changes the image
    to model.decode of the new code."""
    i = isolated(points)
    hover_point(page, i)
    page.wait_for_function("i => explorer.shown === i", arg=i)
    z = page.evaluate("explorer.z")
    shown = np.array(page.evaluate(DISPLAYED))
    assert np.abs(shown - decoded(model, z)[0]).max() <= 1
    renders = page.evaluate("explorer.renders")
    page.mouse.click(*at(page, "#slider-0", 0.97, 0.5))
    page.wait_for_function("n => explorer.renders > n && explorer.shown === null", arg=renders)
    moved = page.evaluate("explorer.z")
    assert moved[0] != z[0] and moved[1:] == z[1:]
    after = np.array(page.evaluate(DISPLAYED))
    assert np.abs(after - shown).max() > 1
    assert np.abs(after - decoded(model, moved)[0]).max() <= 1


def check_interpolation(page, points: np.ndarray) -> None:
    """'set A' on the current code, shift-click another point for B: a strip of 8 images."""
    page.click("#set-a")
    j = int(((points - points[isolated(points)]) ** 2).sum(1).argmax())  # far away
    hover_point(page, j)
    page.wait_for_function("j => explorer.shown === j", arg=j)
    page.keyboard.down("Shift")
    x, y = page.evaluate("j => explorer.toCanvas(j)", j)
    page.mouse.click(*at(page, "#scatter", x / 560, y / 560))
    page.keyboard.up("Shift")
    page.wait_for_function("document.getElementById('strip').width === 8 * 28")
    assert page.evaluate("explorer.b") == page.evaluate("explorer.z")


def check_drawing(page, model, space) -> None:
    """A stroke on the pad, 'encode': the marker lies where model.encode puts the 28x28
    image the server received."""
    path = [(0.55 - 0.1 * t, 0.2 + 0.6 * t) for t in np.linspace(0, 1, 12)]  # a slanted 1
    page.mouse.move(*at(page, "#draw", *path[0]))
    page.mouse.down()
    for fx, fy in path[1:]:
        page.mouse.move(*at(page, "#draw", fx, fy), steps=3)
    page.mouse.up()
    with page.expect_request("**/api/encode") as request:
        page.click("#encode-btn")
    sent = request.value.post_data_json["pixels"]
    page.wait_for_function("explorer.marker !== null && explorer.shown === null")
    assert len(sent) == 784 and sum(sent) > 10  # a drawing, not a blank pad
    with torch.no_grad():
        z = model.encode(torch.tensor(sent, dtype=torch.float32).reshape(1, 1, 28, 28))
    expected = space.projection.project(z)[0].numpy()
    np.testing.assert_allclose(page.evaluate("explorer.marker"), expected, atol=1e-5)
    np.testing.assert_allclose(page.evaluate("explorer.encoded"), z[0].numpy(), atol=1e-5)
