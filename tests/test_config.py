"""Configs are frozen, round-trip through JSON, and reject bad fields before anything runs."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import ROOT, run_tool

from mnist_jax import config as config_lib
from mnist_jax.errors import ConfigError


@pytest.mark.parametrize("name", sorted(config_lib.PRESETS))
def test_every_preset_round_trips_through_json(name):
    preset = config_lib.get_preset(name)
    assert config_lib.from_dict(json.loads(json.dumps(config_lib.to_dict(preset)))) == preset


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        config_lib.get_preset("default").train.epochs = 3


def test_command_line_strings_override_every_kind_of_field():
    config = config_lib.override(config_lib.get_preset("default"), {
        "train.epochs": "3", "train.learning_rate": "1e-3", "model.conv_features": "16,32,64",
        "model.kernel_sizes": "3,3,3", "model.dense_features": "", "model.pool": "max", "data.train_size": "none",
    })
    assert config.train.epochs == 3 and config.train.learning_rate == 1e-3
    assert config.model.conv_features == (16, 32, 64) and config.model.dense_features == ()
    assert config.model.pool == "max" and config.data.train_size is None
    assert config_lib.override(config, {"data.train_size": "500"}).data.train_size == 500
    distilled = config_lib.override(config, {"train.teachers": "runs/a, runs/b", "train.distillation": "0.9"})
    assert distilled.train.teachers == ("runs/a", "runs/b") and distilled.train.distillation == 0.9


@pytest.mark.parametrize("assignment, message", [
    ({"train.epochz": "1"}, "unknown config field train.epochz; known fields: train.epochs"),
    ({"optim.lr": "1"}, "unknown config section 'optim'"),
    ({"train.epochs": "1.5"}, "invalid train.epochs=1.5: must be an integer"),
    ({"train.learning_rate": "fast"}, "invalid train.learning_rate=fast: must be a number"),
    ({"train.learning_rate": "0"}, "invalid train.learning_rate=0.0: must be a finite number greater than 0"),
    ({"train.learning_rate": "-0.1"}, "invalid train.learning_rate=-0.1: must be a finite number greater than 0"),
    ({"train.learning_rate": "inf"}, "invalid train.learning_rate=inf: must be a finite number greater than 0"),
    ({"train.loop": "gpu"}, "invalid train.loop=gpu: must be one of auto, host, device"),
    ({"train.checkpoint_every": "-5"}, "invalid train.checkpoint_every=-5: must be 0 (epoch ends only)"),
    ({"model.dropout": "1"}, "invalid model.dropout=1.0: must be in [0, 1)"),
    ({"model.kernel_sizes": "3"}, "invalid model.kernel_sizes=3: must be one size per conv layer"),
    ({"model.pool": "median"}, "invalid model.pool=median: must be one of avg, max, none"),
    ({"model.name": "vgg"}, "invalid model.name=vgg: must be one of cnn, resnet"),
    ({"model.norm": "layer"}, "invalid model.norm=layer: must be one of none, batch"),
    ({"model.blocks_per_stage": "0"}, "invalid model.blocks_per_stage=0: must be at least 1"),
    ({"model.norm_group": "48"}, "invalid model.norm_group=48: must be 0 (the whole batch) or a divisor of "
                                 "train.batch_size=64"),
    ({"train.ema": "1"}, "invalid train.ema=1.0: must be in [0, 1) (0: off)"),
    ({"train.label_smoothing": "-0.1"}, "invalid train.label_smoothing=-0.1: must be in [0, 1) (0: off)"),
    ({"data.validation_size": "30000"},
     "invalid data.validation_size=30000: must be between 1 and 29999 (smaller than what is left for training)"),
    ({"model.strides": "2"}, "invalid model.strides=2: must be one stride per conv layer, or empty"),
    ({"model.strides": "2,0"}, "invalid model.strides=2,0: must be positive strides"),
    ({"model.dtype": "float16"}, "invalid model.dtype=float16: must be one of float32, bfloat16"),
    ({"train.distillation": "0.5"},
     "invalid train.distillation=0.5: must be above 0 exactly when train.teachers names runs"),
    ({"train.teachers": "runs/a"}, "invalid train.distillation=0.0: must be above 0 exactly when train.teachers"),
    ({"train.teachers": "runs/a", "train.distillation": "1.5"}, "invalid train.distillation=1.5: must be in [0, 1]"),
    ({"train.teacher_views": "augmented"},
     "invalid train.teacher_views=augmented: must be clean unless train.distillation is above 0"),
    ({"train.teachers": "runs/a", "train.distillation": "0.9", "train.teacher_views": "both"},
     "invalid train.teacher_views=both: must be one of clean, augmented"),
])
def test_bad_overrides_name_the_field_and_what_is_allowed(assignment, message):
    with pytest.raises(ConfigError) as error:
        config_lib.override(config_lib.get_preset("default"), assignment)
    assert str(error.value).startswith(message)


def test_json_values_of_the_wrong_type_are_rejected():
    with pytest.raises(ConfigError, match="invalid train.epochs=True: must be an integer"):
        config_lib.from_dict({"train": {"epochs": True}})
    with pytest.raises(ConfigError, match="invalid model.conv_features=32: must be a list of integers"):
        config_lib.from_dict({"model": {"conv_features": "32"}})
    with pytest.raises(ConfigError, match="invalid train.teachers=runs/a: must be a list of paths"):
        config_lib.from_dict({"train": {"teachers": "runs/a", "distillation": 0.5}})


@pytest.mark.parametrize("args, message", [
    (["--preset", "huge"], "error: unknown preset 'huge'; choose one of: default, fast, tiny, accurate, best"),
    (["--train.batch_size", "0"], "error: invalid train.batch_size=0: must be between 1 and the 55000 training images"),
])
def test_train_cli_rejects_bad_config_in_one_line_before_loading_anything(tmp_path, args, message):
    result = run_tool("train", *args, "--data-dir", str(tmp_path), "--data-source", "prepared",
                      "--workdir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert not (tmp_path / "run").exists()


def test_train_cli_rejects_an_unknown_flag(tmp_path):
    result = run_tool("train", "--train.epochz", "3")
    assert result.returncode == 2
    assert "unrecognized arguments: --train.epochz 3" in result.stderr
    assert "Traceback" not in result.stderr


def test_train_cli_reads_a_config_file_and_reports_a_broken_one(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = run_tool("train", "--config", str(broken))
    assert result.returncode == 2 and result.stderr.startswith(f"error: cannot read config file {broken}")
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"train": {"warmup": 3}}))
    result = run_tool("train", "--config", str(unknown))
    assert result.returncode == 2 and "unknown config field train.warmup" in result.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.json")), ids=lambda path: path.stem)
def test_every_recipe_file_builds_a_valid_config_and_records_its_measured_result(path):
    recipe = json.loads(path.read_text())
    config = config_lib.from_recipe(recipe)
    assert config_lib.from_dict(config_lib.to_dict(config)) == config
    measured = recipe["measured"]
    assert measured["test_accuracy"] and measured["machine"]
    page, _, anchor = measured["record"].partition("#")
    assert (ROOT / page).is_file() and anchor


def test_a_recipe_file_is_its_preset_with_its_sections_over_it(tmp_path):
    recipe = {"preset": "fast", "measured": {"note": "ignored"}, "train": {"epochs": 1}}
    config = config_lib.from_recipe(recipe)
    assert config == config_lib.PRESETS["fast"].replace(train={"epochs": 1})
    assert config_lib.from_recipe(recipe, preset="tiny") == config_lib.PRESETS["tiny"].replace(train={"epochs": 1})
    with pytest.raises(ConfigError, match="unknown config section 'trian'"):
        config_lib.from_recipe({"trian": {}})
