"""Preprocessing of subjects onto the working grid, and its inverse for attribution maps.

The same ``Compose`` is used for training and for attribution (without augmentation), so a
map computed on the working grid refers to exactly the voxels the network saw. The spatial
steps (orientation to RAS, resize) are MONAI invertible transforms: ``to_native`` replays
their inverse on the map, which lands it on the subject's native voxel grid and affine.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    DeleteItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    MaskIntensityd,
    NormalizeIntensityd,
    Orientationd,
    RandAffined,
    RandFlipd,
    Resized,
    ScaleIntensityRangePercentilesd,
)

from attrivue_core.brainmask import compute_brain_mask

__all__ = [
    "BRAIN_KEY",
    "IMAGE_KEY",
    "MASK_KEY",
    "BrainName",
    "IntensityName",
    "image_item",
    "preprocess",
    "preprocess_for",
    "subject_item",
    "subject_on_grid",
    "to_native",
]

IMAGE_KEY = "image"
MASK_KEY = "mask"
BRAIN_KEY = "brain"
IntensityName = Literal["zscore", "percentile"]
BrainName = Literal["mask", "nonzero"]

_KEYS = (IMAGE_KEY, MASK_KEY)
_ALL_KEYS = (IMAGE_KEY, MASK_KEY, BRAIN_KEY)
# Voxels of margin around the brain's bounding box, on the native grid.
_CROP_MARGIN = 2
# Explicit labels: nibabel-loaded images are in RAS world space; passing them silences
# MONAI's deprecation warning about the default changing.
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def preprocess(
    grid: Sequence[int],
    *,
    augment: bool = False,
    intensity: IntensityName = "zscore",
    brain: BrainName = "nonzero",
) -> Compose:
    """Build the dictionary transform that brings a subject onto the working grid.

    The input dict holds file paths under ``"image"`` (one path, or one per modality on the
    same grid, stacked as channels in that order) and, optionally, ``"mask"`` (lesions)
    and ``"brain"`` (the subject's brain mask); the output holds float32 ``MetaTensor`` of
    shape ``(1, *grid)`` under ``"image"`` (and ``"mask"``) that carry the applied operations
    needed by ``to_native``.

    Args:
        grid: Working grid size in voxels, three integers.
        augment: Add light random flips and affine jitter (training only; never for
            attribution, whose inverse must be deterministic).
        intensity: ``"zscore"`` normalises non-zero voxels to zero mean and unit variance
            (background stays 0, so the zero baseline of IG means "no tissue");
            ``"percentile"`` maps the 0.5-99.5 percentiles to [0, 1].
        brain: ``"mask"``: the subject's brain mask (the ``"brain"`` file, or one computed
            from the image by ``attrivue_core.brainmask``) crops the volume to the brain's
            bounding box (plus a margin) before the resize, so the working grid's voxels are
            spent on the brain, and every voxel outside the brain is set to 0 before the
            intensity normalisation (a noisy background then neither enters the statistics
            nor reaches the network). ``"nonzero"``: no crop, no masking; the brain is
            whatever is non-zero (right only for data whose background is exactly 0).

    Returns:
        The composed transform. Keep the instance: ``to_native`` needs the same object.
    """
    spatial_size = tuple(int(s) for s in grid)
    if len(spatial_size) != 3:
        raise ValueError(f"grid must have three sizes, got {grid!r}")
    if brain not in ("mask", "nonzero"):
        raise ValueError(f"brain must be 'mask' or 'nonzero', got {brain!r}")
    keys = _ALL_KEYS if brain == "mask" else _KEYS
    steps = [
        LoadImaged(keys, image_only=True, allow_missing_keys=True),
        EnsureChannelFirstd(keys, allow_missing_keys=True),
        Orientationd(keys, axcodes="RAS", labels=_RAS_LABELS, allow_missing_keys=True),
    ]
    if brain == "mask":
        steps += [
            _EnsureBraind(),
            CropForegroundd(
                keys,
                source_key=BRAIN_KEY,
                select_fn=_inside,
                margin=_CROP_MARGIN,
                allow_smaller=True,
                allow_missing_keys=True,
            ),
        ]
    # Anti-aliasing keeps small lesions from vanishing when the image is downsampled;
    # masks stay binary through nearest-neighbour resampling.
    steps.append(
        Resized(
            keys,
            spatial_size=spatial_size,
            mode=("trilinear", "nearest", "nearest")[: len(keys)],
            anti_aliasing=(True, False, False)[: len(keys)],
            allow_missing_keys=True,
        )
    )
    if brain == "mask":
        steps += [
            MaskIntensityd(IMAGE_KEY, mask_key=BRAIN_KEY),
            DeleteItemsd(BRAIN_KEY),
        ]
    steps.append(_intensity_transform(intensity))
    if augment:
        steps.extend(_augmentations())
    steps.append(EnsureTyped(_KEYS, dtype=torch.float32, allow_missing_keys=True))
    return Compose(steps)


def image_item(image: Path | str, channels: Sequence[Path | str] = ()) -> str | list[str]:
    """The ``image`` entry of an item: one path, or the path of every channel in order (one
    modality each, on one grid), which ``LoadImaged`` stacks as channels."""
    return [str(image), *(str(c) for c in channels)] if channels else str(image)


def subject_item(
    image: Path | str, channels: Sequence[Path | str] = (), brain: Path | str | None = None
) -> dict[str, Any]:
    """The item of one subject's images: every channel (``image`` is channel 0, ``channels``
    the others in the dataset's order) and its stored brain mask (``None``: computed)."""
    item: dict[str, Any] = {IMAGE_KEY: image_item(image, channels)}
    if brain is not None:
        item[BRAIN_KEY] = str(brain)
    return item


