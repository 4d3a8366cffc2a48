"""The tfds builder that writes MNIST arrays in tfds's own `mnist:3.0.1` layout, without TensorFlow.

Its own module because importing tensorflow_datasets costs half a second that a training
run reading the decoded cache does not need (see `dataset.load`).
"""

from __future__ import annotations

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from mnist_jax.data import mnist
from mnist_jax.data.sources import MnistArrays


class MnistBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes arrays in tfds's `mnist:3.0.1` layout; records keep the source order."""

    name = mnist.NAME
    VERSION = tfds.core.Version(mnist.VERSION)

    def __init__(self, *, arrays: MnistArrays | None = None, **kwargs):
        self._arrays = arrays
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="The MNIST database of handwritten digits.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=mnist.IMAGE_SHAPE),
                "label": tfds.features.ClassLabel(num_classes=mnist.NUM_CLASSES),
            }),
            supervised_keys=("image", "label"),
            homepage="http://yann.lecun.com/exdb/mnist/",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        a = self._arrays
        return {
            "train": self._generate_examples(a.train_images, a.train_labels),
            "test": self._generate_examples(a.test_images, a.test_labels),
        }

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            png = io.BytesIO()
            Image.fromarray(image[:, :, 0]).save(png, format="PNG")  # PNG bytes: no TensorFlow needed
            yield index, {"image": png.getvalue(), "label": int(label)}
