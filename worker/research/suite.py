"""The data-regime suite: every training preset on every regime, held-out seeds, 3+ seeds.

    python -m worker.research regimes --section NAME [--regimes NAME ...] [--presets NAME ...]
        [--seeds 0 1 2] [--subjects N [N ...]] [--epochs N] [--workers N] [--device auto]

Each regime of ``worker.ml.regimes`` is generated with its **held-out** generator seed (never
used to tune anything), then each preset is trained on it with each training seed through
``worker.ml.training.train``, the code path of the platform's training jobs. Every run is
scored on the test split twice, with the weights of the best epoch (chosen on validation) and
with those of the last epoch, and the section ``--section`` of docs/experiments.md gets one
table per regime with mean +- sd over the seeds. The section has to be named (or the tables only
printed, ``--no-write``): a run of a few regimes must not replace the table of another.

The maps scored are Integrated Gradients (16 Gauss-Legendre points, eval mode) from the run's
own baseline (``attribution_baseline``: the zero image, or the mean healthy training image),
i.e. the map the constraint trained; the zero-baseline map of the same weights is scored too
(``zero-IG`` columns) so that the reader sees whether the result carries over to it.

``--dev`` takes the development seeds instead (for tuning; nothing is written), and
``--confirm`` the second held-out seeds: a choice made after reading the held-out tables (the
constrained presets' epoch selection was one) is checked there, on data nobody had looked at.

Constrained runs that train on Integrated Gradients are also scored with the map the constraint
trained (the run's own ``ig_steps`` and ``ig_method``; ``Training-map`` columns), so the tables
show whether what the constraint reached on its own map carries over to the 16-point map.

Runs are independent processes (``--workers``); each writes its result as JSON under
``--work``, and a rerun skips the runs already done, so an interrupted suite resumes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from attrivue_core.configs import RunConfig
from attrivue_core.presets import PRESETS
from worker.ml.attribution.baselines import LocalMeanBaseline
from worker.ml.evaluation import attribution_maps
from worker.ml.metrics import attribution_report
from worker.ml.nets import pathological_logit
from worker.ml.regimes import REGIMES, DataSet, generate_regime
from worker.ml.training import (
    SubjectSample,
    as_split,
    classification_metrics,
    load_baseline,
    load_model,
    train,
)
from worker.ml.transforms import IMAGE_KEY, MASK_KEY, preprocess_for
from worker.research.common import write_section

__all__ = [
    "NAME",
    "VARIANTS",
    "Job",
    "add_arguments",
    "data_set",
    "run_one",
    "run_suite",
    "summarise",
    "training_map_scores",
]

NAME = "regimes"

# The configurations compared. The three presets of the platform (attrivue_core.presets) and the
# former recipe of docs/experiments.md ("old_*"), kept to show what the new one fixes.
_SHARED: dict[str, Any] = {
    "network": "small_cnn",
    "grid": [48, 56, 48],
    "batch_size": 4,
    "learning_rate": 3e-3,
    "brain": "mask",
    "val_attribution": True,
    "grad_probe_batches": 0,
}
_IG4 = {"train_attribution": ["integrated_gradients"], "ig_steps": 4}
_EG1 = {"train_attribution": ["expected_gradients"], "eg_k": 1}
_WARM = {"lambda_a": {"kind": "linear_warmup", "value": 1.0, "warmup_epochs": 3}}
_SUP = {**_SHARED, "loss_setting": "lc_la_supervised", "early_stopping_metric": "val_auroc"}
_WEAK = {**_SHARED, "loss_setting": "lc_la_unsupervised", "early_stopping_metric": "val_auroc"}
_L5 = {"lambda_a": {"value": 5.0}}
_DATA_TITLES = {"dev": "development", "heldout": "held-out", "confirm": "second held-out"}
_SUITE = {"grad_probe_batches": 0}  # instrumentation off: it costs a double backward
# The constrained presets as they were before they held the baseline's logit at the boundary
# (baseline_logit_weight 1 since 2026-12-07): the variants whose tables were measured then.
_UNANCHORED: dict[str, Any] = {"baseline_logit_weight": 0.0}


# The detectors' floor (evidence_floor) is off in the presets; the variants below keep it off
# unless they say otherwise, should a preset turn it on.
_UNFLOORED: dict[str, Any] = {"evidence_floor": "off"}


def _as_preset(name: str) -> dict[str, Any]:
    """A preset of attrivue_core.presets as the suite runs it."""
    return {**PRESETS[name]["config"], **_SUITE}


def _preset(name: str, **fields: Any) -> dict[str, Any]:
    """A variant of a preset: without the detectors' floor, with ``fields`` over it."""
    return {**_as_preset(name), **_UNFLOORED, **fields}


