"""Headless Chromium for the browser tests, the pixel checks on its screenshots, and where the
screenshots go: every test's pictures land in ``test-artifacts/`` at the repository root
(gitignored), named after the test; a page's last state is saved when the test ends, pass or fail.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
DIST_INDEX = REPO / "frontend" / "dist" / "index.html"

# Playwright cannot download browsers here: drive the system Chromium (WebGL2 via SwiftShader).
CHROMIUM = os.environ.get("ATTRIVUE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1000}
# SwiftShader renders slowly; loading and first render can take a while on a busy machine.
READY_TIMEOUT_MS = 180_000


@contextmanager
def chromium_page(user_data_dir: Path) -> Iterator[Page]:
    """A page in a fresh Chromium profile; skips the test when no browser is available."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(user_data_dir),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport=VIEWPORT,
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            try:
                yield page
            finally:
                _final_screenshot(page)
        finally:
            context.close()


def current_test_name() -> str:
    """The running test as a file-name stem: ``test_file-test_name``."""
    current = os.environ.get("PYTEST_CURRENT_TEST", "browser").split(" ")[0]
    stem = current.replace(".py::", "-").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)


def save_screenshot(page: Page, name: str) -> Path:
    """The whole page as test-artifacts/<test>-<name>.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{current_test_name()}-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _final_screenshot(page: Page) -> None:
    try:
        save_screenshot(page, "final")
    except Exception:  # noqa: BLE001 - a closed or crashed page has nothing to show
        pass


def login(page: Page, base_url: str, username: str, password: str) -> None:
    """Logs in through the login form and waits for the home page."""
    page.goto(f"{base_url}/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}/", timeout=30_000)


def open_viewer(page: Page, url: str) -> None:
    """Opens a viewer URL and waits until the viewer reports ready (fails fast on error)."""
    page.goto(url)
    viewer = page.locator("[data-viewer-state]")
    page.wait_for_function(
        """() => {
            const el = document.querySelector('[data-viewer-state]');
            return el && ['ready', 'error'].includes(el.dataset.viewerState);
        }""",
        timeout=READY_TIMEOUT_MS,
    )
    state = viewer.get_attribute("data-viewer-state")
    if state != "ready":
        message = page.locator(".viewer [role=alert]").all_inner_texts()
        raise AssertionError(f"viewer state is {state!r}: {message}")


def screenshot_canvas(page: Page, name: str, settle_ms: int = 1500) -> Path:
    """Waits for a render, then saves the viewer canvas to test-artifacts/<name>."""
    page.wait_for_timeout(settle_ms)
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.locator("canvas.viewer-canvas").screenshot(path=str(path))
    return path


@dataclass(frozen=True)
class ColourCounts:
    """How many screenshot pixels are clearly red, blue, green, or neutral gray (the MR)."""

    red: int
    blue: int
    green: int
    gray: int
    total: int


def count_colours(png: Path) -> ColourCounts:
    """Classifies pixels with margins wide enough to ignore blending and anti-aliasing.

    Red: positive relevance (NiiVue "red" near its peak over the gray MR). Blue: negative
    relevance. Green: the lesion rim drawn at opacity 1 from drawing value 2. Gray: the
    MR volume (channels within 12 of each other, brighter than the background).
    """
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(np.int16)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    red = (r >= 150) & (g <= 90) & (b <= 90)
    blue = (b >= 150) & (r <= 90) & (g <= 90)
    green = (g >= 150) & (r <= 110) & (b <= 110)
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    gray = (spread <= 12) & (r >= 40)
    return ColourCounts(
        red=int(red.sum()),
        blue=int(blue.sum()),
        green=int(green.sum()),
        gray=int(gray.sum()),
        total=int(r.size),
    )


# A channel this much above the other two makes a pixel red- or blue-dominant.
DOMINANCE_MARGIN = 24
# A pixel is changed by the overlay when one channel moved by more than this (anti-aliasing and
# the renderer's rounding stay below it).
CHANGE_TOLERANCE = 12
# A composite pixel is darker than the MR when its brightest channel is this much below the MR's.
DARKER_TOLERANCE = 6
# The MR (and the black around it) is drawn in gray: channels within this of each other.
GRAY_SPREAD = 12


@dataclass(frozen=True)
class OverlayColours:
    """The pixels an overlay changes, compared with a screenshot of the same view without it.

    ``darker`` counts changed pixels whose brightness (the largest channel, HSV value) fell
    below the MR's under them by more than DARKER_TOLERANCE: a saturated red or blue over gray
    keeps or raises it, a black-to-red ramp near its dark end lowers it.
    """

    changed: int
    red: int
    blue: int
    darker: int
    mean_drop: float

    @property
    def dominant_fraction(self) -> float:
        return (self.red + self.blue) / self.changed if self.changed else 0.0

    def __str__(self) -> str:
        share = lambda n: f"{100 * n / self.changed:.1f}%" if self.changed else "-"  # noqa: E731
        return (
            f"{self.changed} changed px: red-dominant {share(self.red)}, blue-dominant "
            f"{share(self.blue)}, darker than the MR {share(self.darker)}"
        )


def overlay_colours(with_overlay: Path, without_overlay: Path) -> OverlayColours:
    """Classifies the pixels that differ between two screenshots of the same view."""
    on = np.asarray(Image.open(with_overlay).convert("RGB")).astype(np.int16)
    off = np.asarray(Image.open(without_overlay).convert("RGB")).astype(np.int16)
    assert on.shape == off.shape, (on.shape, off.shape)
    changed = np.abs(on - off).max(axis=-1) > CHANGE_TOLERANCE
    r, g, b = on[..., 0], on[..., 1], on[..., 2]
    red = changed & (r >= g + DOMINANCE_MARGIN) & (r >= b + DOMINANCE_MARGIN)
    blue = changed & (b >= r + DOMINANCE_MARGIN) & (b >= g + DOMINANCE_MARGIN)
    drop = off.max(axis=-1) - on.max(axis=-1)
    # "The MR beneath" is where the screenshot without the overlay shows gray: the crosshair and
    # labels drawn over the overlay are not the overlay's doing.
    mr = (off.max(axis=-1) - off.min(axis=-1)) <= GRAY_SPREAD
    darker = changed & mr & (drop > DARKER_TOLERANCE)
    return OverlayColours(
        changed=int(changed.sum()),
        red=int(red.sum()),
        blue=int(blue.sum()),
        darker=int(darker.sum()),
        mean_drop=float(drop[changed].mean()) if changed.any() else 0.0,
    )


def review_item_of(data_dir: Path, user_id: int, attribution_id: int) -> str:
    """The review queue token of a map for one user, on a live server of ``data_dir`` (the
    tests know its generated secret; the page knows maps by these tokens only)."""
    from backend.services.reviews import item_token

    secret = (data_dir / ".secret_key").read_text().strip().encode()
    return item_token(secret, user_id, attribution_id)
