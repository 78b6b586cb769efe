"""``shortcut``: does the constraint keep a classifier off a site shortcut? (docs/method.md section 5)

    python -m worker.research shortcut [the options of four-settings]

Trains L_C only and L_C + L_A supervised on the site-shortcut data set (site A's pathological
subjects carry an acquisition artefact; site B has none) and compares a held-out part of site
A with site B, and where the pathological relevance lies: on the artefact or on the lesions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from attrivue_core.io import load_nifti, save_nifti
from worker.ml.synthetic import SubjectRecord, SyntheticConfig, artefact_region
from worker.ml.training import classification_metrics
from worker.research.common import (
    SETTING_LABELS,
    LoadedSubject,
    Options,
    RunOutcome,
    best_model,
    dataset_dir,
    evaluate,
    figure_path,
    fmt,
    grid_text,
    label_counts,
    lesion_fraction,
    lesion_voxels,
    load_dataset,
    load_subjects,
    overlay,
    predict,
    sample,
    section,
    table,
    train_setting,
)

__all__ = [
    "EXPERIMENT_DEFAULTS",
    "NAME",
    "SHORTCUT_SETTINGS",
    "run_shortcut",
    "shortcut_verdict",
    "split_site_a",
]

NAME = "shortcut"
SHORTCUT_SETTINGS = ("lc_only", "lc_la_supervised")
# Site B takes a quarter of the subjects and site A is cut in three: a few more subjects.
EXPERIMENT_DEFAULTS: dict[str, Any] = {"subjects": 80}
# Share of site A held out as its in-site test, and as validation (stratified by label).
SITE_A_TEST_FRACTION = 0.2
SITE_A_VAL_FRACTION = 0.2


def split_site_a(records: Sequence[SubjectRecord], seed: int) -> dict[str, list[SubjectRecord]]:
    """Re-split site A into train, validation and an in-site test; site B stays the test site.

    The generator puts all of site B in its test split and site A in train and validation.
    Site A is shuffled per label with ``seed`` and cut into ``SITE_A_TEST_FRACTION`` in-site
    test, ``SITE_A_VAL_FRACTION`` validation and the rest training (at least one subject of
    each label in each part where there are three or more).

    Returns:
        ``{"train", "val", "test_a", "test_b"}`` lists of records, in subject order.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    parts: dict[str, list[SubjectRecord]] = {"train": [], "val": [], "test_a": [], "test_b": []}
    site_a = [r for r in records if r.site == "A"]
    parts["test_b"] = [r for r in records if r.site == "B"]
    for label in (0, 1):
        members = [site_a[i] for i in rng.permutation(len(site_a)) if site_a[i].label == label]
        n = len(members)
        n_test = max(1, round(SITE_A_TEST_FRACTION * n)) if n >= 3 else 0
        n_val = max(1, round(SITE_A_VAL_FRACTION * n)) if n >= 3 else 0
        parts["test_a"] += members[:n_test]
        parts["val"] += members[n_test : n_test + n_val]
        parts["train"] += members[n_test + n_val :]
    return {name: sorted(part, key=lambda r: r.subject) for name, part in parts.items()}


