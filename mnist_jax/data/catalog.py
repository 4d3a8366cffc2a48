"""The 28x28 data sets a run can train on, named as in tfds (`--data.name`), and what the code downstream
of the data needs from each: its classes, sizes, tfds directory and how users' images are framed.

JAX-free and cheap to import: predicting on a checkpoint or an ONNX file looks its classes up here.
"""

from __future__ import annotations

import dataclasses
import string

from mnist_jax.data import mnist
from mnist_jax.errors import ConfigError

DIGITS = tuple(string.digits)
UPPER = tuple(string.ascii_uppercase)
LOWER = tuple(string.ascii_lowercase)
# EMNIST's merged classes keep the lowercase letters that do not look like their capitals (its mapping files).
MERGED_LOWER = tuple("abdefghnqrt")

# How a user's image is brought to a data set's form (see `inference.preprocess.Framing`):
INK = "ink"  # strokes in a 20x20 box, centred by mass in 28x28: MNIST's normalisation
CHARACTER = "character"  # strokes centred in a square frame with a 2-px border, as EMNIST's paper does
ITEM = "item"  # a filled object whose longer side fills the 28x28 frame, centred: Fashion-MNIST's


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One data set as tfds declares it, and the classes the model's head predicts."""

    name: str  # as `--data.name` and tfds spell it: "mnist", "emnist/letters"
    version: str  # of the tfds builder whose directory layout the project writes
    classes: tuple[str, ...]  # head output i's name
    declared_classes: int  # num_classes of the tfds ClassLabel (EMNIST letters: 37, of which 1-26 used)
    label_offset: int  # stored label - label_offset = head label (EMNIST letters: 1)
    train_images: int
    test_images: int
    framing: str  # INK, CHARACTER or ITEM
    transposed: bool = False  # stored transposed (EMNIST, as tfds serves it): turned upright on loading
    # per-class counts of the train and test splits where they are published (None: not checked)
    train_class_counts: tuple[int, ...] | None = None
    test_class_counts: tuple[int, ...] | None = None
    declared_names: tuple[str, ...] | None = None  # the tfds ClassLabel's own names, where tfds gives them
    description: str = ""
    homepage: str = ""

    @property
    def num_classes(self) -> int:
        """The number of outputs of the model's head."""
        return len(self.classes)

    @property
    def builder_name(self) -> str:
        """tfds's builder name: "emnist" for "emnist/letters"."""
        return self.name.partition("/")[0]

    @property
    def builder_config(self) -> str | None:
        """tfds's builder config: "letters" for "emnist/letters", None for a set without configs."""
        return self.name.partition("/")[2] or None

    @property
    def relative_dir(self) -> str:
        """Where tfds keeps it under a data directory: "mnist/3.0.1", "emnist/letters/3.1.0"."""
        return f"{self.name}/{self.version}"

    @property
    def is_digits(self) -> bool:
        """Whether the classes are the ten digits in order (bin/predict's words then say "digit")."""
        return self.classes == DIGITS


def _balanced(per_class: int, classes: int) -> tuple[int, ...]:
    return (per_class,) * classes


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
_EMNIST = dict(version="3.1.0", label_offset=0, framing=CHARACTER, transposed=True,
               homepage="https://www.nist.gov/itl/products-and-services/emnist-dataset")

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec(mnist.NAME, mnist.VERSION, mnist.CLASSES, mnist.NUM_CLASSES, 0, mnist.TRAIN_IMAGES,
                mnist.TEST_IMAGES, INK, train_class_counts=mnist.TRAIN_CLASS_COUNTS,
                test_class_counts=mnist.TEST_CLASS_COUNTS, description="The MNIST database of handwritten digits.",
                homepage="http://yann.lecun.com/exdb/mnist/"),
    DatasetSpec("fashion_mnist", "3.0.1", FASHION_CLASSES, 10, 0, 60_000, 10_000, ITEM,
                train_class_counts=_balanced(6000, 10), test_class_counts=_balanced(1000, 10),
                declared_names=FASHION_CLASSES, description="Zalando's article images, 28x28 grey, 10 classes.",
                homepage="https://github.com/zalandoresearch/fashion-mnist"),
    DatasetSpec("kmnist", "3.0.1", KMNIST_CLASSES, 10, 0, 60_000, 10_000, INK,
                train_class_counts=_balanced(6000, 10), test_class_counts=_balanced(1000, 10),
                declared_names=KMNIST_CLASSES, description="Kuzushiji-MNIST: one cursive Hiragana per row, 10 classes.",
                homepage="http://codh.rois.ac.jp/kmnist/index.html.en"),
    DatasetSpec("emnist/byclass", classes=DIGITS + UPPER + LOWER, declared_classes=62, train_images=697_932,
                test_images=116_323, description="EMNIST ByClass: digits and both cases of letters.", **_EMNIST),
    DatasetSpec("emnist/bymerge", classes=DIGITS + UPPER + MERGED_LOWER, declared_classes=47, train_images=697_932,
                test_images=116_323, description="EMNIST ByMerge: look-alike cases merged.", **_EMNIST),
    DatasetSpec("emnist/balanced", classes=DIGITS + UPPER + MERGED_LOWER, declared_classes=47,
                train_images=112_800, test_images=18_800, train_class_counts=_balanced(2400, 47),
                test_class_counts=_balanced(400, 47), description="EMNIST Balanced: 47 classes.", **_EMNIST),
    # Labels 1-26 under 37 declared classes: the head has 26 outputs, label - 1 (a = 0).
    DatasetSpec("emnist/letters", classes=LOWER, declared_classes=37, train_images=88_800, test_images=14_800,
                description="EMNIST Letters: a-z, the two cases merged.",
                **{**_EMNIST, "label_offset": 1}),
    DatasetSpec("emnist/digits", classes=DIGITS, declared_classes=10, train_images=240_000, test_images=40_000,
                description="EMNIST Digits.", **_EMNIST),
    DatasetSpec("emnist/mnist", classes=DIGITS, declared_classes=10, train_images=60_000, test_images=10_000,
                description="EMNIST MNIST: MNIST's size, from NIST's forms.", **_EMNIST),
)}


MNIST = DATASETS[mnist.NAME]


def get(name: str) -> DatasetSpec:
    """Returns the spec of data set `name` ("mnist", "fashion_mnist", "emnist/letters", ...).

    Raises ConfigError naming the known ones.
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown data set {name!r}; data.name takes one of: {', '.join(DATASETS)}") from None
