"""Tests of the attribution constraint: target maps, L_A, lambda schedule and total loss."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from worker.ml.attribution.differentiable import attribute, integrated_gradients
from worker.ml.losses import (
    LambdaSchedule,
    attribution_loss,
    target_map,
    target_mode_for,
    total_loss,
)

SPATIAL = (4, 5, 4)
NAN = float("nan")


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # Tiny volumes gain nothing from intra-op threads; on a shared 2-core machine spinning
    # OpenMP threads make the tests several times slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_cnn(seed: int = 0) -> nn.Module:
    """A small 3D CNN returning one logit per image."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(1, 8, 3, padding=1),
        nn.Softplus(),
        nn.Conv3d(8, 8, 3, stride=2, padding=1),
        nn.Softplus(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),  # (B, 8)
        nn.Linear(8, 1),
        nn.Flatten(0),  # (B,)
    )


def lesion_masks() -> torch.Tensor:
    masks = torch.zeros(3, 1, *SPATIAL)
    masks[1, 0, 1:3, 1:3, 1:3] = 1.0
    masks[2, 0, 0, 0, 0] = 1.0
    return masks


def brain() -> torch.Tensor:
    inside = torch.zeros(1, 1, *SPATIAL)
    inside[..., 1:, :, :] = 1.0  # the first slice is outside the brain
    return inside


# --- target maps -------------------------------------------------------------------------


def test_weakly_supervised_targets() -> None:
    labels = torch.tensor([0, 1, 0])
    t = target_map(labels, lesion_masks(), mode="weakly_supervised")
    assert t.shape == (3, 1, *SPATIAL) and t.dtype == torch.float32
    assert (t[0] == 0).all() and (t[2] == 0).all()  # healthy: 0 everywhere
    assert t[1].isnan().all()  # pathological: unconstrained, masks ignored

    t = target_map(labels, None, mode="weakly_supervised", spatial_shape=SPATIAL)
    assert t.shape == (3, 1, *SPATIAL)
    assert (t[0] == 0).all() and t[1].isnan().all()

    t = target_map(labels, None, mode="weakly_supervised", brain_mask=brain())
    assert t[0, :, 0].isnan().all() and (t[0, :, 1:] == 0).all()
    assert t[1].isnan().all()


def test_supervised_targets() -> None:
    labels = torch.tensor([0.0, 1.0, 1.0])
    masks = lesion_masks()
    masks[0, 0, 0, 0, 0] = 1.0  # a stray mask voxel on a healthy subject is ignored
    t = target_map(labels, masks, mode="supervised")
    assert (t[0] == 0).all()
    assert torch.equal(t[1:], lesion_masks()[1:])

    t = target_map(labels, masks, mode="supervised", brain_mask=brain())
    assert t[:, :, 0].isnan().all()
    assert (t[0, :, 1:] == 0).all()
    assert torch.equal(t[1, :, 1:], lesion_masks()[1, :, 1:])
    assert t[2, :, 1:].sum() == 0  # its lesion voxel lay outside the brain


def test_supervised_targets_without_masks_leave_pathological_subjects_unconstrained() -> None:
    labels = torch.tensor([0, 1, 1])
    t = target_map(labels, None, mode="supervised", spatial_shape=SPATIAL)
    assert (t[0] == 0).all() and t[1:].isnan().all()

    available = torch.tensor([True, False, True])
    t = target_map(labels, lesion_masks(), mode="supervised", mask_available=available)
    assert (t[0] == 0).all() and t[1].isnan().all()
    assert torch.equal(t[2], lesion_masks()[2])

    masks = lesion_masks()
    masks[2, 0, 3] = NAN  # unknown voxels of a mask stay unconstrained
    t = target_map(labels, masks, mode="supervised")
    assert t[2, 0, 3].isnan().all() and not t[2, 0, :3].isnan().any()


