"""Tests of the network registry and of every registered network."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, get_args

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from worker.ml.configs import SEGMENTATION_NETWORKS, NetworkName, RunConfig
from worker.ml.nets import (
    PatchGAN,
    available_networks,
    build_network,
    gradcam_layer,
    pathological_logit,
)

GRID = (16, 20, 16)


@dataclass(frozen=True)
class NetCase:
    """A registered network with options and an input grid small enough for a CPU test."""

    name: str
    grid: tuple[int, int, int] = GRID
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        return build_network(self.name, **self.options)


NET_CASES = [
    NetCase("small_cnn"),
    NetCase("patchgan", options={"base_width": 8}),
    # Five halvings before its global pooling: 32 voxels a side is the least it takes.
    NetCase("densenet121", grid=(32, 32, 32)),
    NetCase("resnet18"),
    NetCase("resnet10"),
]


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # Tiny volumes gain nothing from intra-op threads, and on a shared 2-core machine
    # spinning OpenMP threads make the tests several times slower under load.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Classifiers; the segmentation networks (logit per voxel) are tested in test_segmentation.py.
CLASSIFIERS = tuple(n for n in get_args(NetworkName) if n not in SEGMENTATION_NETWORKS)


def test_registry_matches_the_config_literal_and_rejects_unknown() -> None:
    assert set(available_networks()) == set(get_args(NetworkName))
    assert {case.name for case in NET_CASES} == set(available_networks()) - SEGMENTATION_NETWORKS
    with pytest.raises(KeyError, match="unknown network"):
        build_network("no_such_net")


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_config_network_builds_with_defaults(name: NetworkName) -> None:
    model = build_network(RunConfig(network=name).network)
    assert isinstance(gradcam_layer(model), nn.Module)


@pytest.mark.parametrize("case", NET_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("batch", [1, 2])
def test_network_returns_one_finite_logit_per_image(case: NetCase, batch: int) -> None:
    torch.manual_seed(0)
    model = case.build().eval()
    with torch.no_grad():
        logits = model(torch.randn(batch, 1, *case.grid))
    assert logits.shape == (batch,)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("case", NET_CASES, ids=lambda c: c.name)
def test_network_is_deterministic_under_manual_seed(case: NetCase) -> None:
    x = torch.randn(2, 1, *case.grid)
    outputs = []
    for seed in (123, 123, 124):
        torch.manual_seed(seed)
        model = case.build().eval()
        with torch.no_grad():
            outputs.append(model(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    assert not torch.equal(outputs[2], outputs[0])


@pytest.mark.parametrize("case", NET_CASES, ids=lambda c: c.name)
def test_network_backpropagates_to_weights_and_input(case: NetCase) -> None:
    torch.manual_seed(0)
    model = case.build().train()
    x = torch.randn(2, 1, *case.grid, requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(model(x), torch.tensor([0.0, 1.0]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("case", NET_CASES, ids=lambda c: c.name)
def test_gradcam_layer_is_a_spatial_feature_map_of_the_forward_pass(case: NetCase) -> None:
    model = case.build().eval()
    seen: list[torch.Tensor] = []
    handle = gradcam_layer(model).register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        model(torch.randn(2, 1, *case.grid))
    handle.remove()
    assert len(seen) == 1
    features = seen[0]
    assert features.ndim == 5 and features.shape[0] == 2 and features.shape[1] > 1
    assert min(features.shape[2:]) >= 1


def test_gradcam_layer_refuses_a_network_without_one() -> None:
    with pytest.raises(TypeError, match="Grad-CAM layer"):
        gradcam_layer(nn.Linear(2, 1))


def test_patchgan_has_the_published_architecture() -> None:
    model = PatchGAN()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert all(c.kernel_size == (4, 4, 4) and c.stride == (2, 2, 2) for c in convs[:4])
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert [n.num_features for n in norms] == [128, 256, 512]
    assert all(n.affine for n in norms)
    slopes = [m.negative_slope for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert slopes == [0.2] * 4


@pytest.mark.parametrize("grid", [(8, 8, 8), (24, 28, 24), (48, 56, 48)])
def test_patchgan_logit_map_never_collapses_and_is_averaged(grid: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = PatchGAN(base_width=8).eval()
    x = torch.randn(2, 1, *grid)
    with torch.no_grad():
        logit_map = model.logit_map(x)
        logits = model(x)
    assert logit_map.shape == (2, 1, *PatchGAN.feature_shape(grid))
    assert min(logit_map.shape[2:]) >= 2
    torch.testing.assert_close(logits, logit_map.mean(dim=(1, 2, 3, 4)))


def test_small_cnn_accepts_other_channel_counts_and_norms() -> None:
    model = build_network("small_cnn", in_channels=2, norm="instance").eval()
    assert model(torch.randn(2, 2, *GRID)).shape == (2,)


def test_pathological_logit_reduces_maps_and_columns() -> None:
    assert pathological_logit(torch.ones(3)).shape == (3,)
    assert pathological_logit(torch.ones(3, 1)).shape == (3,)
    patch_map = torch.arange(2 * 8, dtype=torch.float32).reshape(2, 1, 2, 2, 2)
    torch.testing.assert_close(pathological_logit(patch_map), torch.tensor([3.5, 11.5]))
