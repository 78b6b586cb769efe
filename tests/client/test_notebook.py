"""The notebook view (attrivue_client.notebook): an ipyniivue widget built headless, checked
against the web viewer's colour table (frontend/src/viewer/viewerColours.json) and its threshold
rules (frontend/src/viewer/overlay.ts)."""

from __future__ import annotations

import gzip
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import ipyniivue
import nibabel as nib
import numpy as np
import pytest

from attrivue_client import Client, notebook
from backend.services.maps import encode_display

REPO = Path(__file__).resolve().parents[2]
VIEWER = REPO / "frontend" / "src" / "viewer"

# --------------------------------------------------------------------------- helpers


def lut(colormap: Mapping[str, Sequence[float]]) -> np.ndarray:
    """NiiVue's makeLut: the 256 RGBA entries, linear between the I stops (rounded)."""
    stops = np.asarray(colormap["I"], dtype=float)
    channels = [np.interp(np.arange(256), stops, colormap[c]) for c in "RGBA"]
    return np.round(np.stack(channels, axis=1)).astype(int)


def nifti(data: np.ndarray, affine: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(data, affine).to_bytes())


def decode(raw: bytes) -> np.ndarray:
    img = nib.Nifti1Image.from_bytes(gzip.decompress(raw))
    return np.asarray(img.get_fdata())


Files = tuple[bytes, bytes, dict[str, float]]
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


@pytest.fixture
def files() -> Files:
    """An MR image, the signed map's display bytes (as the server encodes them) and its stats."""
    rng = np.random.default_rng(0)
    image = rng.uniform(100, 900, size=(12, 14, 10)).astype(np.float32)
    signed = rng.uniform(-0.3, 0.3, size=image.shape).astype(np.float32)
    signed[3, 4, 5], signed[8, 8, 2] = 2.0, -0.5
    stats = {"min": float(signed.min()), "max": float(signed.max())}
    return nifti(image, AFFINE), encode_display(signed, AFFINE), stats


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The custom messages every NiiVue widget sends to the browser (add_colormap, ...)."""
    messages: list[dict[str, Any]] = []
    monkeypatch.setattr(
        ipyniivue.NiiVue, "send", lambda self, content, buffers=None: messages.append(content)
    )
    return messages


def colormaps_sent(messages: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    return {m["data"][0]: m["data"][1] for m in messages if m["type"] == "add_colormap"}


# --------------------------------------------------------------------------- the shared table


def test_the_colour_table_mirrors_the_web_viewer() -> None:
    """Fails when viewerColours.json (what the web viewer draws with) and the client's copy differ."""
    assert notebook.VIEWER_COLOURS == json.loads((VIEWER / "viewerColours.json").read_text())


def test_the_web_viewer_reads_its_colours_from_the_shared_table() -> None:
    """The mirror means something only if the viewer takes its numbers from the JSON."""
    import_line = 'import table from "./viewerColours.json";'
    for name in ("colourScales.ts", "overlay.ts", "ViewerController.ts"):
        assert import_line in (VIEWER / name).read_text(), name
    scales = (VIEWER / "colourScales.ts").read_text()
    assert not re.search(r"attrivue_(red|blue|orange)", scales), "a colormap name outside the JSON"
    for scale in notebook.COLOUR_SCALES.values():
        for ramp in (scale["positive"], scale["negative"]):
            for rgb in (ramp["atThreshold"], ramp["atPeak"]):
                assert str(rgb) not in scales, f"{rgb} written outside the JSON"
    overlay = (VIEWER / "overlay.ts").read_text()
    assert "DEFAULT_THRESHOLD_FRACTION: number = table.thresholdFraction" in overlay
    assert "DEFAULT_OVERLAY_OPACITY: number = table.overlayOpacity" in overlay


def test_lut_colours_positive_red_to_yellow_negative_blue_never_dark() -> None:
    scale = notebook.COLOUR_SCALES["statmap"]
    positive = lut(notebook.niivue_colormap(scale["positive"]))
    negative = lut(notebook.niivue_colormap(scale["negative"]))
    for table in (positive, negative):
        assert table[0, 3] == 0, "below the threshold: transparent"
        assert (table[1:, 3] == 255).all(), "above it: opaque"
        assert (table[1:, :3].max(axis=1) == 255).all(), "never darker than the MR under it"
    assert positive[1].tolist() == [255, 0, 0, 255] and positive[255].tolist() == [255, 255, 0, 255]
    assert (positive[1:, 2] == 0).all() and (positive[1:, 0] == 255).all(), "red to yellow"
    assert negative[1].tolist() == [0, 0, 255, 255]
    assert negative[255].tolist() == [150, 210, 255, 255]
    assert (negative[1:, 2] == 255).all() and (negative[1:, 0] < negative[1:, 2]).all(), "blue"


# --------------------------------------------------------------------------- thresholds


def test_thresholds_follow_the_viewer_rules() -> None:
    # overlay.test.ts: stats {min: -0.5, max: 2}
    t = notebook.default_thresholds(-0.5, 2.0)
    assert t["positive"] == pytest.approx((0.3, 2.0))
    assert t["negative"] == pytest.approx((0.075, 0.5))
    cal = notebook.to_calibration(t)
    assert cal == pytest.approx(
        {"cal_min": 0.3, "cal_max": 2.0, "cal_min_neg": -0.075, "cal_max_neg": -0.5}
    )
    # A sign that is absent borrows the other sign's window (and draws nothing).
    only_positive = notebook.to_calibration(notebook.default_thresholds(0.0, 4.0))
    assert only_positive == pytest.approx(
        {"cal_min": 0.6, "cal_max": 4.0, "cal_min_neg": -0.6, "cal_max_neg": -4.0}
    )
    empty = notebook.to_calibration(notebook.default_thresholds(0.0, 0.0))
    assert empty == {"cal_min": 0.5, "cal_max": 1.0, "cal_min_neg": -0.5, "cal_max_neg": -1.0}
    # The fraction is clamped to [0, 0.99]; a window to 0 <= min < max.
    assert notebook.default_thresholds(-1, 1, fraction=5)["positive"] == pytest.approx((0.99, 1))
    assert notebook.clamp_window((3.0, 2.0)) == pytest.approx((1.998, 2.0))
    assert notebook.clamp_window((-1.0, 0.0)) == (0.0, sys.float_info.epsilon)


