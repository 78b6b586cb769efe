"""The attribution constraint: target maps, the attribution loss L_A and the total loss.

Wargnier-Dauchelle, Grenier, Durand-Dubief, Cotton and Sdika, "A more interpretable classifier
for multiple sclerosis" (ISBI 2021) and "A weakly supervised gradient attribution constraint
for interpretable classification and anomaly detection" (IEEE TMI 42(11), 2023); docs/method.md
section 3.

A target map holds one value per voxel: 0 (the voxel must carry healthy relevance, A < 0),
1 (pathological relevance, A > 0) or NaN (unconstrained, excluded from L_A).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from attrivue_core.configs import LambdaSchedule  # re-exported: plain pydantic, no torch

__all__ = [
    "AttributionLossKind",
    "LambdaSchedule",
    "LossSettingName",
    "TargetMode",
    "attribution_loss",
    "target_map",
    "target_mode_for",
    "total_loss",
]

TargetMode = Literal["supervised", "weakly_supervised"]
AttributionLossKind = Literal["bce", "rrr", "mass"]
# The four settings of the seed's figure.
LossSettingName = Literal["lc_only", "la_only", "lc_la_supervised", "lc_la_unsupervised"]


def target_map(
    labels: torch.Tensor,
    masks: torch.Tensor | None,
    *,
    mode: TargetMode,
    brain_mask: torch.Tensor | None = None,
    mask_available: torch.Tensor | None = None,
    spatial_shape: Sequence[int] | None = None,
) -> torch.Tensor:
    """Build the per-voxel target of the attribution constraint.

    - ``"weakly_supervised"`` (image labels only): healthy subjects get 0 on every voxel;
      pathological subjects are unconstrained (NaN).
    - ``"supervised"``: pathological subjects get their lesion mask (1 inside, 0 outside);
      healthy subjects get 0 everywhere. A pathological subject without a mask (``masks`` is
      ``None``, or ``mask_available`` is False for it) is unconstrained, as in the weakly
      supervised mode. NaN voxels of a mask stay unconstrained.

    With a brain mask, only voxels inside the brain are constrained; outside it is NaN.

    Args:
        labels: ``(B,)`` image labels, pathological where > 0.5.
        masks: ``(B, 1, D, H, W)`` lesion masks (binarised at 0.5), or ``None``. Ignored in the
            weakly supervised mode.
        mode: ``"supervised"`` or ``"weakly_supervised"``.
        brain_mask: Optional mask broadcastable to ``(B, 1, D, H, W)`` (e.g. one template
            ``(1, 1, D, H, W)``), inside where > 0.5.
        mask_available: Optional ``(B,)`` booleans: which subjects have a lesion mask
            (default: all, when ``masks`` is given).
        spatial_shape: ``(D, H, W)``; needed only when neither ``masks`` nor ``brain_mask``
            gives it.

    Returns:
        ``(B, 1, D, H, W)`` float32 tensor of 0, 1 and NaN, on the labels' device.

    Example:
        >>> t = target_map(labels, None, mode="weakly_supervised", spatial_shape=(48, 56, 48))
    """
    if mode not in ("supervised", "weakly_supervised"):
        raise ValueError(f"unknown target mode {mode!r}")
    batch = labels.shape[0]
    if masks is not None:
        shape = tuple(masks.shape[2:])
    elif brain_mask is not None:
        shape = tuple(brain_mask.shape[2:])
    elif spatial_shape is not None:
        shape = tuple(spatial_shape)
    else:
        raise ValueError("give masks, brain_mask or spatial_shape to size the target map")
    device = labels.device
    nan = torch.tensor(float("nan"), device=device)
    view = (batch, 1, 1, 1, 1)
    pathological = (labels.detach() > 0.5).to(device).view(view)  # (B, 1, 1, 1, 1)

    targets = torch.zeros((batch, 1, *shape), dtype=torch.float32, device=device)
    if mode == "supervised" and masks is not None:
        masks = masks.detach().to(device)
        lesion = torch.where(masks.isnan(), nan, (masks > 0.5).float())  # (B, 1, D, H, W)
        available = (
            torch.ones(batch, dtype=torch.bool, device=device)
            if mask_available is None
            else mask_available.to(device=device, dtype=torch.bool)
        ).view(view)
        targets = torch.where(pathological & available, lesion, targets)
        targets = torch.where(pathological & ~available, nan, targets)
    else:
        targets = torch.where(pathological, nan, targets)  # (B, 1, D, H, W)
    if brain_mask is not None:
        inside = brain_mask.detach().to(device) > 0.5
        targets = torch.where(inside, targets, nan)
    return targets


def attribution_loss(
    attributions: torch.Tensor,
    targets: torch.Tensor,
    *,
    kind: AttributionLossKind = "bce",
    scale: float = 1.0,
    balance: bool = False,
    normalise: bool = False,
) -> torch.Tensor:
    """L_A: the attribution constraint, averaged over constrained (non-NaN) voxels.

    - ``"bce"``: BCE-with-logits(scale * A_v, t_v), so t = 0 pushes A_v negative (healthy
      relevance) and t = 1 positive.
    - ``"rrr"``: (1 - t_v) * (scale * A_v)^2, the "right for the right reasons" penalty
      (Ross, Hughes and Doshi-Velez, IJCAI 2017): attribution outside the target is
      penalised, whatever its sign; voxels with t = 1 contribute 0 but count in the mean.
    - ``"mass"``: per subject, the share of the map's absolute mass (over its constrained
      voxels) that has the wrong sign: positive where t = 0, negative where t = 1; then the
      mean over the subjects with constrained voxels. On a healthy subject it is the healthy
      share of docs/method.md section 4 itself. Unlike the BCE, whose gradient in a voxel is at
      most 1 however large the voxel's wrong relevance, it weighs each voxel by its
      relevance, so a few strong red voxels cost what they weigh in the healthy share and the
      lesion mass. Invariant to the size of the map (``scale`` and ``normalise`` change
      nothing).

    Multi-channel attributions ``(B, C, ...)`` (several modalities): the target is repeated
    across the channels, so every modality's map is constrained voxel by voxel (as in the
    published method's code); with ``normalise`` the size of a subject's map is taken over all
    its channels. With one channel this is the plain per-voxel loss.

    When no voxel of the batch is constrained, the loss is a zero that stays connected to the
    graph, so ``backward`` still works (and gives zero gradients).

    Args:
        attributions: ``(B, C, D, H, W)`` signed attributions.
        targets: Target map broadcastable to ``(B, 1, D, H, W)``, values 0, 1 or NaN
            (repeated across the C channels).
        kind: ``"bce"``, ``"rrr"`` or ``"mass"``.
        scale: Temperature applied to A before the loss (raw attributions are small); record
            it with the run.
        balance: ``bce`` only. Within each subject, average the BCE of the target-1 voxels
            and that of the target-0 voxels separately and take their mean (a subject with
            one class keeps its plain mean); subjects with constrained voxels then weigh
            equally. Without it every constrained voxel of the batch weighs the same, so
            lesions of 0.5 % of the brain carry 0.5 % of the loss.
        normalise: Divide each subject's relevance by its mean absolute value over the
            subject's constrained voxels before ``scale`` (which is then a temperature on a
            map of mean magnitude 1). The loss is then invariant to the map's overall size,
            so it cannot be lowered by flattening the network (every map towards 0); only
            moving relevance between voxels, or changing its sign, lowers it.

    Returns:
        Scalar tensor.

    Example:
        >>> loss_a = attribution_loss(out.attributions, target_map(...), scale=100.0)
    """
    relevance = attributions  # (B, C, D, H, W); the (B, 1, ...) target is repeated over C
    targets = targets.to(device=relevance.device, dtype=relevance.dtype)
    constrained = (~targets.isnan()).expand_as(relevance).to(relevance.dtype)  # 1 or 0
    if kind == "mass":
        return _wrong_mass_share(relevance, targets, constrained)
    if normalise:
        counts = constrained.flatten(1).sum(1).clamp_min(1.0)  # (B,)
        magnitude = (relevance.abs() * constrained).flatten(1).sum(1) / counts  # (B,)
        # Not detached: the gradient of the size of the map is then exactly 0.
        tiny = torch.finfo(relevance.dtype).tiny ** 0.5
        relevance = relevance / magnitude.clamp_min(tiny).view(-1, *([1] * (relevance.dim() - 1)))
    relevance = scale * relevance
    # NaN targets become 0 before the loss so no NaN reaches the gradient; the weight drops them.
    clean = torch.nan_to_num(targets, nan=0.0).expand_as(relevance)
    if kind == "bce":
        per_voxel = F.binary_cross_entropy_with_logits(relevance, clean, reduction="none")
        if balance:
            return _balanced_mean(per_voxel, clean, constrained)
    elif kind == "rrr":
        per_voxel = (1.0 - clean) * relevance.square()
    else:
        raise ValueError(f"unknown attribution loss {kind!r}; use 'bce', 'rrr' or 'mass'")
    # An empty selection gives 0 / 1: a zero still connected to the attributions.
    return (per_voxel * constrained).sum() / constrained.sum().clamp_min(1.0)


def _wrong_mass_share(
    relevance: torch.Tensor, targets: torch.Tensor, constrained: torch.Tensor
) -> torch.Tensor:
    """Per subject, wrong-signed mass / absolute mass over the constrained voxels; the mean
    over subjects with constrained voxels (a zero connected to the graph without any)."""
    clean = torch.nan_to_num(targets, nan=0.0).expand_as(relevance)
    wrong = (1.0 - clean) * relevance.clamp_min(0.0) + clean * (-relevance).clamp_min(0.0)
    wrong = (wrong * constrained).flatten(1).sum(1)  # (B,)
    total = (relevance.abs() * constrained).flatten(1).sum(1)  # (B,)
    tiny = torch.finfo(relevance.dtype).tiny ** 0.5
    share = wrong / total.clamp_min(tiny)
    present = (constrained.flatten(1).sum(1) > 0).to(relevance.dtype)
    return (share * present).sum() / present.sum().clamp_min(1.0)


def _balanced_mean(
    per_voxel: torch.Tensor, targets: torch.Tensor, constrained: torch.Tensor
) -> torch.Tensor:
    """Per subject, the mean of the class means (target 1, target 0); then over subjects."""
    dims = tuple(range(1, per_voxel.ndim))
    positive = constrained * (targets > 0.5).to(per_voxel.dtype)
    negative = constrained - positive
    n_pos = positive.sum(dims)  # (B,)
    n_neg = negative.sum(dims)
    mean_pos = (per_voxel * positive).sum(dims) / n_pos.clamp_min(1.0)
    mean_neg = (per_voxel * negative).sum(dims) / n_neg.clamp_min(1.0)
    both = (n_pos > 0) & (n_neg > 0)
    subject = torch.where(both, 0.5 * (mean_pos + mean_neg), mean_pos + mean_neg)
    present = ((n_pos + n_neg) > 0).to(per_voxel.dtype)
    return (subject * present).sum() / present.sum().clamp_min(1.0)


def target_mode_for(setting: LossSettingName) -> TargetMode | None:
    """Target mode of a loss setting: ``None`` when L_A is not trained.

    ``"la_only"`` uses the supervised targets: with the weakly supervised ones alone nothing
    would push toward "pathological", and calling every subject healthy would satisfy L_A.
    """
    modes: dict[str, TargetMode | None] = {
        "lc_only": None,
        "la_only": "supervised",
        "lc_la_supervised": "supervised",
        "lc_la_unsupervised": "weakly_supervised",
    }
    try:
        return modes[setting]
    except KeyError:
        raise ValueError(f"unknown loss setting {setting!r}; known: {sorted(modes)}") from None


def total_loss(
    loss_c: torch.Tensor | None,
    loss_a: torch.Tensor | None,
    lam: float,
    setting: LossSettingName,
) -> torch.Tensor:
    """The training loss of one of the four settings of the seed's figure.

    ``"lc_only"``: L_C; ``"la_only"``: L_A; ``"lc_la_supervised"`` and
    ``"lc_la_unsupervised"``: L_C + lambda * L_A (they differ only in the target map, see
    ``target_mode_for``).

    Args:
        loss_c: Classification loss L_C (may be ``None`` when the setting does not use it).
        loss_a: Attribution loss L_A (may be ``None`` when the setting does not use it).
        lam: Lambda, e.g. ``LambdaSchedule.at(epoch)``.
        setting: One of ``LossSettingName``.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: If the setting is unknown or a loss it needs is ``None``.
    """
    if setting == "lc_only":
        return _required(loss_c, "classification", setting)
    if setting == "la_only":
        return _required(loss_a, "attribution", setting)
    if setting in ("lc_la_supervised", "lc_la_unsupervised"):
        return _required(loss_c, "classification", setting) + lam * _required(
            loss_a, "attribution", setting
        )
    raise ValueError(f"unknown loss setting {setting!r}")


def _required(loss: torch.Tensor | None, name: str, setting: str) -> torch.Tensor:
    if loss is None:
        raise ValueError(f"setting {setting!r} needs the {name} loss")
    return loss