def _floored(name: str, **fields: Any) -> dict[str, Any]:
    """A variant of a preset whose lesion detectors are floored after every epoch."""
    return _preset(name, evidence_floor="every_epoch", **fields)


_GATED: dict[str, Any] = {"evidence_floor_start_auroc": 0.9}
_Q90_GATED: dict[str, Any] = {"evidence_floor_quantile": 0.9, **_GATED}
_ON_VALIDATION: dict[str, Any] = {"evidence_floor_subjects": "validation"}
_DARK_HEALTHY: dict[str, Any] = {"normative_input": True, "attribution_baseline": "healthy"}


VARIANTS: dict[str, dict[str, Any]] = {
    # The presets, as the API applies them (attrivue_core.presets).
    "classification": _as_preset("classification"),
    "supervised": _as_preset("constrained_supervised"),
    "weakly": _as_preset("constrained_weakly_supervised"),
    # The former recipe of docs/experiments.md (what the outside trial used): no brain mask,
    # no calibration, model selection on the validation lesion mass.
    "old_supervised": {
        **_SHARED,
        "brain": "nonzero",
        "calibrate_logit": False,
        "loss_setting": "lc_la_supervised",
        **_IG4,
        **_L5,
        "early_stopping_metric": "val_lesion_mass",
    },
    # Candidates of issue 15 item 4 (development seeds; docs/experiments.md has their numbers).
    "classification_augment": {
        **_SHARED,
        "loss_setting": "lc_only",
        "early_stopping_metric": "val_auroc",
        "augment": True,
    },
    "classification_avgmax": _preset("classification", pooling="avgmax"),
    "classification_avg": _preset("classification", pooling="avg"),
    # The presets with the normative input channel (worker.ml.normative; dark lesions).
    "classification_normative": _preset("classification", normative_input=True),
    "supervised_normative": _preset("constrained_supervised", normative_input=True),
    "weakly_normative": _preset("constrained_weakly_supervised", normative_input=True),
    # The constrained presets since they select their epoch on the validation maps inside an
    # AUROC margin (docs/experiments.md, "Selecting the epoch on the maps"), under names of
    # their own: the results cached under "supervised", "supervised_normative"... were made
    # with the former rule (selection on validation AUROC).
    "supervised_sel": _preset("constrained_supervised", **_UNANCHORED),
    "weakly_sel": _preset("constrained_weakly_supervised", **_UNANCHORED),
    "supervised_normative_sel": _preset(
        "constrained_supervised", **_UNANCHORED, normative_input=True
    ),
    "weakly_normative_sel": _preset(
        "constrained_weakly_supervised", **_UNANCHORED, normative_input=True
    ),
    # The normative input with a healthy reference as the training attribution's baseline:
    # the mean healthy training image, where the normative channel reads 0. From the zero
    # image the normative channel reads a deviation of -mean/sd everywhere (an image "darker
    # than every healthy brain"), so F(0) is whatever the network makes of that, and
    # sum(A) = F(x) - F(0) can make every map negative without moving relevance.
    "supervised_normative_healthy": _preset(
        "constrained_supervised",
        **_UNANCHORED,
        normative_input=True,
        attribution_baseline="healthy",
    ),
    "weakly_normative_healthy": _preset(
        "constrained_weakly_supervised",
        **_UNANCHORED,
        normative_input=True,
        attribution_baseline="healthy",
    ),
    # The constrained presets with a cosine decay of the step size over the epochs
    # (lr_schedule): validation AUROC of the constrained runs moves by up to 0.3 from one
    # epoch to the next at a constant 3e-3, and the last epochs lose AUROC.
    "supervised_cos": _preset("constrained_supervised", **_UNANCHORED, lr_schedule="cosine"),
    "weakly_cos": _preset("constrained_weakly_supervised", **_UNANCHORED, lr_schedule="cosine"),
    "supervised_normative_cos": _preset(
        "constrained_supervised", **_UNANCHORED, normative_input=True, lr_schedule="cosine"
    ),
    "weakly_normative_cos": _preset(
        "constrained_weakly_supervised", **_UNANCHORED, normative_input=True, lr_schedule="cosine"
    ),
    # The constrained presets with the baseline's logit held at the decision boundary
    # (baseline_logit_weight): with the normative input F(0) ran to 20-25. The presets set it
    # since 2026-12-07; these names pin it, as _UNANCHORED pins the variants measured before.
    "supervised_anchor": _preset("constrained_supervised", baseline_logit_weight=1.0),
    "weakly_anchor": _preset("constrained_weakly_supervised", baseline_logit_weight=1.0),
    "supervised_normative_anchor": _preset(
        "constrained_supervised", normative_input=True, baseline_logit_weight=1.0
    ),
    "weakly_normative_anchor": _preset(
        "constrained_weakly_supervised", normative_input=True, baseline_logit_weight=1.0
    ),
    # The anchored constrained run with a pooling whose input gradient reaches every voxel:
    # under global max pooling only the receptive fields of each channel's maximum carry any
    # relevance (column "Healthy support"), and L_A has no gradient on the other voxels.
    # The baseline per subject, its own local mean (attribution_baseline "blur"): x - x' is
    # the image's local contrast, so a contrast detector's red centre and blue surround on
    # healthy tissue get one sign (docs/experiments.md, "A local-mean baseline").
    "supervised_blur2": _preset(
        "constrained_supervised", attribution_baseline="blur", attribution_blur_sigma=2.0
    ),
    "supervised_blur4": _preset(
        "constrained_supervised", attribution_baseline="blur", attribution_blur_sigma=4.0
    ),
    "weakly_blur2": _preset(
        "constrained_weakly_supervised", attribution_baseline="blur", attribution_blur_sigma=2.0
    ),
    "classification_blur2": _preset(
        "classification", attribution_baseline="blur", attribution_blur_sigma=2.0
    ),
    # L_A as the share of each subject's relevance mass with the wrong sign (attribution_loss
    # "mass"): the healthy share itself on healthy subjects, where the BCE's gradient in a
    # voxel is at most 1 however much red the voxel carries.
    "supervised_mass": _preset("constrained_supervised", attribution_loss="mass"),
    "weakly_mass": _preset("constrained_weakly_supervised", attribution_loss="mass"),
    # Each lesion detector floored at its largest response over the healthy training subjects
    # (evidence_floor): once after training, or after every epoch ("*_floor_epochs").
    "classification_floor": _preset("classification", evidence_floor="after_training"),
    "supervised_floor": _preset("constrained_supervised", evidence_floor="after_training"),
    "weakly_floor": _preset("constrained_weakly_supervised", evidence_floor="after_training"),
    "supervised_floor_epochs": _preset("constrained_supervised", evidence_floor="every_epoch"),
    "weakly_floor_epochs": _preset("constrained_weakly_supervised", evidence_floor="every_epoch"),
    "supervised_normative_floor_epochs": _preset(
        "constrained_supervised", normative_input=True, evidence_floor="every_epoch"
    ),
    "weakly_normative_floor_epochs": _preset(
        "constrained_weakly_supervised", normative_input=True, evidence_floor="every_epoch"
    ),
    # The floor below the healthy maximum (a quantile of the healthy responses), with a slope
    # below it (evidence_floor_leak), or fitted only once the validation AUROC reached 0.9
    # ("gated", evidence_floor_start_auroc), so that faint lesions keep some of their answer
    # and detectors still learning keep their gradient.
    "supervised_floor_q90": _floored("constrained_supervised", evidence_floor_quantile=0.9),
    "supervised_floor_leak": _floored("constrained_supervised", evidence_floor_leak=0.1),
    "supervised_floor_gated": _floored("constrained_supervised", **_GATED),
    "supervised_floor_q90_gated": _floored("constrained_supervised", **_Q90_GATED),
    "weakly_floor_q90_gated": _floored("constrained_weakly_supervised", **_Q90_GATED),
    "supervised_normative_floor_q90_gated": _floored(
        "constrained_supervised", normative_input=True, **_Q90_GATED
    ),
    # Dark lesions: from the zero image the normative input's z-map is a lesion everywhere, so
    # the detectors fire at the baseline and no floor keeps their red off healthy maps; from the
    # healthy mean they are quiet at both ends of the path.
    "supervised_normative_floor_q90_gated_healthy": _floored(
        "constrained_supervised", **_DARK_HEALTHY, **_Q90_GATED
    ),
    # The floors fitted on the validation split's healthy subjects, which the network never
    # trained on: the training subjects' responses are kept low by training, so floors fitted
    # on them sit below an unseen healthy brain's responses.
    "supervised_floor_q90_gated_val": _floored(
        "constrained_supervised", **_Q90_GATED, **_ON_VALIDATION
    ),
    "supervised_normative_floor_q90_gated_healthy_val": _floored(
        "constrained_supervised", **_DARK_HEALTHY, **_Q90_GATED, **_ON_VALIDATION
    ),
    "supervised_anchor_avgmax": _preset(
        "constrained_supervised", baseline_logit_weight=1.0, pooling="avgmax"
    ),
    "weakly_anchor_avgmax": _preset(
        "constrained_weakly_supervised", baseline_logit_weight=1.0, pooling="avgmax"
    ),
    # The presets with ReLU instead of LeakyReLU (slope 0.2) in small_cnn: a lesion detector
    # below its threshold then passes no gradient, so healthy tissue gets no pathological
    # relevance through the detector's leak.
    "classification_relu": _preset("classification", activation="relu"),
    "supervised_relu": _preset("constrained_supervised", activation="relu"),
    "weakly_relu": _preset("constrained_weakly_supervised", activation="relu"),
    "sup_healthy_balanced": {
        **_SUP,
        **_IG4,
        **_WARM,
        "attribution_baseline": "healthy",
        "attribution_balance": True,
    },
    "sup_zero_balanced": {
        **_SUP,
        **_IG4,
        **_WARM,
        "attribution_baseline": "zero",
        "attribution_balance": True,
    },
    "weak_healthy": {**_WEAK, **_IG4, **_WARM, "attribution_baseline": "healthy"},
    "sup_fixed_ratio": {
        **_SUP,
        **_IG4,
        **_L5,
        "grad_balance": "fixed_ratio",
        "grad_balance_ratio": 0.5,
    },
    "weak_fixed_ratio": {
        **_WEAK,
        **_IG4,
        **_L5,
        "grad_balance": "fixed_ratio",
        "grad_balance_ratio": 0.5,
    },
    "sup_eg_healthy": {
        **_SUP,
        **_EG1,
        **_WARM,
        "attribution_baseline": "healthy",
        "attribution_balance": True,
    },
}
TEST_STEPS = 16


