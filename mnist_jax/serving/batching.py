"""Concurrent requests' digits, predicted together in fixed-shape batches through a bounded queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mnist_jax.errors import Busy

# predict(images uint8 (N, 28, 28, 1), batch_size) -> probabilities (N, classes), computed in padded
# batches of exactly `batch_size` rows (as `inference.predict.predict` does), so each size compiles once.
PredictFn = Callable[[np.ndarray, int], np.ndarray]
BATCH_SIZES = (1, 8, 32)


def batch_size_for(rows: int, batch_sizes: tuple[int, ...] = BATCH_SIZES) -> int:
    """The smallest of `batch_sizes` (ascending) that holds `rows`, else the largest (used repeatedly)."""
    return next((size for size in batch_sizes if size >= rows), batch_sizes[-1])


class PredictQueue:
    """Admits at most `capacity` requests at once; the digits of those waiting when the model is free
    are predicted in one call, padded to one of `batch_sizes`, in a single worker thread.

    Use from one event loop: `with queue.admit():` (raises Busy when full) around a request's whole
    handling, and `await queue.predict(images)` inside it.
    """

    def __init__(self, predict: PredictFn, batch_sizes: tuple[int, ...] = BATCH_SIZES, capacity: int = 64):
        self._predict, self.batch_sizes, self.capacity = predict, tuple(sorted(batch_sizes)), capacity
        self._admitted = 0
        self._waiting: list[tuple[np.ndarray, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")

    def warm_up(self, image_shape: tuple[int, ...] = (28, 28, 1)) -> None:
        """Compiles every batch size now (blocking), so that no request waits for a compile."""
        for size in self.batch_sizes:
            self._predict(np.zeros((size, *image_shape), np.uint8), size)

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        if self._admitted >= self.capacity:
            raise Busy(f"the server is busy ({self.capacity} requests in progress); retry shortly")
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """Returns the probabilities (N, classes) of uint8 images (N, 28, 28, 1), batched with other requests'."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((images, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            taken, self._waiting = self._waiting, []
            images = np.concatenate([images for images, _ in taken])
            try:
                probabilities = await loop.run_in_executor(self._executor, self._predict, images,
                                                           batch_size_for(len(images), self.batch_sizes))
            except Exception as error:  # noqa: BLE001 - each waiting request receives it
                for _, future in taken:
                    if not future.done():
                        future.set_exception(error)
                continue
            start = 0
            for images, future in taken:
                if not future.done():  # a client that went away cancelled its future
                    future.set_result(probabilities[start : start + len(images)])
                start += len(images)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
