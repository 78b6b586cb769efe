"""bench/bench_viewer.py against the live pipeline server (small volumes): it measures both
kinds of opening, reads the two map encodings, and writes its section (no timing asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import bench_viewer
from bench.docs import markers
from tests.e2e.browser import DIST_INDEX

pytestmark = pytest.mark.e2e


def test_viewer_benchmark_measures_and_writes_its_section(pipeline, tmp_path: Path) -> None:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    with pipeline.client() as client:
        subjects = client.get(f"/api/v1/datasets/{pipeline.dataset_id}/subjects").json()["data"]
        attributed = {a["subject_id"] for a in client.get("/api/v1/attributions").json()["data"]}
    bare = next(s["id"] for s in subjects if not s["has_mask"] and s["id"] not in attributed)

    result = bench_viewer.measure(
        pipeline.base_url,
        pipeline.username,
        pipeline.password,
        overlay_subject=pipeline.subject_id,
        attribution_id=pipeline.attribution_id,
        bare_subject=bare,
        repeats=1,
        warm_up=False,
    )
    assert len(result.mr_ms) == 1 and len(result.overlay_ms) == 1 and len(result.relevance_ms) == 1
    assert all(ms > 0 for ms in result.mr_ms + result.overlay_ms + result.relevance_ms)
    assert sum(result.overlay_pixels) > 0
    # The display map is int8: one step under 1 % of the peak, the error within half a step.
    assert 0 < result.step_fraction < 0.01, result
    assert 0 < result.max_error <= 0.5 * result.slope * (1 + 1e-5), result
    assert 0 < result.display_bytes < result.int16_bytes < result.float_bytes, result
    assert result.browser_display_bytes == result.display_bytes

    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nkept text\n")
    bench_viewer.write_section(out, bench_viewer.render(result, command="test", repeats=1))
    text = out.read_text()
    begin, end = markers("viewer")
    assert text.count(begin) == 1 and text.count(end) == 1 and "kept text" in text
    section = text[text.index(begin) : text.index(end)]
    assert "Ratio first overlay / MR alone" in section and "display.nii.gz" in section
    assert "Ratio outline visible / MR alone" in section
    assert "Goals of issue 21, item 5" in section and "load average" in section
