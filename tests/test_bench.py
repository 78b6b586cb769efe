"""The benchmark command writes its sections and tables (no timing is asserted here)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bench.__main__ import main, replace_section
from bench.docs import markers

SECTION_NAMES = ("training", "ig")
# Columns of each table that must hold numbers.
NUMERIC_COLUMNS = {
    "training": [
        "steps/epoch",
        "epochs measured",
        "s/epoch (median)",
        "min",
        "max",
        "ratio to L_C only",
        "attribution s/epoch",
        "warm-up epoch s",
    ],
    "ig": [
        "steps",
        "repetitions",
        "project s",
        "project, graph s",
        "Captum s",
        "ratio project/Captum",
        "ratio graph/Captum",
        "max abs diff",
        "relative diff",
    ],
}
EXPECTED_ROWS = {"training": 8, "ig": 4}  # quick: 2 networks x 4 variants; x 1 step x 2 rules


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def _section(text: str, name: str) -> str:
    begin, end = markers(name)
    assert text.count(begin) == 1 and text.count(end) == 1, name
    return text[text.index(begin) + len(begin) : text.index(end)]


def _table(section: str) -> list[dict[str, str]]:
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert set(rows[1].replace("|", "").strip()) <= {"-"}
    return [
        dict(zip(header, (cell.strip() for cell in row.strip("|").split("|")), strict=True))
        for row in rows[2:]
    ]


def _check(text: str, out: Path) -> None:
    for name in SECTION_NAMES:
        section = _section(text, name)
        assert f"--quick --out {out}" in section
        assert re.search(r"Date: \d{4}-\d\d-\d\d", section)
        assert "Machine: " in section and "torch " in section and "threads" in section
        rows = _table(section)
        assert len(rows) == EXPECTED_ROWS[name]
        for row in rows:
            for column in NUMERIC_COLUMNS[name]:
                float(row[column])  # raises if the cell is not a number
        lines = section.strip().splitlines()
        last_row = max(i for i, line in enumerate(lines) if line.startswith("|"))
        assert any(line.startswith("- ") for line in lines[last_row + 1 :])  # the notes


def test_quick_benchmark_writes_and_replaces_sections(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    argv = ["--quick", "--out", str(out), "--threads", "1"]
    assert main(argv) == 0
    first = out.read_text()
    _check(first, out)
    ig_rows = _table(_section(first, "ig"))
    assert all(float(row["relative diff"]) < 1e-4 for row in ig_rows)  # project == Captum

    out.write_text(first + "\nKept: text outside the markers.\n")
    assert main(argv) == 0
    second = out.read_text()
    _check(second, out)  # each marker once: replaced, not appended
    assert "Kept: text outside the markers." in second
    assert second.count("## ") == first.count("## ")


def test_replace_section_appends_then_replaces() -> None:
    text = replace_section("# Title\n", "ig", "one")
    assert text.startswith("# Title\n") and "<!-- ig:begin -->\none\n<!-- ig:end -->" in text
    again = replace_section(text + "tail\n", "ig", "two")
    assert "one" not in again and "two" in again and again.endswith("tail\n")
    assert again.count("<!-- ig:begin -->") == 1


def test_gpu_benchmark_refuses_a_machine_without_cuda(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CUDA benchmark names why it stops, and writes nothing, where no GPU is present."""
    from bench import bench_gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "benchmarks.md"
    with pytest.raises(SystemExit) as stopped:
        bench_gpu.main(["--out", str(out)])
    assert stopped.value.code == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not out.exists()


def test_gpu_benchmark_step_check_runs_a_constrained_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The full-resolution step check trains L_C + L_A (here on a small CPU volume)."""
    from bench import bench_gpu

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 2**30)
    monkeypatch.setattr(
        bench_gpu, "_full_resolution_image", lambda device: torch.randn(1, 1, 16, 20, 16)
    )
    rows = bench_gpu.step_rows(torch.device("cpu"), 2)
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "2" and float(cells[2]) > 0 and cells[3] == "1.00" and cells[4] == "yes"