# --------------------------------------------------------------------------- the widget


def test_widget_from_files_has_the_viewer_layers(files: Files, sent: list[dict[str, Any]]) -> None:
    image, display, stats = files
    nv = notebook.map_widget(image, display, stats)
    assert isinstance(nv, ipyniivue.NiiVue)
    base, overlay = nv.volumes
    assert base.data == image and base.colormap == "gray" and base.opacity == 1.0
    assert overlay.data == display
    assert overlay.name.endswith(".nii.gz")
    assert overlay.colormap == "attrivue_red_yellow"
    assert overlay.colormap_negative == "attrivue_blue_lightblue"
    assert overlay.opacity == pytest.approx(0.8)
    assert overlay.cal_min == pytest.approx(0.15 * stats["max"])
    assert overlay.cal_max == pytest.approx(stats["max"])
    assert overlay.cal_min_neg == pytest.approx(0.15 * stats["min"])
    assert overlay.cal_max_neg == pytest.approx(stats["min"])
    # The display map decodes to the signed map (within half an int8 step, max|A| / 254).
    values = decode(overlay.data)
    assert values.max() == pytest.approx(2.0, abs=2.0 / 254 * 1.001)
    assert values.min() == pytest.approx(-0.5, abs=2.0 / 254 * 1.001)
    # The overlay's colormaps went to the browser, with the viewer's LUT colours.
    cmaps = colormaps_sent(sent)
    assert set(cmaps) == set(notebook.all_colormaps())
    positive, negative = lut(cmaps[overlay.colormap]), lut(cmaps[overlay.colormap_negative])
    assert positive[1].tolist() == [255, 0, 0, 255], "pathological: red at the threshold"
    assert negative[1].tolist() == [0, 0, 255, 255], "healthy: blue at the threshold"
    assert positive[0, 3] == negative[0, 3] == 0
    assert nv.opts.back_color == pytest.approx(tuple(notebook.VIEWER_COLOURS["backColor"]))
    assert nv.opts.crosshair_color == pytest.approx(
        tuple(notebook.VIEWER_COLOURS["crosshairColor"])
    )


def test_colormaps_are_sent_again_when_the_canvas_attaches(
    files: Files, sent: list[dict[str, Any]]
) -> None:
    nv = notebook.map_widget(*files)
    sent.clear()
    nv._canvas_attached = True  # what the browser sets once the widget is drawn
    assert "attrivue_red_yellow" in colormaps_sent(sent)
    assert sent[-1]["type"] == "update_gl_volume", "then every layer is redrawn with them"


def test_colour_blind_scale_threshold_and_opacity_options(
    files: Files, sent: list[dict[str, Any]]
) -> None:
    image, display, stats = files
    nv = notebook.map_widget(image, display, stats, scale="colourblind", fraction=0.5, opacity=3)
    overlay = nv.volumes[1]
    assert overlay.colormap == "attrivue_orange_yellow"
    assert overlay.colormap_negative == "attrivue_blue_sky"
    assert lut(colormaps_sent(sent)[overlay.colormap])[1].tolist() == [255, 128, 0, 255]
    assert overlay.cal_min == pytest.approx(0.5 * stats["max"])
    assert overlay.opacity == 1.0
    with pytest.raises(ValueError, match="unknown colour scale"):
        notebook.map_widget(image, display, stats, scale="viridis")
    with pytest.raises(ValueError, match="no min and max"):
        notebook.map_widget(image, display, {})


# --------------------------------------------------------------------------- through the client


def _server(files: Files, status: str = "succeeded") -> tuple[Client, list[str]]:
    image, display, stats = files
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        path = request.url.path.removeprefix("/api/v1")
        if path == "/attributions/5":
            record = {"id": 5, "subject_id": 9, "status": status, "stats": stats}
            return httpx.Response(200, json=record)
        if path == "/subjects/9/image.nii.gz":
            return httpx.Response(200, content=image)
        if path == "/attributions/5/display.nii.gz":
            return httpx.Response(200, content=display)
        return httpx.Response(404, json={"detail": f"{path} not found"})

    api = Client("http://server", "t0", progress=False, transport=httpx.MockTransport(handler))
    return api, seen


def test_client_show_map_downloads_the_image_and_the_display_map(
    files: Files, sent: list[dict[str, Any]]
) -> None:
    api, seen = _server(files)
    nv = api.show_map(5)
    assert nv.volumes[0].data == files[0] and nv.volumes[1].data == files[1]
    assert nv.volumes[1].cal_max == pytest.approx(files[2]["max"])
    assert "/api/v1/attributions/5/display.nii.gz" in seen

    pending, _ = _server(files, status="running")
    with pytest.raises(ValueError, match="attribution 5 is running"):
        pending.show_map(5)


def test_without_ipyniivue_the_error_names_the_extra(
    files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ipyniivue", None)  # import ipyniivue now fails
    api, seen = _server(files)
    with pytest.raises(ImportError, match=r"pip install 'attrivue\[notebook\]'"):
        api.show_map(5)
    assert seen == [], "nothing downloaded before the missing package is reported"
    with pytest.raises(ImportError, match="ipyniivue"):
        notebook.map_widget(*files)
