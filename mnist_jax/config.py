"""Frozen, JSON-serialisable run configuration and its named presets.

A `Config` has four sections: `data`, `model`, `train` and `augment`. Every field can be overridden
from the command line as `--section.field VALUE` (tuples as comma-separated lists), and a
config round-trips through `to_dict` / `from_dict` (that is how it is stored beside each
checkpoint).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from mnist_jax.data import catalog
from mnist_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DataConfig:
    name: str = "mnist"  # the tfds data set: mnist | fashion_mnist | kmnist | emnist/<config> (data/catalog.py)
    validation_size: int = 5000  # held out from the end of the training images
    train_size: int | None = None  # use only the first N remaining images (None: all)

    @property
    def spec(self) -> catalog.DatasetSpec:
        """The data set's classes, sizes and tfds directory."""
        return catalog.get(self.name)

    @property
    def train_images(self) -> int:
        """The number of images the train split holds."""
        available = self.spec.train_images - self.validation_size
        return available if self.train_size is None else min(available, self.train_size)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "cnn"  # cnn | resnet
    conv_features: tuple[int, ...] = (32, 64)  # one conv layer per entry
    kernel_sizes: tuple[int, ...] = (5, 3)  # square kernel per conv layer
    strides: tuple[int, ...] = ()  # stride per conv layer; empty: 1 for every layer
    pool: str = "avg"  # 2x2 pooling after each conv: avg | max | none
    dense_features: tuple[int, ...] = (256,)  # hidden dense layers before the logits
    dropout: float = 0.25  # cnn: after each hidden dense layer; resnet: before the logits
    norm: str = "none"  # cnn: normalisation after each conv: none | batch (BatchNorm; resnet always has it)
    # BatchNorm's training statistics per group of this many images of a batch (0: the whole batch); groups that
    # fit in one CPU device's share are normalised without a collective (docs/speed.md)
    norm_group: int = 0
    dtype: str = "float32"  # cnn: compute dtype (float32 | bfloat16); parameters stay float32
    stage_features: tuple[int, ...] = (32, 64)  # resnet: channels per stage; each later stage halves the resolution
    blocks_per_stage: int = 2  # resnet: residual blocks per stage


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8
    batch_size: int = 64
    optimizer: str = "adamw"  # adamw | sgd (with Nesterov momentum)
    learning_rate: float = 3e-3  # peak learning rate
    schedule: str = "onecycle"  # onecycle | cosine | constant
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    seed: int = 0
    eval_batch_size: int = 1000
    keep_checkpoints: int = 2  # latest N kept, besides the best by validation accuracy
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch (0: at epoch ends only)
    loop: str = "auto"  # host: Python loop of jitted steps | device: scan over chunks | auto: by backend
    chunk_steps: int = 100  # device loop: steps per compiled call
    # On a CPU backend, data parallelism over this many CPU devices, each batch split between them
    # (0: auto, one per core this process may use, as far as the batch sizes split evenly; see parallel.py)
    cpu_devices: int = 0
    ema: float = 0.0  # decay of an exponential moving average of the params, used to evaluate and predict (0: off)
    label_smoothing: float = 0.0  # weight of the uniform distribution mixed into the one-hot targets (0: off)
    teachers: tuple[str, ...] = ()  # run directories whose mean softmax on the train split the targets mix in
    distillation: float = 0.0  # weight of the teachers' probabilities in the targets (0: off; needs teachers)
    # clean: the teachers label the clean train split once (kept in teachers.npy) | augmented: they label
    # each augmented batch inside the step, as the student sees it (their forward passes in every step)
    teacher_views: str = "clean"


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Strengths of the random training-time transforms (see `augment.py`); 0 turns one off."""

    rotation: float = 0.0  # degrees: angle uniform in [-rotation, rotation]
    scale: float = 0.0  # relative: zoom factor uniform in [1 - scale, 1 + scale]
    shear: float = 0.0  # degrees: horizontal shear angle uniform in [-shear, shear]
    translation: float = 0.0  # pixels: shift uniform in [-translation, translation] on each axis
    elastic_alpha: float = 0.0  # pixels: scale of the smoothed random displacement field (Simard: 34)
    elastic_sigma: float = 4.0  # pixels: std of the Gaussian that smooths that field (Simard: 4)
    # The input's quality, as users' files lose it (after the geometric transforms):
    coarse: float = 0.0  # probability of shrinking the image to 8-20 px a side and enlarging it back
    blur: float = 0.0  # pixels: std of a Gaussian blur uniform in [0, blur]
    stroke: float = 0.0  # probability of a 3x3 grey dilation: a pen 2 px wider

    @property
    def moves(self) -> bool:
        """Whether any geometric transform (affine or elastic) has a non-zero strength."""
        return any((self.rotation, self.scale, self.shear, self.translation, self.elastic_alpha))

    @property
    def enabled(self) -> bool:
        """Whether any transform has a non-zero strength."""
        return self.moves or any((self.coarse, self.blur, self.stroke))


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()

    def replace(self, **sections: dict[str, Any]) -> Config:
        """Returns a copy with fields replaced, e.g. `replace(train={"epochs": 2})`."""
        return dataclasses.replace(
            self,
            **{name: dataclasses.replace(getattr(self, name), **fields) for name, fields in sections.items()},
        )


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "augment": AugmentConfig}

_ACCURATE = Config(
    train=TrainConfig(epochs=20, ema=0.999, label_smoothing=0.1),
    augment=AugmentConfig(rotation=10.0, scale=0.1, shear=8.0, translation=2.0),
)

PRESETS: dict[str, Config] = {
    # The main job: >= 99.4% test accuracy in about two minutes on 2 CPU cores, trained on some coarse,
    # blurred and thick-pen digits too so that low-resolution scans read well (bin/eval-inputs). Five
    # epochs with label smoothing (32 images per CPU device on 2 cores): validation 99.42 / 99.48 / 99.46%,
    # test 99.53 / 99.42 / 99.50% for seeds 0 / 1 / 2 (docs/speed.md#the-default-preset-side-by-side).
    "default": Config(train=TrainConfig(epochs=5, label_smoothing=0.1),
                      augment=AugmentConfig(coarse=0.2, blur=0.5, stroke=0.2)),
    # >= 99.0% test after one epoch, in a whole `bin/train --preset fast` process of under 10 s on 2 CPU
    # cores: three stride-2 convs (28 -> 14 -> 7 -> 4, no pooling: a quarter of conv+pool's cost on XLA:CPU)
    # with BatchNorm, and a one-cycle Adam at a high peak rate with label smoothing. Chosen on validation
    # (mean of seeds 0-4: 99.11%, against 99.09% at rate 1e-2). BatchNorm's statistics per group of 32 images
    # (validation 99.11% again, 99.10% with groups of 64) let up to 4 CPU devices each run their share alone,
    # with one all-reduce per step; test 99.12 / 99.09 / 99.04% for seeds 0 / 1 / 2 (docs/speed.md).
    "fast": Config(
        model=ModelConfig(conv_features=(24, 32, 64), kernel_sizes=(5, 3, 3), strides=(2, 2, 2), pool="none",
                          dense_features=(128,), dropout=0.0, norm="batch", norm_group=32),
        train=TrainConfig(epochs=1, batch_size=128, learning_rate=2e-2, label_smoothing=0.1),
    ),
    # A smoke test of the whole pipeline in seconds; accuracy around 97% on the full data.
    "tiny": Config(
        model=ModelConfig(conv_features=(8, 16), kernel_sizes=(3, 3), dense_features=(64,), dropout=0.0),
        train=TrainConfig(epochs=1, batch_size=128, learning_rate=5e-3),
    ),
    # Target >= 99.6% within 30 minutes on 2 CPU cores: the default CNN, trained longer on
    # randomly distorted digits, evaluated with the EMA of its weights. Test 99.64 / 99.56 / 99.71%
    # for seeds 0 / 1 / 2.
    "accurate": _ACCURATE,
    # Target >= 99.7%, single model, not met: 99.62% (seed 0). Of the variants of `accurate` tried
    # (see the README), training it twice as long scored highest on validation.
    "best": _ACCURATE.replace(train={"epochs": 40}),
}

_CHOICES = {
    ("model", "name"): ("cnn", "resnet"),
    ("model", "pool"): ("avg", "max", "none"),
    ("model", "norm"): ("none", "batch"),
    ("model", "dtype"): ("float32", "bfloat16"),
    ("train", "optimizer"): ("adamw", "sgd"),
    ("train", "schedule"): ("onecycle", "cosine", "constant"),
    ("train", "loop"): ("auto", "host", "device"),
    ("train", "teacher_views"): ("clean", "augmented"),
}


def get_preset(name: str) -> Config:
    """Returns the preset called `name`, or raises ConfigError listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """Returns the config as plain JSON types (tuples become lists)."""
    return dataclasses.asdict(config)


