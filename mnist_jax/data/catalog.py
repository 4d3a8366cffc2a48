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
    title: str = ""  # how messages name it: "MNIST", "EMNIST Letters"
    # Where the canonical files are (a directory URL for the four IDX files; EMNIST: the URL of its gzip.zip)
    # and each file's (name, size in bytes, sha256), as tfds's url_checksums/<builder>.txt records them.
    canonical_url: str = ""
    canonical_files: tuple[tuple[str, int, str], ...] = ()
    # The sources `dataset.prepare` offers besides "auto" and "prepared", and those "auto" tries, in order.
    sources: tuple[str, ...] = ("canonical", "files")
    auto_sources: tuple[str, ...] = ("canonical",)
    # sha256 of each decompressed IDX file ("train-images-idx3-ubyte" -> hex), checked whatever its gzip
    # wrapping (Debian's package recompresses Fashion-MNIST's files; see `sources.read_debian`).
    idx_sha256: tuple[tuple[str, str], ...] = ()
    # sha256 of the arrays as `dataset.load` returns them (see `dataset.arrays_sha256`); None: not recorded.
    decoded_sha256: str | None = None
    # MNIST's extra invariants: the first five labels of train and test, and the training pixels' mean and std.
    first_labels: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    pixel_mean_std: tuple[float, float] | None = None

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

    @property
    def noun(self) -> str:
        """What bin/serve's page asks the user to draw: "digit", "letter", "item" or "character"."""
        if self.is_digits:
            return "digit"
        if self.classes == LOWER:
            return "letter"
        return "item" if self.framing == ITEM else "character"

    @property
    def stems(self) -> dict[str, str]:
        """The IDX file (without .gz) of each array: {"train_images": "train-images-idx3-ubyte", ...}."""
        prefix = f"emnist-{self.builder_config}-" if self.builder_name == "emnist" else ""
        test = "test" if self.builder_name == "emnist" else "t10k"
        return {"train_images": f"{prefix}train-images-idx3-ubyte", "train_labels": f"{prefix}train-labels-idx1-ubyte",
                "test_images": f"{prefix}{test}-images-idx3-ubyte", "test_labels": f"{prefix}{test}-labels-idx1-ubyte"}


def _balanced(per_class: int, classes: int) -> tuple[int, ...]:
    return (per_class,) * classes


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
_EMNIST_ZIP = ("gzip.zip", 561_753_746, "fb9bb67e33772a9cc0b895e4ecf36d2cf35be8b709693c3564cea2a019fcda8e")
_EMNIST = dict(version="3.1.0", label_offset=0, framing=CHARACTER, transposed=True,
               homepage="https://www.nist.gov/itl/products-and-services/emnist-dataset",
               canonical_url="https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip", canonical_files=(_EMNIST_ZIP,))


