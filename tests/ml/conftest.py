"""Fixtures shared by the tests of worker.ml."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One intra-op thread for a module: tiny volumes gain nothing from more, and on a shared
    2-core machine spinning OpenMP threads make the tests several times slower under load."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
