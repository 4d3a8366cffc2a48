"""The CLIs keep compiled XLA programs in the persistent cache the environment names, or nowhere."""

from __future__ import annotations

import pytest
from conftest import run_tool
from PIL import Image

from mnist_jax.compilation_cache import COMPILATION_CACHE_VARIABLE


@pytest.fixture
def digit_file(tmp_path, mnist):
    path = tmp_path / "digit.png"
    Image.fromarray(mnist.test_images[0, :, :, 0]).save(path)
    return path


def entries(directory):
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def test_a_second_run_reads_the_compiled_steps_the_first_one_wrote(trained_run, digit_file, tmp_path, monkeypatch):
    cache = tmp_path / "xla"
    monkeypatch.setenv(COMPILATION_CACHE_VARIABLE, str(cache))
    first = run_tool("predict", str(digit_file), "--run", str(trained_run.path))
    assert first.returncode == 0, first.stderr
    written = entries(cache)
    assert any(name.startswith("jit_predict_probs-") for name in written)
    second = run_tool("predict", str(digit_file), "--run", str(trained_run.path))
    assert second.returncode == 0 and second.stdout == first.stdout
    assert entries(cache) == written  # every program came from the cache: nothing new was compiled


def test_the_cache_defaults_to_the_user_cache_dir_and_can_be_turned_off(trained_run, digit_file, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    monkeypatch.setenv(COMPILATION_CACHE_VARIABLE, "off")
    assert run_tool("predict", str(digit_file), "--run", str(trained_run.path)).returncode == 0
    assert not (tmp_path / "user-cache").exists()
    monkeypatch.delenv(COMPILATION_CACHE_VARIABLE)
    assert run_tool("predict", str(digit_file), "--run", str(trained_run.path)).returncode == 0
    assert any(name.startswith("jit_predict_probs-") for name in entries(tmp_path / "user-cache" / "mnist_jax" / "xla"))


def test_an_unusable_cache_dir_is_skipped_without_a_word(trained_run, digit_file, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(COMPILATION_CACHE_VARIABLE, str(blocker / "xla"))
    result = run_tool("predict", str(digit_file), "--run", str(trained_run.path))
    assert result.returncode == 0 and result.stderr == ""