def subject_on_grid(
    config: Any,
    image: Path | str,
    channels: Sequence[Path | str] = (),
    brain: Path | str | None = None,
    *,
    transform: Compose | None = None,
) -> MetaTensor:
    """One subject preprocessed as training does, without augmentation: ``(C, *grid)``, one
    channel per modality (``transform``: ``preprocess_for(config)``, built once by a caller
    that loads many subjects or inverts the preprocessing with ``to_native``).

    Every path that feeds a subject to a trained network goes through here (attribution, its
    healthy references, evidence checks, shortcut reports, imported-model checks), so that a
    multi-modal subject is seen with all of its channels, exactly as in training."""
    steps = transform if transform is not None else preprocess_for(config)
    return steps(subject_item(image, channels, brain))[IMAGE_KEY]


def preprocess_for(config: Any, *, augment: bool = False) -> Compose:
    """``preprocess`` with the grid, intensity and brain settings of a ``RunConfig``."""
    return preprocess(
        config.grid,
        augment=augment,
        intensity=config.intensity,
        brain=getattr(config, "brain", "nonzero"),
    )


def _inside(mask: torch.Tensor) -> torch.Tensor:
    return mask > 0.5


class _EnsureBraind(MapTransform):
    """Give the item a brain mask: the subject's own, or one computed from its image."""

    def __init__(self) -> None:
        super().__init__(BRAIN_KEY, allow_missing_keys=True)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        item = dict(data)
        image = item[IMAGE_KEY]
        if item.get(BRAIN_KEY) is not None:
            if tuple(item[BRAIN_KEY].shape)[1:] != tuple(image.shape)[1:]:
                raise ValueError(
                    f"brain mask shape {tuple(item[BRAIN_KEY].shape)[1:]} differs from the "
                    f"image's {tuple(image.shape)[1:]}"
                )
            item[BRAIN_KEY] = (item[BRAIN_KEY] > 0.5).to(torch.float32)
            return item
        array = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
        spacing = [float(v) for v in image.pixdim[:3]] if isinstance(image, MetaTensor) else None
        brain = compute_brain_mask(array[0].float().numpy(), spacing)
        mask = MetaTensor(
            torch.as_tensor(brain[None], dtype=torch.float32),
            meta=dict(image.meta) if isinstance(image, MetaTensor) else None,
        )
        item[BRAIN_KEY] = mask
        return item


def _intensity_transform(intensity: IntensityName):
    """Return the intensity normalisation step (image only; each channel, i.e. each modality,
    on its own)."""
    if intensity == "zscore":
        return NormalizeIntensityd(IMAGE_KEY, nonzero=True, channel_wise=True)
    if intensity == "percentile":
        return ScaleIntensityRangePercentilesd(
            IMAGE_KEY, lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True, channel_wise=True
        )
    raise ValueError(f"unknown intensity normalisation {intensity!r}")


def _augmentations() -> list:
    """Return light spatial augmentations applied jointly to image and mask."""
    return [
        RandFlipd(_KEYS, prob=0.5, spatial_axis=0, allow_missing_keys=True),
        RandAffined(
            _KEYS,
            prob=0.5,
            rotate_range=(0.1, 0.1, 0.1),
            scale_range=(0.05, 0.05, 0.05),
            translate_range=(2, 2, 2),
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
            allow_missing_keys=True,
        ),
    ]


def to_native(
    map_on_grid: torch.Tensor | np.ndarray,
    reference: MetaTensor,
    transform: Compose,
) -> tuple[np.ndarray, np.ndarray]:
    """Bring a map computed on the working grid back to the subject's native grid.

    The inverse of every invertible step recorded on ``reference`` is applied to the map
    (resize back with trilinear interpolation, then undo the reorientation). Values are
    interpolated, not rescaled: the sign of the relevance is preserved, but sums over native
    voxels differ from sums over grid voxels when the grids differ in size.

    Args:
        map_on_grid: Map of shape ``grid``, ``(1, *grid)``, or ``(C, *grid)`` (one map per
            channel; each is brought back alike).
        reference: The preprocessed image (``transform(...)["image"]``), whose applied
            operations describe how the native image reached the grid.
        transform: The very ``Compose`` instance that produced ``reference``.

    Returns:
        ``(map, affine)``: the float32 map with the native spatial shape (``(C, ...)`` for
        several channels), and its 4x4 affine (the native image's affine).
    """
    if isinstance(map_on_grid, MetaTensor):
        map_on_grid = map_on_grid.as_tensor()
    data = torch.as_tensor(map_on_grid).detach().float().cpu()
    if data.ndim == 3:
        data = data[None]
    if tuple(data.shape)[1:] != tuple(reference.shape)[1:]:
        raise ValueError(f"map shape {tuple(data.shape)} != grid shape {tuple(reference.shape)}")
    # The inverse pops operations off the tensor it inverts, so the map gets its own copy of
    # the reference's trace and metadata; the reference itself stays usable.
    carrier = MetaTensor(
        data.clone(),
        meta=dict(reference.meta),
        # Deep: the inverse pops nested entries too (a crop's pad_info), and a second map
        # of the same reference (the uncertainty volumes) needs them intact.
        applied_operations=copy.deepcopy(list(reference.applied_operations)),
    )
    inverted = transform.inverse({IMAGE_KEY: carrier})[IMAGE_KEY]
    values = inverted.as_tensor().numpy().astype(np.float32, copy=False)
    native = values[0] if values.shape[0] == 1 else values
    affine = np.asarray(inverted.affine, dtype=np.float64)
    return native, affine
