"""Attribution metrics of a classifier against lesion masks, for validation and test splits.

Maps are the project's own Integrated Gradients (``worker.ml.attribution.differentiable``)
computed in eval mode without a graph to the weights (``create_graph=False``), zero baseline,
Gauss-Legendre quadrature, interpolation points evaluated in chunks. They are scored with
``worker.ml.metrics.attribution_report`` (sign-aware: only the positive part counts as
pathological relevance) inside the brain, taken as the non-zero voxels of the preprocessed
image (the background of a normalised synthetic subject is exactly 0; an image without zeros
is scored over the whole grid).

Everything that leaves this module is JSON-safe: an undefined metric (no lesion mask, one
class) is ``None``, never ``nan``.

Typical use: choose the Dice threshold on validation maps, apply it unchanged to test maps::

    val = evaluate_attributions(model, val_samples)
    test = evaluate_attributions(model, test_samples, threshold=val.chosen_threshold)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from worker.ml.attribution.differentiable import (
    QuadratureMethod,
    TrainQuadratureMethod,
    integrated_gradients,
)
from worker.ml.metrics import attribution_report, best_threshold

__all__ = [
    "DEFAULT_STEPS",
    "Baseline",
    "AttributionEvaluation",
    "EvalSample",
    "attribution_maps",
    "evaluate_attributions",
    "json_safe",
]

DEFAULT_STEPS = 16
DEFAULT_QUADRATURE: QuadratureMethod = "gausslegendre"

ArrayLike = np.ndarray | torch.Tensor
# (image, lesion mask or None, label): image (C, D, H, W) or (D, H, W) on the working grid,
# as preprocessing produced it; mask of the same spatial shape; label 0 or 1.
EvalSample = tuple[ArrayLike, ArrayLike | None, int]
# The IG reference of an evaluation: one image (C, D, H, W) for every subject, a function that
# gives a batch (b, C, D, H, W) its own references, or None (the zero image).
Baseline = torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None


@dataclass
class AttributionEvaluation:
    """Attribution metrics of one split.

    Attributes:
        metrics: ``worker.ml.metrics.attribution_report`` keys (``dice_at_threshold``,
            ``dice_top_k``, ``voxel_auroc``, ``voxel_auprc``, ``lesion_mass``,
            ``pointing_game``, ``healthy_share``, ``n_pathological``,
            ``n_pathological_skipped``, ``n_healthy``, ``threshold``, ``top_k_percent``) and
            ``ig_delta_abs_mean`` (mean |completeness gap| of the IG maps, in logits);
            ``None`` where undefined. ``dice_at_threshold`` and ``threshold`` are ``None``
            when no threshold was given and none could be chosen.
        chosen_threshold: The Dice threshold that is best on these maps
            (``metrics.best_threshold``), or ``None`` without a pathological subject with a
            non-empty mask. Choose it on validation and pass it for the test split.
        seconds: Wall time of the maps and the metrics.
        maps: The maps ``(D, H, W)`` (channels summed), only when asked for.
    """

    metrics: dict[str, float | None]
    chosen_threshold: float | None
    seconds: float
    maps: list[np.ndarray] | None = None


def json_safe(values: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of a flat metrics dict with ``nan``/``inf`` floats replaced by ``None``.

    numpy scalars become Python numbers; other values are kept as they are.
    """
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        clean[key] = value
    return clean


def _as_tensor(image: ArrayLike) -> torch.Tensor:
    """A plain float32 ``(C, D, H, W)`` tensor (MetaTensor bookkeeping dropped)."""
    if hasattr(image, "as_tensor"):
        image = image.as_tensor()
    tensor = torch.as_tensor(image).detach().float()
    return tensor[None] if tensor.ndim == 3 else tensor


def _reference(baseline: Baseline, x: torch.Tensor) -> torch.Tensor | None:
    """The IG references of a batch ``x`` ``(b, C, D, H, W)``, or ``None`` for the zero image."""
    if baseline is None:
        return None
    if isinstance(baseline, torch.Tensor):
        return baseline.to(x.device)[None]
    return baseline(x)


