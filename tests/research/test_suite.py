"""The regime suite's report: the learning curve table and figure from finished runs."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from worker.research.suite import add_arguments, learning_curve, plot_learning_curve, summarise


def _run(subjects: int, seed: int, auroc: float, last: float) -> dict:
    scores = {"auroc": auroc, "accuracy": 0.5, "chance_mass": 0.01}
    return {
        "regime": "dark_irregular_3mm",
        "variant": "classification",
        "seed": seed,
        "subjects": subjects,
        "held_out": True,
        "best_epoch": 3,
        "best": scores,
        "last": {**scores, "auroc": last},
    }


RESULTS = [
    _run(96, 0, 0.40, 0.30),
    _run(96, 1, 0.60, 0.50),
    _run(384, 0, 0.90, 0.80),
    _run(384, 1, 1.00, 0.90),
]


def test_learning_curve_gives_mean_and_sd_per_size_best_and_last() -> None:
    table = learning_curve(RESULTS)
    row = next(line for line in table.splitlines() if line.startswith("| dark_irregular_3mm"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    sd96 = np.std([0.4, 0.6], ddof=1)
    assert cells[2] == f"0.50 ± {sd96:.2f} / 0.40 ± {sd96:.2f} (2 seeds)", cells
    assert cells[3].startswith("0.95 ± 0.07 / 0.85 ± 0.07"), cells
    # One size only: no curve to draw.
    assert learning_curve([r for r in RESULTS if r["subjects"] == 96]) == ""
    # The per-size tables are still there, one per size.
    assert summarise(RESULTS).count("**dark_irregular_3mm**") == 2


def test_learning_curve_figure_is_written(tmp_path: Path) -> None:
    path = tmp_path / "img" / "curve.png"
    plot_learning_curve(RESULTS, path)
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert (image.std(axis=(0, 1)) > 1).all()  # not a blank canvas


def test_several_subject_counts_are_accepted() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = parser.parse_args(["--subjects", "96", "192", "384"])
    assert options.subjects == [96, 192, 384]
    assert parser.parse_args([]).subjects is None