@dataclass(frozen=True)
class Job:
    """One training run of the suite."""

    regime: str
    variant: str
    seed: int
    subjects: int
    epochs: int | None
    device: str
    threads: int
    work: Path
    overrides: dict[str, Any]
    data: DataSet = "heldout"
    tag: str = ""

    @property
    def result_path(self) -> Path:
        return (
            self.work
            / "results"
            / f"{self.data}{self.tag}"
            / self.regime
            / f"n{self.subjects}"
            / self.variant
            / f"seed{self.seed}.json"
        )


def _data_dir(work: Path, regime: str, subjects: int, data: DataSet = "heldout") -> Path:
    return work / "data" / f"{regime}-n{subjects}-{data}"


def _samples(records: Sequence[Any]) -> list[Any]:
    return [
        SubjectSample(r.subject, r.image, r.mask, r.label, as_split(r.split), site=r.site)
        for r in records
    ]


def run_one(job: Job) -> dict[str, Any]:
    """Train one (regime, variant, seed) and score best and last weights on the test split."""
    torch.set_num_threads(job.threads)
    regime = REGIMES[job.regime].with_subjects(job.subjects)
    records = generate_regime(
        _data_dir(job.work, job.regime, job.subjects, job.data), regime, data=job.data
    )
    fields = {**VARIANTS[job.variant], **job.overrides}
    if job.epochs is not None:
        fields["epochs"] = job.epochs
    config = RunConfig.model_validate({**fields, "seed": job.seed, "device": job.device})
    run_dir = job.result_path.with_suffix("")
    started = time.perf_counter()
    result = train(config, _samples(records), checkpoint_dir=run_dir)
    seconds = time.perf_counter() - started
    out: dict[str, Any] = {
        "regime": job.regime,
        "variant": job.variant,
        "seed": job.seed,
        "subjects": job.subjects,
        "held_out": job.data != "dev",
        "data": job.data,
        "config": config.model_dump(mode="json"),
        "best_epoch": result.best_epoch,
        "epochs_completed": result.epochs_completed,
        "seconds": seconds,
        "history": result.history,
    }
    for which, path in (("best", result.best_checkpoint), ("last", result.last_checkpoint)):
        out[which] = score_checkpoint(path, config, records, regime.site_artefact)
    job.result_path.parent.mkdir(parents=True, exist_ok=True)
    job.result_path.write_text(json.dumps(out, default=float))
    for name in ("best.pt", "last.pt"):
        (run_dir / name).unlink(missing_ok=True)
    return out