def run_shortcut(options: Options) -> str:
    """Train L_C only and L_C + L_A supervised on the site-shortcut data; return the section."""
    data_config = options.data_config(site_shortcut=True)
    records = load_dataset(options, data_config)
    parts = split_site_a(records, options.seed)
    subjects = [sample(r, "train") for r in parts["train"]] + [
        sample(r, "val") for r in parts["val"]
    ]
    config = options.run_config("lc_only")
    region = artefact_region(data_config)
    parts["test_a_erased"] = _erase_artefact(
        parts["test_a"], region, dataset_dir(options, data_config) / "artefact-erased"
    )
    loaded = {
        name: load_subjects(config, parts[name])
        for name in ("val", "test_a", "test_b", "test_a_erased")
    }
    shown = {
        "site A": _largest_lesion(loaded["test_a"]),
        "site B": _largest_lesion(loaded["test_b"]),
    }

    outcomes = []
    for setting in SHORTCUT_SETTINGS:
        outcome = train_setting(options, setting, subjects, NAME)
        model = best_model(outcome)
        threshold = evaluate(
            model, loaded["val"], threshold=None, batch_size=options.batch_size
        ).chosen_threshold
        for name in ("test_a", "test_b"):
            evaluation = evaluate(
                model, loaded[name], threshold=threshold, batch_size=options.batch_size
            )
            labels = [s.record.label for s in loaded[name]]
            clf = classification_metrics(labels, predict(model, loaded[name]))
            assert evaluation.maps is not None
            outcome.metrics[name] = {
                **clf,
                **evaluation.metrics,
                "artefact_share": _artefact_share(evaluation.maps, loaded[name], region),
            }
            for key, subject in shown.items():
                if subject is not None and subject in loaded[name]:
                    outcome.maps[key] = evaluation.maps[loaded[name].index(subject)]
        erased = loaded["test_a_erased"]
        outcome.metrics["test_a_erased"] = classification_metrics(
            [s.record.label for s in erased], predict(model, erased)
        )
        outcomes.append(outcome)

    figure = figure_path(options)
    _plot_shortcut(figure, outcomes, shown, region)
    fractions = {name: lesion_fraction(loaded[name]) for name in ("test_a", "test_b")}
    return _shortcut_section(
        options, data_config, parts, outcomes, region, figure, fractions, loaded["test_a"]
    )


def _erase_artefact(
    records: Sequence[SubjectRecord], region: np.ndarray, folder: Path
) -> list[SubjectRecord]:
    """Copies of site-A subjects with the artefact stripe set to 0 (the background value).

    The stripe lies outside the head, so this gives the image the subject would have had
    without the artefact (the noise drawn on the stripe goes with it). A classifier that
    relies on the stripe loses its site-A performance on these copies.
    """
    folder.mkdir(parents=True, exist_ok=True)
    erased = []
    for record in records:
        data, affine = load_nifti(record.image)
        if record.label == 1 and np.any(data[region] != 0):
            data = data.copy()
            data[region] = 0.0
            path = folder / f"{record.subject}.nii.gz"
            save_nifti(path, data, affine, dtype=np.float32)
            record = dataclasses.replace(record, image=path)
        erased.append(record)
    return erased


def _largest_lesion(subjects: Sequence[LoadedSubject]) -> LoadedSubject | None:
    pathological = [s for s in subjects if s.mask is not None and s.mask.any()]
    return max(pathological, key=lesion_voxels) if pathological else None


def _artefact_share(
    maps: Sequence[np.ndarray], subjects: Sequence[LoadedSubject], region: np.ndarray
) -> float | None:
    """Mean over pathological subjects of positive relevance on the artefact / all positive."""
    shares = []
    for attribution, subject in zip(maps, subjects, strict=True):
        if subject.record.label != 1:
            continue
        positive = np.maximum(np.asarray(attribution, dtype=np.float64), 0.0)
        total = positive.sum()
        shares.append(float(positive[region].sum() / total) if total > 0 else 0.0)
    return float(np.mean(shares)) if shares else None


