"""Load on bin/serve's API: concurrent clients posting real digit images, timing every answer."""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import threading
import time
import urllib.parse

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class Upload:
    body: bytes
    content_type: str
    label: int  # the digit it shows


def digit_uploads(images: np.ndarray, labels: np.ndarray, image_format: str = "PNG", scale: int = 4) -> list[Upload]:
    """MNIST digits uint8 (N, 28, 28, 1) as image files (N uploads): dark ink on white, enlarged `scale` times."""
    uploads = []
    for image, label in zip(images, labels, strict=True):
        buffer = io.BytesIO()
        picture = Image.fromarray(255 - image[:, :, 0]).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
        picture.save(buffer, format=image_format)
        uploads.append(Upload(buffer.getvalue(), f"image/{image_format.lower()}", int(label)))
    return uploads


@dataclasses.dataclass(frozen=True)
class LoadResult:
    clients: int
    seconds: float  # from the first request to the last answer
    latencies: list[float]  # seconds, one per answer
    errors: list[str]  # one per request that failed or answered an error status
    wrong: int  # answers with another digit than the upload's label

    @property
    def requests_per_second(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")


def run_load(url: str, uploads: list[Upload], clients: int, seconds: float) -> LoadResult:
    """Runs `clients` threads, each posting `uploads` in turn (from its own offset) to URL/api/predict over
    one keep-alive connection, until `seconds` have passed; returns what they measured."""
    address = urllib.parse.urlsplit(url)
    lock = threading.Lock()
    latencies, errors, wrong = [], [], [0]
    deadline = time.perf_counter() + seconds

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
        index = offset
        try:
            while time.perf_counter() < deadline:
                upload = uploads[index % len(uploads)]
                index += 1
                sent = time.perf_counter()
                try:
                    connection.request("POST", "/api/predict", upload.body, {"Content-Type": upload.content_type})
                    response = connection.getresponse()
                    answer = json.loads(response.read())
                except (OSError, http.client.HTTPException, ValueError) as error:
                    with lock:
                        errors.append(f"{type(error).__name__}: {error}")
                    connection.close()
                    continue
                took = time.perf_counter() - sent
                with lock:
                    if response.status != 200:
                        errors.append(f"{response.status}: {answer.get('error')}")
                    else:
                        latencies.append(took)
                        wrong[0] += answer["label"] != upload.label
        finally:
            connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i * len(uploads) // clients,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return LoadResult(clients, time.perf_counter() - started, latencies, errors, wrong[0])
