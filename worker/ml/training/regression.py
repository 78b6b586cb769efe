"""The regression task: the network's single output as a predicted target (L_R in place of
L_C) and the regression constraint in place of the target map (``worker.ml.regression``);
its validation and test metrics are MAE, RMSE and correlations instead of AUROC and accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset

from attrivue_core.configs import LossSetting, RunConfig
from worker.ml.evaluation import json_safe
from worker.ml.nets import pathological_logit
from worker.ml.regression import (
    TARGET_KEY,
    constraints_for,
    missing_targets,
    prediction_loss,
    regression_attribution_loss,
    regression_metrics,
    target_scale,
)
from worker.ml.training.constrained import ConstrainedTask
from worker.ml.training.data import batch_tensors, make_loader
from worker.ml.training.datatypes import Metrics, Split, SubjectSample
from worker.ml.training.loop import Loop

__all__ = ["RegressionTask", "batch_targets"]


def batch_targets(batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    """Regression targets ``(B,)`` of a batch, float32 on ``device``."""
    return torch.as_tensor(batch[TARGET_KEY], dtype=torch.float32).to(device)


class RegressionTask(ConstrainedTask):
    """``RunConfig(task="regression")``."""

    name = "regression"
    fingerprint_targets = True
    uses_targets = True
    empty_val_names = ("mae", "rmse", "pearson")

    def validate(self, config: RunConfig, subjects: Sequence[SubjectSample]) -> None:
        if not any(s.split == "train" for s in subjects):
            raise ValueError("no subject in split 'train'")
        missing = missing_targets(subjects)
        if missing:
            raise ValueError(
                f"regression needs a target on every training subject; missing: {missing}"
            )
        bad = [s.subject_id for s in subjects if s.label not in (0, 1)]
        if bad:
            raise ValueError(f"labels must be 0 or 1; offending subjects: {bad[:10]}")

    def needs_masks(self, config: RunConfig, split: Split) -> bool:
        """Always for evaluation; for training where a constraint reads the lesion masks."""
        return split != "train" or "outside_lesions" in constraints_for(config)

    def head_loss(
        self, loop: Loop, outputs: torch.Tensor, labels: torch.Tensor, batch: dict[str, Any]
    ) -> torch.Tensor:
        """L_R of the predicted target (float32)."""
        return prediction_loss(
            outputs.float(),
            batch_targets(batch, loop.device),
            kind=loop.config.regression.loss,
            scale=target_scale(loop.model),
        )

    def constraint_loss(
        self,
        loop: Loop,
        batch: dict[str, Any],
        *,
        setting: LossSetting,
        labels: torch.Tensor,
        attributions: torch.Tensor,
        masks: torch.Tensor,
        available: torch.Tensor,
        brain: torch.Tensor | None,
        gain: float,
    ) -> torch.Tensor:
        """L_A of a regression run (``worker.ml.regression``), on relevance in standardised
        units."""
        config = loop.config
        temperature = config.attribution_scale * float(np.prod(attributions.shape[2:]))
        return regression_attribution_loss(
            attributions,
            batch_targets(batch, loop.device),
            masks,
            constraints=constraints_for(config),
            scale=temperature / (gain * target_scale(loop.model)),
            penalty=config.regression.penalty,
            zero_tolerance=config.regression.zero_tolerance,
            mass_weight=config.regression.mass_weight,
            brain_mask=brain,
            mask_available=available,
        )

    @torch.no_grad()
    def predict(self, loop: Loop, dataset: CacheDataset) -> tuple[np.ndarray, np.ndarray, float]:
        """Targets, predicted targets and mean L_R over a dataset (eval mode)."""
        loop.model.eval()
        targets, outputs = [], []
        for batch in make_loader(dataset, loop.config.batch_size, shuffle=False, seed=0):
            images, _ = batch_tensors(batch, loop.device)
            with torch.autocast(
                device_type=loop.device.type, dtype=torch.float16, enabled=loop.use_amp
            ):
                predicted = pathological_logit(loop.model(images))
            targets.append(batch_targets(batch, loop.device))
            outputs.append(predicted.float())
        loop.model.train()
        y, p = torch.cat(targets), torch.cat(outputs)
        loss = prediction_loss(
            p, y, kind=loop.config.regression.loss, scale=target_scale(loop.model)
        )
        return y.cpu().numpy(), p.cpu().numpy(), float(loss)

    def head_metrics(self, loop: Loop, dataset: CacheDataset) -> Metrics:
        """``mae``, ``rmse``, ``pearson``, ``spearman`` of a split, and its ``loss``."""
        y, p, loss = self.predict(loop, dataset)
        return json_safe({**regression_metrics(y, p), "loss": loss})

    def val_values(self, metrics: Metrics) -> Metrics:
        return {f"val_{name}": metrics.get(name) for name in ("loss", "mae", "rmse", "pearson")}
