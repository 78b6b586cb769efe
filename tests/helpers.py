"""Small helpers shared by the tests: NIfTI files, free ports, waiting."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import nibabel as nib
import numpy as np

T = TypeVar("T")

AFFINE = np.array(
    [[-4.0, 0, 0, 90], [0, 4.0, 0, -126], [0, 0, 4.0, -72], [0, 0, 0, 1]], dtype=float
)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE, **header: str) -> Path:
    img = nib.Nifti1Image(np.asarray(data), affine)
    for key, value in header.items():
        img.header[key] = value
    nib.save(img, path)
    return path


def brain_volume(shape=(16, 20, 16), *, seed: int = 0, lesion: bool = False):
    """A bright ellipsoid 'brain' with noise; with a lesion, a darker blob and its mask."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    image = brain * 100.0 + rng.normal(0, 5, shape)
    mask = np.zeros(shape, np.uint8)
    if lesion:
        centre = np.array(shape) // 2 + rng.integers(-2, 3, 3)
        idx = np.indices(shape)
        blob = ((idx - centre[:, None, None, None]) ** 2).sum(0) <= 4
        mask[blob] = 1
        image[blob] = 220.0
    return image.astype(np.float32), mask


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    check: Callable[[], T | None], *, timeout: float, interval: float = 0.5, what: str
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
