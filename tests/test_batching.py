"""The serving queue on its own: admission up to its capacity, batches of fixed sizes, answers per request."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from mnist_jax.errors import Busy
from mnist_jax.serving.batching import PredictQueue, batch_size_for


def test_a_batch_takes_the_smallest_fixed_size_that_holds_it():
    assert [batch_size_for(n, (1, 8, 32)) for n in (1, 2, 8, 9, 32, 33, 100)] == [1, 8, 8, 32, 32, 32, 32]


def test_requests_waiting_together_are_predicted_in_one_call_and_each_gets_its_own_rows():
    calls, release = [], threading.Event()

    def predict(images: np.ndarray, batch_size: int) -> np.ndarray:
        calls.append((len(images), batch_size))
        if len(calls) == 1:
            release.wait(10)  # the first call holds the model while five more requests arrive
        return np.repeat(images[:, 0, 0, :].astype(np.float32), 10, axis=1)  # each row's own marker

    async def main():
        queue = PredictQueue(predict, (1, 8, 32), capacity=8)
        marked = [np.full((rows, 28, 28, 1), marker, np.uint8) for marker, rows in enumerate([1, 1, 2, 1, 3, 1])]
        first = asyncio.create_task(queue.predict(marked[0]))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(queue.predict(images)) for images in marked[1:]]
        await asyncio.sleep(0.05)
        release.set()
        answers = await asyncio.gather(first, *rest)
        queue.close()
        return marked, answers

    marked, answers = asyncio.run(main())
    assert calls == [(1, 1), (8, 8)]  # the five waiting requests' 8 rows: one call, the 8-row shape
    for images, answer in zip(marked, answers, strict=True):
        assert answer.shape == (len(images), 10) and (answer == images[0, 0, 0, 0]).all()


def test_a_full_queue_refuses_more_requests_until_one_finishes():
    queue = PredictQueue(lambda images, size: images, capacity=2)
    with queue.admit(), queue.admit(), pytest.raises(Busy, match=r"busy \(2 requests in progress\)"), queue.admit():
        pass
    with queue.admit():  # the two have finished: room again
        pass
    queue.close()


def test_an_error_in_the_model_reaches_every_waiting_request():
    def predict(images, batch_size):
        raise ValueError("broken model")

    async def main():
        queue = PredictQueue(predict)
        results = await asyncio.gather(*(queue.predict(np.zeros((1, 28, 28, 1), np.uint8)) for _ in range(3)),
                                       return_exceptions=True)
        queue.close()
        return results

    assert [str(result) for result in asyncio.run(main())] == ["broken model"] * 3
