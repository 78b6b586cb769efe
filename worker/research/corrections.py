"""One round of clinicians' corrections, simulated: ``python -m worker.research corrections``.

The training targets of the pathological training subjects start degraded, as a hurried
annotation would be: each lesion is missing from the target with probability
``DROP_PROBABILITY`` (at least one is dropped where there are two or more), and one false
lesion (a ball in the brain away from every lesion) is added. A run trained on these targets
(L_C + L_A supervised) is the "before" run.

Simulated reviewers then look at the before run's map (Integrated Gradients, as the platform
shows it) of ``REVIEWED`` pathological training subjects and draw, knowing the true lesions:
"missed lesion" (label 1) on every true lesion that less than half-overlaps the top 5 % of the
map, and "spurious pathological relevance" (label 2) on the top 5 % voxels more than one voxel
away from any true lesion. Two reviewers take turns; the corrections are merged into the
degraded targets by ``attrivue_core.corrections.merge_corrections`` (the platform's merge) and a
second run, identical but for those targets, is the "after" run. A third run with the true
masks as targets gives the ceiling.

Reported: lesion relevance mass and Dice (of the thresholded relevance against the true lesion
mask) on the test split and on the reviewed subjects, before and after, and how close the
targets themselves came to the true masks.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from attrivue_core.configs import RunConfig
from attrivue_core.corrections import (
    MISSED,
    SPURIOUS,
    Correction,
    base_target,
    merge_corrections,
    save_target,
)
from worker.ml.epoch_maps import GridSubject, load_grid_subject, subject_metrics
from worker.ml.evaluation import attribution_maps
from worker.ml.training import TEST_IG_STEPS, SubjectSample, TrainResult, load_model, train
from worker.research.common import (
    Options,
    fmt,
    grid_text,
    load_dataset,
    machine_description,
    sample,
    shared_config_text,
    split_counts,
    table,
)

__all__ = ["EXPERIMENT_DEFAULTS", "NAME", "degrade", "review", "run_corrections"]

DROP_PROBABILITY = 0.5
REVIEWED = 8
TOP_PERCENT = 5.0
NAME = "corrections"
# What this experiment changes in the shared defaults (worker.research.common.DEFAULTS).
EXPERIMENT_DEFAULTS: dict[str, Any] = {}


@dataclass
class _Subject:
    sample: SubjectSample
    grid: GridSubject  # image, true mask, affine on the working grid
    degraded: np.ndarray  # float32 target 0/1


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def degrade(mask: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The true mask with lesions dropped and one false lesion added (float32 0/1)."""
    components, n = ndimage.label(mask)
    keep = rng.random(n) >= DROP_PROBABILITY
    if n >= 2 and keep.all():
        keep[rng.integers(n)] = False
    target = np.isin(components, np.flatnonzero(keep) + 1)
    radius = max(1, round(min(mask.shape) / 16))
    far = brain & (ndimage.distance_transform_edt(~mask) > radius + 2)
    candidates = np.argwhere(far)
    if len(candidates):
        centre = candidates[rng.integers(len(candidates))]
        idx = np.indices(mask.shape)
        ball = ((idx - centre[:, None, None, None]) ** 2).sum(0) <= radius**2
        target |= ball & brain
    return target.astype(np.float32)


def review(attribution: np.ndarray, subject: GridSubject) -> np.ndarray:
    """A simulated reviewer's drawing: 1 on missed true lesions, 2 on spurious relevance."""
    assert subject.mask is not None
    brain = (subject.image != 0).any(dim=0).numpy()
    values = np.where(brain, attribution, -np.inf)
    k = max(1, int(round(brain.sum() * TOP_PERCENT / 100)))
    cut = np.partition(values.ravel(), -k)[-k]
    top = (values >= cut) & (values > 0) & brain
    labels = np.zeros(subject.mask.shape, np.uint8)
    components, n = ndimage.label(subject.mask)
    for index in range(1, n + 1):
        lesion = components == index
        if (top & lesion).sum() < 0.5 * lesion.sum():
            labels[lesion] = MISSED
    near = ndimage.binary_dilation(subject.mask, iterations=1)
    labels[top & ~near] = SPURIOUS
    return labels


