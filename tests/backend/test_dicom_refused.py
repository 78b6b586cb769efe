"""Raw DICOM never gets in: a file whose bytes carry the DICOM preamble (``DICM`` at byte 128),
sent by any upload path or inside a zip, is refused with a 422 that points to the browser's
DICOM import, and none of its identifying bytes is stored.

The series is made here with pydicom (``tests/dicom_series.py``): a patient name and ID to
look for under the data directory afterwards.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import nibabel as nib
import pytest
from fastapi.testclient import TestClient

from backend.services.dicom import is_dicom
from tests.dicom_series import IDENTIFYING, dicom_series
from tests.helpers import AFFINE, brain_volume

POINTER = "DICOM import"


@pytest.fixture
def dataset_id(api: TestClient) -> int:
    resp = api.post("/api/v1/datasets", json={"name": "dicom"})
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


@pytest.fixture
def project_id(api: TestClient) -> int:
    return int(api.get("/api/v1/projects").json()["data"][0]["id"])


@pytest.fixture
def series(tmp_path: Path) -> list[Path]:
    return dicom_series(tmp_path / "series")


def assert_nothing_identifying(api: TestClient, dataset_id: int, data_dir: Path) -> None:
    """No subject, and no stored byte (database included) names the patient."""
    assert api.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["count"] == 0
    for path in data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for word in IDENTIFYING:
                assert word.encode() not in data, f"{word!r} stored in {path}"


def assert_points_to_the_browser(text: str) -> None:
    assert "raw DICOM is refused" in text and POINTER in text, text


def nifti_gz() -> bytes:
    image, _ = brain_volume(seed=0, lesion=False)
    return gzip.compress(nib.Nifti1Image(image, AFFINE).to_bytes(), compresslevel=1)


def test_the_preamble_is_what_is_recognised(series: list[Path]) -> None:
    data = series[0].read_bytes()
    assert is_dicom(data[:132])
    assert not is_dicom(data[:131])  # too short to tell
    assert not is_dicom(data[132:])  # the magic word elsewhere
    assert not is_dicom(nifti_gz())
    assert not is_dicom(nib.Nifti1Image(brain_volume(seed=1)[0], AFFINE).to_bytes())


@pytest.mark.parametrize("name", ["IM0001", "scan.nii", "scan.dcm"])
def test_one_subject_upload_of_dicom_is_refused(
    api: TestClient, dataset_id: int, app_env: Path, series: list[Path], name: str
) -> None:
    resp = api.post(
        f"/api/v1/datasets/{dataset_id}/subjects",
        data={"subject_key": "sub-01", "label": "0", "split": "train"},
        files={"image": (name, series[0].read_bytes())},
    )
    assert resp.status_code == 422, resp.text
    assert_points_to_the_browser(resp.json()["detail"])
    assert_nothing_identifying(api, dataset_id, app_env)


def test_dicom_files_in_an_import_are_refused(
    api: TestClient, dataset_id: int, app_env: Path, series: list[Path]
) -> None:
    manifest = b"subject,image,label\nsub-01,series/IM0001,0\n"
    parts = [("files", (f"series/{p.name}", p.read_bytes())) for p in series]
    parts.append(("manifest", ("manifest.csv", manifest)))
    resp = api.post(f"/api/v1/datasets/{dataset_id}/imports", files=parts)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert_points_to_the_browser(body["detail"])
    [problem] = [e for e in body["errors"] if "DICOM" in e["problem"]]
    assert problem["file"] == "series/IM0001"
    assert f"and {len(series) - 1} more DICOM files" in problem["problem"]
    assert_nothing_identifying(api, dataset_id, app_env)


def test_a_zip_holding_dicom_is_refused(
    api: TestClient, dataset_id: int, app_env: Path, series: list[Path]
) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.csv", "subject,image,label\nsub-01,sub-01.nii.gz,0\n")
        zf.writestr("sub-01.nii.gz", nifti_gz())  # a good subject does not let DICOM pass
        for p in series:
            zf.writestr(f"patient/series/{p.name}", p.read_bytes())
    resp = api.post(
        f"/api/v1/datasets/{dataset_id}/imports",
        files=[("files", ("export.zip", buf.getvalue()))],
    )
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert_points_to_the_browser(body["detail"])
    assert [e["file"] for e in body["errors"]] == ["patient/series/IM0001"]
    assert "the archive holds DICOM files" in body["errors"][0]["problem"]
    assert_nothing_identifying(api, dataset_id, app_env)


def test_a_chunked_upload_of_dicom_stops_at_its_header(
    api: TestClient, dataset_id: int, project_id: int, app_env: Path, series: list[Path]
) -> None:
    data = series[0].read_bytes()
    created = api.post(
        "/api/v1/uploads", json={"project_id": project_id, "filename": "IM0001", "size": len(data)}
    )
    assert created.status_code == 201, created.text
    upload_id = created.json()["id"]
    # In two chunks, the magic word split between them: the second is refused.
    first = api.put(f"/api/v1/uploads/{upload_id}?offset=0", content=data[:130])
    assert first.status_code == 200, first.text
    resp = api.put(f"/api/v1/uploads/{upload_id}?offset=130", content=data[130:])
    assert resp.status_code == 422, resp.text
    assert_points_to_the_browser(resp.json()["detail"])
    # Nothing of it is kept: the upload holds no byte, and an import of it is refused.
    assert api.get(f"/api/v1/uploads/{upload_id}").json()["received"] == 0
    resp = api.put(f"/api/v1/uploads/{upload_id}?offset=0", content=data)
    assert resp.status_code == 422, resp.text
    assert api.get(f"/api/v1/uploads/{upload_id}").json()["received"] == 0
    assert_nothing_identifying(api, dataset_id, app_env)


def test_a_zip_of_dicom_sent_in_chunks_is_refused_at_import(
    api: TestClient, dataset_id: int, project_id: int, app_env: Path, series: list[Path]
) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in series:
            zf.writestr(f"DICOM/{p.name}", p.read_bytes())
    archive = buf.getvalue()
    created = api.post(
        "/api/v1/uploads",
        json={"project_id": project_id, "filename": "dicom.zip", "size": len(archive)},
    )
    upload_id = created.json()["id"]
    assert api.put(f"/api/v1/uploads/{upload_id}?offset=0", content=archive).status_code == 200
    resp = api.post(f"/api/v1/datasets/{dataset_id}/imports", json={"upload_ids": [upload_id]})
    assert resp.status_code == 422, resp.text
    assert_points_to_the_browser(resp.json()["detail"])
    assert api.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["count"] == 0
