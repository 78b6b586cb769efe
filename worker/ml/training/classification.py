"""The classification task: a pathological logit per image, BCE (L_C) and the attribution
constraint against target maps from labels and lesion masks (docs/method.md section 3).

After training, the validation split calibrates the logit (``calibration_offset``, folded
into best.pt's output bias) and every subject gets its prediction (``predict_subjects``,
also written to ``checkpoint_dir/predictions.csv``).
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import CacheDataset
from scipy.optimize import minimize_scalar
from torch import nn

from attrivue_core.configs import LossSetting, RunConfig
from worker.ml.evaluation import json_safe
from worker.ml.losses import attribution_loss, target_map, target_mode_for
from worker.ml.metrics import classification_metrics as metrics_of_classification
from worker.ml.nets import pathological_logit
from worker.ml.training.checkpoints import (
    BEST_CHECKPOINT,
    atomic_save,
    load_baseline,
    load_model,
    load_payload,
)
from worker.ml.training.constrained import ConstrainedTask, amp_attribution_gain
from worker.ml.training.data import (
    SPLITS,
    batch_tensors,
    make_loader,
    with_given_targets,
)
from worker.ml.training.datatypes import (
    PREDICTIONS_FILE,
    TARGET_GIVEN_KEY,
    Metrics,
    Split,
    SubjectPrediction,
    SubjectSample,
)
from worker.ml.training.loop import Loop
from worker.ml.transforms import IMAGE_KEY

__all__ = [
    "ClassificationTask",
    "calibration_offset",
    "classification_metrics",
    "load_baseline",  # re-exported: the checkpoints of a classifier run, next to its task
    "load_model",
    "predict_subjects",
    "write_predictions",
]


def _attribution_gain(loop: Loop) -> float:
    """The gain of the classifier's training attribution (a module function: a test replaces
    it to check that the gain leaves the losses unchanged)."""
    return amp_attribution_gain(loop)


def classification_metrics(
    labels: Sequence[int] | np.ndarray,
    probabilities: Sequence[float] | np.ndarray,
    *,
    threshold: float = 0.5,
) -> Metrics:
    """Binary classification metrics (pathological = positive class).

    Args:
        labels: True labels, 0 or 1.
        probabilities: Predicted probabilities of the pathological class.
        threshold: Probability at or above which a subject is called pathological.

    Returns:
        ``auroc``, ``accuracy``, ``balanced_accuracy``, ``sensitivity``, ``specificity`` and
        ``n``; a metric that is undefined for these labels (one class only) is ``None``.
    """
    if len(labels) == 0:
        return {}
    # One implementation (worker.ml.metrics); stored metrics are JSON, so nan becomes None.
    return json_safe(metrics_of_classification(labels, probabilities, threshold=threshold))


def _logits_of(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0 - 1e-12)
    return np.log(p) - np.log1p(-p)


def _bce(labels: np.ndarray, logits: np.ndarray) -> float:
    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def calibration_offset(
    labels: Sequence[int] | np.ndarray, logits: Sequence[float] | np.ndarray
) -> float:
    """The constant that, added to every logit, minimises the mean BCE on these subjects.

    A constant added to the pathological logit changes no gradient, hence no attribution map
    (G, IG, EG: their completeness gap is unchanged too), but it moves every subject across
    the 0.5 threshold together. The attribution constraint tends to push all logits down
    (healthy maps must be negative, and by completeness sum(A) = F(x) - F(x')); the offset,
    chosen on the validation split, gives the decision back its threshold without touching
    the maps. 0 when the subjects hold one class only.
    """
    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    if y.size == 0 or y.min() == y.max():
        return 0.0
    result = minimize_scalar(lambda c: _bce(y, z + c), bounds=(-100.0, 100.0), method="bounded")
    return float(result.x)


def _output_bias(model: nn.Module) -> torch.Tensor | None:
    """The bias of the network's last layer (a constant added to the logit), if it has one."""
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv3d | nn.Conv2d) and module.bias is not None:
            last = module
    return None if last is None else last.bias


def write_predictions(rows: Sequence[SubjectPrediction], path: Path) -> None:
    """``predictions.csv`` of ``rows``, written under a temporary name and renamed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["subject_id", "split", "site", "label", "logit", "probability"])
            for r in rows:
                writer.writerow(
                    [
                        r.subject_id,
                        r.split,
                        r.site or "",
                        r.label,
                        repr(r.logit),
                        repr(r.probability),
                    ]
                )
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ClassificationTask(ConstrainedTask):
    """``RunConfig(task="classification")``."""

    name = "classification"
    empty_val_names = ("auroc", "accuracy")

    def validate(self, config: RunConfig, subjects: Sequence[SubjectSample]) -> None:
        if not any(s.split == "train" for s in subjects):
            raise ValueError("no subject in split 'train'")
        bad = [s.subject_id for s in subjects if s.label not in (0, 1)]
        if bad:
            raise ValueError(f"labels must be 0 or 1; offending subjects: {bad[:10]}")
        if target_mode_for(config.loss_setting) == "supervised" and not any(
            s.split == "train" and s.label == 1 and (s.mask is not None or s.target_map is not None)
            for s in subjects
        ):
            raise ValueError(
                f"loss setting {config.loss_setting!r} takes its targets from lesion masks, but "
                "no pathological subject of the 'train' split has a mask; add masks or use "
                "'lc_la_unsupervised'"
            )

    def needs_masks(self, config: RunConfig, split: Split) -> bool:
        """Always for evaluation (validation, test), and for training where the targets of
        L_A come from the lesion masks."""
        return split != "train" or target_mode_for(config.loss_setting) == "supervised"

    def attribution_gain(self, loop: Loop) -> float:
        return _attribution_gain(loop)

    def head_loss(
        self, loop: Loop, outputs: torch.Tensor, labels: torch.Tensor, batch: dict[str, Any]
    ) -> torch.Tensor:
        """L_C: BCE of the pathological logit (float32)."""
        return F.binary_cross_entropy_with_logits(outputs.float(), labels)

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
        """L_A against the target map of the setting (``worker.ml.losses.target_map``), or
        the subject's given target map (``SubjectSample.target_map``)."""
        config = loop.config
        temperature = config.attribution_scale * float(np.prod(attributions.shape[2:]))
        mode = target_mode_for(setting)
        assert mode is not None  # every setting but lc_only has a target mode
        targets = target_map(
            labels, masks, mode=mode, brain_mask=brain, mask_available=available
        )  # (B, 1, D, H, W)
        if TARGET_GIVEN_KEY in batch:
            targets = with_given_targets(targets, masks, batch[TARGET_GIVEN_KEY], brain)
        return attribution_loss(
            attributions,
            targets,
            kind=config.attribution_loss,
            scale=config.attribution_scale if config.attribution_normalise else temperature / gain,
            balance=config.attribution_balance,
            normalise=config.attribution_normalise,
        )

    @torch.no_grad()
    def predict(self, loop: Loop, dataset: CacheDataset) -> tuple[np.ndarray, np.ndarray, float]:
        """Labels, pathological probabilities and mean L_C over a dataset (eval mode)."""
        loop.model.eval()
        labels, logits = [], []
        for batch in make_loader(dataset, loop.config.batch_size, shuffle=False, seed=0):
            images, batch_labels = batch_tensors(batch, loop.device)
            with torch.autocast(
                device_type=loop.device.type, dtype=torch.float16, enabled=loop.use_amp
            ):
                batch_logits = pathological_logit(loop.model(images))
            labels.append(batch_labels)
            logits.append(batch_logits.float())
        loop.model.train()
        y = torch.cat(labels)
        z = torch.cat(logits)
        loss = float(F.binary_cross_entropy_with_logits(z, y))
        return y.cpu().numpy().astype(int), torch.sigmoid(z).cpu().numpy(), loss

    def head_metrics(self, loop: Loop, dataset: CacheDataset) -> Metrics:
        """``auroc``, ``accuracy``... of a split, its ``loss``, and its calibrated loss."""
        labels, probabilities, loss = self.predict(loop, dataset)
        metrics: Metrics = {**classification_metrics(labels, probabilities), "loss": loss}
        logits = _logits_of(probabilities)
        offset = calibration_offset(labels, logits)
        metrics["loss_calibrated"] = _bce(labels, logits + offset)
        metrics["calibration_offset"] = offset
        return metrics

    def val_values(self, metrics: Metrics) -> Metrics:
        return {
            "val_loss": metrics["loss"],
            "val_auroc": metrics["auroc"],
            "val_accuracy": metrics["accuracy"],
            # The BCE after the best constant shift of the logits (see calibration_offset).
            "val_loss_calibrated": metrics.get("loss_calibrated"),
        }

    def calibrate(self, loop: Loop, datasets: dict[str, CacheDataset]) -> float | None:
        """Fold the validation-chosen logit offset into best.pt's output bias; return it.

        ``None`` when calibration is off, the validation split is missing or has one class,
        or the network has no output bias.
        """
        config = loop.config
        dataset = datasets.get("val")
        if not config.calibrate_logit or dataset is None:
            return None
        path = loop.checkpoint_dir / BEST_CHECKPOINT
        payload = load_payload(path, loop.device)
        loop.model.load_state_dict(payload["model"])
        labels, probabilities, _ = self.predict(loop, dataset)
        if labels.min() == labels.max():
            return None
        bias = _output_bias(loop.model)
        if bias is None:
            return None
        offset = calibration_offset(labels, _logits_of(probabilities))
        with torch.no_grad():
            bias.add_(offset)
        payload["model"] = loop.model.state_dict()
        payload["logit_offset"] = offset + float(payload.get("logit_offset") or 0.0)
        atomic_save(payload, path)
        return offset

    @torch.no_grad()
    def predict_subjects(
        self,
        loop: Loop,
        datasets: dict[str, CacheDataset],
        subjects: Sequence[SubjectSample],
    ) -> list[SubjectPrediction]:
        """Predict every subject of every split with the weights of ``best.pt``.

        The training split is predicted without augmentation (its dataset is rebuilt without
        it when the run augments). The items of the cached datasets are matched to their
        subjects by image path. The rows are also written to ``checkpoint_dir/predictions.csv``
        (subject_id, split, site, label, logit, probability), so an experiment without the
        platform's database has them.

        Returns:
            One ``SubjectPrediction`` per subject of ``datasets``, split by split.
        """
        best = loop.checkpoint_dir / BEST_CHECKPOINT
        if not best.exists():
            return []
        loop.check_cancel(loop.config.epochs)
        loop.model.load_state_dict(load_payload(best, loop.device)["model"])
        if loop.config.augment and "train" in datasets:
            plain_config = loop.config.model_copy(update={"augment": False})
            train = [s for s in subjects if s.split == "train"]
            datasets = {**datasets, "train": self.build_datasets(plain_config, train)["train"]}
        by_image = {str(s.image): s for s in subjects}
        rows: list[SubjectPrediction] = []
        for split in SPLITS:
            dataset = datasets.get(split)
            if dataset is None:
                continue
            in_split = [s for s in subjects if s.split == split]
            logits = self.predict_logits(loop, dataset)
            for index, logit in enumerate(logits):
                item = dataset.data[index]
                found = by_image.get(str(item.get(IMAGE_KEY))) if isinstance(item, dict) else None
                subject = found if found is not None else in_split[index]
                rows.append(
                    SubjectPrediction(
                        subject_id=subject.subject_id,
                        split=split,
                        label=int(subject.label),
                        logit=float(logit),
                        probability=float(torch.sigmoid(torch.tensor(float(logit)))),
                        site=subject.site,
                    )
                )
        write_predictions(rows, loop.checkpoint_dir / PREDICTIONS_FILE)
        return rows

    def predict_logits(self, loop: Loop, dataset: CacheDataset) -> list[float]:
        """Pathological logits of a dataset's items in order (eval mode, batches of the run's
        batch size)."""
        loop.model.eval()
        logits: list[float] = []
        try:
            for batch in make_loader(dataset, loop.config.batch_size, shuffle=False, seed=0):
                images, _ = batch_tensors(batch, loop.device)
                with torch.autocast(
                    device_type=loop.device.type, dtype=torch.float16, enabled=loop.use_amp
                ):
                    batch_logits = pathological_logit(loop.model(images))
                logits.extend(float(v) for v in batch_logits.float().cpu())
        finally:
            loop.model.train()
        return logits


def predict_subjects(
    loop: Loop, datasets: dict[str, CacheDataset], subjects: Sequence[SubjectSample]
) -> list[SubjectPrediction]:
    """``ClassificationTask.predict_subjects`` of a classification run's loop; ``[]`` for
    other tasks."""
    if loop.config.task != "classification":
        return []
    return ClassificationTask().predict_subjects(loop, datasets, subjects)
