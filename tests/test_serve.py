"""bin/serve as a real server process on a free loopback port: the API on real image files, every bad
request, a short load, Ctrl-C; and the page in a real headless Chromium, drawn on with pointer strokes."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import run_tool
from PIL import Image

from mnist_jax.inference.inputs import read_inputs
from mnist_jax.serving import browser
from mnist_jax.serving.load import digit_uploads, run_load
from mnist_jax.serving.process import Server

MAX_BYTES, MAX_PIXELS = 300_000, 2_000_000  # the test server's limits, far under the defaults


@pytest.fixture(scope="module")
def server(fast_run):
    with Server(fast_run.path, "--max-bytes", str(MAX_BYTES), "--max-pixels", str(MAX_PIXELS)) as running:
        yield running


@pytest.fixture(scope="module")
def test_digits(mnist):
    return mnist.test_images[:40], mnist.test_labels[:40]


def post(url: str, body: bytes, content_type: str | None, query: str = "", method: str = "POST") -> tuple[int, dict]:
    """Sends one request to the API; returns (status, the JSON answer)."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    request = urllib.request.Request(url + query, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def multipart(name: str, data: bytes, content_type: str = "application/octet-stream") -> tuple[bytes, str]:
    """A multipart/form-data body with one file field `image`; returns (body, content type)."""
    boundary = "mnist-jax-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def same_answer(a, b) -> bool:
    """Whether two JSON answers are equal but for probabilities within 1e-5: a batch of 1 (the server, alone)
    and of 128 (bin/predict) round differently in XLA."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_answer(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(same_answer, a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 1e-5
    return a == b


def test_the_api_answers_png_and_jpeg_files_as_bin_predict_does(server, fast_run, test_digits, tmp_path):
    images, labels = test_digits[0][:12], test_digits[1][:12]
    paths = []
    for image_format, uploads in (("PNG", digit_uploads(images, labels, "PNG")),
                                  ("JPEG", digit_uploads(images, labels, "JPEG"))):
        for index, upload in enumerate(uploads):
            paths.append(tmp_path / f"digit{index}.{image_format.lower()}")
            paths[-1].write_bytes(upload.body)
    cli = run_tool("predict", "--run", str(fast_run.path), "--json", *map(str, paths))
    assert cli.returncode == 0, cli.stderr
    expected = [json.loads(line) for line in cli.stdout.splitlines()]
    answers = []
    for path, want in zip(paths, expected, strict=True):
        if path.suffix == ".png":  # the raw body, with its content type: no file name
            status, answer = post(server.url + "api/predict", path.read_bytes(), "image/png")
            want = {**want, "file": None}
        else:  # a multipart form field: the upload's name
            status, answer = post(server.url + "api/predict", *multipart(path.name, path.read_bytes(), "image/jpeg"))
            want = {**want, "file": path.name}
        assert status == 200, answer
        assert same_answer(answer, want), (answer, want)  # the fields and values of bin/predict --json
        answers.append(answer["label"])
    correct = np.mean(np.array(answers) == np.tile(labels, 2))
    assert correct >= 0.95, answers


def test_a_number_comes_back_with_the_images_the_model_saw(server, test_digits):
    images, labels = test_digits
    row = np.concatenate([255 - images[i, :, :, 0] for i in range(3)], axis=1)
    buffer = io.BytesIO()
    Image.fromarray(row).resize((row.shape[1] * 3, row.shape[0] * 3), Image.Resampling.BICUBIC).save(buffer, "PNG")
    query = "?number=1&preprocessed=1&top_k=1"
    status, answer = post(server.url + "api/predict", buffer.getvalue(), "image/png", query)
    assert status == 200, answer
    assert answer["number"] == "".join(map(str, labels[:3]))
    seen = read_inputs(buffer.getvalue(), number=True)
    for digit, image in zip(answer["digits"], seen, strict=True):
        assert len(digit["top_k"]) == 1
        prefix = "data:image/png;base64,"
        assert digit["preprocessed"].startswith(prefix)
        decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(digit["preprocessed"][len(prefix):]))))
        np.testing.assert_array_equal(decoded, image[:, :, 0])


def test_info_names_the_run_its_classes_accuracy_and_limits(server, fast_run):
    with urllib.request.urlopen(server.url + "api/info", timeout=30) as response:
        info = json.loads(response.read())
    summary = json.loads((fast_run.path / "summary.json").read_text())
    assert info["run"] == str(fast_run.path) and info["step"] == summary["best_step"]
    assert info["classes"] == [str(d) for d in range(10)]
    assert info["test_accuracy"] == summary["test_accuracy"] >= 0.99
    assert info["config"]["model"]["conv_features"] == [24, 32, 64]
    assert info["limits"]["max_bytes"] == MAX_BYTES and info["limits"]["max_pixels"] == MAX_PIXELS


def bad_requests(good: bytes) -> list[tuple[str, tuple, int, str]]:
    """(what, post's arguments after the URL, status, a part of the error) for each kind of bad request."""
    blank, huge, noise = io.BytesIO(), io.BytesIO(), np.random.default_rng(0).integers(0, 256, MAX_BYTES, np.uint8)
    Image.new("L", (200, 200), 255).save(blank, "PNG")
    Image.new("L", (2000, 1001), 255).save(huge, "PNG")  # a small file of too many pixels
    return [
        ("text", (b"hello", "image/png"), 400, "not an image"),
        ("truncated", (good[: len(good) // 2], "image/png"), 400, "damaged or truncated"),
        ("form without a file", (b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n",
                                 "multipart/form-data; boundary=b"), 400, "no file field"),
        ("bad parameter", (good, "image/png", "?top_k=11"), 400, "top_k='11' must be an integer from 1 to 10"),
        ("unknown parameter", (good, "image/png", "?path=/etc/passwd"), 400, "unknown query parameter 'path'"),
        ("too many bytes", (noise.tobytes() + b"!", "image/png"), 413, "300,000-byte limit"),
        ("too many pixels", (huge.getvalue(), "image/png"), 413, "2,000,000-pixel limit"),
        ("not an image type", (good, "text/plain"), 415, "content type 'text/plain' is not an image"),
        ("form-encoded", (good, "application/x-www-form-urlencoded"), 415, "send the file with its image type"),
        ("no content type", (good, ""), 415, "content type 'none'"),
        ("blank", (blank.getvalue(), "image/png"), 422, "no ink found"),
    ]


def test_every_bad_request_gets_its_status_and_one_line_and_the_server_goes_on(server, test_digits):
    good = digit_uploads(*(a[:1] for a in test_digits))[0]
    for what, arguments, status, message in bad_requests(good.body):
        got, answer = post(server.url + "api/predict", *arguments)
        assert (got, list(answer)) == (status, ["error"]), (what, answer)
        assert message in answer["error"] and "\n" not in answer["error"], (what, answer)
        assert post(server.url + "api/predict", good.body, good.content_type)[0] == 200, what
    assert post(server.url + "no/such/page", b"", None, method="GET") == (404, {"error": "no such path: /no/such/page"})
    assert post(server.url + "api/predict", b"", None, method="GET") == (
        405, {"error": "GET is not allowed on /api/predict"})
    assert post(server.url + "api/info", b"{}", "application/json")[0] == 405
    for path in ("../pyproject.toml", "page.js/../../app.py", "%2e%2e/README.md", "static/app.py"):  # no file names
        assert post(server.url + path, b"", None, method="GET")[0] == 404, path


def test_sixteen_clients_for_five_seconds_get_every_answer_right(server, test_digits):
    uploads = digit_uploads(*test_digits)
    # The model's own answer to each upload, one at a time: batched with others it must not change.
    alone = [post(server.url + "api/predict", u.body, u.content_type)[1]["label"] for u in uploads]
    assert np.mean(np.array(alone) == test_digits[1]) >= 0.95
    result = run_load(server.url, [u for u, digit in zip(uploads, alone, strict=True) if digit == u.label], 16, 5.0)
    assert result.errors == [] and result.wrong == 0
    assert len(result.latencies) >= 16


def test_an_exported_onnx_model_serves_without_jax_and_answers_as_the_run_does(server, fast_run, test_digits,
                                                                             tmp_path):
    from mnist_jax.data.dataset import Split
    from mnist_jax.export.exporter import export, write
    from mnist_jax.inference.predict import load_run_model

    path = tmp_path / "fast.onnx"
    write(export(load_run_model(fast_run.path), path, Split(*test_digits)).model, path)
    with Server(path) as onnx_server:
        with urllib.request.urlopen(onnx_server.url + "api/info", timeout=30) as response:
            info = json.loads(response.read())
        assert (info["run"], info["runtime"], info["config"]) == (str(path), "onnxruntime", None)
        for upload in digit_uploads(test_digits[0][:8], test_digits[1][:8]):
            status, answer = post(onnx_server.url + "api/predict", upload.body, upload.content_type)
            assert status == 200 and same_answer(answer, post(server.url + "api/predict", upload.body,
                                                              upload.content_type)[1])
        libraries = Path(f"/proc/{onnx_server.pid}/maps").read_text()
        assert "onnxruntime" in libraries and "jaxlib" not in libraries  # JAX's runtime was never loaded


@pytest.fixture(scope="module")
def chromium(server):
    from playwright.sync_api import sync_playwright

    assert browser.chromium_path(), "no Chromium: make test installs it (apt install chromium)"
    with sync_playwright() as playwright:
        launched = browser.launch(playwright)
        yield launched
        launched.close()


@pytest.fixture
def page(chromium, server):
    context = chromium.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
    page.goto(server.url)
    yield page
    context.close()


def shown(page) -> str:
    """Waits until the page shows an answer; returns the digit (or number) it shows."""
    state, text = browser.wait_for_answer(page)
    assert state == "done", text
    return text


def test_the_page_loads_without_errors_and_reads_digits_drawn_on_it(page, test_digits, fast_run):
    assert page.title() == "mnist_jax: draw a digit"
    assert page.eval_on_selector("#canvas", "c => getComputedStyle(c).touchAction") == "none"  # no scrolling
    images, labels = test_digits
    read = []
    for image in images[:10]:
        page.click("#clear")
        browser.draw_digit(page, image)
        read.append(shown(page))
    assert sum(got == str(label) for got, label in zip(read, labels, strict=False)) >= 9, (read, labels[:10])
    bars = page.eval_on_selector_all("#bars li .value", "values => values.map(v => parseFloat(v.textContent))")
    assert len(bars) == 10 and abs(sum(bars) - 100) < 0.1
    assert page.eval_on_selector("#seen", "image => image.naturalWidth") == 28  # what the model saw
    assert page.console_errors == []


def test_an_uploaded_file_is_predicted_and_the_threshold_marks_it_uncertain(page, test_digits, tmp_path):
    upload = digit_uploads(test_digits[0][:1], test_digits[1][:1], "JPEG")[0]
    path = tmp_path / "seven.jpg"
    path.write_bytes(upload.body)
    page.set_input_files("#file", str(path))
    assert shown(page) == str(upload.label)
    assert page.is_hidden("#uncertain")
    page.fill("#threshold", "100")  # no probability is above 100%: the same file, now uncertain
    page.dispatch_event("#threshold", "input")
    page.wait_for_selector("#uncertain", state="visible")
    assert page.console_errors == []


def test_number_mode_reads_a_row_of_three_drawn_digits(page, test_digits):
    images, labels = test_digits
    page.check("#number-mode")
    for cell in range(3):
        browser.draw_digit(page, images[cell], cell=cell, cells=3)
    assert shown(page) == "".join(map(str, labels[:3]))
    assert page.eval_on_selector_all("#digits img", "images => images.length") == 3


def test_on_a_phone_the_canvas_and_the_result_fit_the_screen(chromium, server, test_digits):
    context = chromium.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=3, is_mobile=True,
                                   has_touch=True)
    page = context.new_page()
    page.goto(server.url)
    browser.draw_digit(page, test_digits[0][0])
    assert shown(page) == str(test_digits[1][0])
    for selector in ("#canvas", "#digit", "#bars"):
        box = page.locator(selector).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, selector
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no horizontal scrolling
    context.close()


def test_serve_refuses_a_busy_port_and_warns_when_open_to_the_network(server, tmp_path):
    port = server.url.rsplit(":", 1)[1].strip("/")
    busy = run_tool("serve", "--run", str(tmp_path), "--port", port)
    assert busy.returncode == 2
    assert busy.stderr.strip() == (f"error: cannot listen on 127.0.0.1:{port} (Address already in use); "
                                   "choose another --port or --host")
    open_to_all = run_tool("serve", "--run", str(tmp_path / "missing"), "--host", "0.0.0.0", "--port", "0")
    assert open_to_all.returncode == 2
    warning, error = open_to_all.stderr.strip().splitlines()
    assert warning == "warning: listening on 0.0.0.0: the page and the API are open to the network"
    assert error.startswith("error: ") and "missing" in error


def test_ctrl_c_stops_the_server_cleanly(server):
    returncode, stderr = server.stop()
    assert (returncode, stderr.strip()) == (0, "stopped")
    assert "Traceback" not in stderr

