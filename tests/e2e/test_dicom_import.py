"""The DICOM import in Chromium, against a live server of its own: a DICOM series made here with
pydicom (patient "Doe^Jane", ID "SECRET123", in a folder named after her) is chosen as a folder
on the dataset page, converted to NIfTI in the browser by dcm2niix (WebAssembly, in a worker),
and uploaded as one subject.

Checked afterwards: the subject exists with the series' shape and voxels; no request the page
sent carries a DICOM file or an identifying word; and no stored byte under the data directory
(the SQLite database included) nor the server's log holds the name, its parts or the ID.

The server runs on a fresh data directory (not the shared ``pipeline`` fixture): with no trained
model in it, a short word like "Doe" cannot turn up by chance in megabytes of weights.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest

from tests.conftest import ADMIN_PASSWORD, REPO
from tests.dicom_series import IDENTIFYING, dicom_series
from tests.e2e.browser import DIST_INDEX, chromium_page, login, save_screenshot
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.e2e


@dataclass
class Live:
    base_url: str
    root: Path
    data_dir: Path
    token: str
    dataset_id: int

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60
        )


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """`attrivue serve` on a fresh data directory, with one project and an empty dataset."""
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    root = tmp_path_factory.mktemp("dicom-live")
    env = {
        **os.environ,
        "ATTRIVUE_DATA_DIR": str(root / "data"),
        "ATTRIVUE_ENVIRONMENT": "test",
        "ATTRIVUE_DEVICE": "cpu",
    }
    for name in ("ATTRIVUE_DATABASE_URL", "ATTRIVUE_BROKER_URL"):
        env.pop(name, None)
    attrivue = [sys.executable, "-m", "backend.cli"]
    subprocess.run(
        [*attrivue, "create-user", "tester", "--role", "admin", "--password", ADMIN_PASSWORD],
        env=env,
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    port = free_port()
    log = open(root / "server.log", "wb")
    server = subprocess.Popen(
        [*attrivue, "serve", "--port", str(port)], env=env, cwd=REPO, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            if server.poll() is not None:
                raise RuntimeError(f"server exited; see {root / 'server.log'}")
            try:
                return httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=90, what="the server to answer /health")
        token = httpx.post(
            f"{base}/api/v1/auth/login", json={"username": "tester", "password": ADMIN_PASSWORD}
        ).json()["access_token"]
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            project = client.post("/api/v1/projects", json={"name": "dicom"}).json()
            dataset = client.post(
                "/api/v1/datasets", json={"name": "from DICOM", "project_id": project["id"]}
            ).json()
        yield Live(base, root, root / "data", token, dataset["id"])
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


# Every body the page hands to XMLHttpRequest (the chunks of uploads are Blobs, which the
# browser's request events do not carry), kept as bytes for the test to read back.
RECORD_XHR_BODIES = """
window.__sentBodies = [];
const originalSend = XMLHttpRequest.prototype.send;
XMLHttpRequest.prototype.send = function (body) {
  if (body instanceof Blob) {
    window.__sentBodies.push(body.arrayBuffer().then((b) => Array.from(new Uint8Array(b))));
  }
  return originalSend.call(this, body);
};
"""


def identifying_in(data: bytes) -> list[str]:
    return [word for word in IDENTIFYING if word.encode() in data]


def test_a_dicom_folder_becomes_a_nifti_subject_without_its_patient(
    live: Live, tmp_path: Path
) -> None:
    folder = tmp_path / "Doe_Jane_SECRET123" / "T1_MPRAGE"
    files = dicom_series(folder, n_slices=8, size=16, description="T1 MPRAGE sag")
    pixels = sum(
        int(np.frombuffer(f.read_bytes()[-16 * 16 * 2 :], dtype="<u2").sum()) for f in files
    )
    sent: list[tuple[str, bytes]] = []

    with chromium_page(tmp_path / "profile") as page:
        page.add_init_script(RECORD_XHR_BODIES)
        page.on("request", lambda r: sent.append((r.url, r.post_data_buffer or b"")))
        login(page, live.base_url, "tester", ADMIN_PASSWORD)
        page.goto(f"{live.base_url}/datasets/{live.dataset_id}")
        dicom_input = page.locator('input[name="dicom_folder"]')
        dicom_input.wait_for(state="attached", timeout=30_000)
        dicom_input.set_input_files(str(folder.parent))

        section = page.locator('section.dicom-import[data-dicom-state="converted"]')
        section.wait_for(timeout=120_000)
        save_screenshot(page, "converted")
        rows = section.locator("tr[data-series]")
        assert rows.count() == 1
        row = rows.first
        # The sidecar's modality and the series description name the image, here in the page.
        assert row.get_attribute("data-modality") == "MR"
        assert row.get_attribute("data-image-name") == "T1w"
        assert "T1 MPRAGE sag" in row.locator(".series-description").inner_text()
        assert "3 T" in row.locator(".series-acquisition").inner_text()
        assert row.locator(".series-shape").inner_text().startswith("16 × 16 × 8 voxels")

        upload = section.get_by_role("button", name="Upload 1 converted image")
        assert upload.is_disabled()  # no label chosen yet
        row.get_by_label("Subject key").fill("dcm-01")
        row.get_by_label("Label").select_option("1")
        row.get_by_label("Split").select_option("val")
        upload.click()
        summary = page.locator(".import-summary")
        summary.wait_for(timeout=60_000)
        assert "1 subject imported" in summary.inner_text(), summary.inner_text()
        page.locator("tr[data-subject-id]").first.wait_for(timeout=30_000)
        blobs = page.evaluate("() => Promise.all(window.__sentBodies)")
        sent += [("XMLHttpRequest", bytes(b)) for b in blobs]

    # Through the API: one subject, with the series' grid.
    with live.client() as client:
        [subject] = client.get(f"/api/v1/datasets/{live.dataset_id}/subjects").json()["data"]
    assert (subject["subject_key"], subject["label"], subject["split"]) == ("dcm-01", 1, "val")
    assert list(subject["shape"]) == [16, 16, 8]

    # In storage: the stored image holds the series' voxels (in whatever orientation).
    images = [
        p
        for p in (live.data_dir / "datasets").rglob("*.nii.gz")
        if "brain" not in p.name and "mask" not in p.name
    ]
    assert len(images) == 1, images
    img = nib.load(images[0])
    assert isinstance(img, nib.Nifti1Image)
    stored = np.asarray(img.get_fdata())
    assert stored.shape == (16, 16, 8)
    assert int(round(stored.sum())) == pixels

    # What the browser sent: NIfTI and a manifest, no DICOM file, no identifying word.
    uploads = [(url, body) for url, body in sent if body]
    assert len(blobs) == 2, "expected two uploads: the manifest and the image"
    assert any(body[:2] == b"\x1f\x8b" for _, body in uploads), "no gzipped NIfTI was sent"
    for url, body in uploads:
        assert body[128:132] != b"DICM", f"a DICOM file was sent to {url}"
        assert identifying_in(body) == [], f"{identifying_in(body)} sent to {url}"
        if body[:2] == b"\x1f\x8b":
            assert identifying_in(gzip.decompress(body)) == [], url

    # Every stored byte: the data directory (the SQLite database is there) and the log.
    stored_files = [p for p in live.data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "attrivue.db" for p in stored_files)
    for path in [*stored_files, live.root / "server.log"]:
        data = path.read_bytes()
        found = identifying_in(data)
        if path.suffix == ".gz":
            found += identifying_in(gzip.decompress(data))
        assert found == [], f"{found} stored in {path}"
