"""The regime suite's report: the learning curve table and figure from finished runs."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attrivue_core.configs import RunConfig
from tests.conftest import REPO
from worker.ml.nets import build_network
from worker.research import suite
from worker.research.suite import (
    Job,
    add_arguments,
    data_set,
    learning_curve,
    plot_learning_curve,
    summarise,
)


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


def test_confirm_selects_the_second_held_out_data_set(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert data_set(parser.parse_args([])) == "heldout"
    assert data_set(parser.parse_args(["--dev"])) == "dev"
    assert data_set(parser.parse_args(["--confirm"])) == "confirm"
    with pytest.raises(SystemExit, match="--dev or --confirm"):
        data_set(parser.parse_args(["--dev", "--confirm"]))
    # Its results and its table are kept apart from the held-out ones.
    job = Job("dark_irregular_3mm", "supervised", 0, 96, None, "cpu", 1, tmp_path, {}, "confirm")
    assert job.result_path.parts[-5] == "confirm"
    confirm = [{**r, "data": "confirm"} for r in RESULTS]
    assert "second held-out generator seed" in summarise(confirm)
    assert "second" not in summarise(RESULTS)


def _pool_worker_outlives() -> bool:
    """Start a suite-like pool in a child process, kill that process, report whether its
    worker is still running a few seconds later."""
    script = (
        "import multiprocessing, os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from worker.research.suite import _exit_with_parent\n"
        "if __name__ == '__main__':\n"
        "    context = multiprocessing.get_context('spawn')\n"
        "    pool = ProcessPoolExecutor(1, mp_context=context, initializer=_exit_with_parent,\n"
        "                               initargs=(os.getpid(),))\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 120)\n"
        "    time.sleep(1)\n"
        "    os._exit(0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    worker = int(done.stdout.split()[0])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not _alive(worker):
            return False
        time.sleep(0.5)
    os.kill(worker, signal.SIGKILL)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its (new) parent to reap it has finished too.
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")


def test_pool_workers_end_when_the_suite_process_is_killed() -> None:
    assert not _pool_worker_outlives()


def test_the_map_the_constraint_trained_is_scored_beside_the_evaluation_map(monkeypatch) -> None:
    torch.manual_seed(0)
    model = build_network("small_cnn").eval()
    images = [torch.randn(1, 16, 16, 16) for _ in range(4)]
    masks = [None, None, *(np.zeros((16, 16, 16), bool) for _ in range(2))]
    for m in masks[2:]:
        m[4:8, 4:8, 4:8] = True
    labels = [0, 0, 1, 1]
    calls: list[tuple[int, str]] = []
    real = suite.attribution_maps

    def recording(*args, **kwargs):
        calls.append((kwargs["steps"], kwargs["method"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(suite, "attribution_maps", recording)
    constrained = RunConfig.model_validate(suite.VARIANTS["supervised"])
    scores = suite.training_map_scores(model, constrained, images, masks, labels, None, "cpu")
    # The preset's own quadrature (4 Riemann points), not the tables' 16 Gauss-Legendre points.
    assert calls == [(constrained.ig_steps, constrained.ig_method)] == [(4, "riemann_middle")]
    assert 0.0 <= scores["train_healthy_share"] <= 1.0
    assert 0.0 <= scores["train_lesion_mass"] <= 1.0
    # L_C only trains no map: nothing to compare.
    lc_only = RunConfig.model_validate(suite.VARIANTS["classification"])
    assert suite.training_map_scores(model, lc_only, images, masks, labels, None, "cpu") == {}
    assert len(calls) == 1
    table = suite.summarise(
        [{**RESULTS[0], "best": {**RESULTS[0]["best"], "train_lesion_mass": 0.25}}]
    )
    assert "Training-map mass best / last" in table
    assert "0.25 / n/a" in table


def test_the_baselines_logit_is_shown_beside_the_subjects_logits() -> None:
    # sum(A) = F(x) - F(x'): a reader must see when F(x') sits far above every subject.
    logits = {
        "logit_baseline": 24.07,
        "mean_logit_healthy": -1.96,
        "mean_logit_pathological": -0.61,
    }
    runs = [
        {
            **RESULTS[0],
            "best": {**RESULTS[0]["best"], **logits},
            "last": {**RESULTS[0]["last"], **logits, "logit_baseline": 24.75},
        }
    ]
    table = summarise(runs)
    assert "F(x') best / last" in table and "Mean F(x) healthy / path. (best)" in table
    assert "24.07 / 24.75" in table and "-1.96 / -0.61" in table
    # Results written before the column existed get no such column.
    assert "F(x')" not in summarise(RESULTS[:1])


def test_healthy_support_counts_the_brain_voxels_that_carry_relevance() -> None:
    brain = np.zeros((8, 8, 8), bool)
    brain[:, :, :4] = True  # 256 voxels
    a = np.zeros((8, 8, 8), np.float32)
    a[:2, :, :4] = -1.0  # 64 brain voxels carry relevance
    a[0, 0, 0] = 2.0
    a[2, 0, 0] = 1e-7  # below 1e-6 of the peak (round-off): not counted
    a[:, :, 4:] = 5.0  # outside the brain: not counted
    pathological = np.ones((8, 8, 8), np.float32)
    support = suite.healthy_support([a, pathological], [brain, brain], [0, 1])
    assert support == pytest.approx(64 / 256)  # the pathological subject is left out
    assert suite.healthy_support([pathological], [brain], [1]) != suite.healthy_support(
        [pathological], [brain], [0]
    )


def test_every_variant_is_a_valid_run_config_and_the_floor_variants_floor() -> None:
    # A variant that RunConfig refuses would fail only when someone runs it, hours in.
    configs = {name: RunConfig.model_validate(fields) for name, fields in suite.VARIANTS.items()}
    assert configs["supervised_floor_q90"].evidence_floor == "every_epoch"
    assert configs["supervised_floor_q90"].evidence_floor_quantile == 0.9
    assert configs["supervised_floor_leak"].evidence_floor_leak > 0.0
    assert configs["supervised_normative_floor_q90_gated"].normative_input
    assert configs["supervised_floor_q90_gated"].evidence_floor_start_auroc == 0.9
    dark = configs["supervised_normative_floor_q90_gated_healthy_val"]
    assert dark.attribution_baseline == "healthy" and dark.evidence_floor_subjects == "validation"
    assert configs["supervised_floor_q90_gated_val"].evidence_floor_subjects == "validation"
    assert configs["supervised_floor_q90_gated"].evidence_floor_subjects == "train"
    # The preset-based variants without "floor" in their name do not floor.
    assert all(c.evidence_floor == "off" for n, c in configs.items() if "floor" not in n)


def test_a_written_run_names_its_section_before_anything_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --section a held-out run once replaced the docs' main table with its own."""
    started: list[str] = []
    monkeypatch.setattr(suite, "generate_regime", lambda *a, **k: started.append("data"))
    monkeypatch.setattr(suite, "run_one", lambda job: started.append(job.variant))
    out = tmp_path / "experiments.md"
    out.write_text("<!-- regimes:begin -->\nthe main table\n<!-- regimes:end -->\n")
    work = tmp_path / "work"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--regimes", "bright_ellipsoid_2mm", "--presets", "classification"]
    base += ["--work", str(work), "--out", str(out)]
    for flags in ([], ["--confirm"]):
        with pytest.raises(SystemExit, match="--section NAME"):
            suite.run_suite(parser.parse_args(base + flags), "regimes")
    assert out.read_text().count("the main table") == 1
    assert started == []  # no data generated, no run started
    # Printing only, or the development seeds (never written), need no section.
    for flags in (["--no-write"], ["--dev"]):
        assert suite.run_suite(parser.parse_args([*base, *flags, "--seeds", "0"]), "r") == 0
    assert started == ["data", "classification"] * 2
    assert out.read_text().count("the main table") == 1
