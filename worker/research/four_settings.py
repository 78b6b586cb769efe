"""``four-settings``: the four loss settings of docs/method.md section 3 on one data set.

    python -m worker.research four-settings [--out docs/experiments.md] [--subjects N]
        [--epochs E] [--seed S] [--grid X Y Z] [--quick] [...]

Trains the four loss settings of the seed's figure (L_C only, L_A only, L_C + L_A supervised,
L_C + L_A unsupervised) on one synthetic MS-like data set with the same seed, network and
budget, and reports the test split's classification and attribution metrics (Integrated
Gradients against the lesion masks, docs/method.md section 4), with diagnostics that the engine
does not report and the maps of one pathological and one healthy test subject.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from worker.ml.synthetic import SubjectRecord, SyntheticConfig
from worker.ml.training import classification_metrics, load_model
from worker.research.common import (
    SETTING_LABELS,
    LoadedSubject,
    Options,
    RunOutcome,
    best_model,
    evaluate,
    figure_path,
    fmt,
    grid_text,
    lesion_fraction,
    lesion_voxels,
    load_dataset,
    load_subjects,
    overlay,
    sample,
    section,
    split_counts,
    table,
    train_setting,
)

__all__ = [
    "EXPERIMENT_DEFAULTS",
    "FOUR_SETTINGS",
    "NAME",
    "four_settings_verdict",
    "run_four_settings",
    "sign_diagnostics",
]

NAME = "four-settings"
FOUR_SETTINGS = ("lc_only", "la_only", "lc_la_supervised", "lc_la_unsupervised")
# What this experiment changes in the shared defaults (worker.research.common.DEFAULTS).
EXPERIMENT_DEFAULTS: dict[str, Any] = {}
# "Far more" relevance on the lesions: at least this factor and this margin above L_C only.
FAR_MORE_FACTOR = 2.0
FAR_MORE_MARGIN = 0.05


def run_four_settings(options: Options) -> str:
    """Train the four settings and return the Markdown section."""
    data_config = options.data_config(site_shortcut=False)
    records = load_dataset(options, data_config)
    subjects = [sample(r) for r in records]
    test_loaded = load_subjects(
        options.run_config("lc_only"), [r for r in records if r.split == "test"]
    )
    shown = _figure_subjects(test_loaded)

    outcomes = []
    for setting in FOUR_SETTINGS:
        outcome = train_setting(options, setting, subjects, NAME)
        # The test maps once more (same method as the engine's test metrics), for the
        # diagnostics that the engine does not report and for the figure; and those of the
        # last epoch, to show how much the choice of the best epoch matters.
        best, maps = _diagnostics(best_model(outcome), test_loaded, options.batch_size)
        last, _ = _diagnostics(
            load_model(outcome.result.last_checkpoint)[0], test_loaded, options.batch_size
        )
        outcome.metrics = {"best": best, "last": last}
        for key, subject in shown.items():
            outcome.maps[key] = maps[test_loaded.index(subject)]
        outcomes.append(outcome)

    figure = figure_path(options)
    _plot_four_settings(figure, outcomes, shown)
    return _four_settings_section(
        options, data_config, records, outcomes, figure, lesion_fraction(test_loaded)
    )


def _figure_subjects(loaded: Sequence[LoadedSubject]) -> dict[str, LoadedSubject]:
    """The pathological test subject with the largest lesion load, and the first healthy one."""
    pathological = [s for s in loaded if s.mask is not None and s.mask.any()]
    healthy = [s for s in loaded if s.record.label == 0]
    shown = {}
    if pathological:
        shown["pathological"] = max(pathological, key=lesion_voxels)
    if healthy:
        shown["healthy"] = healthy[0]
    return shown


def _diagnostics(
    model: torch.nn.Module, subjects: Sequence[LoadedSubject], batch_size: int
) -> tuple[dict[str, float | None], list[np.ndarray]]:
    """Test metrics of one set of weights that the engine does not report, and the maps.

    Returns ``auroc``, ``lesion_mass`` (as the engine computes them), the logit of the zero
    image ``f_zero`` (the IG baseline: sum(A) = F(x) - F(0)), the mean logits of healthy and
    pathological subjects, and ``sign_diagnostics``.
    """
    evaluation = evaluate(model, subjects, threshold=None, batch_size=batch_size)
    assert evaluation.maps is not None
    labels = np.array([s.record.label for s in subjects])
    model.eval()
    with torch.no_grad():
        logits = np.array([float(model(s.image[None]).reshape(-1)[0]) for s in subjects])
        f_zero = float(model(torch.zeros_like(subjects[0].image)[None]).reshape(-1)[0])
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    values: dict[str, float | None] = {
        "auroc": classification_metrics(labels, probabilities).get("auroc"),
        "lesion_mass": evaluation.metrics.get("lesion_mass"),
        "f_zero": f_zero,
        "f_healthy": float(logits[labels == 0].mean()) if (labels == 0).any() else None,
        "f_pathological": float(logits[labels == 1].mean()) if (labels == 1).any() else None,
        **sign_diagnostics(evaluation.maps, subjects),
    }
    return values, evaluation.maps


def sign_diagnostics(
    maps: Sequence[np.ndarray], subjects: Sequence[LoadedSubject]
) -> dict[str, float | None]:
    """Where the signed maps of pathological subjects put their relevance.

    ``signed_voxel_auroc``: voxel-wise AUROC of the signed A (not its positive part) for
    lesion against other non-zero voxels: above 0.5 when lesions are ranked as more
    pathological than the rest even if the whole map is negative. ``positive_share``: positive
    mass / total absolute mass on pathological subjects (the healthy share's counterpart).
    Both are means over pathological subjects with a non-empty mask.
    """
    aurocs, shares = [], []
    for attribution, subject in zip(maps, subjects, strict=True):
        if subject.mask is None or not subject.mask.any():
            continue
        inside = subject.image[0].numpy() != 0
        values = np.asarray(attribution, dtype=np.float64)[inside]
        lesion = subject.mask[inside]
        if lesion.any() and not lesion.all():
            aurocs.append(float(roc_auc_score(lesion, values)))
        total = np.abs(values).sum()
        shares.append(float(np.maximum(values, 0.0).sum() / total) if total > 0 else 0.0)
    return {
        "signed_voxel_auroc": float(np.mean(aurocs)) if aurocs else None,
        "positive_share": float(np.mean(shares)) if shares else None,
    }


def _four_settings_section(
    options: Options,
    data_config: SyntheticConfig,
    records: Sequence[SubjectRecord],
    outcomes: Sequence[RunOutcome],
    figure: Path,
    lesion_fraction: float | None,
) -> str:
    header = [
        "Setting",
        "AUROC",
        "Acc",
        "Dice (val thr)",
        "Dice top-5%",
        "Voxel AUROC",
        "Lesion mass",
        "Pointing",
        "Healthy share",
        "Best epoch",
        "Time (s)",
    ]
    rows = []
    for o in outcomes:
        m = o.result.test_metrics
        rows.append(
            [
                SETTING_LABELS[o.setting],
                fmt(m.get("auroc")),
                fmt(m.get("accuracy")),
                fmt(m.get("attr_dice")),
                fmt(m.get("attr_dice_top5")),
                fmt(m.get("attr_voxel_auroc")),
                fmt(m.get("attr_lesion_mass")),
                fmt(m.get("attr_pointing_game")),
                fmt(m.get("attr_healthy_share")),
                str(o.result.best_epoch),
                f"{o.seconds:.0f}",
            ]
        )
    diagnostics_header = [
        "Setting",
        "Positive share (path.)",
        "Signed voxel AUROC",
        "F(0)",
        "Mean F(x) healthy",
        "Mean F(x) path.",
        "Last epoch: AUROC",
        "Last epoch: lesion mass",
        "Last epoch: signed voxel AUROC",
    ]
    diagnostics = []
    for o in outcomes:
        best, last = o.metrics["best"], o.metrics["last"]
        diagnostics.append(
            [
                SETTING_LABELS[o.setting],
                fmt(best.get("positive_share")),
                fmt(best.get("signed_voxel_auroc")),
                fmt(best.get("f_zero"), 2),
                fmt(best.get("f_healthy"), 2),
                fmt(best.get("f_pathological"), 2),
                fmt(last.get("auroc")),
                fmt(last.get("lesion_mass")),
                fmt(last.get("signed_voxel_auroc")),
            ]
        )
    counts = split_counts(records)
    data_line = (
        f"{data_config.n_subjects} synthetic MS-like subjects (half pathological; "
        f"grid {grid_text(data_config.grid)} at {data_config.spacing_mm:g} mm; lesion intensity "
        f"{data_config.lesion_intensity:g}, {data_config.lesion_count_range[0]}-"
        f"{data_config.lesion_count_range[1]} lesions of mean semi-axis "
        f"{data_config.lesion_radius_range_mm[0]:g}-{data_config.lesion_radius_range_mm[1]:g}"
        f" mm; data seed {data_config.seed}); splits {counts} (healthy/pathological). "
        f"Lesions take {fmt(lesion_fraction, 4)} of the non-zero voxels of a pathological "
        "test subject on average: the lesion mass of a map spread evenly."
    )
    verdict = four_settings_verdict(
        {o.setting: o.result.test_metrics for o in outcomes},
    )
    return section(
        "four-settings",
        "Four loss settings",
        options,
        data_line,
        table(header, rows)
        + "\n\nDiagnostics (test split; best-epoch weights unless marked; logits F in the "
        "network's units, F(0) being the IG baseline's, so that sum(A) = F(x) - F(0)):\n\n"
        + table(diagnostics_header, diagnostics),
        verdict,
        figure,
        "Panels: one test subject per setting, axial slice with the largest lesion "
        "area (top: the pathological test subject with the largest lesion load; bottom: a "
        "healthy test subject). Gray: image; red: pathological relevance (A > 0); blue: "
        "healthy relevance (A < 0), each scaled to its panel's 99.5th percentile of |A|; "
        "green: lesion outline.",
    )


def four_settings_verdict(metrics: dict[str, dict[str, Any]]) -> str:
    """The generated sentence: did the constrained runs put far more relevance on lesions?"""
    base = metrics["lc_only"].get("attr_lesion_mass")
    if base is None:
        return "**Expectation not assessable**: L_C only has no lesion mass."
    parts, held = [], []
    for setting in ("la_only", "lc_la_supervised", "lc_la_unsupervised"):
        mass = metrics[setting].get("attr_lesion_mass")
        ok = mass is not None and mass >= FAR_MORE_FACTOR * base and mass - base >= FAR_MORE_MARGIN
        held.append(ok)
        parts.append(f"{SETTING_LABELS[setting]} {fmt(mass)} ({'yes' if ok else 'no'})")
    if all(held):
        outcome = "**Expectation held**"
    elif any(held):
        outcome = f"**Expectation held for {sum(held)} of 3 constrained runs**"
    else:
        outcome = "**Expectation did not hold**"
    aurocs = ", ".join(f"{SETTING_LABELS[s]} {fmt(metrics[s].get('auroc'))}" for s in FOUR_SETTINGS)
    return (
        f"{outcome}: relevance mass in the lesions was {fmt(base)} for L_C only against "
        f"{'; '.join(parts)} (criterion: at least {FAR_MORE_FACTOR:g} times and "
        f"{FAR_MORE_MARGIN:g} above L_C only). Test AUROC: {aurocs}."
    )


def _plot_four_settings(
    path: Path, outcomes: Sequence[RunOutcome], shown: dict[str, LoadedSubject]
) -> None:
    rows = list(shown)
    # Figure without pyplot: no backend, no global state.
    fig = Figure(figsize=(3.0 * len(outcomes), 3.2 * len(rows)))
    axes = fig.subplots(len(rows), len(outcomes), squeeze=False)
    for r, key in enumerate(rows):
        subject = shown[key]
        image = subject.image[0].numpy()
        lesion = subject.mask if subject.mask is not None else np.zeros(image.shape, bool)
        # Axial slice (third axis) with the largest lesion area, else the middle one.
        areas = lesion.sum(axis=(0, 1))
        z = int(np.argmax(areas)) if areas.any() else image.shape[2] // 2
        for c, outcome in enumerate(outcomes):
            ax = axes[r][c]
            attribution = outcome.maps[key]
            overlay(ax, image[:, :, z], attribution[:, :, z], lesion[:, :, z])
            if r == 0:
                ax.set_title(SETTING_LABELS[outcome.setting], fontsize=10)
            if c == 0:
                ax.set_ylabel(f"{key} ({subject.record.subject}, z={z})", fontsize=9)
    fig.suptitle("Integrated Gradients on test subjects: red pathological, blue healthy")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
