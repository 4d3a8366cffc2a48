"""The tfds builders that write a data set's arrays in tfds's own layout, without TensorFlow.

One class per data set (`builder_class(spec)`), each the twin of tfds's stock builder of that name:
the same directory (`<data_dir>/<name>[/<config>]/<version>`), the same features (`image`
Image(28, 28, 1), `label` ClassLabel of the declared classes or names), the same supervised keys, so
that `tfds.data_source(name, data_dir=...)` and `tfds.builder(name, ...)` read what it wrote. Records
are stored as tfds stores them (EMNIST transposed, labels as its files number them) and in the source
order (`disable_shuffling`). Images are written as PNG bytes, which the Image feature takes as they are:
no TensorFlow is needed.

Its own module because importing tensorflow_datasets costs half a second that a training
run reading the decoded cache does not need (see `dataset.load`).
"""

from __future__ import annotations

import functools
import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from mnist_jax.data import catalog, mnist
from mnist_jax.data.catalog import DatasetSpec
from mnist_jax.data.sources import DataArrays


class DatasetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes one data set's stored arrays in tfds's layout; subclassed per spec by `builder_class`."""

    SPEC: DatasetSpec = catalog.MNIST
    name = mnist.NAME
    VERSION = tfds.core.Version(mnist.VERSION)

    def __init__(self, *, arrays: DataArrays | None = None, **kwargs):
        self._arrays = arrays
        if self.SPEC.builder_config is not None:
            kwargs.setdefault("config", self.SPEC.builder_config)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        spec = self.SPEC
        label = tfds.features.ClassLabel(names=list(spec.declared_names)) if spec.declared_names else \
            tfds.features.ClassLabel(num_classes=spec.declared_classes)
        return tfds.core.DatasetInfo(
            builder=self,
            description=spec.description,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=mnist.IMAGE_SHAPE),
                "label": label,
            }),
            supervised_keys=("image", "label"),
            homepage=spec.homepage,
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
            Image.fromarray(image[:, :, 0]).save(png, format="PNG", compress_level=1)  # PNG bytes: no TensorFlow
            yield index, {"image": png.getvalue(), "label": int(label)}


@functools.cache
def builder_class(spec: DatasetSpec) -> type[DatasetBuilder]:
    """The builder of `spec`'s tfds directory: named and versioned as tfds's stock builder, with its one config."""
    attributes = {"SPEC": spec, "name": spec.builder_name, "VERSION": tfds.core.Version(spec.version),
                  "__module__": __name__}
    if spec.builder_config is not None:
        attributes["BUILDER_CONFIGS"] = [tfds.core.BuilderConfig(name=spec.builder_config,
                                                                 description=spec.description)]
    class_name = "".join(part.capitalize() for part in spec.name.replace("/", "_").split("_")) + "Builder"
    return type(class_name, (DatasetBuilder,), attributes, skip_registration=True)


MnistBuilder = builder_class(catalog.MNIST)