def _shortcut_section(
    options: Options,
    data_config: SyntheticConfig,
    parts: dict[str, list[SubjectRecord]],
    outcomes: Sequence[RunOutcome],
    region: np.ndarray,
    figure: Path,
    lesion_fractions: dict[str, float | None],
    test_a: Sequence[LoadedSubject],
) -> str:
    header = [
        "Setting",
        "AUROC site A (held out)",
        "AUROC site B",
        "Drop",
        "AUROC site A, artefact erased",
        "Artefact share (site A)",
        "Lesion mass site A",
        "Lesion mass site B",
        "Dice top-5% site B",
        "Best epoch",
        "Time (s)",
    ]
    rows = []
    for o in outcomes:
        a, b = o.metrics["test_a"], o.metrics["test_b"]
        drop = None
        if a.get("auroc") is not None and b.get("auroc") is not None:
            drop = a["auroc"] - b["auroc"]
        rows.append(
            [
                SETTING_LABELS[o.setting],
                fmt(a.get("auroc")),
                fmt(b.get("auroc")),
                fmt(drop),
                fmt(o.metrics["test_a_erased"].get("auroc")),
                fmt(a.get("artefact_share")),
                fmt(a.get("lesion_mass")),
                fmt(b.get("lesion_mass")),
                fmt(b.get("dice_top_k")),
                str(o.result.best_epoch),
                f"{o.seconds:.0f}",
            ]
        )
    sizes = {name: label_counts(part) for name, part in parts.items() if name != "test_a_erased"}
    stripe = _artefact_fraction(test_a, region)
    data_line = (
        f"{data_config.n_subjects} synthetic MS-like subjects with the site shortcut (grid "
        f"{grid_text(data_config.grid)} at {data_config.spacing_mm:g} mm; artefact intensity "
        f"{data_config.artefact_intensity:g} on every pathological site-A subject; data seed "
        f"{data_config.seed}). The generator puts site B in its test split; site A (its train "
        f"and validation splits) was re-split here by label with seed {options.seed}: train "
        f"{sizes['train']}, validation {sizes['val']}, in-site test {sizes['test_a']}; site B "
        f"test {sizes['test_b']} (healthy/pathological). The artefact stripe covers "
        f"{int(region.sum())} voxels, {fmt(stripe)} of the non-zero voxels of a site-A "
        "pathological subject: a map spread evenly would put that share on it. Lesions take "
        f"{fmt(lesion_fractions['test_a'], 4)} (site A test) and "
        f"{fmt(lesion_fractions['test_b'], 4)} (site B) of the non-zero voxels of a "
        "pathological subject on average."
    )
    verdict = shortcut_verdict({o.setting: o.metrics for o in outcomes}, stripe)
    return section(
        "shortcut",
        "Site shortcut",
        options,
        data_line,
        table(header, rows),
        verdict,
        figure,
        "Coronal slice through the lesions of the pathological subject with the largest lesion "
        "load of each test set (top: site A, with the artefact stripe at the top of the field "
        "of view, dashed yellow; bottom: site B). Red: pathological relevance; blue: healthy "
        "relevance; green: lesion outline.",
    )


def _artefact_fraction(subjects: Sequence[LoadedSubject], region: np.ndarray) -> float | None:
    """Mean share of the non-zero voxels that the stripe takes on pathological subjects."""
    fractions = []
    for subject in subjects:
        if subject.record.label == 1:
            nonzero = subject.image[0].numpy() != 0
            fractions.append(float((nonzero & region).sum() / max(int(nonzero.sum()), 1)))
    return float(np.mean(fractions)) if fractions else None


