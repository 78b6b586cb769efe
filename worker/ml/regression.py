"""Regression runs: the prediction head, the losses L_R and the regression attribution constraint.

A regression run (``RunConfig.task == "regression"``) predicts a subject's continuous target
(a disability score, say; docs/method.md section 6.2) with the same networks as
classification: their single output ``z(x)`` becomes the prediction
``y_hat = offset + scale * z(x)``, where ``offset`` and ``scale`` are the mean and standard
deviation of the training targets (``RegressionHead``, stored with the weights). The network
therefore learns standardised targets, and an attribution of ``y_hat`` is in target units.

Sign convention (docs/method.md section 1): an attribution ``A > 0`` raises the prediction (red in
the viewer), ``A < 0`` lowers it (blue).

The constraint's right form is open; ``RegressionSettings.constraints`` combines three options
on the scaled relevance ``r = attribution_scale * n_voxels * A / scale`` (standardised units,
O(1) per voxel on any grid, as for classification):

- ``outside_lesions`` (supervised, needs masks): on a subject with a lesion mask, every brain
  voxel outside the mask must not carry positive relevance; the lesions are unconstrained.
- ``zero_target`` (targets only): on a subject whose target is zero (``<= zero_tolerance``),
  no brain voxel may carry positive relevance.
- ``mass_scaling`` (targets only, weakly supervised): the positive relevance mass of each
  subject, ``P_b = mean over brain voxels of max(r_v, 0)``, must be proportional to its target
  ``y_b`` (clipped at 0) across the batch: ``L_mass = 1 - <P, y> / (|P| |y|)``, which is scale
  free (no constant of proportionality to choose) and 0 exactly when ``P = k y`` for some k > 0.

Both voxel options give a target map of 0 (must not be positive) or NaN (free); the penalty on
a constrained voxel is ``softplus(r)`` (BCE against 0, as the classification constraint) or
``relu(r)^2`` (only positive relevance costs). L_A is the mean penalty over constrained voxels
plus ``mass_weight * L_mass``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attrivue_core.configs import RegressionConstraint, RunConfig
from worker.ml.metrics import regression_metrics as _regression_metrics
from worker.ml.nets import build_network, pathological_logit
from worker.ml.normative import NormativeInput

__all__ = [
    "TARGET_KEY",
    "RegressionHead",
    "build_model",
    "constraints_for",
    "mass_scaling_loss",
    "missing_targets",
    "prediction_loss",
    "regression_attribution_loss",
    "regression_metrics",
    "regression_target_map",
    "voxel_penalty",
]

TARGET_KEY = "target"
# A training set whose targets barely vary still gets a usable scale.
_MIN_SCALE = 1e-3

PenaltyName = Literal["softplus", "relu_squared"]
LossName = Literal["l1", "mse"]


class _HasTarget(Protocol):
    # Read-only members: a sample whose ``split`` is a Literal of str still matches.
    @property
    def subject_id(self) -> str | int: ...
    @property
    def split(self) -> str: ...
    @property
    def target(self) -> float | None: ...


class RegressionHead(nn.Module):
    """A network's single output, mapped to the target's units: ``offset + scale * z(x)``.

    ``offset`` and ``scale`` are buffers (saved in the state dict, never trained), set from the
    training targets' mean and standard deviation. The network sits under ``net``.

    Args:
        net: A network of ``worker.ml.nets`` (one output per image, or an output map).
        offset: Mean of the training targets.
        scale: Standard deviation of the training targets (floored at 1e-3).
    """

    offset: torch.Tensor  # buffers: declared for the type checker (nn.Module.__getattr__)
    scale: torch.Tensor

    def __init__(self, net: nn.Module, offset: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("offset", torch.tensor(float(offset)))
        self.register_buffer("scale", torch.tensor(max(float(scale), _MIN_SCALE)))
        inner = getattr(net, "gradcam_layer_name", None)
        if isinstance(inner, str):
            self.gradcam_layer_name = f"net.{inner}"

    def standardised(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output ``z(x)``, ``(B,)``: the prediction in standardised units."""
        return pathological_logit(self.net(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted target of each image, ``(B,)``."""
        return self.offset + self.scale * self.standardised(x)


def build_model(config: RunConfig, subjects: Sequence[_HasTarget] = ()) -> nn.Module:
    """The network of a run: ``build_network`` for classification, wrapped in a
    ``RegressionHead`` for regression (standardised by the training subjects' targets when
    they are given; a checkpoint's state dict restores them otherwise); with
    ``normative_input``, wrapped in a ``NormativeInput`` whose healthy reference the training
    engine fits (``fit_normative``) and a checkpoint restores."""
    options: dict[str, Any] = {
        key: value
        for key, value in (("pooling", config.pooling), ("activation", config.activation))
        if value is not None
    }
    if config.evidence_floor != "off":
        options["evidence_floor"] = True
        if config.evidence_floor_leak:
            options["evidence_floor_leak"] = config.evidence_floor_leak
    if config.normative_input:
        net = build_network(config.network, in_channels=2 * config.in_channels, **options)
        return NormativeInput(net, config.in_channels, config.grid)
    net = build_network(config.network, in_channels=config.in_channels, **options)
    if config.task != "regression":
        return net
    train = [float(s.target) for s in subjects if s.split == "train" and s.target is not None]
    if not train:
        return RegressionHead(net)
    return RegressionHead(net, offset=float(np.mean(train)), scale=float(np.std(train)))


def missing_targets(subjects: Sequence[_HasTarget], split: str = "train") -> list[str | int]:
    """Ids of the subjects of ``split`` that have no (finite) target."""
    return [
        s.subject_id
        for s in subjects
        if s.split == split and (s.target is None or not np.isfinite(float(s.target)))
    ]


def constraints_for(config: RunConfig) -> tuple[RegressionConstraint, ...]:
    """The regression constraints a run trains (its loss setting's default when not given)."""
    if config.loss_setting == "lc_only":
        return ()
    if config.regression.constraints is not None:
        return tuple(config.regression.constraints)
    if config.loss_setting == "lc_la_unsupervised":
        return ("zero_target",)
    return ("outside_lesions", "zero_target")


def target_scale(model: nn.Module) -> float:
    """The ``scale`` of a ``RegressionHead`` (1 for any other network)."""
    scale = getattr(model, "scale", None)
    return float(scale) if isinstance(scale, torch.Tensor) else 1.0


def prediction_loss(
    predictions: torch.Tensor, targets: torch.Tensor, *, kind: LossName, scale: float = 1.0
) -> torch.Tensor:
    """L_R on standardised units: mean of ``|e|`` (``l1``) or ``e^2`` (``mse``), where
    ``e = (prediction - target) / scale``.

    Args:
        predictions: ``(B,)`` predicted targets (target units).
        targets: ``(B,)`` true targets.
        kind: ``"l1"`` or ``"mse"``.
        scale: The target's standard deviation (``RegressionHead.scale``).
    """
    error = (predictions.float() - targets.to(predictions.device).float()) / scale
    if kind == "l1":
        return error.abs().mean()
    if kind == "mse":
        return error.square().mean()
    raise ValueError(f"unknown regression loss {kind!r}; use 'l1' or 'mse'")


def regression_target_map(
    targets: torch.Tensor,
    masks: torch.Tensor | None,
    *,
    constraints: Sequence[str],
    zero_tolerance: float = 0.0,
    brain_mask: torch.Tensor | None = None,
    mask_available: torch.Tensor | None = None,
    spatial_shape: Sequence[int] | None = None,
) -> torch.Tensor:
    """Per-voxel target of the regression constraint: 0 = must not carry positive relevance,
    NaN = unconstrained.

    - ``zero_target``: subjects with ``target <= zero_tolerance`` get 0 on every voxel.
    - ``outside_lesions``: subjects with a lesion mask get 0 outside it and NaN inside
      (NaN voxels of a mask stay NaN).
    - ``mass_scaling`` adds no voxel target (see ``mass_scaling_loss``).

    Everything else is NaN; with ``brain_mask`` so is every voxel outside the brain.

    Args:
        targets: ``(B,)`` regression targets.
        masks: ``(B, 1, D, H, W)`` lesion masks (binarised at 0.5), or ``None``.
        constraints: Names of ``RegressionConstraint``.
        zero_tolerance: Targets at or below it count as zero.
        brain_mask: Optional mask broadcastable to ``(B, 1, D, H, W)``, inside where > 0.5.
        mask_available: Optional ``(B,)`` booleans: which subjects have a lesion mask.
        spatial_shape: ``(D, H, W)`` when neither ``masks`` nor ``brain_mask`` gives it.

    Returns:
        ``(B, 1, D, H, W)`` float32 tensor of 0 and NaN.
    """
    unknown = set(constraints) - {"outside_lesions", "zero_target", "mass_scaling"}
    if unknown:
        raise ValueError(f"unknown regression constraints {sorted(unknown)}")
    batch = targets.shape[0]
    if masks is not None:
        shape = tuple(masks.shape[2:])
    elif brain_mask is not None:
        shape = tuple(brain_mask.shape[2:])
    elif spatial_shape is not None:
        shape = tuple(spatial_shape)
    else:
        raise ValueError("give masks, brain_mask or spatial_shape to size the target map")
    device = targets.device
    view = (batch, 1, 1, 1, 1)
    nan = torch.tensor(float("nan"), device=device)
    result = torch.full((batch, 1, *shape), float("nan"), device=device)
    if "outside_lesions" in constraints and masks is not None:
        masks = masks.detach().to(device)
        available = (
            torch.ones(batch, dtype=torch.bool, device=device)
            if mask_available is None
            else mask_available.to(device=device, dtype=torch.bool)
        ).view(view)
        outside = torch.where(masks.isnan(), nan, torch.where(masks > 0.5, nan, 0.0))
        result = torch.where(available, outside, result)
    if "zero_target" in constraints:
        zero = (targets.detach().to(device) <= zero_tolerance).view(view)
        result = torch.where(zero, torch.zeros_like(result), result)
    if brain_mask is not None:
        inside = brain_mask.detach().to(device) > 0.5
        result = torch.where(inside, result, nan)
    return result


def voxel_penalty(
    relevance: torch.Tensor, voxel_targets: torch.Tensor, *, penalty: PenaltyName = "softplus"
) -> torch.Tensor:
    """Mean penalty on the constrained (0) voxels of ``voxel_targets``.

    ``softplus(r)`` equals BCE-with-logits(r, 0): it keeps pushing r below 0. ``relu(r)^2``
    is 0 for any r <= 0: relevance that lowers the prediction costs nothing.

    Args:
        relevance: ``(B, 1, D, H, W)`` scaled relevance (channels already summed).
        voxel_targets: Broadcastable map of 0 (constrained) and NaN (free).
        penalty: ``"softplus"`` or ``"relu_squared"``.

    Returns:
        Scalar; a zero connected to the graph when nothing is constrained.
    """
    constrained = (~voxel_targets.isnan()).expand_as(relevance).to(relevance.dtype)
    if penalty == "softplus":
        per_voxel = F.softplus(relevance)
    elif penalty == "relu_squared":
        per_voxel = F.relu(relevance).square()
    else:
        raise ValueError(f"unknown penalty {penalty!r}; use 'softplus' or 'relu_squared'")
    return (per_voxel * constrained).sum() / constrained.sum().clamp_min(1.0)


def positive_mass(relevance: torch.Tensor, brain_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(B,)`` mean of ``max(r, 0)`` over each subject's brain voxels (all voxels without a
    brain mask)."""
    positive = F.relu(relevance.sum(dim=1, keepdim=True))  # (B, 1, D, H, W)
    if brain_mask is None:
        return positive.flatten(1).mean(dim=1)
    inside = (brain_mask > 0.5).expand_as(positive).to(positive.dtype)
    return (positive * inside).flatten(1).sum(dim=1) / inside.flatten(1).sum(dim=1).clamp_min(1)


def mass_scaling_loss(
    relevance: torch.Tensor, targets: torch.Tensor, brain_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``1 - cos(P, y)``: positive relevance mass per subject proportional to the target.

    ``P`` is ``positive_mass``; ``y`` the targets clipped at 0. In [0, 1]; 0 exactly when
    ``P = k y`` with k > 0. A batch with all targets zero, or with no positive relevance,
    gives a constant (no gradient): ``zero_target`` covers the first case.

    Args:
        relevance: ``(B, C, D, H, W)`` scaled relevance.
        targets: ``(B,)`` regression targets.
        brain_mask: Optional mask broadcastable to ``(B, 1, D, H, W)``.
    """
    mass = positive_mass(relevance, brain_mask)  # (B,)
    y = targets.detach().to(mass.device, mass.dtype).clamp_min(0.0)
    denominator = mass.norm() * y.norm()
    if float(denominator.detach()) <= 0.0:
        return (mass * 0.0).sum() + 1.0
    return 1.0 - (mass * y).sum() / denominator


def regression_attribution_loss(
    attributions: torch.Tensor,
    targets: torch.Tensor,
    masks: torch.Tensor | None,
    *,
    constraints: Sequence[str],
    scale: float,
    penalty: PenaltyName = "softplus",
    zero_tolerance: float = 0.0,
    mass_weight: float = 1.0,
    brain_mask: torch.Tensor | None = None,
    mask_available: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_A of a regression run: voxel penalty of the target map plus the mass term.

    Args:
        attributions: ``(B, C, D, H, W)`` signed attributions of the prediction.
        targets: ``(B,)`` regression targets.
        masks: ``(B, 1, D, H, W)`` lesion masks, or ``None``.
        constraints: ``RegressionConstraint`` names.
        scale: Factor on A before the penalties (``attribution_scale * n_voxels / scale``).
        penalty: Voxel penalty.
        zero_tolerance: Targets at or below it count as zero.
        mass_weight: Weight of ``mass_scaling_loss`` (when ``mass_scaling`` is chosen).
        brain_mask: Optional brain mask.
        mask_available: Optional ``(B,)`` booleans: which subjects have a lesion mask.

    Returns:
        Scalar tensor connected to the attributions.
    """
    relevance = scale * attributions.sum(dim=1, keepdim=True)  # (B, 1, D, H, W)
    voxel_targets = regression_target_map(
        targets,
        masks,
        constraints=constraints,
        zero_tolerance=zero_tolerance,
        brain_mask=brain_mask,
        mask_available=mask_available,
        spatial_shape=relevance.shape[2:],
    )
    loss = voxel_penalty(relevance, voxel_targets, penalty=penalty)
    if "mass_scaling" in constraints:
        loss = loss + mass_weight * mass_scaling_loss(relevance, targets, brain_mask)
    return loss


def regression_metrics(
    targets: Sequence[float] | np.ndarray, predictions: Sequence[float] | np.ndarray
) -> dict[str, Any]:
    """MAE, RMSE, Pearson, Spearman and n (``worker.ml.metrics``); ``{}`` without subjects."""
    if len(targets) == 0:
        return {}
    return _regression_metrics(targets, predictions)
