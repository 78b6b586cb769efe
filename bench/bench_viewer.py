"""The viewer's first overlay on a 1 mm MNI-sized volume, and the bytes of its display map.

``python -m bench.bench_viewer [--repeats 5] [--out docs/benchmarks.md]``

Starts the real server with its worker (``python -m backend.cli serve``) on a temporary data
directory and, through the REST API, uploads a small synthetic training set plus two copies of
nilearn's MNI152 T1 template (197 x 233 x 189 voxels at 1 mm; docs/method.md section 5): one with
a painted white-matter lesion mask, one bare. It trains a small_cnn for one epoch and computes
Integrated Gradients for the lesion copy, so that a real signed map on the 1 mm grid exists.

Then headless Chromium opens the viewer, each time in a fresh browser context (empty cache):

- "MR alone": the bare copy (no attribution, no mask), and
- "MR + overlay": the lesion copy with its map (the int8 display map) and lesion outline,

alternating, ``--repeats`` times each, with the load average before and after. Two times come
from a JS hook, each two animation frames after the viewer reports it (``performance.now()``,
the time since navigation started):

- "first overlay": ``data-viewer-relevance="drawn"``, the MR and the relevance overlay are drawn
  (the viewer draws the lesion outline in a second step after it);
- "rendered": ``data-viewer-state="ready"``, every volume loaded and drawn, the outline included
  (for "MR alone", the MR drawn).

A screenshot of the first overlay run must show red or blue pixels (else the command fails).
The goal (issue 21) is a ratio of at most 1.5 between the medians of "first overlay" and "MR
alone"; the outline's ratio is reported beside it.

The bytes: the display map (``/attributions/{id}/display.nii.gz``, int8 with scl_slope) against
the float32 map (``/map.nii.gz``) and the same map as int16 (the display map before issue 21,
encoded here the same way), and the largest difference between the decoded display map and the
float32 map: the quantisation error, whose bound is half a step, max|A| / 254. One step must
stay under 1 % of the peak (it is 1/127 = 0.79 %).

The result goes between ``<!-- viewer:begin -->`` and ``<!-- viewer:end -->`` in the output
file, with the command, date and machine. ``measure`` also runs against a live server that
already holds the data (tests/e2e/test_bench_viewer.py uses it on small volumes).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import io
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayProxy

from attrivue_core.io import load_image
from bench.bench_upload import PASSWORD, start_server, stop_server
from bench.docs import cpu_model, replace_section, write_atomically

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
SECTION = "viewer"
HEADING = "Viewer: first overlay on a 1 mm MNI volume, and the display map's bytes"
INTRO = """# Benchmarks

