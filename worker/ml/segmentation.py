"""Segmentation: MONAI's 3D UNet on lesion masks, its metrics, mixed supervision, and region
attribution (docs/method.md sections 1 and 6.3).

- **Network**: ``monai.networks.nets.UNet`` with one output channel, the foreground logit of
  every voxel (``build_unet``, defined and registered as ``"unet"`` in ``worker.ml.nets``), instance norm
  as MONAI's default. Batch norm was tried: with batches of two its running statistics drift
  from the batch statistics, and on the test volumes the eval-mode prediction collapsed to
  empty after a few epochs (validation Dice 0.73 then 0.0) while instance norm kept rising
  (0.43 after one epoch, 0.81 after four). Instance norm makes Integrated Gradients converge
  more slowly from the zero baseline (see ``worker.ml.nets.PatchGAN``): each region map
  reports its convergence delta.
- **Loss**: ``monai.losses.DiceCELoss`` (sigmoid) on subjects whose annotation is used; a
  healthy subject's annotation is the empty mask.
- **Metrics** (``segmentation_metrics``): Dice and the 95th-percentile Hausdorff distance
  (``monai.metrics``), and lesion-wise detection from connected components (a true lesion is
  detected when a predicted voxel touches it; a predicted component is a true positive when
  it touches a true lesion).
- **Mixed supervision** (``mixed_supervision_loss``): with ``RunConfig.seg_annotated_fraction``
  below 1, only a seeded subset of the training subjects keeps its annotation; the others
  keep their image label. With ``seg_constraint``, label-only healthy subjects get the
  attribution constraint of docs/method.md section 3 in its weakly supervised form: the attribution
  of the mean foreground logit must carry healthy relevance (target 0) on every brain voxel.
- **Region attribution** (``attribute_region_subject``): the project's differentiable
  Integrated Gradients (``worker.ml.attribution.differentiable``) of the sum of the foreground
  logits over a region (``RegionLogit``): the whole predicted mask, one predicted connected
  component, the component under a clicked point, or a box. A > 0: the voxel raises the
  region's foreground logits ("why is this segmented?").

The training of ``RunConfig(task="segmentation")`` is ``worker.ml.training.segmentation``
(the segmentation task of the training engine); in its events ``loss_c`` is the segmentation
loss (Dice + CE) and ``loss_a`` the constraint.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.metrics import compute_dice, compute_hausdorff_distance
from scipy import ndimage
from torch import nn

from attrivue_core.configs import RegionSpec, RunConfig
from attrivue_core.io import load_image
from worker.ml.attribution.captum_eval import map_stats
from worker.ml.attribution.differentiable import (
    AttributionOutput,
    QuadratureMethod,
    attribute,
    integrated_gradients,
    training_attribution_params,
)
from worker.ml.losses import attribution_loss, target_map
from worker.ml.nets import build_unet
from worker.ml.transforms import IMAGE_KEY, MASK_KEY, preprocess_for, to_native

__all__ = [
    "ANNOTATED_KEY",
    "MixedLoss",
    "RegionError",
    "RegionLogit",
    "RegionResult",
    "annotated_subjects",
    "attribute_region_subject",
    "build_unet",
    "label_components",
    "lesion_detection",
    "mixed_supervision_loss",
    "region_attribution",
    "segmentation_loss",
    "segmentation_metrics",
]

ANNOTATED_KEY = "annotated"
# Full 3x3x3 connectivity: voxels touching by a corner belong to the same lesion.
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
_AFFINE_ATOL = 1e-3


# --------------------------------------------------------------------------- network, loss


def segmentation_loss() -> DiceCELoss:
    """Dice + binary cross-entropy on the foreground logit (Dice over the whole batch, so a
    batch of healthy subjects with empty masks has a defined loss)."""
    return DiceCELoss(sigmoid=True, batch=True)


# --------------------------------------------------------------------------- metrics


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components (26-connectivity) of a binary volume: labels 1..n and n."""
    labels, count = ndimage.label(np.asarray(mask) > 0, structure=_CONNECTIVITY)
    return labels.astype(np.int32), int(count)