def from_dict(values: dict[str, Any], base: Config = Config()) -> Config:
    """Builds a validated Config from `values`, filling missing fields from `base`.

    Raises ConfigError naming any unknown section or field, or a value of the wrong type.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"a config must be a JSON object with sections {', '.join(_SECTIONS)}")
    sections = {}
    for section, fields in values.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown config section {section!r}; known: {', '.join(_SECTIONS)}")
        if not isinstance(fields, dict):
            raise ConfigError(f"config section {section!r} must be an object of fields")
        sections[section] = {name: _coerce(section, name, value) for name, value in fields.items()}
    config = base.replace(**sections)
    validate(config)
    return config


RECIPE_KEYS = ("preset", "measured")  # a recipe file's keys besides the config sections


def from_recipe(values: dict[str, Any], preset: str | None = None) -> Config:
    """Builds the Config a recipe file describes: {"preset": NAME, "measured": {...}, SECTION: {...}, ...}.

    The sections override the recipe's preset (or `preset` when given, else "default"); "measured"
    records the result and machine of the recipe and does not change the config. Raises
    ConfigError as `from_dict` does.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"a config file must be a JSON object with sections {', '.join(_SECTIONS)}")
    sections = {name: fields for name, fields in values.items() if name not in RECIPE_KEYS}
    base = get_preset(preset or values.get("preset") or "default")
    return from_dict(sections, base=base)


