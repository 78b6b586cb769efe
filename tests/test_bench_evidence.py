"""The evidence benchmark writes its section (timings are not asserted: they live in docs)."""

from __future__ import annotations

from pathlib import Path

from bench.bench_evidence import main


def test_quick_evidence_benchmark_writes_and_replaces_its_section(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nKept: text outside the markers.\n")
    argv = ["--quick", "--out", str(out), "--threads", "1"]
    assert main(argv) == 0
    first = out.read_text()
    assert first.count("<!-- evidence:begin -->") == 1 and "Kept: text outside" in first
    section = first.split("<!-- evidence:begin -->")[1].split("<!-- evidence:end -->")[0]
    assert "`python -m bench.bench_evidence --quick" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    checks = [row.split("|")[1].strip() for row in rows[1:]]
    assert [c.split(" (")[0] for c in checks] == [
        "the map itself",
        "faithfulness",
        "model randomisation",
        "data randomisation",
    ]
    assert all(float(row.split("|")[2]) >= 0 for row in rows[1:])
    assert main(argv) == 0
    second = out.read_text()
    assert second.count("<!-- evidence:begin -->") == 1 and second.count("## ") == first.count(
        "## "
    )
