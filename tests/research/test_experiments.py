"""Tests of ``python -m worker.experiments`` on tiny data (``--quick``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from worker import research as experiments
from worker.experiments import main
from worker.research.common import SETTING_LABELS, replace_section

OTHER = "<!-- other:begin -->\n## Someone else's section\n\nkeep me\n<!-- other:end -->"


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def _run(name: str, out: Path, work: Path) -> None:
    assert main([name, "--quick", "--out", str(out), "--work", str(work)]) == 0


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One quick run of each experiment into a file that already holds another section,
    then four-settings once more; the text is captured after each step."""
    root = tmp_path_factory.mktemp("experiments")
    out, work = root / "docs" / "experiments.md", root / "work"
    out.parent.mkdir()
    out.write_text(f"# Experiments\n\nHand-written intro.\n\n{OTHER}\n")
    _run("four-settings", out, work)
    first = out.read_text()
    _run("shortcut", out, work)
    both = out.read_text()
    _run("four-settings", out, work)
    return {"out": out, "first": first, "both": both, "final": out.read_text()}


def _section(text: str, name: str) -> str:
    found = re.findall(rf"<!-- {name}:begin -->(.*?)<!-- {name}:end -->", text, re.DOTALL)
    assert len(found) == 1, f"expected one {name} section, found {len(found)}"
    return found[0]


def _tables(section: str) -> list[list[list[str]]]:
    """The body rows of each Markdown table of a section (header and rule dropped)."""
    tables, current = [], []
    for line in [*section.splitlines(), ""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip("|").split("|")])
        elif current:
            assert len(current) >= 3, section
            tables.append(current[2:])
            current = []
    assert tables, section
    return tables


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("four-settings", experiments.FOUR_SETTINGS),
        ("shortcut", experiments.SHORTCUT_SETTINGS),
    ],
)
def test_section_has_one_numeric_row_per_run(
    report: dict[str, object], name: str, settings: tuple[str, ...]
) -> None:
    section = _section(str(report["final"]), name)
    tables = _tables(section)
    for rows in tables:
        assert [row[0] for row in rows] == [SETTING_LABELS[s] for s in settings]
        for row in rows:
            assert all(_is_number(cell) for cell in row[1:]), row
    assert f"python -m worker.experiments {name} --quick" in section
    assert re.search(r"Date: \d{4}-\d{2}-\d{2}", section)
    assert "torch " in section and "CPU cores" in section
    assert "**Expectation" in section
    image = re.search(r"!\[[^\]]*\]\((img/[^)]+\.png)\)", section)
    assert image is not None
    png = Path(str(report["out"])).parent / image.group(1)
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_replaces_its_section_and_keeps_the_others(report: dict[str, object]) -> None:
    first, both, final = str(report["first"]), str(report["both"]), str(report["final"])
    for text in (first, both, final):
        assert "Hand-written intro." in text
        assert OTHER in text
    assert "shortcut:begin" not in first
    # The shortcut section survives the second four-settings run unchanged.
    assert _section(both, "shortcut") == _section(final, "shortcut")
    assert final.count("<!-- four-settings:begin -->") == 1
    assert final.count("<!-- shortcut:begin -->") == 1
    # Only the four-settings section changed (its date and timings).
    assert final.replace(_section(final, "four-settings"), "") == both.replace(
        _section(both, "four-settings"), ""
    )


def test_missing_file_gets_the_intro(tmp_path: Path) -> None:
    out = tmp_path / "new.md"
    experiments.write_section(out, "shortcut", "body")
    text = out.read_text()
    assert text.startswith(experiments.INTRO.strip().splitlines()[0])
    assert "What the columns mean" in text
    assert "<!-- shortcut:begin -->\nbody\n<!-- shortcut:end -->" in text


def test_replace_section_is_idempotent_and_local() -> None:
    text = f"intro\n\n{OTHER}\n"
    once = replace_section(text, "four-settings", "A")
    twice = replace_section(once, "four-settings", "B")
    assert twice.count("four-settings:begin") == 1
    assert "\nB\n" in twice and "\nA\n" not in twice
    assert twice.startswith(f"intro\n\n{OTHER}")


def test_verdicts_follow_the_numbers() -> None:
    good = {"attr_lesion_mass": 0.4, "auroc": 0.9}
    metrics = {
        "lc_only": {"attr_lesion_mass": 0.01, "auroc": 0.9},
        "la_only": good,
        "lc_la_supervised": good,
        "lc_la_unsupervised": {"attr_lesion_mass": 0.015, "auroc": 0.9},
    }
    assert experiments.four_settings_verdict(metrics).startswith(
        "**Expectation held for 2 of 3 constrained runs**"
    )
    metrics["lc_la_unsupervised"] = good
    assert experiments.four_settings_verdict(metrics).startswith("**Expectation held**")

    def split(auroc: float, artefact: float, lesion: float) -> dict[str, float]:
        return {"auroc": auroc, "artefact_share": artefact, "lesion_mass": lesion}

    shortcut = {
        "lc_only": {
            "test_a": split(1.0, 0.6, 0.05),
            "test_b": split(0.5, 0.0, 0.05),
            "test_a_erased": {"auroc": 0.5},
        },
        "lc_la_supervised": {
            "test_a": split(0.95, 0.01, 0.4),
            "test_b": split(0.9, 0.0, 0.4),
            "test_a_erased": {"auroc": 0.95},
        },
    }
    assert experiments.shortcut_verdict(shortcut, 0.05).startswith("**Expectation held**.")
    # L_C only at chance on site B no more: one point fails.
    shortcut["lc_only"]["test_b"]["auroc"] = 1.0
    assert experiments.shortcut_verdict(shortcut, 0.05).startswith(
        "**Expectation held in 6 of 7 points**"
    )
    # An artefact share below an even spread does not count as pointing at the artefact.
    assert experiments.shortcut_verdict(shortcut, 0.7).startswith(
        "**Expectation held in 5 of 7 points**"
    )
