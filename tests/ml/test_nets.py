"""Tests of the network registry and the small CNN."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from worker.ml.nets import available_networks, build_network, pathological_logit

GRID = (16, 20, 16)


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # Tiny volumes gain nothing from intra-op threads, and on a shared 2-core machine
    # spinning OpenMP threads make the tests several times slower under load.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_registry_lists_small_cnn_and_rejects_unknown() -> None:
    assert "small_cnn" in available_networks()
    with pytest.raises(KeyError, match="unknown network"):
        build_network("no_such_net")


@pytest.mark.parametrize("batch", [1, 3])
def test_small_cnn_returns_one_logit_per_image(batch: int) -> None:
    torch.manual_seed(0)
    model = build_network("small_cnn").eval()
    logits = model(torch.randn(batch, 1, *GRID))
    assert logits.shape == (batch,)
    assert torch.isfinite(logits).all()


def test_small_cnn_accepts_other_channel_counts_and_norms() -> None:
    model = build_network("small_cnn", in_channels=2, norm="instance").eval()
    assert model(torch.randn(2, 2, *GRID)).shape == (2,)


def test_small_cnn_is_deterministic_under_manual_seed() -> None:
    x = torch.randn(2, 1, *GRID)
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_network("small_cnn").eval()
        with torch.no_grad():
            outputs.append(model(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    torch.manual_seed(124)
    other = build_network("small_cnn").eval()
    with torch.no_grad():
        assert not torch.equal(other(x), outputs[0])


def test_pathological_logit_reduces_maps_and_columns() -> None:
    assert pathological_logit(torch.ones(3)).shape == (3,)
    assert pathological_logit(torch.ones(3, 1)).shape == (3,)
    patch_map = torch.arange(2 * 8, dtype=torch.float32).reshape(2, 1, 2, 2, 2)
    torch.testing.assert_close(pathological_logit(patch_map), torch.tensor([3.5, 11.5]))