def _save(target: np.ndarray, subject: _Subject, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return save_target(target, subject.grid.affine, folder / f"{subject.sample.subject_id}.nii.gz")


def _train(
    options: Options, name: str, config: RunConfig, samples: list[SubjectSample]
) -> tuple[TrainResult, float]:
    checkpoint_dir = options.work / "runs" / NAME / name
    if checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    started = time.perf_counter()
    print(f"{NAME}: training '{name}' ({config.epochs} epochs)", flush=True)
    result = train(config, samples, checkpoint_dir=checkpoint_dir)
    return result, time.perf_counter() - started


def _with_targets(samples: list[SubjectSample], targets: dict[str, Path]) -> list[SubjectSample]:
    return [
        SubjectSample(
            subject_id=s.subject_id,
            image=s.image,
            mask=s.mask,
            label=s.label,
            split=s.split,
            target=s.target,
            target_map=targets.get(str(s.subject_id)),
        )
        for s in samples
    ]


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def run_corrections(options: Options) -> str:
    """Train before, after and ceiling runs and return the Markdown section."""
    config = options.run_config("lc_la_supervised")
    data_config = options.data_config(site_shortcut=False)
    records = load_dataset(options, data_config)
    samples = [sample(r) for r in records]
    rng = np.random.default_rng(np.random.SeedSequence([options.seed, 11]))

    subjects: list[_Subject] = []
    for item in samples:
        if item.split != "train" or item.label != 1 or item.mask is None:
            continue
        grid = load_grid_subject(config, item.subject_id, item.image, item.mask)
        assert grid.mask is not None
        brain = (grid.image != 0).any(dim=0).numpy()
        subjects.append(_Subject(item, grid, degrade(grid.mask, brain, rng)))
    targets_dir = options.work / "runs" / NAME / "targets"
    degraded = {
        str(s.sample.subject_id): _save(s.degraded, s, targets_dir / "degraded") for s in subjects
    }

    before, before_seconds = _train(options, "before", config, _with_targets(samples, degraded))

    # One round of review on a few pathological training subjects.
    reviewed = [subjects[i] for i in sorted(rng.permutation(len(subjects))[:REVIEWED])]
    model, _ = load_model(before.best_checkpoint)
    maps, _ = attribution_maps(model, [s.grid.image for s in reviewed], steps=TEST_IG_STEPS)
    merged_paths = dict(degraded)
    target_quality: list[tuple[float, float]] = []
    drawn = {"missed": 0, "spurious": 0, "contested": 0}
    for index, (subject, attribution) in enumerate(zip(reviewed, maps, strict=True)):
        labels = review(attribution, subject.grid)
        drawn["missed"] += int((labels == MISSED).sum())
        drawn["spurious"] += int((labels == SPURIOUS).sum())
        correction = Correction(
            labels=labels,
            review_id=index + 1,
            reviewer_id=index % 2 + 1,
            reviewer=f"reviewer {index % 2 + 1}",
            method="integrated_gradients",
            created_at=f"round 1, {index:03d}",
        )
        base = base_target(1, subject.degraded, "supervised", labels.shape)
        merged = merge_corrections(base, [correction])
        drawn["contested"] += merged.stats["contested_voxels"]
        key = str(subject.sample.subject_id)
        merged_paths[key] = _save(merged.target, subject, targets_dir / "merged")
        truth = subject.grid.mask
        assert truth is not None
        target_quality.append(
            (
                _dice(subject.degraded > 0.5, truth),
                _dice(np.nan_to_num(merged.target) > 0.5, truth),
            )
        )

    after, after_seconds = _train(options, "after", config, _with_targets(samples, merged_paths))
    ceiling, ceiling_seconds = _train(options, "true masks", config, samples)

    rows = []
    outcome: dict[str, dict[str, float | None]] = {}
    for name, targets, result, seconds in (
        ("before", "degraded", before, before_seconds),
        ("after one round", f"degraded + corrections on {len(reviewed)}", after, after_seconds),
        ("ceiling", "true masks", ceiling, ceiling_seconds),
    ):
        model, _ = load_model(result.best_checkpoint)
        found = subject_metrics(model, [s.grid for s in reviewed])
        test = result.test_metrics
        outcome[name] = {
            "test_mass": test.get("attr_lesion_mass"),
            "test_dice": test.get("attr_dice"),
            "test_dice_top5": test.get("attr_dice_top5"),
            "reviewed_mass": _mean([f["lesion_mass"] for f in found]),
            "reviewed_dice_top5": _mean([f["dice_top5"] for f in found]),
        }
        rows.append(
            [
                name,
                targets,
                fmt(test.get("auroc")),
                fmt(test.get("attr_lesion_mass")),
                fmt(test.get("attr_dice")),
                fmt(test.get("attr_dice_top5")),
                fmt(outcome[name]["reviewed_mass"]),
                fmt(outcome[name]["reviewed_dice_top5"]),
                str(result.best_epoch),
                f"{seconds:.0f} s",
            ]
        )
    rendered = table(
        [
            "Run",
            "Targets of the pathological training subjects",
            "Test AUROC",
            "Test lesion mass",
            "Test Dice (val thr)",
            "Test Dice top-5%",
            "Reviewed: lesion mass",
            "Reviewed: Dice top-5%",
            "Best epoch",
            "Time",
        ],
        rows,
    )
    b, a = outcome["before"], outcome["after one round"]

    def change(key: str) -> str:
        before, after = b[key], a[key]
        if before is None or after is None:
            return f"{key}: n/a"
        return f"{fmt(before)} → {fmt(after)} ({after - before:+.3f})"

    quality_before = _mean([q[0] for q in target_quality])
    quality_after = _mean([q[1] for q in target_quality])
    verdict = (
        f"One round of corrections on {len(reviewed)} of {len(subjects)} pathological training "
        f"subjects changed the test lesion mass {change('test_mass')}, the test Dice at the "
        f"validation threshold {change('test_dice')} and the top-5% Dice "
        f"{change('test_dice_top5')}; on the reviewed subjects themselves the lesion mass went "
        f"{change('reviewed_mass')}. The reviewers drew {drawn['missed']} missed-lesion and "
        f"{drawn['spurious']} spurious voxels; the Dice of the reviewed subjects' targets against "
        f"their true masks went from {fmt(quality_before)} (degraded) to {fmt(quality_after)} "
        "(merged). One seed, one data set: differences of a few hundredths are within what "
        "another seed would change."
    )
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "## Corrections from review: one simulated round",
            "",
            f"- Command: `{options.command}`",
            f"- Date: {date}",
            f"- Machine: {machine_description(options)}",
            f"- Data: {len(records)} synthetic MS-like subjects on a {grid_text(options.grid)} grid "
            f"(healthy/pathological per split: {split_counts(records)}).",
            f"- Shared run configuration (loss setting lc_la_supervised for all three): "
            f"{shared_config_text(options)}",
            f"- Degraded targets: each lesion dropped with probability {DROP_PROBABILITY} (at "
            "least one of two or more), one false lesion ball added. Simulated review of "
            f"{len(reviewed)} subjects: missed lesion = a true lesion less than half covered by "
            f"the top {TOP_PERCENT:g}% of the before run's IG map; spurious = top "
            f"{TOP_PERCENT:g}% voxels more than one voxel from a true lesion; merged with the "
            "platform's merge (abstain on disagreement; one reviewer per subject here).",
            "- Metrics against the true masks, IG (16 points) of each run's best weights: test "
            "split as in the four-settings table; 'Reviewed' = the reviewed training subjects "
            "(8 IG points, working grid, sign-aware).",
            "",
            rendered,
            "",
            verdict,
        ]
    )
