"""The segmentation experiment command writes its own section, table and plot (quick mode)."""

from __future__ import annotations

from pathlib import Path

from worker.experiments import main


def test_segmentation_experiment_quick_writes_its_section(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "experiments.md"
    out.parent.mkdir()
    out.write_text("# Experiments\n\n<!-- other:begin -->\nkept\n<!-- other:end -->\n")
    argv = ["segmentation", "--quick", "--subjects", "8", "--fractions", "1"]
    assert main([*argv, "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    text = out.read_text()
    assert "<!-- other:begin -->\nkept\n<!-- other:end -->" in text
    section = text.split("<!-- segmentation:begin -->")[1].split("<!-- segmentation:end -->")[0]
    assert "| 100% | 2 / 2 / 0 |" in section and "(same runs)" in section
    assert "--quick" in section and "Dice without" in section
    assert (out.parent / "img" / "segmentation-quick.png").stat().st_size > 1000