def override(config: Config, assignments: dict[str, str]) -> Config:
    """Applies command-line strings such as {"train.epochs": "3", "model.conv_features": "16,32"}."""
    values: dict[str, dict[str, Any]] = {}
    for key, text in assignments.items():
        section, _, name = key.partition(".")
        values.setdefault(section, {})[name] = _parse_text(section, name, text)
    return from_dict(values, base=config)


def differences(old: Config, new: Config) -> list[str]:
    """Returns "section.field: old -> new" for every field where the two configs differ."""
    old_values, new_values = to_dict(old), to_dict(new)
    return [
        f"{section}.{name}: {_show(old_values[section][name])} -> {_show(new_values[section][name])}"
        for section in old_values
        for name in old_values[section]
        if old_values[section][name] != new_values[section][name]
    ]


def field_names() -> list[str]:
    """Returns every overridable field as "section.field"."""
    return [f"{section}.{f.name}" for section, cls in _SECTIONS.items() for f in dataclasses.fields(cls)]


def validate(config: Config) -> None:
    """Raises ConfigError naming the first field outside its allowed range."""
    d, m, t, a = config.data, config.model, config.train, config.augment
    catalog.get(d.name)  # the checks below read its sizes
    checks = [
        ("data.validation_size", 0 < d.validation_size < d.spec.train_images // 2,
         f"between 1 and {d.spec.train_images // 2 - 1} (smaller than what is left for training)"),
        ("data.train_size", d.train_size is None or d.train_size >= 1, "a positive integer or none"),
        ("model.conv_features", len(m.conv_features) >= 1 and min(m.conv_features) >= 1, "at least one positive width"),
        ("model.kernel_sizes", len(m.kernel_sizes) == len(m.conv_features), "one size per conv layer"),
        ("model.kernel_sizes", min(m.kernel_sizes, default=1) >= 1, "positive sizes"),
        ("model.strides", len(m.strides) in (0, len(m.conv_features)), "one stride per conv layer, or empty"),
        ("model.strides", min(m.strides, default=1) >= 1, "positive strides"),
        ("model.dense_features", all(n >= 1 for n in m.dense_features), "positive widths"),
        ("model.dropout", 0.0 <= m.dropout < 1.0, "in [0, 1)"),
        ("model.stage_features", len(m.stage_features) >= 1 and min(m.stage_features) >= 1,
         "at least one positive width"),
        ("model.blocks_per_stage", m.blocks_per_stage >= 1, "at least 1"),
        ("model.norm_group", m.norm_group >= 0 and (m.norm_group == 0 or t.batch_size % m.norm_group == 0),
         f"0 (the whole batch) or a divisor of train.batch_size={t.batch_size}"),
        ("train.epochs", t.epochs >= 1, "at least 1"),
        ("train.batch_size", 1 <= t.batch_size <= d.train_images,
         f"between 1 and the {d.train_images} training images"),
        ("train.learning_rate", 0 < t.learning_rate < math.inf, "a finite number greater than 0"),
        ("train.weight_decay", 0 <= t.weight_decay < math.inf, "a finite number, at least 0"),
        ("train.momentum", 0 <= t.momentum < 1, "in [0, 1)"),
        ("train.eval_batch_size", t.eval_batch_size >= 1, "at least 1"),
        ("train.keep_checkpoints", t.keep_checkpoints >= 1, "at least 1"),
        ("train.checkpoint_every", t.checkpoint_every >= 0, "0 (epoch ends only) or a number of steps"),
        ("train.chunk_steps", t.chunk_steps >= 1, "at least 1"),
        ("train.cpu_devices", t.cpu_devices >= 0, "0 (one per core) or a number of CPU devices"),
        ("train.ema", 0 <= t.ema < 1, "in [0, 1) (0: off)"),
        ("train.label_smoothing", 0 <= t.label_smoothing < 1, "in [0, 1) (0: off)"),
        ("train.distillation", 0 <= t.distillation <= 1, "in [0, 1] (0: off)"),
        ("train.distillation", bool(t.distillation) == bool(t.teachers),
         "above 0 exactly when train.teachers names runs (give both, or neither)"),
        ("train.teacher_views", t.teacher_views != "augmented" or bool(t.distillation),
         "clean unless train.distillation is above 0 (there are no teachers to label the views)"),
        ("augment.rotation", 0 <= a.rotation <= 180, "degrees in [0, 180]"),
        ("augment.scale", 0 <= a.scale < 1, "in [0, 1)"),
        ("augment.shear", 0 <= a.shear <= 45, "degrees in [0, 45]"),
        ("augment.translation", 0 <= a.translation <= 14, "pixels in [0, 14]"),
        ("augment.elastic_alpha", a.elastic_alpha >= 0, "at least 0"),
        ("augment.elastic_sigma", 0 < a.elastic_sigma <= 10, "pixels in (0, 10]"),
        ("augment.coarse", 0 <= a.coarse <= 1, "a probability in [0, 1]"),
        ("augment.blur", 0 <= a.blur <= 5, "pixels in [0, 5]"),
        ("augment.stroke", 0 <= a.stroke <= 1, "a probability in [0, 1]"),
    ]
    checks += [
        (f"{section}.{name}", getattr(getattr(config, section), name) in allowed, "one of " + ", ".join(allowed))
        for (section, name), allowed in _CHOICES.items()
    ]
    for name, ok, allowed in checks:
        if not ok:
            section, _, field = name.partition(".")
            value = getattr(getattr(config, section), field)
            raise ConfigError(f"invalid {name}={_show(value)}: must be {allowed}")


