"""``python -m worker.experiments regression --quick``: its section in docs/experiments.md."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from worker.experiments import main
from worker.research.regression import REGRESSION_SETTINGS

OTHER = "<!-- other:begin -->\nkeep me\n<!-- other:end -->"


def test_quick_regression_writes_one_numeric_row_per_setting(tmp_path: Path) -> None:
    out = tmp_path / "experiments.md"
    out.write_text(f"# Experiments\n\n{OTHER}\n")
    threads = torch.get_num_threads()
    try:
        args = ["regression", "--quick", "--subjects", "16", "--out", str(out)]
        assert main([*args, "--work", str(tmp_path / "work")]) == 0
    finally:
        torch.set_num_threads(threads)
    text = out.read_text()
    assert OTHER in text  # other sections are kept
    found = re.findall(r"<!-- regression:begin -->(.*?)<!-- regression:end -->", text, re.DOTALL)
    assert len(found) == 1
    section = found[0]
    assert "Command: `python -m worker.experiments regression --quick" in section
    assert "Date: " in section and "Machine: " in section
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| L_R")
    ]
    assert [row[0] for row in rows] == [label for label, _ in REGRESSION_SETTINGS.values()]
    for row in rows:
        mae, rmse, mass = float(row[1]), float(row[2]), float(row[4])
        assert 0 <= mae <= rmse and 0 <= mass <= 1
