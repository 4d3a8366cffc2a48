"""A letters model (--data.name emnist/letters) speaks in letters: bin/predict prints a-z, the API and page
name the letters. No EMNIST data is reachable here, so the run is a fresh, untrained checkpoint written by
the project's own checkpoint code: the test checks what the tools say, not what the model learned."""

from __future__ import annotations

import json
import string
import urllib.request

import jax
import pytest
from conftest import run_tool
from PIL import Image, ImageDraw

from mnist_jax import config as config_lib
from mnist_jax.run_dir import RunDir
from mnist_jax.serving import browser
from mnist_jax.serving.process import Server
from mnist_jax.training import checkpoint
from mnist_jax.training.step import create_train_state

pytestmark = pytest.mark.mnist  # bin/predict, bin/serve and Chromium: the full tier


@pytest.fixture(scope="module")
def letters_run(tmp_path_factory):
    config = config_lib.get_preset("tiny").replace(data={"name": "emnist/letters"})
    run = RunDir(tmp_path_factory.mktemp("runs") / "letters")
    run.write_config(config)
    manager = checkpoint.open_manager(run.checkpoints, keep=1)
    checkpoint.save(manager, 1, create_train_state(config, jax.random.key(0)), config,
                    {"val_accuracy": 0.5, "val_loss": 1.0, "val_temperature": 1.0}, {})
    checkpoint.finish(manager)
    return run.path


@pytest.fixture(scope="module")
def drawn_a(tmp_path_factory):
    page = Image.new("L", (200, 200), 235)
    draw = ImageDraw.Draw(page)
    draw.line([(40, 170), (100, 30), (160, 170)], fill=20, width=10)
    draw.line([(65, 115), (135, 115)], fill=20, width=10)
    path = tmp_path_factory.mktemp("letters") / "a.png"
    page.save(path)
    return path


def test_predict_prints_a_letter_and_ranks_the_26_letters(letters_run, drawn_a):
    result = run_tool("predict", str(drawn_a), "--run", str(letters_run), "--json", "--top-k", "10")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["class"] == string.ascii_lowercase[answer["label"]]
    assert len(answer["top_k"]) == 10 and all(0 <= entry["label"] < 26 for entry in answer["top_k"])


def test_the_api_and_the_page_in_chromium_speak_in_letters(letters_run, drawn_a):
    from playwright.sync_api import sync_playwright

    with Server(letters_run) as server, sync_playwright() as playwright:
        info = json.loads(urllib.request.urlopen(server.url + "api/info", timeout=30).read())
        assert info["data"] == "emnist/letters" and info["noun"] == "letter"
        assert info["classes"] == list(string.ascii_lowercase)
        chromium = browser.launch(playwright)
        page = chromium.new_page()
        page.goto(server.url)
        page.wait_for_function("document.getElementById('heading').textContent === 'Draw a letter'")
        assert page.title() == "mnist_jax: draw a letter"
        page.set_input_files("#file", str(drawn_a))
        state, shown = browser.wait_for_answer(page)
        bars = page.eval_on_selector_all("#bars li", "rows => rows.map(row => row.firstChild.textContent)")
        chromium.close()
    assert state == "done" and shown in string.ascii_lowercase
    assert len(bars) == 10 and bars[0] == shown and set(bars) <= set(string.ascii_lowercase)  # the likeliest first
