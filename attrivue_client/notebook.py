"""A map over its image in Jupyter, coloured as the web viewer colours it (ipyniivue).

    >>> from attrivue_client import Client
    >>> api = Client("http://127.0.0.1:8000")
    >>> api.show_map(42)  # the last expression of a cell: the widget is displayed

The widget is an ``ipyniivue.NiiVue`` with two volumes, as in the web viewer: the subject's MR
(``gray``, opaque) and the signed display map as one overlay whose positive part (pathological
relevance) is drawn with a red-to-yellow colormap and whose negative part (healthy relevance)
with a blue-to-light-blue one. Each sign is hidden below 15 % of its own peak and saturates at
the peak; below the threshold a voxel is transparent and above it no colour is darker than the
threshold colour, so the overlay never darkens the MR.

The colour table is the web viewer's own, ``frontend/src/viewer/viewerColours.json``; this
module keeps a copy (``VIEWER_COLOURS``) because an installed client has no frontend folder, and
``tests/client/test_notebook.py`` fails when the two differ. The threshold rules mirror
``frontend/src/viewer/overlay.ts`` (``defaultThresholds``, ``clampWindow``, ``toCalibration``).

ipyniivue is imported only when a widget is built: ``pip install 'attrivue[notebook]'``.
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

__all__ = [
    "BASE_COLORMAP",
    "COLOUR_SCALES",
    "DEFAULT_COLOUR_SCALE",
    "DEFAULT_OVERLAY_OPACITY",
    "DEFAULT_THRESHOLD_FRACTION",
    "VIEWER_COLOURS",
    "MapSource",
    "SignWindow",
    "all_colormaps",
    "clamp_window",
    "default_thresholds",
    "load_ipyniivue",
    "map_widget",
    "niivue_colormap",
    "show_map",
    "to_calibration",
]

# The mirror of frontend/src/viewer/viewerColours.json (keys and values alike).
VIEWER_COLOURS: dict[str, Any] = {
    "defaultScale": "statmap",
    "scales": {
        "statmap": {
            "id": "statmap",
            "label": "Red–yellow / blue–light blue",
            "positive": {
                "name": "attrivue_red_yellow",
                "atThreshold": [255, 0, 0],
                "atPeak": [255, 255, 0],
                "hue": "red",
            },
            "negative": {
                "name": "attrivue_blue_lightblue",
                "atThreshold": [0, 0, 255],
                "atPeak": [150, 210, 255],
                "hue": "blue",
            },
        },
        "colourblind": {
            "id": "colourblind",
            "label": "Colour-blind safe: orange / blue",
            "positive": {
                "name": "attrivue_orange_yellow",
                "atThreshold": [255, 128, 0],
                "atPeak": [255, 230, 90],
                "hue": "orange",
            },
            "negative": {
                "name": "attrivue_blue_sky",
                "atThreshold": [0, 90, 255],
                "atPeak": [90, 200, 255],
                "hue": "blue",
            },
        },
    },
    "transparentRgb": [255, 255, 255],
    "baseColormap": "gray",
    "thresholdFraction": 0.15,
    "overlayOpacity": 0.8,
    "backColor": [0.04, 0.05, 0.07, 1],
    "crosshairColor": [0.95, 0.85, 0.3, 0.7],
}

COLOUR_SCALES: dict[str, dict[str, Any]] = VIEWER_COLOURS["scales"]
DEFAULT_COLOUR_SCALE: str = VIEWER_COLOURS["defaultScale"]
BASE_COLORMAP: str = VIEWER_COLOURS["baseColormap"]
DEFAULT_THRESHOLD_FRACTION: float = VIEWER_COLOURS["thresholdFraction"]
DEFAULT_OVERLAY_OPACITY: float = VIEWER_COLOURS["overlayOpacity"]

# JavaScript's Number.EPSILON, which clampWindow() uses.
_EPSILON = sys.float_info.epsilon
# Used for a sign with no values at all, so that the calibration stays well formed.
_EMPTY_WINDOW = (0.5, 1.0)


class SignWindow(NamedTuple):
    """One sign's display window, as magnitudes: |A| below ``min`` is hidden, |A| at or above
    ``max`` gets the full colour. Always 0 <= min < max."""

    min: float
    max: float


def niivue_colormap(ramp: Mapping[str, Any]) -> dict[str, list[int]]:
    """A ramp as a NiiVue colormap, as colourScales.ts builds it: index 0 transparent (below the
    threshold), index 1 the threshold colour at full alpha, index 255 the peak colour."""
    r0, g0, b0 = ramp["atThreshold"]
    r1, g1, b1 = ramp["atPeak"]
    rt, gt, bt = VIEWER_COLOURS["transparentRgb"]
    return {
        "R": [rt, r0, r1],
        "G": [gt, g0, g1],
        "B": [bt, b0, b1],
        "A": [0, 255, 255],
        "I": [0, 1, 255],
    }


def all_colormaps() -> dict[str, dict[str, list[int]]]:
    """Every relevance colormap of every scale, by its NiiVue name."""
    return {
        scale[sign]["name"]: niivue_colormap(scale[sign])
        for scale in COLOUR_SCALES.values()
        for sign in ("positive", "negative")
    }


def _sign_window(peak: float, fraction: float) -> SignWindow | None:
    if not math.isfinite(peak) or peak <= 0:
        return None
    return SignWindow(fraction * peak, peak)


def default_thresholds(
    minimum: float, maximum: float, fraction: float = DEFAULT_THRESHOLD_FRACTION
) -> dict[str, SignWindow | None]:
    """The viewer's default windows from a map's min and max: each sign hides |A| below
    ``fraction`` of its own peak (``defaultThresholds`` in overlay.ts)."""
    f = min(max(fraction, 0.0), 0.99)
    return {"positive": _sign_window(maximum, f), "negative": _sign_window(-minimum, f)}


def clamp_window(window: SignWindow | tuple[float, float]) -> SignWindow:
    """Clamps a window so that 0 <= min < max (``clampWindow`` in overlay.ts)."""
    low, high = window
    top = max(high, _EPSILON)
    return SignWindow(min(max(low, 0.0), top * 0.999), top)


def to_calibration(thresholds: Mapping[str, SignWindow | None]) -> dict[str, float]:
    """NiiVue's four numbers for the signed overlay (``toCalibration`` in overlay.ts): the
    negative pair mirrors the positive one; an absent sign borrows the other sign's window,
    which draws nothing since no voxel has that sign."""
    positive, negative = thresholds.get("positive"), thresholds.get("negative")
    pos = clamp_window(positive or negative or _EMPTY_WINDOW)
    neg = clamp_window(negative or positive or _EMPTY_WINDOW)
    return {
        "cal_min": pos.min,
        "cal_max": pos.max,
        "cal_min_neg": -neg.min,
        "cal_max_neg": -neg.max,
    }


def load_ipyniivue() -> Any:
    """The ipyniivue module, or an ImportError that names the extra to install."""
    try:
        return importlib.import_module("ipyniivue")
    except ImportError as exc:
        raise ImportError(
            "showing a map in a notebook needs ipyniivue: pip install 'attrivue[notebook]' "
            "(or pip install ipyniivue)"
        ) from exc


def map_widget(
    image: bytes,
    display_map: bytes,
    stats: Mapping[str, Any],
    *,
    scale: str = DEFAULT_COLOUR_SCALE,
    fraction: float = DEFAULT_THRESHOLD_FRACTION,
    opacity: float = DEFAULT_OVERLAY_OPACITY,
    height: int = 480,
) -> Any:
    """An ``ipyniivue.NiiVue`` widget: the MR ``image`` (NIfTI bytes) under the signed
    ``display_map`` (NIfTI bytes on the image's grid), thresholded from ``stats["min"]`` and
    ``stats["max"]`` of the map with the web viewer's rules and colours.

    ``scale`` is a key of ``COLOUR_SCALES`` (``"statmap"``: red/blue, ``"colourblind"``:
    orange/blue); ``fraction`` the share of each sign's peak hidden below; ``opacity`` the
    overlay's opacity.
    """
    if scale not in COLOUR_SCALES:
        raise ValueError(f"unknown colour scale {scale!r}; one of {sorted(COLOUR_SCALES)}")
    try:
        minimum, maximum = float(stats["min"]), float(stats["max"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("the map's stats give no min and max: is it computed?") from None
    ipyniivue = load_ipyniivue()
    ramps = COLOUR_SCALES[scale]
    calibration = to_calibration(default_thresholds(minimum, maximum, fraction))
    nv = ipyniivue.NiiVue(
        height=height,
        back_color=tuple(VIEWER_COLOURS["backColor"]),
        crosshair_color=tuple(VIEWER_COLOURS["crosshairColor"]),
        crosshair_width=1.0,
        crosshair_width_unit="mm",
        show_3d_crosshair=False,
        # The web viewer draws its colour bar in HTML beside the canvas; here NiiVue draws it.
        is_colorbar=True,
        multiplanar_show_render=ipyniivue.ShowRender.NEVER,
    )
    colormaps = all_colormaps()

    def register() -> None:
        for name, colormap in colormaps.items():
            nv.add_colormap(name, colormap)

    def on_attached() -> None:
        # A message sent before the browser has the widget is lost: send the colormaps again
        # once its canvas is attached, then redraw every layer (NiiVue's updateGLVolume
        # rebuilds the colormap textures), in case the volumes loaded before the colormaps.
        register()
        nv.update_gl_volume()

    register()
    nv.on_canvas_attached(on_attached)
    nv.load_volumes(
        [
            ipyniivue.Volume(
                data=image,
                name="image.nii.gz",
                colormap=BASE_COLORMAP,
                opacity=1.0,
                colorbar_visible=False,
            ),
            ipyniivue.Volume(
                data=display_map,
                name="relevance.nii.gz",
                colormap=ramps["positive"]["name"],
                colormap_negative=ramps["negative"]["name"],
                opacity=min(max(opacity, 0.0), 1.0),
                **calibration,
            ),
        ]
    )
    return nv


class MapSource(Protocol):
    """What ``show_map`` needs of a client (``attrivue_client.Client`` has it)."""

    def attribution(self, attribution_id: int) -> dict[str, Any]: ...

    def read_subject_image(self, subject_id: int) -> bytes: ...

    def read_map(self, attribution_id: int, *, display: bool = False) -> bytes: ...


def show_map(
    client: MapSource,
    attribution_id: int,
    *,
    scale: str = DEFAULT_COLOUR_SCALE,
    fraction: float = DEFAULT_THRESHOLD_FRACTION,
    opacity: float = DEFAULT_OVERLAY_OPACITY,
    height: int = 480,
) -> Any:
    """Download a computed map and its subject's image (into memory) and return the widget
    (``map_widget``); the web viewer loads the same two files."""
    load_ipyniivue()  # fail before downloading anything
    row = client.attribution(attribution_id)
    if row.get("status") != "succeeded":
        raise ValueError(f"attribution {attribution_id} is {row.get('status')}, not computed")
    return map_widget(
        client.read_subject_image(int(row["subject_id"])),
        client.read_map(attribution_id, display=True),
        row.get("stats") or {},
        scale=scale,
        fraction=fraction,
        opacity=opacity,
        height=height,
    )
