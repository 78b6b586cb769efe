"""The data side of a run: items for MONAI's transforms, cached splits, seeded loaders and
batches as plain tensors. Shared by every task."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose, Transform
from torch import nn

from attrivue_core.configs import RunConfig
from worker.ml.normative import NormativeInput
from worker.ml.regression import TARGET_KEY
from worker.ml.training.datatypes import (
    LABEL_KEY,
    MASK_AVAILABLE_KEY,
    TARGET_GIVEN_KEY,
    Split,
    SubjectSample,
)
from worker.ml.transforms import BRAIN_KEY, IMAGE_KEY, MASK_KEY, preprocess_for

__all__ = [
    "SPLITS",
    "CompleteItem",
    "as_item",
    "batch_tensors",
    "cached_splits",
    "decode_given_target",
    "epoch_seed",
    "eval_samples",
    "fit_normative",
    "healthy_references",
    "healthy_images",
    "make_loader",
    "plain",
    "with_given_targets",
]

SPLITS: tuple[Split, ...] = ("train", "val", "test")


class CompleteItem(Transform):
    """Last step of every split: plain tensors, and a mask for every subject.

    Subjects without a lesion mask get an all-zero placeholder and ``mask_available = 0``, so
    that batches collate and ``target_map`` leaves them unconstrained where a mask is needed.
    """

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        item = dict(data)
        image = plain(item[IMAGE_KEY])  # (C, D, H, W)
        item[IMAGE_KEY] = image
        mask = item.get(MASK_KEY)
        item[MASK_AVAILABLE_KEY] = np.float32(mask is not None)
        item[MASK_KEY] = (
            torch.zeros_like(image[:1]) if mask is None else plain(mask).to(torch.float32)
        )  # (1, D, H, W)
        given = float(item.get(TARGET_GIVEN_KEY, 0.0))
        item[TARGET_GIVEN_KEY] = np.float32(given)
        if given > 0.5:  # a stored target map: 255 (unconstrained) becomes NaN
            item[MASK_KEY] = decode_given_target(item[MASK_KEY])
        return item


def plain(tensor: Any) -> torch.Tensor:
    """Drop MetaTensor bookkeeping, which is useless inside the network and costs time."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)


def healthy_references(
    config: RunConfig,
    subjects: Sequence[SubjectSample],
    datasets: dict[str, CacheDataset],
    device: torch.device,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The healthy training images and their mean, for ``attribution_baseline="healthy"``.

    Preprocessed without augmentation (the references of a path attribution are fixed data,
    not random views). ``(None, None)`` with the zero baseline.
    """
    if config.attribution_baseline != "healthy":
        return None, None
    bank = healthy_images(config, subjects, datasets, "attribution_baseline 'healthy'")
    bank = bank.to(device)  # (R, C, D, H, W)
    return bank, bank.mean(dim=0, keepdim=True)


def healthy_images(
    config: RunConfig,
    subjects: Sequence[SubjectSample],
    datasets: dict[str, CacheDataset],
    needed_by: str,
    split: Split = "train",
) -> torch.Tensor:
    """The healthy subjects of one split (the training split unless said), ``(R, C, D, H, W)``
    on the CPU, preprocessed as in training without augmentation.

    Raises:
        ValueError: If the split has no healthy subject (``needed_by`` names the setting that
            needs one).
    """
    healthy = [s for s in subjects if s.split == split and s.label == 0]
    if not healthy:
        raise ValueError(f"{needed_by} needs healthy subjects in the {split} split")
    if config.augment and split == "train":
        transform = preprocess_for(config)
        images = [plain(transform(as_item(s, False, "val"))[IMAGE_KEY]) for s in healthy]
    else:
        items = (datasets[split][i] for i in range(len(datasets[split])))
        images = [plain(item[IMAGE_KEY]) for item in items if float(item[LABEL_KEY]) < 0.5]
    return torch.stack([torch.as_tensor(image, dtype=torch.float32) for image in images])


def fit_normative(
    model: nn.Module,
    config: RunConfig,
    subjects: Sequence[SubjectSample],
    datasets: dict[str, CacheDataset],
) -> None:
    """Fit a ``NormativeInput`` model's healthy reference on the training split (once: a
    resumed run keeps the reference its checkpoint restored)."""
    if not isinstance(model, NormativeInput) or bool(model.fitted):
        return
    model.fit(healthy_images(config, subjects, datasets, "normative_input"))


def as_item(
    subject: SubjectSample, with_masks: bool, split: Split, with_target: bool = False
) -> dict[str, Any]:
    """Turn a subject into the dict the MONAI transforms read."""
    item: dict[str, Any] = {IMAGE_KEY: subject.image_item(), LABEL_KEY: np.float32(subject.label)}
    if subject.brain_mask is not None:
        item[BRAIN_KEY] = str(subject.brain_mask)
    if with_target:
        item[TARGET_KEY] = np.float32(subject.target)
    if split == "train" and subject.target_map is not None:
        item[MASK_KEY] = str(subject.target_map)
        item[TARGET_GIVEN_KEY] = np.float32(1.0)
    elif with_masks and subject.mask is not None:
        item[MASK_KEY] = str(subject.mask)
    return item


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A well-mixed 32-bit seed per (run seed, epoch), so each epoch's shuffling and
    augmentation are reproducible after a resumption without replaying earlier epochs.
    ``stream`` gives independent seeds for other uses within the epoch."""
    entropy = [seed, epoch] if stream == 0 else [seed, epoch, stream]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def make_loader(dataset: CacheDataset, batch_size: int, *, shuffle: bool, seed: int) -> DataLoader:
    """Build a single-process loader whose order and augmentation depend only on ``seed``."""
    # A final batch of one image would break batch norm in training mode; drop it.
    drop_last = shuffle and len(dataset) > batch_size and len(dataset) % batch_size == 1
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )


def batch_tensors(batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain tensors on ``device``: images ``(B, 1, *grid)``, labels ``(B,)`` float."""
    images = plain(batch[IMAGE_KEY])
    labels = torch.as_tensor(batch[LABEL_KEY], dtype=torch.float32)
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def decode_given_target(stored: torch.Tensor) -> torch.Tensor:
    """A stored target map (0, 1, 255 = unconstrained) as float 0/1/NaN."""
    return torch.where(stored > 127.5, torch.nan, (stored > 0.5).to(torch.float32))


def with_given_targets(
    targets: torch.Tensor,
    given_maps: torch.Tensor,
    given: Any,
    brain: torch.Tensor | None,
) -> torch.Tensor:
    """Replace the targets of the subjects that came with a target map (``given`` > 0.5) by
    that map, unconstrained outside the brain when the run restricts L_A to it."""
    rows = torch.as_tensor(given).to(targets.device) > 0.5  # (B,)
    if not bool(rows.any()):
        return targets
    own = given_maps.to(targets.device, torch.float32)
    if brain is not None:
        own = torch.where(brain.to(targets.device), own, torch.nan)
    return torch.where(rows.view(-1, 1, 1, 1, 1), own, targets)


def eval_samples(dataset: CacheDataset) -> list[tuple[torch.Tensor, torch.Tensor | None, int]]:
    """``(image, mask or None, label)`` of every subject of a (non-augmented) split."""
    samples = []
    for index in range(len(dataset)):
        item = dataset[index]
        mask = item[MASK_KEY] if float(item[MASK_AVAILABLE_KEY]) > 0.5 else None
        samples.append((item[IMAGE_KEY], mask, int(round(float(item[LABEL_KEY])))))
    return samples


def cached_splits(
    config: RunConfig, items_of: Callable[[Split], list[dict[str, Any]]]
) -> dict[str, CacheDataset]:
    """Cache the deterministic preprocessing of each split (augmentation runs per epoch).

    ``items_of(split)`` gives the split's items (``as_item``); a split without any is left out.
    """
    datasets: dict[str, CacheDataset] = {}
    for split in SPLITS:
        items = items_of(split)
        if not items:
            continue
        transform = preprocess_for(config, augment=config.augment and split == "train")
        transform = Compose([*transform.transforms, CompleteItem()])
        datasets[split] = CacheDataset(items, transform, cache_rate=1.0, progress=False)
    return datasets