def test_target_map_needs_a_shape_and_a_known_mode() -> None:
    with pytest.raises(ValueError, match="spatial_shape"):
        target_map(torch.tensor([0]), None, mode="weakly_supervised")
    with pytest.raises(ValueError, match="unknown target mode"):
        target_map(torch.tensor([0]), None, mode="both", spatial_shape=SPATIAL)  # type: ignore[arg-type]


# --- attribution loss --------------------------------------------------------------------


def bce(z: float, t: float) -> float:
    return -(t * math.log(1 / (1 + math.exp(-z))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-z))))


def test_bce_and_rrr_match_hand_computed_values_and_skip_nan_voxels() -> None:
    a = torch.tensor([0.5, -1.0, 2.0, 3.0], dtype=torch.float64).view(1, 1, 1, 1, 4)
    t = torch.tensor([0.0, 1.0, NAN, 0.0]).view(1, 1, 1, 1, 4)
    expected = (bce(1.0, 0.0) + bce(-2.0, 1.0) + bce(6.0, 0.0)) / 3
    loss = attribution_loss(a, t, kind="bce", scale=2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-12)

    expected = ((2 * 0.5) ** 2 + 0.0 + (2 * 3.0) ** 2) / 3  # the t = 1 voxel counts, as 0
    loss = attribution_loss(a, t, kind="rrr", scale=2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-12)

    with pytest.raises(ValueError, match="unknown attribution loss"):
        attribution_loss(a, t, kind="l1")  # type: ignore[arg-type]


def test_mass_loss_is_the_wrong_signed_share_of_each_subjects_relevance() -> None:
    a = torch.tensor(
        [[0.5, -1.0, 2.0, 3.0], [-1.0, -1.0, 4.0, 0.0], [1.0, 1.0, 1.0, 1.0]],
        dtype=torch.float64,
        requires_grad=True,
    ).view(3, 1, 1, 1, 4)
    t = torch.tensor([[0.0, 1.0, NAN, 0.0], [0.0, 0.0, 0.0, 0.0], [NAN, NAN, NAN, NAN]]).view(
        3, 1, 1, 1, 4
    )
    # Subject 0: wrong mass 0.5 (t=0, positive) + 1.0 (t=1, negative) + 3.0 over 4.5 (the NaN
    # voxel does not count); subject 1 (healthy): its healthy share, 4 / 6; subject 2 has no
    # constrained voxel and is left out of the mean.
    expected = (4.5 / 4.5 + 4.0 / 6.0) / 2
    loss = attribution_loss(a, t, kind="mass")
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    # The size of a map changes nothing; neither do scale and normalise.
    assert attribution_loss(7.0 * a, t, kind="mass").item() == pytest.approx(expected, rel=1e-12)
    assert attribution_loss(a, t, kind="mass", scale=3.0, normalise=True).item() == pytest.approx(
        expected, rel=1e-12
    )
    # A healthy subject's red voxel is pushed down by its weight in the share: the gradient of
    # the share in a positive voxel is (1 - share) / total, in a negative one share / total.
    (grad,) = torch.autograd.grad(attribution_loss(a, t, kind="mass"), a)
    healthy = grad[1].flatten()
    assert float(healthy[2]) == pytest.approx(0.5 * (1 - 4 / 6) / 6, rel=1e-9)
    assert float(healthy[0]) == pytest.approx(0.5 * (4 / 6) / 6, rel=1e-9)
    assert torch.all(grad[2] == 0)
    # No constrained voxel in the batch: a zero connected to the graph.
    empty = attribution_loss(a, torch.full_like(t, NAN), kind="mass")
    assert empty.item() == 0.0 and empty.requires_grad