def _field_type(section: str, name: str) -> Any:
    if section not in _SECTIONS:
        raise ConfigError(f"unknown config section {section!r}; known: {', '.join(_SECTIONS)}")
    hints = typing.get_type_hints(_SECTIONS[section])
    if name not in hints:
        known = ", ".join(f"{section}.{field}" for field in hints)
        raise ConfigError(f"unknown config field {section}.{name}; known fields: {known}")
    return hints[name]


def _parse_text(section: str, name: str, text: str) -> Any:
    """Parses a command-line string into the JSON-like value `_coerce` expects."""
    kind = _field_type(section, name)
    if text.strip().lower() == "none" and type(None) in typing.get_args(kind):
        return None
    if typing.get_origin(kind) is tuple:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _coerce(section: str, name: str, value: Any) -> Any:
    """Converts `value` to the declared type of `section.name`, or raises ConfigError."""
    kind = _field_type(section, name)
    args = typing.get_args(kind)
    if value is None and type(None) in args:
        return None
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(a for a in args if a is not type(None))
    try:
        if typing.get_origin(kind) is tuple:
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise ValueError
            return tuple(_scalar(args[0], v) for v in value)
        return _scalar(kind, value)
    except (TypeError, ValueError):
        expected = {int: "an integer", float: "a number", str: "a string"}.get(
            kind, f"a list of {'paths' if args and args[0] is str else 'integers'}")
        raise ConfigError(f"invalid {section}.{name}={_show(value)}: must be {expected}") from None


def _scalar(kind: type, value: Any) -> Any:
    if isinstance(value, bool):
        raise TypeError
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    if kind is float:
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise TypeError
        return value
    raise TypeError(kind)


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