def shortcut_verdict(
    metrics: dict[str, dict[str, dict[str, Any]]], even_share: float | None = None
) -> str:
    """The generated sentence: does L_C only learn the artefact and the constraint not?

    ``even_share`` is the artefact share of a map spread evenly over the non-zero voxels;
    L_C only "points at the artefact" when its share exceeds both that and its lesion mass.
    """
    plain, constrained = metrics["lc_only"], metrics["lc_la_supervised"]

    def value(run: dict[str, dict[str, Any]], split: str, key: str) -> float:
        found = run[split].get(key)
        return float("nan") if found is None else float(found)

    a_plain, b_plain = value(plain, "test_a", "auroc"), value(plain, "test_b", "auroc")
    a_con, b_con = value(constrained, "test_a", "auroc"), value(constrained, "test_b", "auroc")
    art_plain = value(plain, "test_a", "artefact_share")
    art_con = value(constrained, "test_a", "artefact_share")
    erased_plain = value(plain, "test_a_erased", "auroc")
    erased_con = value(constrained, "test_a_erased", "auroc")
    mass_plain = value(plain, "test_a", "lesion_mass")
    mass_con = value(constrained, "test_a", "lesion_mass")
    checks = [
        (f"L_C only does well on site A (AUROC {fmt(a_plain)} >= 0.8)", a_plain >= 0.8),
        (
            f"L_C only drops on site B (AUROC {fmt(b_plain)}, at least 0.15 below site A)",
            a_plain - b_plain >= 0.15,
        ),
        (
            f"L_C only points at the artefact (artefact share {fmt(art_plain)} above its "
            f"lesion mass {fmt(mass_plain)} and above {fmt(even_share)}, the share of an "
            "evenly spread map)",
            art_plain > mass_plain and art_plain > (even_share or 0.0),
        ),
        (
            f"L_C only needs the artefact (erasing it: site-A AUROC {fmt(a_plain)} -> "
            f"{fmt(erased_plain)}, at least 0.15 lost)",
            a_plain - erased_plain >= 0.15,
        ),
        (
            f"the supervised constraint moves the relevance off the artefact ({fmt(art_con)} "
            f"< {fmt(art_plain)}) onto the lesions ({fmt(mass_con)} > {fmt(mass_plain)}, "
            "site A)",
            art_con < art_plain and mass_con > mass_plain,
        ),
        (
            f"the supervised run does not drop on site B ({fmt(a_con)} -> {fmt(b_con)}, at "
            f"most 0.1 lost; L_C only lost {fmt(a_plain - b_plain)})",
            a_con - b_con <= 0.1,
        ),
        (
            f"the supervised run does not need the artefact (erasing it: {fmt(a_con)} -> "
            f"{fmt(erased_con)}, at most 0.1 lost)",
            a_con - erased_con <= 0.1,
        ),
    ]
    n_held = sum(ok for _, ok in checks)
    if n_held == len(checks):
        outcome = "**Expectation held**"
    elif n_held == 0:
        outcome = "**Expectation did not hold**"
    else:
        outcome = f"**Expectation held in {n_held} of {len(checks)} points**"
    details = "; ".join(f"{text}: {'yes' if ok else 'no'}" for text, ok in checks)
    return f"{outcome}. {details}."


def _plot_shortcut(
    path: Path,
    outcomes: Sequence[RunOutcome],
    shown: dict[str, LoadedSubject | None],
    region: np.ndarray,
) -> None:
    rows = [key for key, subject in shown.items() if subject is not None]
    fig = Figure(figsize=(3.4 * len(outcomes), 3.4 * len(rows)))
    axes = fig.subplots(len(rows), len(outcomes), squeeze=False)
    stripe_rows = np.flatnonzero(region.any(axis=(0, 2)))
    for r, key in enumerate(rows):
        subject = shown[key]
        assert subject is not None
        image = subject.image[0].numpy()
        lesion = subject.mask if subject.mask is not None else np.zeros(image.shape, bool)
        # Coronal slice (second axis) with the largest lesion area among those crossing the
        # stripe, so that lesions and artefact are in one picture.
        areas = lesion.sum(axis=(0, 2)).astype(float)
        if stripe_rows.size:
            outside = np.ones(areas.shape, bool)
            outside[stripe_rows] = False
            areas[outside] = -1.0
        y = int(np.argmax(areas))
        for c, outcome in enumerate(outcomes):
            ax = axes[r][c]
            overlay(ax, image[:, y, :], outcome.maps[key][:, y, :], lesion[:, y, :])
            if region[:, y, :].any():
                ax.contour(
                    region[:, y, :].T.astype(float),
                    levels=[0.5],
                    colors="yellow",
                    linewidths=0.8,
                    linestyles="dashed",
                )
            if r == 0:
                ax.set_title(SETTING_LABELS[outcome.setting], fontsize=10)
            if c == 0:
                ax.set_ylabel(f"{key} ({subject.record.subject}, y={y})", fontsize=9)
    fig.suptitle("Site shortcut: Integrated Gradients, red pathological, blue healthy")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