@torch.no_grad()
def _logits(model: Any, images: torch.Tensor, device: Any) -> torch.Tensor:
    """Pathological logits ``(N,)`` of ``images`` ``(N, C, D, H, W)``, 8 at a time, on the CPU."""
    return torch.cat(
        [
            pathological_logit(model(images[i : i + 8].to(device))).float().cpu()
            for i in range(0, len(images), 8)
        ]
    )


def score_checkpoint(
    path: Path, config: Any, records: Sequence[Any], artefact: bool
) -> dict[str, Any]:
    """Classification and attribution metrics of one checkpoint on the test split."""
    device = torch.device(config.device if config.device != "auto" else "cpu")
    if config.device == "auto" and torch.cuda.is_available():
        device = torch.device("cuda")
    model, _ = load_model(path, device=device)
    baseline: Any = load_baseline(path)
    if config.attribution_baseline == "blur":
        baseline = LocalMeanBaseline(config.attribution_blur_sigma)
    transform = preprocess_for(config)
    test = [r for r in records if r.split == "test"]
    images, masks, labels = [], [], []
    for r in test:
        item = transform({IMAGE_KEY: str(r.image), **({MASK_KEY: str(r.mask)} if r.mask else {})})
        images.append(torch.as_tensor(item[IMAGE_KEY].as_tensor()))
        masks.append(None if r.mask is None else item[MASK_KEY].as_tensor()[0].numpy() > 0.5)
        labels.append(int(r.label))
    logits = _logits(model, torch.stack(images), device).numpy()
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    scores: dict[str, Any] = dict(classification_metrics(labels, probabilities))
    scores["mean_logit_healthy"] = float(
        np.mean([g for g, y in zip(logits, labels, strict=True) if y == 0])
    )
    scores["mean_logit_pathological"] = float(
        np.mean([g for g, y in zip(logits, labels, strict=True) if y == 1])
    )
    # The logits at the IG baselines (diagnostic): by completeness sum(A) = F(x) - F(x'), so a
    # baseline logit far above the subjects' makes every map mostly negative whatever the
    # network has learnt.
    with torch.no_grad():
        zero = torch.zeros_like(images[0]).unsqueeze(0).to(device)
        scores["logit_zero_image"] = float(pathological_logit(model(zero)).float().cpu()[0])
        if isinstance(baseline, LocalMeanBaseline):
            # One baseline per subject: the mean of their logits.
            references = baseline(torch.stack(images).to(device))
            scores["logit_baseline"] = float(_logits(model, references, device).mean())
        elif baseline is not None:
            reference = baseline.reshape(1, *images[0].shape).to(device)
            scores["logit_baseline"] = float(pathological_logit(model(reference)).float().cpu()[0])
        else:
            scores["logit_baseline"] = scores["logit_zero_image"]
    bases = {"own": baseline, "zero": None} if baseline is not None else {"own": None}
    for name, base in bases.items():
        maps, _ = attribution_maps(
            model, images, steps=TEST_STEPS, method="gausslegendre", device=device, baseline=base
        )
        brains = [(image != 0).any(dim=0).numpy() for image in images]
        report = attribution_report(
            maps, masks, labels, threshold=0.0, brain_masks=brains, top_k_percent=5.0
        )
        lesion_positive, chance = [], []
        for a, m, b, y in zip(maps, masks, brains, labels, strict=True):
            if y == 1 and m is not None and m.any():
                lesion_positive.append(float((a[m] > 0).mean()))
                chance.append(float(m[b].mean()) if b.any() else float("nan"))
        prefix = "" if name == "own" else "zero_"
        scores[prefix + "lesion_mass"] = report["lesion_mass"]
        scores[prefix + "healthy_share"] = report["healthy_share"]
        scores[prefix + "voxel_auroc"] = report["voxel_auroc"]
        scores[prefix + "pointing"] = report["pointing_game"]
        scores[prefix + "dice_top5"] = report["dice_top_k"]
        scores[prefix + "lesion_positive"] = float(np.mean(lesion_positive))
        scores[prefix + "chance_mass"] = float(np.mean(chance))
        if name == "own":
            scores["healthy_support"] = healthy_support(maps, brains, labels)
    scores.update(training_map_scores(model, config, images, masks, labels, baseline, device))
    if artefact:
        scores.update(_artefact_scores(model, config, records, baseline, device))
    if baseline is None:
        for key in ("lesion_mass", "healthy_share", "lesion_positive", "voxel_auroc"):
            scores["zero_" + key] = scores[key]
    return scores