def lesion_detection(predicted: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """Lesion-wise counts of one subject.

    Returns:
        ``true_lesions``, ``detected`` (true lesions touched by a predicted voxel),
        ``predicted_lesions`` and ``true_positive_predictions`` (predicted components
        touching a true lesion).
    """
    true_labels, n_true = label_components(truth)
    pred_labels, n_pred = label_components(predicted)
    detected = np.unique(true_labels[(pred_labels > 0) & (true_labels > 0)]).size
    hits = np.unique(pred_labels[(pred_labels > 0) & (true_labels > 0)]).size
    return {
        "true_lesions": n_true,
        "detected": int(detected),
        "predicted_lesions": n_pred,
        "true_positive_predictions": int(hits),
    }


def segmentation_metrics(
    predictions: Sequence[np.ndarray], truths: Sequence[np.ndarray]
) -> dict[str, float | None]:
    """Metrics of binary predictions against lesion masks, over the subjects of a split.

    Dice and HD95 are averaged over subjects with at least one lesion voxel (an empty
    prediction there has Dice 0 and no HD95). HD95 is in working-grid voxels. Lesion-wise
    counts are pooled over all subjects, so false components on healthy subjects lower the
    precision.

    Returns:
        ``dice``, ``hd95_voxels`` (``None`` when no prediction and lesion both exist),
        ``lesion_sensitivity``, ``lesion_precision``, ``lesion_f1`` (``None`` when
        undefined), ``n`` and ``n_lesion_subjects``.
    """
    dices: list[float] = []
    distances: list[float] = []
    counts = dict.fromkeys(
        ("true_lesions", "detected", "predicted_lesions", "true_positive_predictions"), 0
    )
    for predicted, truth in zip(predictions, truths, strict=True):
        pred = torch.as_tensor(np.asarray(predicted) > 0)[None, None].float()
        true = torch.as_tensor(np.asarray(truth) > 0)[None, None].float()
        for key, value in lesion_detection(pred[0, 0].numpy(), true[0, 0].numpy()).items():
            counts[key] += value
        if true.sum() == 0:
            continue
        dices.append(float(compute_dice(pred, true, include_background=True)[0, 0]))
        if pred.sum() > 0:
            hd = compute_hausdorff_distance(pred, true, include_background=True, percentile=95)
            distances.append(float(hd[0, 0]))

    def ratio(num: int, den: int) -> float | None:
        return num / den if den else None

    sensitivity = ratio(counts["detected"], counts["true_lesions"])
    precision = ratio(counts["true_positive_predictions"], counts["predicted_lesions"])
    f1 = None
    if sensitivity is not None and precision is not None:
        f1 = (
            2 * sensitivity * precision / (sensitivity + precision)
            if sensitivity + precision
            else 0.0
        )
    return {
        "dice": float(np.mean(dices)) if dices else None,
        "hd95_voxels": float(np.mean(distances)) if distances else None,
        "lesion_sensitivity": sensitivity,
        "lesion_precision": precision,
        "lesion_f1": f1,
        "n": float(len(predictions)),
        "n_lesion_subjects": float(len(dices)),
    }


# --------------------------------------------------------------------------- mixed supervision


def annotated_subjects(subjects: Sequence[Any], fraction: float, seed: int) -> set[str]:
    """Ids (as strings) of the training subjects whose annotation a run uses.

    Candidates are the pathological training subjects with a mask and every healthy training
    subject (whose annotation is the empty mask). Of each label, ``round(fraction * n)``
    subjects are kept (at least one), drawn with ``seed``: the same subsets for every run
    with that seed, and a smaller fraction's subset is contained in a larger one's.
    """
    chosen: set[str] = set()
    train = [s for s in subjects if s.split == "train"]
    groups = (
        [s for s in train if s.label == 1 and s.mask is not None],
        [s for s in train if s.label == 0],
    )
    for label, group in enumerate(groups):
        if not group:
            continue
        ids = sorted(str(s.subject_id) for s in group)
        order = np.random.default_rng([seed, label]).permutation(len(ids))
        keep = max(1, round(fraction * len(ids)))
        chosen.update(ids[i] for i in order[:keep])
    return chosen


@dataclass
class MixedLoss:
    """The loss of one mixed-supervision batch and its parts.

    Attributes:
        total: ``segmentation + lam * constraint`` (the parts that exist).
        segmentation: Dice + CE over the annotated subjects, ``None`` if the batch has none.
        constraint: L_A over the label-only healthy subjects, ``None`` if there are none or
            the constraint is off.
        attributions: The constrained subjects' attributions ``(n, 1, D, H, W)``, or ``None``.
        n_annotated: Subjects that got the segmentation loss.
        n_constrained: Subjects that got the constraint.
    """

    total: torch.Tensor
    segmentation: torch.Tensor | None
    constraint: torch.Tensor | None
    attributions: torch.Tensor | None
    n_annotated: int
    n_constrained: int


@contextlib.contextmanager
def _mode(model: nn.Module, mode: str):
    was_training = model.training
    model.train(mode == "train")
    try:
        yield
    finally:
        model.train(was_training)


def mixed_supervision_loss(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    annotated: torch.Tensor,
    config: RunConfig,
    *,
    lam: float,
    generator: torch.Generator | None = None,
) -> MixedLoss:
    """Loss of a batch in which some subjects are annotated and the others carry a label.

    Annotated subjects get Dice + CE against their masks (one forward of those subjects
    only, in the model's current mode). With ``config.seg_constraint`` and ``lam > 0``,
    label-only healthy subjects get L_A: the differentiable attribution
    (``config.train_attribution``) of the mean foreground logit, in
    ``config.attribution_mode``, against target 0 on every (brain) voxel, scaled as in
    classification (``attribution_scale * n_voxels``). Label-only pathological subjects
    contribute nothing.

    Args:
        model: The UNet, ``(B, 1, D, H, W)`` -> ``(B, 1, D, H, W)`` logits.
        images: ``(B, 1, D, H, W)``.
        labels: ``(B,)``, 1 pathological.
        masks: ``(B, 1, D, H, W)`` lesion masks (read for annotated subjects only).
        annotated: ``(B,)`` booleans.
        config: The run configuration.
        lam: Weight of the constraint.
        generator: Random source of Expected Gradients.
    """
    annotated = annotated.to(images.device).bool()
    parts: list[torch.Tensor] = []
    loss_seg = None
    if annotated.any():
        logits = model(images[annotated])  # (n, 1, D, H, W)
        loss_seg = segmentation_loss()(logits.float(), masks[annotated].float())
        parts.append(loss_seg)
    constrained = ~annotated & (labels.to(images.device) < 0.5)
    loss_a = attributions = None
    if config.seg_constraint and lam > 0 and constrained.any():
        x = images[constrained]
        params = training_attribution_params(config, generator)
        with _mode(model, config.attribution_mode):
            # The model's logit map is reduced to its mean (worker.ml.nets.pathological_logit).
            out = attribute(model, x, config.train_attribution, **params)
        attributions = out.attributions.float()  # (n, 1, D, H, W)
        brain = (x != 0).any(dim=1, keepdim=True) if config.restrict_to_brain else None
        targets = target_map(
            labels[constrained].float(),
            None,
            mode="weakly_supervised",
            brain_mask=brain,
            spatial_shape=tuple(x.shape[2:]),
        )
        scale = config.attribution_scale * float(np.prod(x.shape[2:]))
        loss_a = attribution_loss(attributions, targets, kind=config.attribution_loss, scale=scale)
        parts.append(lam * loss_a)
    if parts:
        total = parts[0]
        for part in parts[1:]:
            total = total + part
    else:
        # Nothing to learn from this batch: a zero connected to the weights.
        total = torch.stack([p.sum() for p in model.parameters()]).sum() * 0.0
    return MixedLoss(
        total=total,
        segmentation=loss_seg,
        constraint=loss_a,
        attributions=attributions,
        n_annotated=int(annotated.sum()),
        n_constrained=int(constrained.sum()) if loss_a is not None else 0,
    )


# --------------------------------------------------------------------------- region attribution


class RegionError(ValueError):
    """The region asked for does not exist in this subject's prediction."""


class RegionLogit(nn.Module):
    """The sum of a segmentation network's foreground logits over a region, ``(B,)``.

    The scalar that a region attribution explains (docs/method.md section 1); also usable as the
    forward function of Captum's attribution methods.

    Args:
        model: ``(B, C, D, H, W)`` -> ``(B, 1, D, H, W)`` logits.
        region: ``(D, H, W)`` or broadcastable to the logits: 1 inside, 0 outside.
    """

    def __init__(self, model: nn.Module, region: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        region = torch.as_tensor(region, dtype=torch.float32)
        if region.ndim == 3:
            region = region[None, None]
        self.register_buffer("region", region)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.model(x).float() * self.region).flatten(1).sum(1)


def region_attribution(
    model: nn.Module,
    x: torch.Tensor,
    region: torch.Tensor,
    *,
    steps: int = 32,
    method: QuadratureMethod = "gausslegendre",
    internal_batch_size: int | None = 8,
) -> AttributionOutput:
    """Integrated Gradients (zero baseline) of the summed foreground logits over ``region``.

    The model is used in the mode it is in (put it in eval mode for evaluation maps).

    Returns:
        The project's ``AttributionOutput``: attributions like ``x``, the completeness delta,
        and the region logits F(x) ``(B,)``.
    """
    forward = RegionLogit(model, region.to(x.device))
    return integrated_gradients(
        forward,
        x,
        steps=steps,
        method=method,
        internal_batch_size=internal_batch_size,
        create_graph=False,
    )


@dataclass
class RegionResult:
    """A region attribution on the subject's native grid.

    Attributes:
        map: float32 signed map, the native image's shape; A > 0 raises the region's logits.
        affine: The native image's affine.
        prediction: int16 connected components of the predicted mask (0 background), native.
        region: bool native region that was explained (for ``whole``: the prediction).
        convergence_delta: |sum(A) - (F(x) - F(0))| on the working grid.
        logit: F(x), the summed foreground logits over the region (working grid).
        component: The component explained (``component`` and ``point``), else ``None``.
        stats: ``map_stats`` of the native map plus ``grid_sum``, ``relative_delta``,
            ``region_voxels`` (working grid), ``region_native_voxels``, ``n_components``,
            ``component`` (when resolved) and ``region_logit``.
    """

    map: np.ndarray
    affine: np.ndarray
    prediction: np.ndarray
    region: np.ndarray
    convergence_delta: float
    logit: float
    component: int | None
    stats: dict[str, float | None] = field(default_factory=dict)


def _native_region(
    spec: RegionSpec, components: np.ndarray, count: int, affine: np.ndarray
) -> tuple[np.ndarray, int | None]:
    """The native boolean region of a spec other than ``whole``, and its component."""
    if spec.kind == "component":
        assert spec.component is not None
        if spec.component > count:
            raise RegionError(
                f"component {spec.component} does not exist: the prediction has {count}"
            )
        return components == spec.component, spec.component
    inverse = np.linalg.inv(affine)
    if spec.kind == "point":
        assert spec.mm is not None
        ijk = np.rint(inverse @ np.array([*spec.mm, 1.0]))[:3].astype(int)
        if np.any(ijk < 0) or np.any(ijk >= np.array(components.shape)):
            raise RegionError(f"point {spec.mm} mm lies outside the image")
        component = int(components[tuple(ijk)])
        if component == 0:
            raise RegionError(
                f"no predicted lesion at {spec.mm} mm (voxel {tuple(int(v) for v in ijk)})"
            )
        return components == component, component
    assert spec.kind == "box" and spec.mm_min is not None and spec.mm_max is not None
    corners = np.array(
        [
            [x, y, z, 1.0]
            for x in (spec.mm_min[0], spec.mm_max[0])
            for y in (spec.mm_min[1], spec.mm_max[1])
            for z in (spec.mm_min[2], spec.mm_max[2])
        ]
    )
    voxels = (inverse @ corners.T)[:3]  # (3, 8)
    lo = np.maximum(np.ceil(voxels.min(axis=1) - 1e-6).astype(int), 0)
    hi = np.minimum(np.floor(voxels.max(axis=1) + 1e-6).astype(int), np.array(components.shape) - 1)
    region = np.zeros(components.shape, dtype=bool)
    if np.all(hi >= lo):
        region[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] = True
    if not region.any():
        raise RegionError(f"the box {spec.mm_min}-{spec.mm_max} mm contains no voxel of the image")
    return region, None


def _region_on_grid(
    region: np.ndarray, affine: np.ndarray, image_path: Path, config: RunConfig
) -> torch.Tensor:
    """A native region brought onto the working grid as training brings masks (nearest)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "region.nii.gz"
        nib.save(nib.Nifti1Image(region.astype(np.uint8), affine), str(path))
        transform = preprocess_for(config)
        item = transform({IMAGE_KEY: str(image_path), MASK_KEY: str(path)})
    return (item[MASK_KEY].as_tensor()[0] > 0.5).float()  # (D, H, W)


def attribute_region_subject(
    model: nn.Module,
    config: RunConfig,
    image_path: Path,
    spec: RegionSpec,
    *,
    steps: int = 32,
    method: QuadratureMethod = "gausslegendre",
    internal_batch_size: int | None = 8,
    device: str | torch.device = "cpu",
) -> RegionResult:
    """Why is this region segmented? The region attribution of one subject, in native space.

    The image is preprocessed as in training; the prediction (foreground logit > 0) is
    brought to the native grid and split into connected components there, where the viewer
    shows it and a click lands; the region is resolved on that grid (``whole``: the predicted
    mask on the working grid itself) and mapped onto the working grid with the training
    masks' nearest-neighbour resampling; IG runs there and the map goes back to native space.

    Raises:
        RegionError: If the region is empty or names a component that does not exist.
    """
    device = torch.device(device)
    transform = preprocess_for(config)
    image = transform({IMAGE_KEY: str(image_path)})[IMAGE_KEY]  # MetaTensor (1, *grid)
    x = image.as_tensor()[None].to(device)  # (1, 1, *grid)
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.no_grad():
            logits = model(x).float()  # (1, 1, *grid)
        native_logits, affine = to_native(logits[0].cpu(), image, transform)
        header = load_image(image_path)
        if not np.allclose(affine, np.asarray(header.affine), atol=_AFFINE_ATOL):
            raise RuntimeError("inverting the preprocessing did not give the image's affine")
        affine = np.asarray(header.affine, dtype=np.float64)
        components, count = label_components(native_logits > 0)
        component = None
        if spec.kind == "whole":
            grid_region = (logits[0, 0] > 0).float().cpu()
            native_region = components > 0
            if not grid_region.any():
                raise RegionError("the model predicts no lesion voxel for this subject")
        else:
            native_region, component = _native_region(spec, components, count, affine)
            grid_region = _region_on_grid(native_region, affine, image_path, config)
            if not grid_region.any():
                raise RegionError("the region covers no voxel of the working grid")
        out = region_attribution(
            model,
            x,
            grid_region,
            steps=steps,
            method=method,
            internal_batch_size=internal_batch_size,
        )
    finally:
        model.train(was_training)
    attr_grid = out.attributions.detach()[0].float().cpu()
    native_map, _ = to_native(attr_grid, image, transform)
    assert out.delta is not None and out.logits is not None
    delta = abs(float(out.delta[0]))
    region_logit = float(out.logits[0])
    baseline_logit = region_logit - (float(attr_grid.sum()) - float(out.delta[0]))
    gap = abs(region_logit - baseline_logit)
    stats: dict[str, float | None] = {
        **map_stats(native_map),
        "grid_sum": float(attr_grid.sum()),
        "relative_delta": delta / gap if gap > 0 else None,
        "region_voxels": float(grid_region.sum()),
        "region_native_voxels": float(native_region.sum()),
        "n_components": float(count),
        "region_logit": region_logit,
    }
    if component is not None:
        stats["component"] = float(component)
    return RegionResult(
        map=native_map,
        affine=affine,
        prediction=components.astype(np.int16),
        region=native_region,
        convergence_delta=delta,
        logit=region_logit,
        component=component,
        stats=stats,
    )
