"""Segmentation: region attribution against Captum, the mixed-supervision loss, metrics, config."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from pydantic import ValidationError

from attrivue_core.configs import RegionSpec, RunConfig
from worker.ml.attribution.differentiable import gradient
from worker.ml.losses import attribution_loss
from worker.ml.nets import build_network
from worker.ml.segmentation import (
    RegionLogit,
    annotated_subjects,
    build_unet,
    mixed_supervision_loss,
    region_attribution,
    segmentation_loss,
    segmentation_metrics,
)

GRID = (16, 20, 16)


def _unet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_unet()
    # A few train-mode forwards give batch norm non-trivial running statistics.
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 1, *GRID))
    return model.eval()


def _box(lo: tuple[int, int, int], hi: tuple[int, int, int]) -> torch.Tensor:
    region = torch.zeros(GRID)
    region[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1.0
    return region


def test_region_attribution_agrees_with_captum_integrated_gradients() -> None:
    model = _unet()
    torch.manual_seed(1)
    x = torch.randn(2, 1, *GRID)
    region = _box((4, 6, 4), (10, 12, 9))
    ours = region_attribution(
        model, x, region, steps=12, method="gausslegendre", internal_batch_size=12
    )
    captum_maps, captum_delta = IntegratedGradients(RegionLogit(model, region)).attribute(
        x,
        baselines=torch.zeros_like(x),
        n_steps=12,
        method="gausslegendre",
        internal_batch_size=12,
        return_convergence_delta=True,
    )
    scale = captum_maps.abs().max()
    assert scale > 0
    assert torch.allclose(ours.attributions, captum_maps, atol=1e-4 * float(scale), rtol=1e-3)
    assert torch.allclose(ours.delta, captum_delta, atol=1e-3 * float(scale) * x[0].numel() ** 0.5)
    # The explained scalar is the summed foreground logits over the region.
    with torch.no_grad():
        expected = (model(x)[:, 0] * region).flatten(1).sum(1)
    assert torch.allclose(ours.logits, expected, rtol=1e-5, atol=1e-4)
    # Another region gives another map: the reduction, not only the network, is explained.
    other = region_attribution(model, x, _box((0, 0, 0), (4, 4, 4)), steps=4)
    assert not torch.allclose(other.attributions, ours.attributions, atol=1e-3 * float(scale))


@dataclass
class _Subject:
    subject_id: int
    split: str
    label: int
    mask: Path | None


def test_annotated_subjects_are_drawn_per_label_and_nested() -> None:
    subjects = [_Subject(i, "train", i % 2, Path("m") if i % 2 else None) for i in range(20)]
    subjects += [_Subject(100, "test", 1, Path("m"))]
    small = annotated_subjects(subjects, 0.1, seed=3)
    half = annotated_subjects(subjects, 0.5, seed=3)
    full = annotated_subjects(subjects, 1.0, seed=3)
    assert len(small) == 2 and len(half) == 10 and len(full) == 20
    assert small <= half <= full and "100" not in full
    labels = {int(s) % 2 for s in small}
    assert labels == {0, 1}  # one subject of each label at 10 %


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    images = torch.randn(3, 1, *GRID)
    images[:, :, :2] = 0.0  # background, outside the brain
    labels = torch.tensor([1.0, 0.0, 1.0])
    masks = torch.zeros(3, 1, *GRID)
    masks[0, 0, 6:9, 8:11, 6:9] = 1.0
    masks[2, 0, 2:5, 2:5, 2:5] = 1.0  # label-only: must be ignored
    return images, labels, masks


def test_mixed_supervision_loss_splits_the_batch_and_gradients_flow() -> None:
    config = RunConfig(task="segmentation", grid=GRID, seg_constraint=True, attribution_scale=1.0)
    model = _unet().train()
    images, labels, masks = _batch()
    annotated = torch.tensor([True, False, False])
    fresh = copy.deepcopy(model)
    twin = copy.deepcopy(model)  # replays the loss step by step (same batch-norm updates)
    loss = mixed_supervision_loss(model, images, labels, masks, annotated, config, lam=0.5)
    assert loss.n_annotated == 1 and loss.n_constrained == 1
    assert loss.segmentation is not None and loss.constraint is not None

    # The annotated subject gets Dice + CE against its own mask, nothing else.
    expected_seg = segmentation_loss()(twin(images[:1]), masks[:1])
    assert torch.allclose(loss.segmentation, expected_seg, rtol=1e-5)
    # The label-only healthy subject gets L_A: its gradient map of the mean foreground
    # logit (eval mode) against target 0 on brain voxels.
    twin.eval()
    attributions = gradient(twin, images[1:2]).attributions
    brain = images[1:2] != 0
    nan = torch.full_like(images[1:2], float("nan"))
    targets = torch.where(brain, torch.zeros_like(images[1:2]), nan)
    expected_a = attribution_loss(attributions, targets, scale=float(np.prod(GRID)))
    assert torch.allclose(loss.constraint, expected_a, rtol=1e-5)
    assert torch.allclose(loss.total, expected_seg + 0.5 * expected_a, rtol=1e-4)

    # The label-only pathological subject contributes nothing: change it, same loss.
    images2, masks2 = images.clone(), masks.clone()
    images2[2] = torch.randn_like(images2[2])
    masks2[2] = 1.0
    again = mixed_supervision_loss(fresh, images2, labels, masks2, annotated, config, lam=0.5)
    assert torch.allclose(again.total, loss.total, rtol=1e-5)

    # Both terms reach the weights (the constraint through double back-propagation).
    params = [p for p in model.parameters() if p.requires_grad]
    for term in (loss.segmentation, loss.constraint):
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        norm = sum(float(g.norm()) for g in grads if g is not None)
        assert norm > 0
    conv = model.unet.model[0].conv.unit0.conv.weight
    (grad_a,) = torch.autograd.grad(loss.constraint, conv, retain_graph=True)
    assert grad_a.abs().sum() > 0

    # Without the constraint, label-only subjects are simply unused.
    plain = RunConfig(task="segmentation", grid=GRID)
    off = mixed_supervision_loss(
        copy.deepcopy(fresh), images, labels, masks, annotated, plain, lam=0.5
    )
    assert off.constraint is None and off.n_constrained == 0
    assert torch.allclose(off.total, expected_seg, rtol=1e-5)


def test_segmentation_metrics_dice_hd95_and_lesion_detection() -> None:
    truth = np.zeros((12, 12, 12), bool)
    truth[1:4, 1:4, 1:4] = True  # lesion 1: found
    truth[8:11, 8:11, 8:11] = True  # lesion 2: missed
    predicted = np.zeros_like(truth)
    predicted[1:4, 1:4, 1:4] = True
    predicted[1:3, 8:10, 1:3] = True  # a false component
    healthy_truth = np.zeros_like(truth)
    healthy_pred = np.zeros_like(truth)
    healthy_pred[5:7, 5:7, 5:7] = True  # a false component on a healthy subject
    metrics = segmentation_metrics([predicted, healthy_pred], [truth, healthy_truth])
    overlap = 27
    assert metrics["dice"] == pytest.approx(2 * overlap / (truth.sum() + predicted.sum()))
    assert metrics["lesion_sensitivity"] == pytest.approx(0.5)
    assert metrics["lesion_precision"] == pytest.approx(1 / 3)
    assert metrics["lesion_f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert metrics["hd95_voxels"] is not None and metrics["hd95_voxels"] > 0
    assert metrics["n"] == 2 and metrics["n_lesion_subjects"] == 1
    perfect = segmentation_metrics([truth], [truth])
    assert perfect["dice"] == pytest.approx(1.0) and perfect["hd95_voxels"] == pytest.approx(0.0)


def test_unet_is_registered_and_maps_volumes_to_voxel_logits() -> None:
    model = build_network(RunConfig(task="segmentation", grid=GRID).network)
    out = model(torch.randn(2, 1, *GRID))
    assert out.shape == (2, 1, *GRID) and torch.isfinite(out).all()
    # The output bias starts at the lesion prior: few voxels are called lesion at first.
    assert float((out > 0).float().mean()) < 0.5


def test_config_and_region_validation() -> None:
    config = RunConfig(task="segmentation", grid=GRID)
    assert config.network == "unet" and config.early_stopping_metric == "val_dice"
    assert not config.mixed_supervision
    assert RunConfig(task="segmentation", grid=GRID, seg_annotated_fraction=0.25).mixed_supervision
    with pytest.raises(ValidationError, match="divisible by 4"):
        RunConfig(task="segmentation", grid=(18, 20, 16))
    with pytest.raises(ValidationError, match="needs a network"):
        RunConfig(network="unet")
    with pytest.raises(ValidationError, match="watch_subjects"):
        RunConfig(task="segmentation", grid=GRID, watch_subjects=[1])
    with pytest.raises(ValidationError, match="segmentation only"):
        RunConfig(seg_constraint=True)
    assert RegionSpec().kind == "whole"
    with pytest.raises(ValidationError, match="takes"):
        RegionSpec(kind="component")
    with pytest.raises(ValidationError, match="exceeds"):
        RegionSpec(kind="box", mm_min=(0, 0, 5), mm_max=(1, 1, 1))
