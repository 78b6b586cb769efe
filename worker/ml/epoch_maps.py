"""Attribution maps of a few watch subjects after every epoch, stored in reduced form, and the
per-subject lesion metrics of a model.

The method is that of the run's per-epoch validation (``worker.ml.training``): Integrated
Gradients of the pathological logit, ``EPOCH_MAP_STEPS`` Gauss-Legendre points, eval mode,
zero baseline, on the working grid. A map is stored as int16 NIfTI on the working grid with
its world affine (so a viewer overlays it on the native image) and ``scl_slope`` = max|A| /
32767: 2 bytes a voxel, 48 x 56 x 48 x 2 = 258 KiB before gzip on the default grid (32 KiB on
a 24 x 28 x 24 grid), against 4 bytes a voxel at native resolution for a full map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from torch import nn

from attrivue_core.configs import RunConfig
from worker.ml.evaluation import attribution_maps
from worker.ml.metrics import dice_top_k, lesion_mass, pointing_game
from worker.ml.training.checkpoints import load_model
from worker.ml.transforms import IMAGE_KEY, MASK_KEY, preprocess_for, subject_item

__all__ = [
    "EPOCH_MAP_METHOD",
    "EPOCH_MAP_STEPS",
    "EpochMap",
    "EpochMapRecorder",
    "GridSubject",
    "lesion_metrics",
    "load_grid_subject",
    "subject_metrics",
]

EPOCH_MAP_STEPS = 8  # = worker.ml.training.datatypes.VAL_IG_STEPS
EPOCH_MAP_METHOD = "integrated_gradients"
INT16_MAX = 32767
TOP_K_PERCENT = 5.0


@dataclass
class GridSubject:
    """A subject preprocessed onto the working grid: image ``(C, D, H, W)`` (one channel per
    modality), lesion mask (bool, or ``None``) and the grid's world affine."""

    subject_id: int | str
    image: torch.Tensor
    mask: np.ndarray | None
    affine: np.ndarray


@dataclass
class EpochMap:
    """One reduced map: int16 values, ``scale`` attribution units per int16 unit."""

    subject_id: int | str
    epoch: int
    values: np.ndarray
    scale: float
    affine: np.ndarray
    stats: dict[str, float | None]

    def save(self, path: Path) -> Path:
        image = nib.Nifti1Image(self.values.astype(np.int16), self.affine)
        image.header.set_data_dtype(np.int16)
        image.header.set_slope_inter(self.scale, 0.0)
        image.header["descrip"] = f"attrivue epoch {self.epoch} IG{EPOCH_MAP_STEPS}".encode()
        nib.save(image, str(path))
        return Path(path)


def load_grid_subject(
    config: RunConfig,
    subject_id: int | str,
    image: Path,
    mask: Path | None,
    channels: Sequence[Path] = (),
) -> GridSubject:
    """Preprocess one subject exactly as training does (no augmentation), with the images of
    its other ``channels`` (a multi-modal subject) stacked after ``image``."""
    transform = preprocess_for(config)
    item: dict[str, Any] = subject_item(image, channels)
    if mask is not None:
        item[MASK_KEY] = str(mask)
    out = transform(item)
    img = out[IMAGE_KEY]
    affine = np.asarray(img.affine, dtype=np.float64)
    lesion = None
    if mask is not None:
        lesion = out[MASK_KEY].as_tensor()[0].numpy() > 0.5
    return GridSubject(subject_id, img.as_tensor(), lesion, affine)


def lesion_metrics(attribution: np.ndarray, subject: GridSubject) -> dict[str, float | None]:
    """Sign-aware lesion metrics of one map on the working grid, inside the brain.

    ``lesion_mass`` (positive mass in the lesion / total positive mass), ``dice_top5``
    (Dice of the top 5 % brain voxels of A against the mask), ``pointing_game``; ``None`` without
    a lesion; plus ``positive_mass`` and ``negative_mass`` of the map.
    """
    brain = (subject.image != 0).any(dim=0).numpy()
    a = np.asarray(attribution, np.float64)
    out: dict[str, float | None] = {
        "positive_mass": float(a[a > 0].sum()),
        "negative_mass": float(a[a < 0].sum()),
        "lesion_mass": None,
        "dice_top5": None,
        "pointing_game": None,
    }
    if subject.mask is not None and subject.mask.any():
        out["lesion_mass"] = lesion_mass(a, subject.mask, brain_mask=brain)
        out["dice_top5"] = dice_top_k(a, subject.mask, TOP_K_PERCENT, brain_mask=brain)
        out["pointing_game"] = float(pointing_game(a, subject.mask, brain_mask=brain))
    return out


def _maps(model: nn.Module, subjects: Sequence[GridSubject], device: torch.device | str):
    maps, _ = attribution_maps(
        model,
        [s.image for s in subjects],
        steps=EPOCH_MAP_STEPS,
        method="gausslegendre",
        batch_size=4,
        device=device,
    )
    return maps


def subject_metrics(
    model: nn.Module, subjects: Sequence[GridSubject], device: torch.device | str = "cpu"
) -> list[dict[str, float | None]]:
    """``lesion_metrics`` of the model's maps of each subject."""
    if not subjects:
        return []
    return [
        lesion_metrics(m, s) for m, s in zip(_maps(model, subjects, device), subjects, strict=True)
    ]


class EpochMapRecorder:
    """Computes the reduced maps of the watch subjects from a model after an epoch."""

    def __init__(self, subjects: Sequence[GridSubject]) -> None:
        self.subjects = list(subjects)

    @classmethod
    def for_run(
        cls,
        config: RunConfig,
        samples: Sequence[Any],
    ) -> EpochMapRecorder:
        """From ``SubjectSample``-like objects (``subject_id``, ``image``, ``mask``), keeping
        those named in ``config.watch_subjects`` (in that order)."""
        wanted = [str(s) for s in config.watch_subjects]
        by_id = {str(s.subject_id): s for s in samples}
        missing = [w for w in wanted if w not in by_id]
        if missing:
            raise ValueError(f"watch_subjects not in the dataset: {missing}")
        return cls(
            [
                load_grid_subject(
                    config,
                    by_id[w].subject_id,
                    by_id[w].image,
                    by_id[w].mask,
                    tuple(getattr(by_id[w], "channels", ())),
                )
                for w in wanted
            ]
        )

    def record(
        self, model: nn.Module, epoch: int, device: torch.device | str = "cpu"
    ) -> list[EpochMap]:
        if not self.subjects:
            return []
        maps = _maps(model, self.subjects, device)
        out = []
        for subject, attribution in zip(self.subjects, maps, strict=True):
            a = np.asarray(attribution, np.float32)
            peak = float(np.abs(a).max())
            scale = peak / INT16_MAX if peak > 0 else 1.0
            values = np.clip(np.rint(a / scale), -INT16_MAX, INT16_MAX).astype(np.int16)
            out.append(
                EpochMap(
                    subject_id=subject.subject_id,
                    epoch=epoch,
                    values=values,
                    scale=scale,
                    affine=subject.affine,
                    stats={
                        **lesion_metrics(a, subject),
                        "min": float(a.min()),
                        "max": float(a.max()),
                    },
                )
            )
        return out

    def record_checkpoint(
        self, checkpoint: Path, epoch: int, device: torch.device | str = "cpu"
    ) -> list[EpochMap]:
        """The maps of the weights stored in ``checkpoint`` (``last.pt`` after ``epoch``)."""
        model, _ = load_model(checkpoint, device=device)
        return self.record(model, epoch, device)
