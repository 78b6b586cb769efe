"""The counterfactual check of the shortcut report: a run's logits with a region erased.

Each subject's native image is changed inside the region (filled with the brain's mean, with a
blurred copy of the image, or with the background), preprocessed exactly as in training, and
passed through the model; the logits before and after are returned. A model whose decision
rests on the region loses its AUROC on the erased images; one that does not keeps it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score
from torch import nn

from attrivue_core.configs import RunConfig
from attrivue_core.io import load_nifti, save_nifti
from worker.ml.nets import pathological_logit
from worker.ml.transforms import subject_on_grid

__all__ = [
    "Fill",
    "SubjectLogits",
    "counterfactual_summary",
    "erase_region",
    "logits_with_region_erased",
    "subject_logit",
]

Fill = Literal["mean", "blur", "background"]
# The blurred copy's Gaussian width (mm): wide enough to wipe out a stripe or a lesion.
BLUR_SIGMA_MM = 8.0


@dataclass(frozen=True)
class SubjectLogits:
    """The pathological logit of one subject before and after its region was erased."""

    before: float
    after: float
    region_voxels: int


def erase_region(
    image: np.ndarray,
    region: np.ndarray,
    fill: Fill,
    *,
    brain: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    blur_sigma_mm: float = BLUR_SIGMA_MM,
) -> np.ndarray:
    """A copy of ``image`` with the voxels of ``region`` replaced.

    Args:
        image: Native 3D image.
        region: Boolean array of the image's shape.
        fill: ``mean``: the mean intensity inside the brain (outside the region); ``blur``: a
            Gaussian-blurred copy of the image (``blur_sigma_mm``); ``background``: the median
            of the voxels outside the brain (0 for skull-stripped or synthetic data).
        brain: The subject's brain mask (``mean`` and ``background`` need it; without one the
            non-zero voxels are taken for the brain).
        spacing: Voxel sizes in mm (for ``blur``).
    """
    out = np.array(image, dtype=np.float32, copy=True)
    inside = np.asarray(region, dtype=bool)
    if not inside.any():
        return out
    head = np.asarray(brain, dtype=bool) if brain is not None else out != 0
    if fill == "blur":
        sigma = [blur_sigma_mm / max(float(s), 1e-6) for s in spacing]
        out[inside] = gaussian_filter(out, sigma=sigma, mode="nearest")[inside]
    elif fill == "mean":
        source = head & ~inside
        out[inside] = float(out[source].mean()) if source.any() else 0.0
    elif fill == "background":
        outside = ~head & ~inside
        out[inside] = float(np.median(out[outside])) if outside.any() else 0.0
    else:
        raise ValueError(f"unknown fill {fill!r}: mean, blur or background")
    return out


def subject_logit(
    model: nn.Module,
    config: RunConfig,
    image: Path,
    brain: Path | None,
    device: torch.device,
    channels: Sequence[Path] = (),
) -> float:
    """The model's pathological logit on one subject (``image`` and the images of its other
    ``channels``), preprocessed as ``config`` says."""
    x = subject_on_grid(config, image, channels, brain).as_tensor()[None].to(device)
    with torch.no_grad():
        return float(pathological_logit(model(x))[0])


def logits_with_region_erased(
    model: nn.Module,
    config: RunConfig,
    subjects: Sequence[tuple[Path, Path | None, Callable[[np.ndarray, np.ndarray], np.ndarray]]],
    fill: Fill,
    *,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
    channels: Sequence[Sequence[Path]] | None = None,
) -> list[SubjectLogits]:
    """Each subject's logit on its image and on the image with its region erased.

    Args:
        model: The trained classifier (in eval mode).
        config: The configuration it was trained with (grid, intensity, brain).
        subjects: ``(image path, brain mask path or None, region)`` where ``region(image,
            affine)`` gives the boolean region on the native grid.
        fill: How the region is erased (``erase_region``).
        device: Where to compute.
        progress: Called with the number of subjects done after each one (it may raise to stop).
        channels: Each subject's images of channels 1.. (a multi-modal dataset; ``None``: one
            channel): the region (found on channel 0's grid, which they share) is erased in
            every channel, each filled from its own values.
    """
    torch_device = torch.device(device)
    model = model.to(torch_device).eval()
    out = []
    extra = list(channels) if channels is not None else [()] * len(subjects)
    if len(extra) != len(subjects):
        raise ValueError(f"{len(subjects)} subjects but {len(extra)} channel lists")
    with tempfile.TemporaryDirectory(prefix="attrivue-erased-") as folder:
        for i, ((image_path, brain_path, region_of), more) in enumerate(
            zip(subjects, extra, strict=True)
        ):
            image, affine = load_nifti(image_path)
            brain = load_nifti(brain_path)[0] > 0 if brain_path is not None else None
            region = region_of(image, affine)
            spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
            erased_paths = []
            for c, path in enumerate([image_path, *more]):
                volume, channel_affine = (image, affine) if c == 0 else load_nifti(path)
                erased = erase_region(volume, region, fill, brain=brain, spacing=spacing)
                erased_paths.append(Path(folder) / f"{i}-{c}.nii.gz")
                save_nifti(erased_paths[-1], erased, channel_affine, dtype=np.float32)
            before = subject_logit(model, config, image_path, brain_path, torch_device, more)
            after = subject_logit(
                model, config, erased_paths[0], brain_path, torch_device, erased_paths[1:]
            )
            out.append(SubjectLogits(before=before, after=after, region_voxels=int(region.sum())))
            for path in erased_paths:
                path.unlink()
            if progress is not None:
                progress(i + 1)
    return out


def _auroc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """AUROC (ties count one half); None with one class only."""
    return float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else None


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def counterfactual_summary(
    labels: Sequence[int], logits: Sequence[SubjectLogits], *, region: str, fill: Fill
) -> dict[str, Any]:
    """The counterfactual check's numbers: AUROC and accuracy (logit >= 0, i.e. probability
    >= 0.5) before and after erasing, and the mean logit change (after - before) over all
    subjects, the pathological and the healthy ones."""

    def metrics(values: Sequence[float]) -> dict[str, Any]:
        called = [v >= 0.0 for v in values]
        correct = [c == bool(y) for c, y in zip(called, labels, strict=True)]
        return {
            "auroc": _auroc(labels, values),
            "accuracy": float(np.mean(correct)) if correct else 0.0,
        }

    change = [s.after - s.before for s in logits]
    return {
        "region": region,
        "fill": fill,
        "n": len(logits),
        "n_without_region": sum(1 for s in logits if s.region_voxels == 0),
        "before": metrics([s.before for s in logits]),
        "after": metrics([s.after for s in logits]),
        "mean_logit_change": _mean(change) or 0.0,
        "mean_logit_change_pathological": _mean(
            [c for c, y in zip(change, labels, strict=True) if y == 1]
        ),
        "mean_logit_change_healthy": _mean(
            [c for c, y in zip(change, labels, strict=True) if y == 0]
        ),
    }
