"""The segmentation task: MONAI's 3D UNet on lesion masks (``worker.ml.segmentation``), with
mixed supervision and its optional attribution constraint on label-only healthy subjects.

It shares the engine's checkpoint format, resumption, model selection and progress events;
in its events ``loss_c`` is the segmentation loss (Dice + CE) and ``loss_a`` the constraint.
Test metrics: ``segmentation_metrics`` of the best weights, plus ``loss``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset
from torch import nn

from attrivue_core.configs import RunConfig
from worker.ml.evaluation import json_safe
from worker.ml.nets import build_unet
from worker.ml.segmentation import (
    ANNOTATED_KEY,
    annotated_subjects,
    mixed_supervision_loss,
    segmentation_loss,
    segmentation_metrics,
)
from worker.ml.training.checkpoints import BEST_CHECKPOINT, load_payload
from worker.ml.training.data import batch_tensors, cached_splits, make_loader, plain
from worker.ml.training.datatypes import (
    LABEL_KEY,
    Metrics,
    Split,
    StepStats,
    SubjectPrediction,
    SubjectSample,
)
from worker.ml.training.loop import Loop, mean_or_none
from worker.ml.training.task import Task
from worker.ml.transforms import IMAGE_KEY, MASK_KEY

__all__ = ["SegmentationTask"]


class SegmentationTask(Task):
    """``RunConfig(task="segmentation")``."""

    name = "segmentation"

    def validate(self, config: RunConfig, subjects: Sequence[SubjectSample]) -> None:
        if config.task != "segmentation":
            raise ValueError(
                f"the segmentation task needs task 'segmentation', got {config.task!r}"
            )
        if not any(s.split == "train" for s in subjects):
            raise ValueError("no subject in split 'train'")
        bad = [s.subject_id for s in subjects if s.label not in (0, 1)]
        if bad:
            raise ValueError(f"labels must be 0 or 1; offending subjects: {bad[:10]}")
        if not any(s.split == "train" and s.label == 1 and s.mask is not None for s in subjects):
            raise ValueError("segmentation needs pathological training subjects with lesion masks")
        missing = [
            s.subject_id for s in subjects if s.split == "train" and s.label == 1 and s.mask is None
        ]
        if missing and not config.mixed_supervision:
            raise ValueError(
                "segmentation needs a lesion mask for every pathological training subject, "
                "unless mixed supervision is used (seg_annotated_fraction < 1 or "
                f"seg_constraint); without a mask: {missing[:10]}"
            )

    def build_model(self, config: RunConfig, subjects: Sequence[SubjectSample]) -> nn.Module:
        return build_unet()

    def build_datasets(
        self, config: RunConfig, subjects: Sequence[SubjectSample]
    ) -> dict[str, CacheDataset]:
        keep = annotated_subjects(subjects, config.seg_annotated_fraction, config.seed)

        def items_of(split: Split) -> list[dict[str, Any]]:
            items = []
            for s in subjects:
                if s.split != split:
                    continue
                used = split != "train" or str(s.subject_id) in keep
                item: dict[str, Any] = {
                    IMAGE_KEY: str(s.image),
                    LABEL_KEY: np.float32(s.label),
                    ANNOTATED_KEY: np.float32(used),
                }
                if used and s.mask is not None:
                    item[MASK_KEY] = str(s.mask)
                items.append(item)
            return items

        return cached_splits(config, items_of)

    def train_step(
        self,
        loop: Loop,
        batch: dict[str, Any],
        *,
        epoch: int,
        step: int,
        steps: int,
        generator: torch.Generator,
    ) -> StepStats:
        """Dice + CE of the annotated subjects, plus lambda * L_A of the label-only healthy
        ones (``mixed_supervision_loss``)."""
        config = loop.config
        started = time.perf_counter()
        images, labels = batch_tensors(batch, loop.device)
        masks = plain(batch[MASK_KEY]).to(loop.device)
        annotated = torch.as_tensor(batch[ANNOTATED_KEY]).to(loop.device) > 0.5
        lam = config.lambda_a.at((epoch - 1) + (step - 1) / steps) if config.seg_constraint else 0.0
        loop.optimizer.zero_grad(set_to_none=True)
        loss = mixed_supervision_loss(
            loop.model, images, labels, masks, annotated, config, lam=lam, generator=generator
        )
        if loss.total.requires_grad:
            loss.total.backward()
            loop.optimizer.step()
        return StepStats(
            loss_c=float(loss.segmentation.detach()) if loss.segmentation is not None else math.nan,
            grad_norm_c=None,
            step_seconds=time.perf_counter() - started,
            loss=float(loss.total.detach()),
            loss_a=None if loss.constraint is None else float(loss.constraint.detach()),
            lambda_a=lam if config.seg_constraint else None,
        )

    def summarize(self, records: Sequence[StepStats]) -> StepStats:
        seg = [r.loss_c for r in records if not math.isnan(r.loss_c)]
        return StepStats(
            loss_c=float(np.mean(seg)) if seg else math.nan,
            grad_norm_c=None,
            step_seconds=float(np.sum([r.step_seconds for r in records])),
            loss=mean_or_none([r.loss for r in records]),
            loss_a=mean_or_none([r.loss_a for r in records]),
            lambda_a=records[-1].lambda_a if records else None,
        )

    def train_record(self, loop: Loop, summary: StepStats) -> dict[str, Any]:
        return {
            "train_loss": summary.loss,
            "train_loss_c": summary.loss_c,
            "train_loss_a": summary.loss_a,
            "lambda_a": summary.lambda_a,
            "train_step_seconds": summary.step_seconds,
        }

    def evaluate_val(self, loop: Loop, dataset: CacheDataset | None) -> Metrics:
        return self.evaluate(loop, dataset, prefix="val_")

    @torch.no_grad()
    def evaluate(self, loop: Loop, dataset: CacheDataset | None, *, prefix: str) -> Metrics:
        """Loss (Dice + CE over every subject; healthy ones against the empty mask) and
        ``segmentation_metrics`` of a split, in eval mode."""
        if dataset is None:
            return {f"{prefix}loss": None, f"{prefix}dice": None}
        loop.model.eval()
        predictions: list[np.ndarray] = []  # one boolean volume per subject
        truths: list[np.ndarray] = []
        losses: list[float] = []
        criterion = segmentation_loss()
        for batch in make_loader(dataset, loop.config.batch_size, shuffle=False, seed=0):
            images, _ = batch_tensors(batch, loop.device)
            masks = plain(batch[MASK_KEY]).to(loop.device).float()
            logits = loop.model(images).float()
            losses.append(float(criterion(logits, masks)) * images.shape[0])
            predictions.extend((logits[:, 0] > 0).cpu().numpy())
            truths.extend((masks[:, 0] > 0.5).cpu().numpy())
        loop.model.train()
        metrics = segmentation_metrics(predictions, truths)
        values = {f"{prefix}{k}": v for k, v in metrics.items()}
        values[f"{prefix}loss"] = float(np.sum(losses) / len(dataset))
        return json_safe(values)

    def conclude(
        self,
        loop: Loop,
        datasets: dict[str, CacheDataset],
        subjects: Sequence[SubjectSample],
    ) -> tuple[Metrics, list[SubjectPrediction]]:
        test_metrics: Metrics = {}
        if "test" in datasets:
            loop.check_cancel(loop.config.epochs)
            payload = load_payload(loop.checkpoint_dir / BEST_CHECKPOINT, loop.device)
            loop.model.load_state_dict(payload["model"])
            test_metrics = self.evaluate(loop, datasets["test"], prefix="")
        return test_metrics, []
