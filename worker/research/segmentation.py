"""How much annotation does the attribution constraint save in segmentation? (docs/method.md section 6.3)

    python -m worker.research segmentation [--quick] [--fractions 0.1 0.25 0.5 1]
        [--subjects N] [--epochs E] [--grid X Y Z] [--seed S] [--out docs/experiments.md]

On one synthetic tumour-like data set (``worker.ml.synthetic``, MNI152-based), a small MONAI
UNet (``worker.ml.segmentation``) is trained with a fraction of the training subjects
annotated (their lesion masks, or the empty mask of a healthy subject) and the others known by
their image label only, without and with the attribution constraint on the label-only healthy
subjects (``RunConfig.seg_constraint``). At 100 % no subject is label-only, so the constraint
has nothing to act on and one run serves both columns. The test split's Dice, lesion-wise F1
and the predicted voxels on healthy test subjects are reported, as a table and a plot written
into ``docs/experiments.md`` between ``<!-- segmentation:begin -->`` and
``<!-- segmentation:end -->`` (the figure in ``docs/img/segmentation.png``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from attrivue_core.configs import LambdaSchedule, RunConfig
from worker.ml.segmentation import annotated_subjects
from worker.ml.synthetic import SubjectRecord, SyntheticConfig, ensure_dataset
from worker.ml.training import SubjectSample, as_split, load_model, train
from worker.ml.transforms import IMAGE_KEY, preprocess_for
from worker.research.common import DEFAULT_OUT, DEFAULT_WORK, FOV_MM

__all__ = ["DEFAULTS", "NAME", "QUICK", "Options", "add_arguments", "options_from_args", "run"]

NAME = "segmentation"
DEFAULTS: dict[str, Any] = {
    "subjects": 40,
    "epochs": 40,
    "grid": (24, 28, 24),
    "fractions": (0.1, 0.25, 0.5, 1.0),
    "learning_rate": 1e-2,
    "batch_size": 2,
    "lambda_a": 1.0,
    "seeds": (0, 1),
}
QUICK: dict[str, Any] = {
    "subjects": 12,
    "epochs": 1,
    "grid": (16, 20, 16),
    "fractions": (0.5, 1.0),
    "seeds": (0,),
}


@dataclass
class Options:
    out: Path
    work: Path
    seed: int
    threads: int
    quick: bool
    command: str
    subjects: int
    epochs: int
    grid: tuple[int, int, int]
    fractions: tuple[float, ...]
    learning_rate: float
    batch_size: int
    lambda_a: float
    seeds: tuple[int, ...]


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"fractions must lie in (0, 1], got {value:g}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``segmentation`` (its own: it trains a segmentation network)."""
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--seed", type=int, default=0, help="seed of the data set")
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="run seeds (initialisation, annotated subsets)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="tiny data and budget (tests)")
    parser.add_argument("--subjects", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--grid", type=int, nargs=3)
    parser.add_argument("--fractions", type=_fraction, nargs="+")
    parser.add_argument("--lr", type=float, dest="learning_rate")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lambda", type=float, dest="lambda_a")


def options_from_args(args: argparse.Namespace, command: str) -> Options:
    """``Options`` from parsed arguments: defaults, then --quick, then flags."""
    values = dict(DEFAULTS)
    if args.quick:
        values.update(QUICK)
    for key in DEFAULTS:
        given = getattr(args, key, None)
        if given is not None:
            values[key] = tuple(given) if isinstance(given, list) else given
    return Options(
        out=args.out,
        work=args.work,
        seed=args.seed,
        threads=args.threads,
        quick=args.quick,
        command=command,
        **{
            **values,
            "grid": tuple(int(n) for n in values["grid"]),
            "fractions": tuple(sorted(float(f) for f in values["fractions"])),
            "seeds": tuple(int(n) for n in values["seeds"]),
        },
    )


def _data_config(options: Options) -> SyntheticConfig:
    half = options.subjects // 2
    return SyntheticConfig(
        n_healthy=options.subjects - half,
        n_lesion=half,
        grid=options.grid,
        spacing_mm=FOV_MM / options.grid[0],
        kind="tumour",
        seed=options.seed,
    )


def _run_config(options: Options, fraction: float, constraint: bool, seed: int) -> RunConfig:
    return RunConfig(
        task="segmentation",
        grid=options.grid,
        epochs=options.epochs,
        batch_size=options.batch_size,
        learning_rate=options.learning_rate,
        seed=seed,
        device="cpu",
        seg_annotated_fraction=fraction,
        seg_constraint=constraint,
        train_attribution=["gradient"],
        lambda_a=LambdaSchedule(value=options.lambda_a),
    )


def _healthy_false_voxels(
    config: RunConfig, checkpoint: Path, records: Sequence[SubjectRecord]
) -> float:
    """Mean predicted lesion voxels (working grid) on the healthy test subjects."""
    model, _ = load_model(checkpoint)
    transform = preprocess_for(config)
    counts = []
    with torch.no_grad():
        for record in records:
            if record.split == "test" and record.label == 0:
                x = transform({IMAGE_KEY: str(record.image)})[IMAGE_KEY].as_tensor()[None]
                counts.append(float((model(x) > 0).sum()))
    return float(np.mean(counts)) if counts else float("nan")


def run(options: Options) -> str:
    torch.set_num_threads(max(1, options.threads))
    data = _data_config(options)
    records = ensure_dataset(
        options.work
        / "datasets"
        / f"segmentation-{options.subjects}-{options.grid[0]}-{options.seed}",
        data,
    )
    samples = [
        SubjectSample(r.subject, r.image, r.mask, r.label, as_split(r.split)) for r in records
    ]
    # (fraction, constraint) -> one metrics dict per run seed.
    results: dict[tuple[float, bool], list[dict[str, Any]]] = {}
    for fraction in options.fractions:
        for constraint in (False, True):
            if fraction == 1.0 and constraint:
                results[(fraction, True)] = results[(fraction, False)]
                continue
            results[(fraction, constraint)] = []
            for seed in options.seeds:
                config = _run_config(options, fraction, constraint, seed)
                name = f"f{fraction:g}-c{int(constraint)}-s{seed}"
                folder = options.work / "checkpoints" / NAME / name
                shutil.rmtree(folder, ignore_errors=True)
                started = time.perf_counter()
                outcome = train(config, samples, checkpoint_dir=folder)
                metrics = dict(outcome.test_metrics)
                metrics["healthy_false_voxels"] = _healthy_false_voxels(
                    config, outcome.best_checkpoint, records
                )
                metrics["seconds"] = time.perf_counter() - started
                results[(fraction, constraint)].append(metrics)
                print(
                    f"{name}: dice {metrics.get('dice')} ({metrics['seconds']:.0f} s)", flush=True
                )
    annotated = {f: annotated_subjects(samples, f, options.seeds[0]) for f in options.fractions}
    name = "segmentation-quick.png" if options.quick else "segmentation.png"
    figure = options.out.parent / "img" / name
    _plot(options, results, figure)
    return _section(options, data, samples, annotated, results, figure)


Runs = Sequence[dict[str, Any]]


def _values(runs: Runs, key: str) -> list[float]:
    return [float(r[key]) for r in runs if r.get(key) is not None and np.isfinite(float(r[key]))]


def _mean(runs: Runs, key: str) -> float | None:
    values = _values(runs, key)
    return float(np.mean(values)) if values else None


def _cell(runs: Runs, key: str, digits: int = 3) -> str:
    """Mean over the seeds, and each seed's value in brackets when there are several."""
    values = _values(runs, key)
    if not values:
        return "–"
    mean = f"{np.mean(values):.{digits}f}"
    if len(runs) == 1:
        return mean
    return f"{mean} ({', '.join(f'{v:.{digits}f}' for v in values)})"


def _section(
    options: Options,
    data: SyntheticConfig,
    samples: Sequence[SubjectSample],
    annotated: dict[float, set[str]],
    results: dict[tuple[float, bool], list[dict[str, Any]]],
    figure: Path,
) -> str:
    by_id = {str(s.subject_id): s for s in samples}
    n_train = sum(s.split == "train" for s in samples)
    rows = [
        "| annotated | subjects with a mask / healthy annotated / label-only | Dice without | "
        "Dice with constraint | lesion F1 without | with | healthy FP voxels without | with |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for fraction in options.fractions:
        chosen = [by_id[i] for i in annotated[fraction]]
        masks = sum(s.label == 1 for s in chosen)
        healthy = sum(s.label == 0 for s in chosen)
        off, on = results[(fraction, False)], results[(fraction, True)]
        same = " (same runs)" if fraction == 1.0 else ""
        rows.append(
            f"| {fraction:.0%} | {masks} / {healthy} / {n_train - masks - healthy} | "
            f"{_cell(off, 'dice')} | {_cell(on, 'dice')}{same} | "
            f"{_cell(off, 'lesion_f1')} | {_cell(on, 'lesion_f1')} | "
            f"{_cell(off, 'healthy_false_voxels', 1)} | {_cell(on, 'healthy_false_voxels', 1)} |"
        )
    seconds = sum(
        r["seconds"] for k, runs in results.items() if not (k[0] == 1.0 and k[1]) for r in runs
    )
    counts = {split: sum(s.split == split for s in samples) for split in ("train", "val", "test")}
    load = (
        f", load average {os.getloadavg()[0]:.1f} at the end" if hasattr(os, "getloadavg") else ""
    )
    relative = os.path.relpath(figure, options.out.parent).replace(os.sep, "/")
    differences = []
    for f in options.fractions:
        with_c, without = _mean(results[(f, True)], "dice"), _mean(results[(f, False)], "dice")
        if f < 1.0 and with_c is not None and without is not None:
            differences.append(with_c - without)
    spreads = [max(v) - min(v) for runs in results.values() if len(v := _values(runs, "dice")) > 1]
    verdict = ""
    if differences:
        verdict += (
            "Mean change of test Dice from the constraint over the fractions below 100 %: "
            f"{np.mean(differences):+.3f} ({len(differences)} fractions, "
            f"{len(options.seeds)} run seed(s) each). "
        )
    if spreads:
        verdict += (
            f"For comparison, the Dice of one setting varies by {np.mean(spreads):.3f} on "
            "average between run seeds (max - min). "
        )
    verdict += (
        "A handful of test subjects and few seeds: a difference smaller than that spread is "
        "not evidence either way. The constraint here acts only on label-only healthy "
        "subjects (no positive relevance of the mean foreground logit on any brain voxel); a "
        "label-only healthy subject could also be used as an empty mask, which is not "
        "compared here (open, docs/method.md section 6.3)."
    )
    return "\n".join(
        [
            "## Segmentation: annotated fraction, with and without the constraint",
            "",
            f"- Command: `{options.command}`",
            f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- Machine: {os.cpu_count()} CPU cores (torch on {torch.get_num_threads()} "
            f"thread(s){load}), torch {torch.__version__}, CPU, Python {sys.version.split()[0]}",
            f"- Data: synthetic tumour-like set, {data.n_subjects} subjects "
            f"({data.n_healthy} healthy / {data.n_lesion} pathological; train/val/test "
            f"{counts['train']}/{counts['val']}/{counts['test']}), grid "
            f"{'x'.join(map(str, data.grid))} at {data.spacing_mm:g} mm, seed {data.seed}",
            f"- Runs: UNet 8-16-32 (instance norm), Dice + CE, {options.epochs} epochs, batch "
            f"{options.batch_size}, Adam lr {options.learning_rate:g}, best epoch by validation "
            f"Dice; constraint: gradient attribution, lambda {options.lambda_a:g}, BCE, scale 1",
            f"- Run seeds: {', '.join(map(str, options.seeds))} (initialisation, shuffling and "
            "the annotated subsets; the subset sizes below are those of the first seed)",
            f"- Training time of all runs: {seconds:.0f} s",
            "",
            "\n".join(rows),
            "",
            "Cells: mean over the run seeds, each seed's value in brackets. Dice: mean over the "
            "pathological test subjects; lesion F1: lesion-wise detection pooled over the test "
            "split (connected components); healthy FP voxels: predicted lesion voxels per "
            "healthy test subject.",
            "",
            verdict,
            "",
            f"![Test Dice against the annotated fraction]({relative})",
        ]
    )


def _plot(
    options: Options, results: dict[tuple[float, bool], list[dict[str, Any]]], path: Path
) -> None:
    matplotlib.use("Agg")
    figure = Figure(figsize=(5.5, 3.6), dpi=110)
    ax = figure.subplots()
    xs = [100 * f for f in options.fractions]
    styles = ((False, "without constraint", "o-"), (True, "with constraint", "s--"))
    for constraint, label, style in styles:
        means = [_mean(results[(f, constraint)], "dice") for f in options.fractions]
        (line,) = ax.plot(xs, [np.nan if m is None else m for m in means], style, label=label)
        for x, f in zip(xs, options.fractions, strict=True):
            values = _values(results[(f, constraint)], "dice")
            ax.plot([x] * len(values), values, style[0], alpha=0.3, color=line.get_color())
    ax.set_xlabel("annotated training subjects (%)")
    ax.set_ylabel("test Dice (mean; light: each seed)")
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