def _as_mask(mask: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    if hasattr(mask, "as_tensor"):
        mask = mask.as_tensor()
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    array = array.reshape(array.shape[-3:]) if array.ndim > 3 else array
    if array.shape != shape:
        raise ValueError(f"mask shape {array.shape} != image grid {shape}")
    return array > 0.5


def attribution_maps(
    model: nn.Module,
    images: Sequence[ArrayLike],
    *,
    steps: int = DEFAULT_STEPS,
    method: TrainQuadratureMethod = DEFAULT_QUADRATURE,
    batch_size: int = 4,
    internal_batch_size: int | None = 32,
    device: torch.device | str | None = None,
    baseline: Baseline = None,
) -> tuple[list[np.ndarray], list[float]]:
    """Integrated Gradients maps of the pathological logit, in eval mode.

    The model is put in eval mode (batch norm uses its running statistics, so subjects are
    independent and chunking does not change the result) and returned to its previous mode.

    Args:
        model: Classifier returning a logit ``(B,)`` or a logit map.
        images: Preprocessed images ``(C, D, H, W)`` or ``(D, H, W)``, all on one grid.
        steps: Integration points.
        method: ``"gausslegendre"`` or ``"riemann_middle"``; ``"riemann_stratified"`` gives
            one random draw of a training step's map (the global random source).
        batch_size: Subjects attributed together.
        internal_batch_size: Path images per forward/backward pass (bounds memory).
        device: Where to compute; default the model's device.
        baseline: IG reference ``(C, D, H, W)`` (e.g. a run's mean healthy image), a callable
            that gives each batch of images ``(b, C, D, H, W)`` its own references (e.g.
            ``LocalMeanBaseline``); ``None`` is the zero image.

    Returns:
        The signed maps ``(D, H, W)`` as float32 numpy arrays (channels summed), and the
        completeness gap sum(A) - (F(x) - F(x')) of each.
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    was_training = model.training
    model.eval()
    maps: list[np.ndarray] = []
    deltas: list[float] = []
    try:
        for start in range(0, len(images), batch_size):
            chunk = [_as_tensor(image) for image in images[start : start + batch_size]]
            x = torch.stack(chunk).to(device)  # (b, C, D, H, W)
            out = integrated_gradients(
                model,
                x,
                baseline=_reference(baseline, x),
                steps=steps,
                method=method,
                internal_batch_size=internal_batch_size,
                create_graph=False,
            )
            summed = out.attributions.detach().float().sum(dim=1)  # (b, D, H, W)
            maps.extend(summed.cpu().numpy())
            assert out.delta is not None  # IG always reports its completeness gap
            deltas.extend(float(d) for d in out.delta.cpu())
    finally:
        model.train(was_training)
    return maps, deltas


def evaluate_attributions(
    model: nn.Module,
    samples: Sequence[EvalSample],
    *,
    threshold: float | None = None,
    steps: int = DEFAULT_STEPS,
    method: QuadratureMethod = DEFAULT_QUADRATURE,
    top_k_percent: float = 5.0,
    batch_size: int = 4,
    internal_batch_size: int | None = 32,
    device: torch.device | str | None = None,
    keep_maps: bool = False,
    baseline: Baseline = None,
) -> AttributionEvaluation:
    """Compute IG maps of ``samples`` and score them against their lesion masks.

    Args:
        model: Classifier returning a logit ``(B,)`` or a logit map.
        samples: ``(image, mask, label)`` per subject, preprocessed on the working grid;
            ``mask`` may be ``None`` (healthy subjects, or pathological ones without a mask,
            which are then left out of the lesion metrics).
        threshold: Dice threshold (absolute, on the scale of these maps: same method and
            steps as where it was chosen). ``None``: use the one chosen on these maps.
        steps: Integration points of IG.
        method: IG quadrature.
        top_k_percent: Percentage of brain voxels of ``dice_top_k``.
        batch_size: Subjects attributed together.
        internal_batch_size: Path images per forward/backward pass.
        device: Where to compute; default the model's device.
        keep_maps: Return the maps as well.
        baseline: IG reference ``(C, D, H, W)``, or a callable of the images (as in
            ``attribution_maps``); ``None`` is the zero image.

    Returns:
        An ``AttributionEvaluation``; with no samples, every metric is ``None``.
    """
    started = time.perf_counter()
    if not samples:
        return AttributionEvaluation(
            metrics=_empty_metrics(top_k_percent), chosen_threshold=None, seconds=0.0
        )
    images = [_as_tensor(image) for image, _, _ in samples]
    labels = [int(label) for _, _, label in samples]
    maps, deltas = attribution_maps(
        model,
        images,
        steps=steps,
        method=method,
        batch_size=batch_size,
        internal_batch_size=internal_batch_size,
        device=device,
        baseline=baseline,
    )
    shape = tuple(maps[0].shape)
    masks = [_as_mask(mask, shape) for _, mask, _ in samples]
    brains = [_brain_mask(image) for image in images]

    lesions = {
        i: m
        for i, (m, y) in enumerate(zip(masks, labels, strict=True))
        if y == 1 and m is not None and np.any(m)
    }
    with_lesion = list(lesions)
    chosen = (
        best_threshold(
            [maps[i] for i in with_lesion],
            list(lesions.values()),
            brain_masks=[brains[i] for i in with_lesion],
        )
        if with_lesion
        else None
    )
    used = threshold if threshold is not None else chosen
    report = attribution_report(
        maps,
        masks,
        labels,
        threshold=used if used is not None else 0.0,
        top_k_percent=top_k_percent,
        brain_masks=brains,
    )
    if used is None:
        report["dice_at_threshold"] = float("nan")
        report["threshold"] = float("nan")
    report["ig_delta_abs_mean"] = float(np.mean(np.abs(deltas)))
    # The share of each lesion's voxels that carry pathological relevance (A > 0), averaged
    # over pathological subjects: a constraint that "succeeds" by making every map negative
    # scores 0 here, whatever its healthy share.
    report["lesion_positive"] = (
        float(np.mean([float((maps[i][m] > 0).mean()) for i, m in lesions.items()]))
        if with_lesion
        else float("nan")
    )
    return AttributionEvaluation(
        metrics=json_safe(report),
        chosen_threshold=chosen,
        seconds=time.perf_counter() - started,
        maps=maps if keep_maps else None,
    )


def _brain_mask(image: torch.Tensor) -> np.ndarray | None:
    """Non-zero voxels of a preprocessed image (any channel); ``None`` when that is all."""
    brain = (image != 0).any(dim=0).cpu().numpy()  # (D, H, W)
    return None if brain.all() or not brain.any() else brain


def _empty_metrics(top_k_percent: float) -> dict[str, float | None]:
    keys = (
        "dice_at_threshold",
        "dice_top_k",
        "voxel_auroc",
        "voxel_auprc",
        "lesion_mass",
        "pointing_game",
        "healthy_share",
        "threshold",
        "ig_delta_abs_mean",
    )
    return {
        **dict.fromkeys(keys),
        "n_pathological": 0,
        "n_pathological_skipped": 0,
        "n_healthy": 0,
        "top_k_percent": float(top_k_percent),
    }
