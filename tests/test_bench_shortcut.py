"""``python -m bench.bench_shortcut --quick`` writes its section and table (no timing asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.docs import markers
from tests.conftest import REPO

NUMERIC = ("subjects", "s (median)", "min", "max", "s per subject")


def test_quick_bench_writes_its_section(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nkept text\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTRIVUE_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_shortcut",
            "--quick",
            "--repeats",
            "1",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "kept text" in text
    begin, end = markers("shortcut")
    assert text.count(begin) == 1 and text.count(end) == 1
    section = text[text.index(begin) : text.index(end)]
    assert "python -m bench.bench_shortcut --quick" in section
    assert "Quick run: the numbers mean nothing" in section
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    body = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]
    assert [r[0] for r in body] == ["shortcut report"] * 4 + ["cohort map"]
    for row in body:
        assert len(row) == len(header)
        for column in NUMERIC:
            float(row[header.index(column)])
