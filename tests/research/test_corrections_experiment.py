"""``python -m worker.experiments corrections``: the simulated reviewer, and a quick run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from attrivue_core.corrections import MISSED, SPURIOUS
from worker.experiments import main
from worker.ml.epoch_maps import GridSubject
from worker.research.corrections import degrade as _degrade
from worker.research.corrections import review as _review


def _lesions(shape=(20, 20, 20)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[3:6, 3:6, 3:6] = True
    mask[12:15, 12:15, 12:15] = True
    return mask


def test_degraded_targets_drop_a_lesion_and_add_a_false_one() -> None:
    mask = _lesions()
    brain = np.ones(mask.shape, bool)
    target = _degrade(mask, brain, np.random.default_rng(0)) > 0.5
    kept = [bool(target[4, 4, 4]), bool(target[13, 13, 13])]
    assert kept.count(False) >= 1  # at least one of two lesions is missing from the target
    assert (target & ~mask).any()  # and a false lesion was added, away from the true ones


def test_simulated_reviewer_marks_missed_lesions_and_spurious_relevance() -> None:
    mask = _lesions()
    image = torch.ones((1, *mask.shape))
    attribution = np.zeros(mask.shape, np.float32)
    attribution[3:6, 3:6, 3:6] = 1.0  # the first lesion carries the relevance
    attribution[17:19, 0:5, 0:5] = 2.0  # and a spot far from every lesion carries more
    labels = _review(attribution, GridSubject("s", image, mask, np.eye(4)))
    assert (labels[12:15, 12:15, 12:15] == MISSED).all()  # the second lesion was missed
    assert (labels[17:19, 0:5, 0:5] == SPURIOUS).all()
    assert not (labels[mask] == SPURIOUS).any()


def test_quick_run_writes_its_section(tmp_path: Path) -> None:
    previous = torch.get_num_threads()
    out = tmp_path / "experiments.md"
    out.write_text("# Experiments\n\n<!-- other:begin -->\nkeep me\n<!-- other:end -->\n")
    try:
        args = ["corrections", "--quick", "--subjects", "12"]
        args += ["--out", str(out), "--work", str(tmp_path / "w")]
        assert main(args) == 0
    finally:
        torch.set_num_threads(previous)
    text = out.read_text()
    assert "keep me" in text
    section = re.search(r"<!-- corrections:begin -->(.*)<!-- corrections:end -->", text, re.S)
    assert section is not None
    rows = [line for line in section.group(1).splitlines() if line.startswith("| ")][1:]
    assert [row.split("|")[1].strip() for row in rows] == ["before", "after one round", "ceiling"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(re.fullmatch(r"-?\d+\.\d{3}|n/a", c) for c in cells[2:8]), row
    assert "python -m worker.experiments corrections --quick --subjects 12" in section.group(1)
    assert re.search(r"targets against their true masks went from \d\.\d{3}", section.group(1))