def test_the_target_is_repeated_across_channels() -> None:
    a = torch.tensor([[1.0, -2.0], [0.5, 0.5]]).view(1, 2, 1, 1, 2)  # channels x voxels
    t = torch.tensor([0.0, 1.0]).view(1, 1, 1, 1, 2)
    # Every channel's map is held to the voxel's target (not their sum: 1.5 and -1.5).
    expected = (bce(1.0, 0.0) + bce(-2.0, 1.0) + bce(0.5, 0.0) + bce(0.5, 1.0)) / 4
    assert attribution_loss(a, t).item() == pytest.approx(expected, rel=1e-6)
    # normalise: one size per subject, over all its channels' constrained voxels (mean 1).
    expected = (bce(1.0, 0.0) + bce(-2.0, 1.0) + bce(0.5, 0.0) + bce(0.5, 1.0)) / 4
    assert attribution_loss(a, t, normalise=True).item() == pytest.approx(expected, rel=1e-6)
    halved = attribution_loss(a, torch.tensor([0.0, NAN]).view(1, 1, 1, 1, 2), normalise=True)
    assert halved.item() == pytest.approx((bce(1 / 0.75, 0.0) + bce(0.5 / 0.75, 0.0)) / 2)


@pytest.mark.parametrize("kind", ["bce", "rrr"])
def test_unconstrained_batch_gives_a_zero_that_back_propagates(kind: str) -> None:
    a = torch.randn(2, 1, *SPATIAL, requires_grad=True)
    t = torch.full((2, 1, *SPATIAL), NAN)
    loss = attribution_loss(a, t, kind=kind)  # type: ignore[arg-type]
    assert loss.item() == 0.0
    loss.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and (a.grad == 0).all()


@pytest.mark.parametrize("kind", ["bce", "rrr"])
def test_nan_targets_never_leak_into_gradients(kind: str) -> None:
    a = torch.randn(2, 1, *SPATIAL, requires_grad=True)
    t = target_map(torch.tensor([0, 1]), None, mode="weakly_supervised", spatial_shape=SPATIAL)
    attribution_loss(a, t, kind=kind).backward()  # type: ignore[arg-type]
    assert a.grad is not None and torch.isfinite(a.grad).all()
    assert (a.grad[1] == 0).all() and (a.grad[0] != 0).any()


