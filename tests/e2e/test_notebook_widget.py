"""The notebook view drawn by ipyniivue's own JavaScript in Chromium, without Jupyter: the widget
state that attrivue_client.notebook builds is handed to the widget's ESM through a small stand-in
for the Jupyter widget manager, and the canvas must show the viewer's
colours (red to yellow, blue to light blue) over the gray MR.

Custom messages sent before the browser has the widget are lost in Jupyter, so the stand-in
drops the ones sent while the widget is built, and delivers only those sent once the canvas is
attached (the colormaps again and a redraw). Without them the overlay would be drawn gray.
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import ipyniivue
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from attrivue_client import notebook
from backend.services.maps import encode_display
from tests.e2e.browser import ARTIFACTS, READY_TIMEOUT_MS, chromium_page

pytestmark = pytest.mark.e2e

WIDGET_JS = Path(ipyniivue.__file__).parent / "static" / "widget.js"

HARNESS = """<!doctype html><html><body style="margin:0;background:#000">
<div id="host" style="width:900px"></div>
<script type="module">
import widget from "/widget.js";
const spec = JSON.parse(document.getElementById("spec").textContent);
class Model {
  constructor(state, manager) { this.state = { ...state }; this.handlers = {}; this.widget_manager = manager; }
  get(key) { return this.state[key]; }
  set(key, value) { this.state[key] = value; (this.handlers["change:" + key] || []).forEach((f) => f()); }
  on(event, f) { (this.handlers[event] ||= []).push(f); }
  off(event, f) {
    if (!event) this.handlers = {};
    else if (!f) delete this.handlers[event];
    else this.handlers[event] = (this.handlers[event] || []).filter((g) => g !== f);
  }
  save_changes() {}
  send() {}
  send_sync_message() { return 0; }
  emit(message) { for (const f of this.handlers["msg:custom"] || []) f(message, []); }
}
const models = new Map();
const manager = { get_model: async (id) => models.get(id) };
for (const [id, state] of Object.entries(spec.volumes)) {
  const bytes = Uint8Array.from(atob(state.data), (c) => c.charCodeAt(0));
  models.set(id, new Model({ ...state, data: new DataView(bytes.buffer) }, manager));
}
const nv = new Model(spec.niivue, manager);
await widget.initialize({ model: nv });
await widget.render({ model: nv, el: document.getElementById("host") });
if (nv.get("_canvas_attached")) for (const message of spec.on_attached) nv.emit(message);
await new Promise((r) => setTimeout(r, 1500));
document.body.dataset.ready = "1";
</script></body></html>"""


def _spec(deliver_on_attach: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    grid = (40, 48, 40)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    image = rng.uniform(300, 500, size=grid).astype(np.float32)
    signed = np.zeros(grid, np.float32)
    # Two blocks whose values ramp from below the threshold to the peak along the second axis:
    # pathological (red to yellow) and healthy (blue to light blue).
    ramp = np.linspace(0.05, 1.0, 20, dtype=np.float32)[None, :, None]
    signed[8:20, 14:34, 10:30] = ramp
    signed[22:34, 14:34, 10:30] = -0.8 * ramp
    image_bytes = gzip.compress(nib.Nifti1Image(image, affine).to_bytes())
    display = encode_display(signed, affine)

    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(
        ipyniivue.NiiVue, "send", lambda self, content, buffers=None: sent.append(content)
    )
    nv = notebook.map_widget(image_bytes, display, {"min": -0.8, "max": 1.0}, height=600)
    sent.clear()  # sent before the browser had the widget: lost
    nv._canvas_attached = True
    on_attached = list(sent) if deliver_on_attach else []
    nv._canvas_attached = False  # the browser sets it again when it draws the canvas

    def plain(state: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in state.items():
            if isinstance(value, bytes | memoryview):
                value = base64.b64encode(bytes(value)).decode()
            out[key] = value
        return json.loads(json.dumps(out, default=lambda o: None))

    # The manager is asked for the ids without the "IPY_MODEL_" of the references in the state.
    volumes = {v.model_id: plain(v.get_state()) for v in nv.volumes}
    return {"niivue": plain(nv.get_state()), "volumes": volumes, "on_attached": on_attached}


def _render(tmp_path: Path, spec: dict[str, Any], name: str) -> Path:
    script = json.dumps(spec).replace("</", "<\\/")
    page_html = HARNESS.replace(
        '<script type="module">',
        f'<script type="application/json" id="spec">{script}</script><script type="module">',
    )
    with chromium_page(tmp_path / "profile") as page:
        page.route(
            "http://harness/widget.js",
            lambda r: r.fulfill(path=str(WIDGET_JS), content_type="text/javascript"),
        )
        page.route("http://harness/", lambda r: r.fulfill(body=page_html, content_type="text/html"))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto("http://harness/")
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=READY_TIMEOUT_MS)
        assert not errors, errors
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"test_notebook_widget-{name}.png"
        page.locator("canvas").first.screenshot(path=str(path))
    return path


def _slices(png: Path) -> np.ndarray:
    """The screenshot's RGB above NiiVue's colour bars (the bottom eighth of the canvas)."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(np.int16)
    return rgb[: rgb.shape[0] * 7 // 8]


def _colours(rgb: np.ndarray) -> dict[str, int]:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    return {
        "red": int(((r >= 200) & (g <= 90) & (b <= 90)).sum()),
        # Not the crosshair's yellow (242, 217, 77), which both screenshots have: b > 60.
        "yellow": int(((r >= 200) & (g >= 200) & (b <= 60)).sum()),
        "blue": int(((b >= 200) & (r <= 90) & (g <= 120)).sum()),
        "light blue": int(((b >= 200) & (g >= 150) & (r >= 100) & (r < g - 20)).sum()),
        "gray": int(((spread <= 12) & (r >= 40)).sum()),
    }


def test_the_widget_draws_the_viewer_colours_over_the_gray_mr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = _colours(_slices(_render(tmp_path, _spec(True, monkeypatch), "colours")))
    assert all(count > 200 for count in shown.values()), shown

    # Without the messages sent once the canvas is attached, NiiVue knows no such colormap and
    # draws the overlay gray: the test sees the difference.
    lost = _colours(_slices(_render(tmp_path, _spec(False, monkeypatch), "lost")))
    assert lost["red"] + lost["yellow"] + lost["blue"] + lost["light blue"] < 50, lost