def healthy_support(
    maps: Sequence[np.ndarray], brains: Sequence[np.ndarray], labels: Sequence[int]
) -> float:
    """Share of brain voxels that carry any relevance on healthy subjects (diagnostic).

    A voxel counts when its |A| exceeds 1e-6 of the subject's largest |A|. With global max
    pooling the input gradient reaches only the receptive fields of each channel's maximum,
    so most voxels of a map can be exactly 0: a constraint on those voxels has no gradient.
    """
    shares = []
    for a, brain, label in zip(maps, brains, labels, strict=True):
        if label != 0 or not brain.any():
            continue
        values = np.abs(a[brain])
        peak = float(values.max())
        shares.append(float((values > 1e-6 * peak).mean()) if peak > 0 else 0.0)
    return float(np.mean(shares)) if shares else float("nan")


def training_map_scores(
    model: Any,
    config: Any,
    images: Sequence[torch.Tensor],
    masks: Sequence[Any],
    labels: Sequence[int],
    baseline: Any,
    device: Any,
) -> dict[str, Any]:
    """Lesion mass and healthy share of the map the constraint trained, on the test split.

    The tables score maps of Integrated Gradients with ``TEST_STEPS`` Gauss-Legendre points;
    the constraint sees IG with the run's own ``ig_steps`` and ``ig_method`` (4 Riemann points
    in the presets). Scoring both shows whether what the constraint achieved on its own map
    carries over to the evaluation map. Runs without IG in ``train_attribution`` (L_C only,
    Expected Gradients) get nothing.
    """
    if config.train_attribution != ["integrated_gradients"]:
        return {}
    reference = baseline if config.attribution_baseline in ("healthy", "blur") else None
    maps, _ = attribution_maps(
        model,
        images,
        steps=config.ig_steps,
        method=config.ig_method,
        device=device,
        baseline=reference,
    )
    brains = [(image != 0).any(dim=0).numpy() for image in images]
    report = attribution_report(maps, masks, labels, threshold=0.0, brain_masks=brains)
    return {
        "train_lesion_mass": report["lesion_mass"],
        "train_healthy_share": report["healthy_share"],
    }


