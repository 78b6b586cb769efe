"""``python -m bench.bench_normative --quick`` writes its section and table (no timing asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.docs import markers
from tests.conftest import REPO


def test_quick_bench_writes_its_section(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nkept text\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTRIVUE_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_normative", "--quick", "--repeats", "1"]
        + ["--out", str(out)],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "kept text" in text
    begin, end = markers("normative")
    section = text[text.index(begin) : text.index(end)]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| Workload |")
    assert len(rows) == 4  # header and three workloads
    for row in rows[1:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) > 0 and float(cells[2]) > 0 and cells[3].endswith("x")
    # The two filters give the same maps, to float rounding.
    assert "Same maps: largest absolute difference" in section
    difference = float(section.split("largest absolute difference ")[1].split(",")[0])
    largest = float(section.split("largest |A| of ")[1].split(" ")[0])
    assert largest > 0 and difference <= 1e-4 * largest