@pytest.mark.parametrize("kind", ["bce", "rrr"])
def test_attribution_loss_reaches_the_weights_through_integrated_gradients(kind: str) -> None:
    model = tiny_cnn().double()
    x = torch.randn(2, 1, 8, 10, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    targets = target_map(
        torch.tensor([0, 1]), None, mode="weakly_supervised", spatial_shape=x.shape[2:]
    )
    out = integrated_gradients(model, x, steps=4, create_graph=True)
    attribution_loss(out.attributions, targets, kind=kind, scale=10.0).backward()  # type: ignore[arg-type]
    grads = [p.grad for p in model.parameters() if p.ndim > 1]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


# --- lambda and total loss ---------------------------------------------------------------


def test_lambda_schedule() -> None:
    assert LambdaSchedule().at(0.0) == 1.0
    assert LambdaSchedule(kind="constant", value=0.3).at(7.5) == 0.3
    warm = LambdaSchedule(kind="linear_warmup", value=2.0, warmup_epochs=4)
    assert [warm.at(e) for e in (0, 1, 2.5, 4, 10)] == [0.0, 0.5, 1.25, 2.0, 2.0]
    assert LambdaSchedule(kind="linear_warmup", value=2.0, warmup_epochs=0).at(0) == 2.0
    with pytest.raises(ValueError):
        LambdaSchedule(value=-1.0)
    restored = LambdaSchedule.model_validate(warm.model_dump())  # recorded with the run
    assert restored == warm


def test_total_loss_for_the_four_settings() -> None:
    loss_c, loss_a = torch.tensor(0.7), torch.tensor(0.2)
    assert total_loss(loss_c, loss_a, 3.0, "lc_only").item() == pytest.approx(0.7)
    assert total_loss(loss_c, None, 3.0, "lc_only").item() == pytest.approx(0.7)
    assert total_loss(loss_c, loss_a, 3.0, "la_only").item() == pytest.approx(0.2)
    assert total_loss(None, loss_a, 3.0, "la_only").item() == pytest.approx(0.2)
    for setting in ("lc_la_supervised", "lc_la_unsupervised"):
        assert total_loss(loss_c, loss_a, 3.0, setting).item() == pytest.approx(1.3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs the attribution"):
        total_loss(loss_c, None, 1.0, "lc_la_unsupervised")
    with pytest.raises(ValueError, match="needs the classification"):
        total_loss(None, loss_a, 1.0, "lc_only")
    with pytest.raises(ValueError, match="unknown loss setting"):
        total_loss(loss_c, loss_a, 1.0, "everything")  # type: ignore[arg-type]

    assert target_mode_for("lc_only") is None
    assert target_mode_for("la_only") == "supervised"
    assert target_mode_for("lc_la_supervised") == "supervised"
    assert target_mode_for("lc_la_unsupervised") == "weakly_supervised"
    with pytest.raises(ValueError, match="unknown loss setting"):
        target_mode_for("everything")  # type: ignore[arg-type]


# --- the toy problem ---------------------------------------------------------------------


def relevance_masses(
    model: nn.Module, x: torch.Tensor, methods: str, **params
) -> tuple[float, float]:
    """Positive (pathological) and negative (healthy) attribution mass over the images."""
    a = attribute(model, x, methods, create_graph=False, **params).attributions
    return a.clamp_min(0).sum().item(), (-a).clamp_min(0).sum().item()


@pytest.mark.parametrize(
    ("methods", "params"),
    [("gradient", {}), ("integrated_gradients", {"steps": 3})],
    ids=["gradient", "integrated_gradients"],
)
def test_healthy_constraint_removes_pathological_relevance(methods: str, params: dict) -> None:
    """L_A alone with healthy targets turns pathological relevance into healthy relevance."""
    model = tiny_cnn(seed=0)
    # Non-negative intensities, as MR images after normalisation to [0, 1].
    x = torch.rand(4, 1, 8, 10, 8, generator=torch.Generator().manual_seed(2))
    targets = target_map(torch.zeros(4), None, mode="weakly_supervised", spatial_shape=x.shape[2:])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)

    initial_positive, initial_negative = relevance_masses(model, x, methods, **params)
    assert initial_positive > 0
    for _ in range(20):
        optimiser.zero_grad()
        out = attribute(model, x, methods, create_graph=True, **params)
        attribution_loss(out.attributions, targets, scale=10.0).backward()
        optimiser.step()
    positive, negative = relevance_masses(model, x, methods, **params)
    assert positive < 0.5 * initial_positive
    assert negative > initial_negative  # relevance turned healthy rather than vanishing


def test_normalised_loss_ignores_the_size_of_the_map_and_keeps_its_shape() -> None:
    """attribution_normalise: a flatter network (every map scaled down) lowers nothing."""
    torch.manual_seed(0)
    maps = torch.randn(2, 1, 4, 4, 4)
    targets = torch.zeros(2, 1, 4, 4, 4)
    targets[0, 0, 1, 1, 1] = 1.0
    targets[1, 0, 0] = float("nan")
    losses = [
        float(attribution_loss(maps * size, targets, scale=2.0, normalise=True))
        for size in (1e-6, 1.0, 1e3)
    ]
    assert max(losses) - min(losses) < 1e-5 * losses[1], losses
    # Without normalisation the same maps scaled down give ln 2, the constant network's value.
    shrunk = float(attribution_loss(maps * 1e-6, targets, scale=2.0))
    assert abs(shrunk - math.log(2.0)) < 1e-4
    # The gradient along the map's size is 0; along a move of relevance onto the target, not.
    size = torch.tensor(1.0, requires_grad=True)
    attribution_loss(maps * size, targets, scale=2.0, normalise=True).backward()
    assert size.grad is not None and abs(float(size.grad)) < 1e-5
    moved = maps.clone()
    moved[0, 0, 1, 1, 1] = maps[0].abs().max() * 3
    assert float(attribution_loss(moved, targets, scale=2.0, normalise=True)) < losses[1]