def _artefact_scores(
    model: Any, config: Any, records: Sequence[Any], baseline: Any, device: Any
) -> dict[str, Any]:
    """Share of positive relevance on the zipper line, for site-A pathological val subjects."""
    transform = preprocess_for(config)
    chosen = [r for r in records if r.split == "val" and r.label == 1 and r.site == "A"]
    images, regions = [], []
    for r in chosen:
        region = Path(r.image).with_name("artefact.nii.gz")
        item = transform({IMAGE_KEY: str(r.image), MASK_KEY: str(region)})
        images.append(torch.as_tensor(item[IMAGE_KEY].as_tensor()))
        regions.append(item[MASK_KEY].as_tensor()[0].numpy() > 0.5)
    if not images:
        return {}
    maps, _ = attribution_maps(
        model, images, steps=TEST_STEPS, method="gausslegendre", device=device, baseline=baseline
    )
    shares = []
    for a, region in zip(maps, regions, strict=True):
        positive = np.clip(a, 0, None)
        total = positive.sum()
        shares.append(float(positive[region].sum() / total) if total > 0 else 0.0)
    chance = float(np.mean([region.mean() for region in regions]))
    return {"artefact_share": float(np.mean(shares)), "artefact_chance": chance}


# --- report ----------------------------------------------------------------------------------

_COLUMNS = (
    ("auroc", "AUROC"),
    ("accuracy", "Acc"),
    ("lesion_mass", "Lesion mass"),
    ("lesion_positive", "Lesion vox A>0"),
    ("healthy_share", "Healthy share"),
    ("zero_lesion_mass", "zero-IG mass"),
    ("zero_healthy_share", "zero-IG healthy"),
    ("healthy_support", "Healthy support"),
)


def _mean_sd(values: Sequence[float | None]) -> str:
    present = [float(v) for v in values if v is not None and np.isfinite(float(v))]
    if not present:
        return "n/a"
    if len(present) == 1:
        return f"{present[0]:.2f}"
    return f"{np.mean(present):.2f} ± {np.std(present, ddof=1):.2f}"