# The sha256 of the decoded arrays (see `dataset.arrays_sha256`), measured here: MNIST from its prepared
# registry copy, Fashion-MNIST from Debian's dataset-fashion-mnist 2020 files. KMNIST and EMNIST have none:
# no source of them is reachable here, so nothing could be measured.
MNIST_DECODED_SHA256 = "1e35582d42a90940c55b956deb61875c020b567ed20e3c5b174f52bf7809ed9b"
FASHION_DECODED_SHA256 = "ece172613115fb18b120bec8f6c02271af90b8b8f0a5af5c51cbd5ceed68e619"
# sha256 of Fashion-MNIST's decompressed IDX files, measured on Debian's package; they are the canonical
# files' content (Debian's .gz differ from the canonical .gz only in gzip header bytes).
FASHION_IDX_SHA256 = (
    ("train-images-idx3-ubyte", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    ("train-labels-idx1-ubyte", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    ("t10k-images-idx3-ubyte", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    ("t10k-labels-idx1-ubyte", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec(mnist.NAME, mnist.VERSION, mnist.CLASSES, mnist.NUM_CLASSES, 0, mnist.TRAIN_IMAGES,
                mnist.TEST_IMAGES, INK, train_class_counts=mnist.TRAIN_CLASS_COUNTS,
                test_class_counts=mnist.TEST_CLASS_COUNTS, description="The MNIST database of handwritten digits.",
                homepage="http://yann.lecun.com/exdb/mnist/", title="MNIST",
                canonical_url="https://storage.googleapis.com/cvdf-datasets/mnist/",
                canonical_files=(
                    ("train-images-idx3-ubyte.gz", 9912422,
                     "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
                    ("train-labels-idx1-ubyte.gz", 28881,
                     "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
                    ("t10k-images-idx3-ubyte.gz", 1648877,
                     "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
                    ("t10k-labels-idx1-ubyte.gz", 4542,
                     "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6")),
                sources=("canonical", "registry", "files"), auto_sources=("canonical", "registry"),
                decoded_sha256=MNIST_DECODED_SHA256,
                first_labels=(mnist.TRAIN_FIRST_LABELS, mnist.TEST_FIRST_LABELS),
                pixel_mean_std=(mnist.PIXEL_MEAN, mnist.PIXEL_STD)),
    DatasetSpec("fashion_mnist", "3.0.1", FASHION_CLASSES, 10, 0, 60_000, 10_000, ITEM,
                train_class_counts=_balanced(6000, 10), test_class_counts=_balanced(1000, 10),
                declared_names=FASHION_CLASSES,
                description="Zalando's article images, 28x28 grey, 10 classes.",
                homepage="https://github.com/zalandoresearch/fashion-mnist", title="Fashion-MNIST",
                canonical_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                canonical_files=(
                    ("train-images-idx3-ubyte.gz", 26421880,
                     "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
                    ("train-labels-idx1-ubyte.gz", 29515,
                     "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
                    ("t10k-images-idx3-ubyte.gz", 4422102,
                     "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
                    ("t10k-labels-idx1-ubyte.gz", 5148,
                     "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5")),
                sources=("canonical", "debian", "files"), auto_sources=("canonical", "debian"),
                idx_sha256=FASHION_IDX_SHA256, decoded_sha256=FASHION_DECODED_SHA256),
    DatasetSpec("kmnist", "3.0.1", KMNIST_CLASSES, 10, 0, 60_000, 10_000, INK,
                train_class_counts=_balanced(6000, 10), test_class_counts=_balanced(1000, 10),
                declared_names=KMNIST_CLASSES,
                description="Kuzushiji-MNIST: one cursive Hiragana per row, 10 classes.",
                homepage="http://codh.rois.ac.jp/kmnist/index.html.en", title="KMNIST",
                canonical_url="http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
                canonical_files=(
                    ("train-images-idx3-ubyte.gz", 18165135,
                     "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4"),
                    ("train-labels-idx1-ubyte.gz", 29497,
                     "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17"),
                    ("t10k-images-idx3-ubyte.gz", 3041136,
                     "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5"),
                    ("t10k-labels-idx1-ubyte.gz", 5120,
                     "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"))),
    DatasetSpec("emnist/byclass", classes=DIGITS + UPPER + LOWER, declared_classes=62, train_images=697_932,
                test_images=116_323, description="EMNIST ByClass: digits and both cases of letters.",
                title="EMNIST ByClass", **_EMNIST),
    DatasetSpec("emnist/bymerge", classes=DIGITS + UPPER + MERGED_LOWER, declared_classes=47, train_images=697_932,
                test_images=116_323, description="EMNIST ByMerge: look-alike cases merged.",
                title="EMNIST ByMerge", **_EMNIST),
    DatasetSpec("emnist/balanced", classes=DIGITS + UPPER + MERGED_LOWER, declared_classes=47,
                train_images=112_800, test_images=18_800, train_class_counts=_balanced(2400, 47),
                test_class_counts=_balanced(400, 47), description="EMNIST Balanced: 47 classes.",
                title="EMNIST Balanced", **_EMNIST),
    # Labels 1-26 under 37 declared classes: the head has 26 outputs, label - 1 (a = 0).
    DatasetSpec("emnist/letters", classes=LOWER, declared_classes=37, train_images=88_800, test_images=14_800,
                description="EMNIST Letters: a-z, the two cases merged.",
                title="EMNIST Letters", **{**_EMNIST, "label_offset": 1}),
    DatasetSpec("emnist/digits", classes=DIGITS, declared_classes=10, train_images=240_000, test_images=40_000,
                description="EMNIST Digits.",
                title="EMNIST Digits", **_EMNIST),
    DatasetSpec("emnist/mnist", classes=DIGITS, declared_classes=10, train_images=60_000, test_images=10_000,
                description="EMNIST MNIST: MNIST's size, from NIST's forms.",
                title="EMNIST MNIST", **_EMNIST),
)}


MNIST = DATASETS[mnist.NAME]
FASHION_MNIST = DATASETS["fashion_mnist"]


def get(name: str) -> DatasetSpec:
    """Returns the spec of data set `name` ("mnist", "fashion_mnist", "emnist/letters", ...).

    Raises ConfigError naming the known ones.
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown data set {name!r}; data.name takes one of: {', '.join(DATASETS)}") from None
