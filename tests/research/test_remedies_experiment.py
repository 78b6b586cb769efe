"""Smoke test of ``python -m worker.experiments remedies --quick`` (worker/research/remedies.py)
and unit tests of its bookkeeping."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from worker.experiments import main
from worker.research.common import SETTING_LABELS
from worker.research.remedies import (
    REMEDIES,
    TARGET_ATTR_AUROC,
    RemedyRun,
    time_to_target,
    verdict,
)

OTHER = "<!-- other:begin -->\nkeep me\n<!-- other:end -->"


@pytest.fixture(autouse=True, scope="module")
def _threads() -> Iterator[None]:
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_quick_command_writes_its_table_between_its_markers(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "experiments.md"
    out.parent.mkdir()
    out.write_text(f"# Experiments\n\n{OTHER}\n")
    assert main(["remedies", "--quick", "--out", str(out), "--work", str(tmp_path / "w")]) == 0
    text = out.read_text()
    assert OTHER in text
    found = re.findall(r"<!-- remedies:begin -->(.*?)<!-- remedies:end -->", text, re.DOTALL)
    assert len(found) == 1
    section = found[0]
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| Setting")
    ]
    # The L_C-only reference, then every remedy for both constrained settings.
    assert len(rows) == 1 + 2 * len(REMEDIES)
    assert rows[0][:3] == [SETTING_LABELS["lc_only"], "none", "1.00"]
    settings = [row[0] for row in rows[1:]]
    assert settings == [SETTING_LABELS["lc_la_supervised"]] * len(REMEDIES) + [
        SETTING_LABELS["lc_la_unsupervised"]
    ] * len(REMEDIES)
    for row in rows[1:]:
        if "mixed precision" in row[1]:
            assert row[2] == "needs CUDA; not run on CPU"  # no GPU here
            continue
        assert float(row[2]) > 0  # epoch-time ratio to L_C only
        cosine = float(row[12])
        assert -1.0 <= cosine <= 1.0
    assert "python -m worker.experiments remedies --quick" in section
    assert f"Target: validation attribution AUROC >= {TARGET_ATTR_AUROC}" in section
    image = re.search(r"!\[[^\]]*\]\((img/remedies\.png)\)", section)
    assert image is not None
    assert (out.parent / image.group(1)).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _history(values: list[float | None], seconds: float = 10.0) -> list[dict]:
    return [
        {"epoch": i + 1, "val_attr_auroc": v, "seconds": 2 * seconds, "cpu_seconds": seconds}
        for i, v in enumerate(values)
    ]


def test_time_to_target_counts_epochs_and_wall_seconds() -> None:
    assert time_to_target(_history([0.5, None, 0.66, 0.7]), 0.65) == (3, 60.0)
    found = time_to_target(_history([0.5, None, 0.66]), 0.65, seconds_key="cpu_seconds")
    assert found == (3, 30.0)
    assert time_to_target(_history([0.5, 0.6]), 0.65) == (None, None)
    assert time_to_target([], 0.65) == (None, None)


class _Result:
    def __init__(self, history: list[dict]) -> None:
        self.history = history
        self.test_metrics: dict = {}


def _run(setting: str, key: str, values: list[float], seconds: float) -> RemedyRun:
    remedy = next(r for r in REMEDIES if r.key == key)
    return RemedyRun(setting, remedy, None, _Result(_history(values, seconds)), 0.0)  # type: ignore[arg-type]


def test_verdict_names_the_remedies_that_beat_the_plain_run() -> None:
    reference = _run("lc_only", "plain", [0.5, 0.55], 5.0)
    runs = [
        _run("lc_la_supervised", "plain", [0.5, 0.6, 0.7], 10.0),  # 30 s
        _run("lc_la_supervised", "gradient", [0.5, 0.7], 6.0),  # 12 s: faster
        _run("lc_la_supervised", "clip", [0.5, 0.6, 0.7], 12.0),  # 36 s: slower
        _run("lc_la_unsupervised", "plain", [0.5, 0.5], 10.0),
        _run("lc_la_unsupervised", "clip", [0.5, 0.5], 10.0),
    ]
    text = verdict(reference, runs)
    assert "L_C only never reached the target." in text
    assert "faster: gradient (epoch 2, 12 CPU s)." in text and "clip (" not in text
    assert "reached the target never; no remedy reached it in less wall time" in text