def summarise(results: Sequence[dict[str, Any]]) -> str:
    """Markdown tables (one per regime and subject count): mean ± sd over seeds, best | last."""
    lines: list[str] = []
    keys = sorted(
        {(r["regime"], r["subjects"]) for r in results},
        key=lambda k: (list(REGIMES).index(k[0]), k[1]),
    )
    for regime, subjects in keys:
        group = [r for r in results if r["regime"] == regime and r["subjects"] == subjects]
        chance = _mean_sd([r["best"].get("chance_mass") for r in group])
        data = group[0].get("data") or ("heldout" if group[0].get("held_out", True) else "dev")
        seed = _DATA_TITLES[data]
        lines.append(
            f"**{regime}** ({REGIMES[regime].description}; {subjects} subjects, {seed} "
            f"generator seed; lesion-mass chance level {chance})\n"
        )
        header = ["Preset", "Seeds", "Best epoch"] + [
            f"{title} best / last" for _, title in _COLUMNS
        ]
        artefact = any("artefact_share" in r["best"] for r in group)
        if artefact:
            header.append("Artefact share best / last")
        trained = any("train_lesion_mass" in r["best"] for r in group)
        if trained:
            header += ["Training-map mass best / last", "Training-map healthy best / last"]
        logits = any("logit_baseline" in r["best"] for r in group)
        if logits:
            header += ["F(x') best / last", "Mean F(x) healthy / path. (best)"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for variant in VARIANTS:
            runs = [r for r in group if r["variant"] == variant]
            if not runs:
                continue
            row = [variant, str(len(runs)), _mean_sd([r["best_epoch"] for r in runs])]
            for key, _ in _COLUMNS:
                best = _mean_sd([r["best"].get(key) for r in runs])
                last = _mean_sd([r["last"].get(key) for r in runs])
                row.append(f"{best} / {last}")
            if artefact:
                row.append(
                    f"{_mean_sd([r['best'].get('artefact_share') for r in runs])} / "
                    f"{_mean_sd([r['last'].get('artefact_share') for r in runs])}"
                )
            if trained:
                for key in ("train_lesion_mass", "train_healthy_share"):
                    row.append(
                        f"{_mean_sd([r['best'].get(key) for r in runs])} / "
                        f"{_mean_sd([r['last'].get(key) for r in runs])}"
                    )
            if logits:
                # The logit of the IG baseline beside the subjects': sum(A) = F(x) - F(x').
                row.append(
                    f"{_mean_sd([r['best'].get('logit_baseline') for r in runs])} / "
                    f"{_mean_sd([r['last'].get('logit_baseline') for r in runs])}"
                )
                row.append(
                    f"{_mean_sd([r['best'].get('mean_logit_healthy') for r in runs])} / "
                    f"{_mean_sd([r['best'].get('mean_logit_pathological') for r in runs])}"
                )
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def _curve_points(
    results: Sequence[dict[str, Any]],
) -> dict[tuple[str, str], dict[int, list[dict[str, Any]]]]:
    """Runs grouped by (regime, preset), then by number of subjects."""
    points: dict[tuple[str, str], dict[int, list[dict[str, Any]]]] = {}
    for r in results:
        points.setdefault((r["regime"], r["variant"]), {}).setdefault(r["subjects"], []).append(r)
    return points


def learning_curve(results: Sequence[dict[str, Any]]) -> str:
    """Test AUROC against the number of subjects (best | last epoch), where runs cover several
    sizes of one regime; empty when none does."""
    points = {k: v for k, v in _curve_points(results).items() if len(v) > 1}
    if not points:
        return ""
    sizes = sorted({n for by_size in points.values() for n in by_size})
    header = ["Regime", "Preset"] + [f"{n} subjects: AUROC best / last" for n in sizes]
    lines = [
        "**Learning curve**: test AUROC (mean ± sd over seeds, best / last epoch) against the "
        "number of subjects (half pathological; half of them train, a quarter validate, a "
        "quarter test).\n",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for (regime, variant), by_size in sorted(points.items()):
        row = [regime, variant]
        for n in sizes:
            runs = by_size.get(n, [])
            if not runs:
                row.append("")
                continue
            best = _mean_sd([r["best"].get("auroc") for r in runs])
            last = _mean_sd([r["last"].get("auroc") for r in runs])
            row.append(f"{best} / {last} ({len(runs)} seeds)")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_learning_curve(results: Sequence[dict[str, Any]], path: Path) -> None:
    """One line per (regime, preset): best-epoch test AUROC, mean ± sd, against subjects."""
    points = {k: v for k, v in _curve_points(results).items() if len(v) > 1}
    figure = Figure(figsize=(6, 4), dpi=120)
    ax = figure.add_subplot(1, 1, 1)
    for (regime, variant), by_size in sorted(points.items()):
        sizes = sorted(by_size)
        values = [[float(r["best"]["auroc"]) for r in by_size[n]] for n in sizes]
        means = [float(np.mean(v)) for v in values]
        sds = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in values]
        ax.errorbar(sizes, means, yerr=sds, marker="o", capsize=3, label=f"{regime}, {variant}")
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.axhline(0.9, color="green", linestyle="--", linewidth=1, label="target 0.90")
    ax.set_xscale("log", base=2)
    sizes_all = sorted({n for by_size in points.values() for n in by_size})
    ax.set_xticks(sizes_all, [str(n) for n in sizes_all])
    ax.minorticks_off()
    ax.set_xlabel("subjects (half pathological)")
    ax.set_ylabel("test AUROC (best epoch)")
    ax.set_ylim(0.0, 1.02)
    ax.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``regimes`` (its own: it trains the presets)."""
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    parser.add_argument(
        "--presets",
        nargs="+",
        default=["classification", "supervised", "weakly"],
        choices=list(VARIANTS),
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--subjects",
        type=int,
        nargs="+",
        default=None,
        help="subjects per data set (default: each regime's own); several give a learning curve",
    )
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--work", type=Path, default=Path(".experiments"))
    parser.add_argument("--out", type=Path, default=Path("docs/experiments.md"))
    parser.add_argument(
        "--section",
        default=None,
        help="the section of --out to write (required unless --no-write or --dev): every "
        "table of the docs has its own name, and a run of a few regimes or presets must not "
        "replace another's table",
    )
    parser.add_argument("--overrides", default="{}", help="JSON of RunConfig fields for every run")
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development seeds of the generator (for tuning; implies --no-write)",
    )
    parser.add_argument(
        "--confirm",
        action="store_true",
        help="the second held-out seed of the generator, for checking choices made after "
        "reading the held-out tables",
    )
    parser.add_argument("--tag", default="", help="suffix of the result folder (probes)")


def data_set(options: argparse.Namespace) -> DataSet:
    """The data set the options ask for: development, held-out or the second held-out."""
    if options.dev and options.confirm:
        raise SystemExit("give --dev or --confirm, not both")
    if options.dev:
        return "dev"
    return "confirm" if options.confirm else "heldout"


def _exit_with_parent(parent: int) -> None:
    """Pool initializer: end this worker when the suite's process is gone.

    A killed suite (``kill``, a closed terminal) would otherwise leave its spawned workers
    training their current runs, and a restarted suite would then train the same run folders
    at the same time as they do.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def run_suite(options: argparse.Namespace, command: str) -> int:
    """Run the suite (resuming finished runs) and write its section of the docs.

    ``command`` is the command line recorded in the section.
    """
    data = data_set(options)
    writes = not (options.no_write or options.dev)
    if writes and not options.section:
        # Checked before any training: a run that only ends in this error wastes nothing.
        raise SystemExit(
            "regimes: name the section of the docs to write with --section NAME "
            "(or print the tables only with --no-write)"
        )
    overrides = json.loads(options.overrides)
    counts = {
        regime: options.subjects or [REGIMES[regime].n_subjects] for regime in options.regimes
    }
    jobs = [
        Job(
            regime,
            variant,
            seed,
            subjects,
            options.epochs,
            options.device,
            options.threads,
            options.work.resolve(),
            overrides,
            data=data,
            tag=options.tag,
        )
        for variant in options.presets  # the first presets named finish first
        for seed in options.seeds
        for regime in options.regimes
        for subjects in counts[regime]
    ]
    # Data first, once per regime and size (in parallel subject by subject), so runs never race
    # on it.
    for regime in options.regimes:
        for n in counts[regime]:
            generate_regime(
                _data_dir(options.work.resolve(), regime, n, data),
                REGIMES[regime].with_subjects(n),
                data=data,
                workers=max(1, options.workers),
            )
    started = time.perf_counter()
    todo = [job for job in jobs if not job.result_path.exists()]
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="regime suite", unit="run")
    failures: list[tuple[Job, Exception]] = []
    if options.workers > 1 and len(todo) > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=options.workers,
            mp_context=context,
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        ) as pool:
            futures = {pool.submit(run_one, job): job for job in todo}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    future.result()
                    print(f"done {job.regime}/{job.variant}/seed{job.seed}", flush=True)
                except Exception as exc:  # report every failure, keep the others running
                    failures.append((job, exc))
                bar.update(1)
    else:
        for job in todo:
            try:
                run_one(job)
            except Exception as exc:
                failures.append((job, exc))
            bar.update(1)
    bar.close()
    for failed, error in failures:
        print(
            f"FAILED {failed.regime}/{failed.variant}/seed{failed.seed}: {error!r}", file=sys.stderr
        )
    results = [json.loads(job.result_path.read_text()) for job in jobs if job.result_path.exists()]
    tables = summarise(results)
    curve = learning_curve(results)
    if curve:
        tables += "\n" + curve
        if writes:
            figure = options.out.parent / "img" / f"{options.section}.png"
            plot_learning_curve(results, figure)
            tables += (
                f"\n![AUROC against the number of subjects]({figure.parent.name}/{figure.name})\n"
            )
    body = "\n".join(
        [
            f"Command: `{command.strip()}`",
            f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, "
            f"{os.cpu_count()} CPUs, device {options.device}; "
            f"{time.perf_counter() - started:.0f} s for the runs not already done.",
            "",
            tables,
        ]
    )
    print(tables)
    if writes:
        write_section(options.out, options.section, body)
    return 1 if failures else 0