Every timing claim of the project lives on this page. Each section between its
`<!-- name:begin -->` and `<!-- name:end -->` markers is written by a benchmark command in
`bench/`, named in the section; re-running that command replaces the section and keeps the
rest of the page.
"""
RATIO_GOAL = 1.5
STEP_GOAL = 0.01  # one quantisation step, as a fraction of the peak |A|
CHROMIUM = "/usr/bin/chromium"
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
READY_TIMEOUT_MS = 300_000

# Installed before the page's own scripts: notes when the viewer first reports the relevance
# drawn, and "ready" (all volumes loaded and drawn), each two animation frames later, when that
# frame was presented.
RENDER_HOOK = """(() => {
  const check = () => {
    const el = document.querySelector('[data-viewer-state]');
    if (!el) return;
    if (el.dataset.viewerRelevance === 'drawn' && window.__relevanceAt === undefined) {
      window.__relevanceAt = null;
      requestAnimationFrame(() => requestAnimationFrame(() => {
        window.__relevanceAt = performance.now();
      }));
    }
    if (window.__renderedAt !== undefined) return;
    const state = el.dataset.viewerState;
    if (state === 'ready') {
      window.__renderedAt = null;
      requestAnimationFrame(() => requestAnimationFrame(() => {
        window.__renderedAt = performance.now();
      }));
    } else if (state === 'error') {
      window.__renderedAt = -1;
    }
  };
  new MutationObserver(check).observe(document, {
    subtree: true, childList: true, attributes: true,
    attributeFilter: ['data-viewer-state', 'data-viewer-relevance'],
  });
})();"""


def _log(message: str) -> None:
    print(f"[bench_viewer] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- measuring


@dataclass
class Timing:
    kind: str  # "mr" or "overlay"
    ms: float
    volume_bytes: dict[str, int]  # the volumes the page fetched, by URL path ending


@dataclass
class Measurement:
    mr_ms: list[float]
    overlay_ms: list[float]  # every layer drawn, the lesion outline included
    relevance_ms: list[float]  # the first overlay: MR and relevance drawn
    display_bytes: int
    float_bytes: int
    int16_bytes: int
    image_bytes: int
    browser_display_bytes: int
    max_error: float
    max_abs: float
    slope: float
    shape: tuple[int, ...]
    chromium: str
    overlay_pixels: tuple[int, int]  # (red, blue) in the first overlay screenshot
    load: tuple[float, float]  # 1-minute load average before and after the timed openings

    @property
    def ratio(self) -> float:
        """The first overlay (relevance drawn) against the MR alone, medians."""
        return statistics.median(self.relevance_ms) / statistics.median(self.mr_ms)

    @property
    def outline_ratio(self) -> float:
        """Every layer drawn (the lesion outline included) against the MR alone, medians."""
        return statistics.median(self.overlay_ms) / statistics.median(self.mr_ms)

    @property
    def step_fraction(self) -> float:
        """One quantisation step (scl_slope) as a fraction of the peak |A|."""
        return self.slope / self.max_abs if self.max_abs > 0 else 0.0


def _login_token(base_url: str, username: str, password: str) -> str:
    resp = httpx.post(
        f"{base_url}/api/v1/auth/login", json={"username": username, "password": password}
    )
    resp.raise_for_status()
    return str(resp.json()["access_token"])


def _int16_bytes(exact: np.ndarray, affine: np.ndarray) -> int:
    """The .nii.gz bytes of the map as the int16 display map was before issue 21 (gzip 6)."""
    peak = float(np.abs(exact).max())
    slope = float(np.float32(peak / 32767)) if peak > 0 else 1.0
    codes = np.clip(np.rint(exact / slope), -32767, 32767).astype(np.int16)
    img = nib.Nifti1Image(codes, affine)
    img.set_data_dtype(np.int16)
    img.header.set_slope_inter(slope, 0.0)
    return len(gzip.compress(img.to_bytes(), compresslevel=6))


def map_bytes_and_error(
    client: httpx.Client, attribution_id: int
) -> tuple[int, int, int, float, float, float, tuple[int, ...]]:
    """(display bytes, float32 bytes, int16 bytes, max |display - float|, max |A|, slope, shape)."""
    display = client.get(f"/api/v1/attributions/{attribution_id}/display.nii.gz")
    full = client.get(f"/api/v1/attributions/{attribution_id}/map.nii.gz")
    display.raise_for_status()
    full.raise_for_status()
    d_img = nib.Nifti1Image.from_bytes(gzip.decompress(display.content))
    f_img = nib.Nifti1Image.from_bytes(gzip.decompress(full.content))
    if d_img.get_data_dtype() != np.int8 or f_img.get_data_dtype() != np.float32:
        raise RuntimeError(
            f"unexpected map types: display {d_img.get_data_dtype()}, full {f_img.get_data_dtype()}"
        )
    shown = np.asarray(d_img.get_fdata(dtype=np.float64))  # codes * scl_slope
    exact = np.asarray(f_img.get_fdata(dtype=np.float64))
    proxy = d_img.dataobj  # nibabel moves scl_slope from the header to this proxy
    if not isinstance(proxy, ArrayProxy):
        raise RuntimeError(f"the display map's voxels are a {type(proxy).__name__}, not a proxy")
    slope = float(proxy.slope)
    return (
        len(display.content),
        len(full.content),
        _int16_bytes(exact, f_img.affine),
        float(np.abs(shown - exact).max()),
        float(np.abs(exact).max()),
        slope,
        tuple(int(n) for n in f_img.shape),
    )


def _count_red_blue(png: bytes) -> tuple[int, int]:
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    red = (r >= 150) & (g <= 90) & (b <= 90)
    blue = (b >= 150) & (r <= 90) & (g <= 90)
    return int(red.sum()), int(blue.sum())


def _open_once(browser, base_url: str, username: str, password: str, path: str):
    """Opens ``path`` in a fresh context.

    Returns (ms to rendered, ms to the relevance drawn or None, volume bytes, page, context).
    """
    context = browser.new_context(viewport=VIEWPORT)
    login = context.request.post(
        f"{base_url}/api/v1/auth/login", data={"username": username, "password": password}
    )
    if not login.ok:
        raise RuntimeError(f"login failed: {login.status} {login.text()}")
    page = context.new_page()
    page.add_init_script(RENDER_HOOK)
    page.goto(f"{base_url}{path}")
    page.wait_for_function(
        "() => typeof window.__renderedAt === 'number'", timeout=READY_TIMEOUT_MS
    )
    ms = float(page.evaluate("window.__renderedAt"))
    relevance = None
    if ms >= 0 and page.evaluate("window.__relevanceAt !== undefined"):
        # Reported drawn: its two frames may still be pending when "ready" follows at once.
        page.wait_for_function(
            "() => typeof window.__relevanceAt === 'number'", timeout=READY_TIMEOUT_MS
        )
        relevance = page.evaluate("window.__relevanceAt")
    if ms < 0:
        text = page.locator("[data-viewer-state] [role=alert]").all_inner_texts()
        raise RuntimeError(f"the viewer failed on {path}: {text}")
    volumes = page.evaluate(
        """() => Object.fromEntries(performance.getEntriesByType('resource')
            .filter((e) => e.name.includes('.nii'))
            .map((e) => [new URL(e.name).pathname.split('/').pop(), e.encodedBodySize]))"""
    )
    relevance_ms = float(relevance) if relevance is not None else None
    return ms, relevance_ms, {str(k): int(v) for k, v in volumes.items()}, page, context


def measure(
    base_url: str,
    username: str,
    password: str,
    *,
    overlay_subject: int,
    attribution_id: int,
    bare_subject: int,
    repeats: int,
    warm_up: bool = True,
) -> Measurement:
    """Times the viewer on a live server: the bare subject against the subject with its map."""
    from playwright.sync_api import sync_playwright

    token = _login_token(base_url, username, password)
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=300
    ) as client:
        bare = client.get("/api/v1/attributions", params={"subject_id": bare_subject}).json()
        if bare["count"]:
            raise RuntimeError(
                f"subject {bare_subject} has attributions: it must show the MR alone"
            )
        display_bytes, float_bytes, int16_bytes, max_error, max_abs, slope, shape = (
            map_bytes_and_error(client, attribution_id)
        )
        image = client.get(f"/api/v1/subjects/{overlay_subject}/image.nii.gz")
        image.raise_for_status()
    paths = {
        "mr": f"/viewer/{bare_subject}",
        "overlay": f"/viewer/{overlay_subject}?attribution={attribution_id}",
    }
    times: dict[str, list[float]] = {"mr": [], "overlay": [], "relevance": []}
    browser_display = 0
    pixels = (0, 0)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            # One unmeasured opening of each warms the server's caches (display map, stats)
            # and the OS file cache, so that every measured run sees the same server.
            for kind in ("overlay", "mr") if warm_up else ():
                *_, context = _open_once(browser, base_url, username, password, paths[kind])
                context.close()
            load_before = os.getloadavg()[0]
            for rep in range(repeats):
                order = ("mr", "overlay") if rep % 2 == 0 else ("overlay", "mr")
                for kind in order:
                    ms, relevance_ms, volumes, page, context = _open_once(
                        browser, base_url, username, password, paths[kind]
                    )
                    times[kind].append(ms)
                    if kind == "overlay":
                        if relevance_ms is None:
                            raise RuntimeError("the viewer never reported the relevance drawn")
                        times["relevance"].append(relevance_ms)
                    first = f"relevance drawn {relevance_ms:.0f} ms, " if relevance_ms else ""
                    _log(f"{kind} #{rep + 1}: {first}ready {ms:.0f} ms, volumes {volumes}")
                    if kind == "overlay" and rep == 0:
                        browser_display = volumes.get("display.nii.gz", 0)
                        page.wait_for_timeout(500)
                        pixels = _count_red_blue(page.locator("canvas.viewer-canvas").screenshot())
                        if sum(pixels) == 0:
                            raise RuntimeError("the overlay run shows no red or blue relevance")
                    context.close()
            load_after = os.getloadavg()[0]
            version = browser.version
        finally:
            browser.close()
    return Measurement(
        mr_ms=times["mr"],
        overlay_ms=times["overlay"],
        relevance_ms=times["relevance"],
        display_bytes=display_bytes,
        float_bytes=float_bytes,
        int16_bytes=int16_bytes,
        image_bytes=len(image.content),
        browser_display_bytes=browser_display,
        max_error=max_error,
        max_abs=max_abs,
        slope=slope,
        shape=shape,
        chromium=version,
        overlay_pixels=pixels,
        load=(load_before, load_after),
    )


# --------------------------------------------------------------------------- the data


def mni_lesion_mask() -> tuple[Path, np.ndarray, np.ndarray]:
    """The MNI T1 template's path, its affine, and a mask of three white-matter ellipsoids."""
    from worker.ml.synthetic import template_dir

    folder = template_dir()
    t1 = folder / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    wm = np.asarray(load_image(folder / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").dataobj)
    affine = load_image(t1).affine
    grid = np.indices(wm.shape, dtype=np.float32)
    mask = np.zeros(wm.shape, dtype=bool)
    inverse = np.linalg.inv(affine)
    # Periventricular and deep white matter, in MNI mm: (centre, semi-axes).
    for centre_mm, radii in (
        ((-22, -10, 24), (6, 9, 5)),
        ((24, 4, 26), (5, 7, 5)),
        ((-28, -40, 20), (4, 6, 4)),
    ):
        c = inverse @ np.array([*centre_mm, 1.0])
        r2 = sum(((grid[i] - c[i]) / radii[i]) ** 2 for i in range(3))
        mask |= r2 <= 1.0
    mask &= wm > 0.3
    return t1, affine, mask.astype(np.uint8)


def _wait_job(client: httpx.Client, job_id: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
            return
        time.sleep(1.0)
    raise TimeoutError(f"job {job_id} did not finish within {timeout:.0f} s")


def _post_subject(
    client: httpx.Client,
    dataset: int,
    key: str,
    label: int,
    split: str,
    image: bytes,
    mask: bytes | None = None,
) -> int:
    files = {"image": (f"{key}.nii.gz", image)}
    if mask is not None:
        files["mask"] = (f"{key}_mask.nii.gz", mask)
    resp = client.post(
        f"/api/v1/datasets/{dataset}/subjects",
        data={"subject_key": key, "label": str(label), "split": split},
        files=files,
    )
    resp.raise_for_status()
    return int(resp.json()["id"])


def prepare(client: httpx.Client, workdir: Path) -> tuple[int, int, int]:
    """Uploads, trains and attributes; returns (lesion subject, its attribution, bare subject)."""
    from worker.ml.synthetic import SyntheticConfig, generate_dataset

    project = client.post("/api/v1/projects", json={"name": "viewer bench"}).json()["id"]
    dataset = client.post(
        "/api/v1/datasets", json={"name": "viewer bench", "project_id": project}
    ).json()["id"]
    source = workdir / "train"
    _log("generating the training subjects")
    generate_dataset(
        source,
        SyntheticConfig(n_healthy=4, n_lesion=4, grid=(24, 28, 24), spacing_mm=8.0, seed=5),
    )
    with open(source / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            mask = (source / row["mask"]).read_bytes() if row["mask"] else None
            image = (source / row["image"]).read_bytes()
            _post_subject(
                client, dataset, row["subject"], int(row["label"]), row["split"], image, mask
            )
    t1, affine, lesion_mask = mni_lesion_mask()
    mask_img = nib.Nifti1Image(lesion_mask, affine)
    mask_img.set_data_dtype(np.uint8)
    mask_bytes = gzip.compress(mask_img.to_bytes())
    _log(f"uploading the MNI template twice ({t1.stat().st_size} bytes), one with a lesion mask")
    lesion = _post_subject(client, dataset, "mni-lesion", 1, "test", t1.read_bytes(), mask_bytes)
    bare = _post_subject(client, dataset, "mni-bare", 0, "test", t1.read_bytes())
    _log("training one epoch")
    run = client.post(
        "/api/v1/runs",
        json={
            "dataset_id": dataset,
            "name": "viewer bench",
            "config": {"epochs": 1, "batch_size": 4, "grid": [24, 28, 24], "seed": 1},
        },
    )
    run.raise_for_status()
    _wait_job(client, run.json()["job_id"], timeout=900)
    _log("Integrated Gradients on the lesion copy")
    attr = client.post(
        "/api/v1/attributions",
        json={
            "run_id": run.json()["id"],
            "subject_id": lesion,
            "params": {"steps": 16, "internal_batch_size": 8},
        },
    )
    attr.raise_for_status()
    _wait_job(client, attr.json()["job_id"], timeout=900)
    return lesion, int(attr.json()["id"]), bare


# --------------------------------------------------------------------------- the report


def render(m: Measurement, *, command: str, repeats: int) -> str:
    def ms(values: list[float]) -> str:
        return f"{statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f}"

    shape = " × ".join(str(n) for n in m.shape)
    ratio_ok = m.ratio <= RATIO_GOAL
    outline_ok = m.outline_ratio <= RATIO_GOAL
    step_ok = 0 < m.step_fraction < STEP_GOAL
    bound = m.slope / 2
    error_ok = m.max_error <= bound * (1 + 1e-5)
    met = ratio_ok and step_ok and error_ok
    return "\n".join(
        [
            f"- Command: `{command}`",
            f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- Machine: {cpu_model()}, {os.cpu_count()} CPUs shared with other work (1-minute "
            f"load average {m.load[0]:.1f} before the timed openings, {m.load[1]:.1f} after), "
            f"Python {platform.python_version()}, Chromium {m.chromium} headless (software "
            "WebGL: SwiftShader)",
            f"- Volume: nilearn's MNI152 T1 template, {shape} voxels at 1 mm "
            f"({m.image_bytes:,} bytes as .nii.gz); a signed Integrated Gradients map of a "
            "small_cnn on the same grid; the lesion copy also loads its mask (outline).",
            f"- Each opening in a fresh browser context (empty cache), {repeats} of each kind, "
            "alternating, after one unmeasured opening of each. Times: from the start of "
            "navigation to two animation frames after the viewer reported (a JS hook) the "
            "relevance overlay drawn (`data-viewer-relevance=drawn`: the first overlay; the "
            "viewer draws the lesion outline in a second step after it), and every volume "
            "loaded and drawn (`data-viewer-state=ready`: the outline visible).",
            "",
            "| view | median ms | min ms | max ms |",
            "|---|---|---|---|",
            f"| MR alone | {ms(m.mr_ms)} |",
            f"| MR + overlay (int8 display map): first overlay drawn | {ms(m.relevance_ms)} |",
            f"| MR + overlay + lesion outline: outline drawn (ready) | {ms(m.overlay_ms)} |",
            "",
            f"**Ratio first overlay / MR alone (medians): {m.ratio:.2f}** — it "
            f"{'meets' if ratio_ok else 'misses'} the goal of at most {RATIO_GOAL:g} (issue 21). "
            f"Ratio outline visible / MR alone (medians): {m.outline_ratio:.2f} (it "
            f"{'would meet' if outline_ok else 'would miss'} the same bound). "
            f"The first overlay screenshot showed {m.overlay_pixels[0]} red and "
            f"{m.overlay_pixels[1]} blue pixels.",
            "",
            "| map as sent | bytes | relative to float32 |",
            "|---|---|---|",
            f"| float32 `map.nii.gz` | {m.float_bytes:,} | 1.00 |",
            f"| int16 with scl_slope (the display map before issue 21, gzip level 6) | "
            f"{m.int16_bytes:,} | {m.int16_bytes / m.float_bytes:.2f} |",
            f"| int8 `display.nii.gz` (the viewer's) | {m.display_bytes:,} | "
            f"{m.display_bytes / m.float_bytes:.2f} |",
            "",
            f"The browser received {m.browser_display_bytes:,} bytes for the display map "
            "(Resource Timing `encodedBodySize`). Quantisation: int8 codes -127..127 times "
            f"scl_slope = max|A| / 127 = {m.slope:.3g} (max |A| = {m.max_abs:.3g}); one step is "
            f"{m.step_fraction:.2%} of the peak ({'under' if step_ok else 'not under'} the "
            f"1 % goal). Error bound: half a step, max|A| / 254 = {bound:.3g} "
            f"({bound / m.max_abs if m.max_abs else 0:.2%} of the peak); largest error "
            f"measured between the decoded display map and the float32 map: {m.max_error:.3g} "
            f"({'within' if error_ok else 'beyond'} the bound).",
            "",
            f"**Goals of issue 21, item 5: {'met' if met else 'not met'}** (first overlay ratio at most "
            f"{RATIO_GOAL:g}: {'yes' if ratio_ok else 'no'}; step under 1 % of the peak: "
            f"{'yes' if step_ok else 'no'}; error within half a step: "
            f"{'yes' if error_ok else 'no'}).",
        ]
    )


def write_section(out: Path, body: str) -> None:
    text = out.read_text() if out.exists() else INTRO
    write_atomically(out, replace_section(text, SECTION, body, HEADING))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_viewer", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="openings of each kind")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "bench.bench_viewer", *(argv or sys.argv[1:])])
    dist = REPO / "frontend" / "dist" / "index.html"
    if not dist.is_file():
        parser.error("frontend/dist is not built: run `make frontend` first")
    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as tmp:
        workdir = Path(tmp)
        server = start_server(workdir / "data", 2 * 1024**3, workdir / "server.log", worker=True)
        try:
            token = _login_token(server.base_url, "bench", PASSWORD)
            with httpx.Client(
                base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=600
            ) as client:
                lesion, attribution, bare = prepare(client, workdir)
            result = measure(
                server.base_url,
                "bench",
                PASSWORD,
                overlay_subject=lesion,
                attribution_id=attribution,
                bare_subject=bare,
                repeats=args.repeats,
            )
        finally:
            stop_server(server)
    body = render(result, command=command, repeats=args.repeats)
    write_section(args.out, body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
