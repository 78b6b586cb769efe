"""Tests of the network registry and of every registered network."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, get_args

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attrivue_core.configs import SEGMENTATION_NETWORKS, NetworkName, RunConfig
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


@pytest.mark.parametrize("pooling", ["max", "avg", "avgmax"])
def test_small_cnn_pooling_heads_give_one_logit_and_gradients(pooling: str) -> None:
    torch.manual_seed(0)
    model = build_network("small_cnn", pooling=pooling).train()
    x = torch.randn(3, 1, *GRID, requires_grad=True)
    logits = model(x)
    assert logits.shape == (3,)
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    last = model.features[-1].conv.out_channels
    assert model.head.in_features == (2 * last if pooling == "avgmax" else last)


def test_small_cnn_max_pooling_sees_one_voxel_that_average_pooling_dilutes() -> None:
    # A bright voxel moves the max-pooled features as much wherever the grid, the average-
    # pooled ones by the share of the map it reaches.
    torch.manual_seed(0)
    x = torch.zeros(1, 1, *GRID)
    bright = x.clone()
    bright[0, 0, 8, 10, 8] = 5.0
    shifts = {}
    for pooling in ("max", "avg"):
        model = build_network("small_cnn", pooling=pooling, norm=None).eval()
        with torch.no_grad():
            maps = model.features(torch.cat([x, bright]))
            pooled = model.pool(maps).flatten(1)
        shifts[pooling] = float((pooled[1] - pooled[0]).abs().max())
    assert shifts["max"] > 5 * shifts["avg"]


def test_small_cnn_default_keeps_full_resolution_in_its_first_block() -> None:
    model = build_network("small_cnn").eval()
    strides = [block.conv.stride for block in model.features]
    assert strides[0] == (1, 1, 1) and all(s == (2, 2, 2) for s in strides[1:])
    assert isinstance(model.pool, nn.AdaptiveMaxPool3d)
    with torch.no_grad():
        maps = gradcam_layer(model)(torch.zeros(1, 1, *GRID))
    assert maps.shape[2:] == (4, 5, 4)


def test_small_cnn_rejects_bad_pooling_and_strides() -> None:
    with pytest.raises(ValueError, match="pooling"):
        build_network("small_cnn", pooling="median")
    with pytest.raises(ValueError, match="strides"):
        build_network("small_cnn", channels=(4, 8), strides=(2,))


def _toy_subjects(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Toy volumes: smooth random "anatomy" that differs in every subject, inside a ball,
    z-scored over the ball; every other subject also gets 2-4 bright blobs of 1.5-2.5 voxels
    radius (1-3% of the ball), a little larger than the synthetic MS lesions on the 4 mm grid."""
    grid = (24, 28, 24)
    index = torch.stack(torch.meshgrid(*[torch.arange(s) for s in grid], indexing="ij")).float()
    centre = torch.tensor(grid, dtype=torch.float32).view(3, 1, 1, 1) / 2
    head = (((index - centre) / centre) ** 2).sum(0) < 0.8
    labels = torch.arange(n) % 2
    images = []
    for label in labels.tolist():
        noise = torch.randn(1, 1, *grid, generator=generator)
        image = F.avg_pool3d(noise, 5, stride=1, padding=2)[0, 0] * 5
        for _ in range(int(torch.randint(2, 5, (1,), generator=generator)) * label):
            low = torch.tensor([s // 4 for s in grid])
            spot = low + (torch.rand(3, generator=generator) * low * 2).long()
            radius = 1.5 + float(torch.rand(1, generator=generator))
            inside = ((index - spot.view(3, 1, 1, 1)) ** 2).sum(0) <= radius**2
            image = image + 3.0 * inside
        values = image[head]
        image = torch.where(head, (image - values.mean()) / values.std(), torch.zeros(()))
        images.append(image[None])
    return torch.stack(images), labels.float()


def test_small_cnn_default_separates_held_out_subjects_by_small_bright_blobs() -> None:
    # The failure this default fixes: the former small_cnn (four stride-2 blocks, average
    # pooling) fitted its training subjects by their anatomy and stayed at chance on held-out
    # ones (docs/experiments.md, "Why L_C only was at chance"). On these toy volumes it
    # reached a held-out AUROC of 0.64 against 1.0 for the default (same seed and budget).
    generator = torch.Generator().manual_seed(0)
    train_x, train_y = _toy_subjects(32, generator)
    test_x, test_y = _toy_subjects(16, generator)
    torch.manual_seed(0)
    model = build_network("small_cnn")
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(10):
        model.train()
        order = torch.randperm(len(train_y), generator=generator)
        for start in range(0, len(order), 4):
            batch = order[start : start + 4]
            loss = F.binary_cross_entropy_with_logits(model(train_x[batch]), train_y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        scores = model(test_x)
    # AUROC from pairwise ranking: every pathological subject above every healthy one.
    positive, negative = scores[test_y == 1], scores[test_y == 0]
    auroc = float((positive[:, None] > negative[None, :]).float().mean())
    assert auroc >= 0.9, auroc
