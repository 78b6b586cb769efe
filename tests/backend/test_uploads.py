"""Imports of many subjects (manifest, zip, BIDS) and resumable chunked uploads.

Every refused import must answer 4xx naming each problem with its file and row, and leave
nothing behind: no subject row, no file under the data directory's datasets/ or tmp/.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import stat
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.helpers import AFFINE, brain_volume

REPO = Path(__file__).resolve().parents[2]
Files = list[tuple[str, tuple[str, bytes]]]


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def assert_nothing_stored(api: TestClient, dataset_id: int, data_dir: Path) -> None:
    assert api.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["count"] == 0
    assert files_under(data_dir / "datasets") == []
    assert files_under(data_dir / "tmp") == []


@pytest.fixture
def dataset_id(api: TestClient) -> int:
    resp = api.post("/api/v1/datasets", json={"name": "imports"})
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


@pytest.fixture
def project_id(api: TestClient) -> int:
    return int(api.get("/api/v1/projects").json()["data"][0]["id"])


def nifti(data: np.ndarray, *, affine: np.ndarray = AFFINE, gz: bool = True, **header) -> bytes:
    img = nib.Nifti1Image(np.asarray(data), affine)
    for key, value in header.items():
        img.header[key] = value
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=1) if gz else raw


def table(rows: list[list[str]], delimiter: str = ",") -> bytes:
    return "\n".join(delimiter.join(r) for r in rows).encode() + b"\n"


HEADER = ["subject", "image", "mask", "label", "target", "split", "site"]


def subject_files(n: int = 3) -> dict[str, bytes]:
    """n subjects; the odd ones have a lesion and its mask."""
    files = {}
    for i in range(n):
        image, mask = brain_volume(seed=i, lesion=bool(i % 2))
        files[f"sub-{i:02d}.nii.gz"] = nifti(image, descrip="Jane Doe 1970-01-01")
        if i % 2:
            files[f"sub-{i:02d}_mask.nii.gz"] = nifti(mask)
    return files


def manifest_rows(n: int = 3) -> list[list[str]]:
    splits = ("train", "val", "test")
    labels = ("healthy", "1", "Control", "patient")
    return [HEADER] + [
        [
            f"sub-{i:02d}",
            f"sub-{i:02d}.nii.gz",
            f"sub-{i:02d}_mask.nii.gz" if i % 2 else "",
            labels[i % 4],
            f"{50 + i}" if i else "",
            splits[i % 3],
            "siteA",
        ]
        for i in range(n)
    ]


def post_import(
    api: TestClient, dataset_id: int, files: dict[str, bytes], manifest: tuple[str, bytes] | None
):
    parts: Files = [("files", (name, data)) for name, data in files.items()]
    if manifest is not None:
        parts.append(("manifest", manifest))
    return api.post(f"/api/v1/datasets/{dataset_id}/imports", files=parts)


def zipped(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


# --------------------------------------------------------------------------- successes


@pytest.mark.parametrize("delimiter", [",", "\t"], ids=["csv", "tsv"])
def test_manifest_import_stores_every_subject(
    api: TestClient, dataset_id: int, app_env: Path, delimiter: str
) -> None:
    name = "manifest.csv" if delimiter == "," else "subjects.tsv"
    manifest = (name, table(manifest_rows(4), delimiter))
    resp = post_import(api, dataset_id, subject_files(4), manifest)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["layout"] == "manifest" and body["count"] == 4
    got = {s["subject_key"]: s for s in body["data"]}
    assert [got[f"sub-{i:02d}"]["label"] for i in range(4)] == [0, 1, 0, 1]
    assert [got[f"sub-{i:02d}"]["split"] for i in range(4)] == ["train", "val", "test", "train"]
    assert [got[f"sub-{i:02d}"]["has_mask"] for i in range(4)] == [False, True, False, True]
    assert got["sub-00"]["target"] is None and got["sub-03"]["target"] == 53.0
    assert got["sub-01"]["site"] == "siteA" and got["sub-01"]["shape"] == [16, 20, 16]
    assert api.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["count"] == 4
    stored = api.get(f"/api/v1/subjects/{got['sub-01']['id']}/image.nii.gz")
    header = nib.Nifti1Image.from_bytes(gzip.decompress(stored.content)).header
    assert header["descrip"].tobytes().strip(b"\x00") == b""  # de-identified
    assert files_under(app_env / "tmp") == []


def test_zip_with_a_manifest_in_a_folder(api: TestClient, dataset_id: int, app_env: Path) -> None:
    entries = {f"study/images/{n}": d for n, d in subject_files(2).items()}
    rows = [
        [c.replace("sub-", "images/sub-") if c.endswith(".gz") else c for c in r]
        for r in manifest_rows(2)
    ]
    entries["study/manifest.csv"] = table(rows)
    entries["__MACOSX/study/._manifest.csv"] = b"resource fork"
    entries["study/.DS_Store"] = b"finder"
    resp = post_import(api, dataset_id, {"study.zip": zipped(entries)}, None)
    assert resp.status_code == 201, resp.text
    assert sorted(s["subject_key"] for s in resp.json()["data"]) == ["sub-00", "sub-01"]
    assert files_under(app_env / "tmp") == []


def bids_tree(root: str = "") -> dict[str, bytes]:
    """Three subjects: T1w; FLAIR with a lesion mask; T1w with a mask in derivatives/."""
    p = f"{root}/" if root else ""
    img0, _ = brain_volume(seed=0)
    img1, mask1 = brain_volume(seed=1, lesion=True)
    img2, mask2 = brain_volume(seed=2, lesion=True)
    return {
        f"{p}dataset_description.json": b'{"Name": "test", "BIDSVersion": "1.8.0"}',
        f"{p}participants.tsv": table(
            [
                ["participant_id", "group", "age", "split", "site"],
                ["sub-01", "control", "34", "train", "A"],
                ["sub-02", "patient", "n/a", "val", "B"],
                ["sub-03", "patient", "51", "n/a", "n/a"],
            ],
            "\t",
        ),
        f"{p}sub-01/anat/sub-01_T1w.nii.gz": nifti(img0),
        f"{p}sub-01/anat/sub-01_T1w.json": b"{}",
        f"{p}sub-02/anat/sub-02_FLAIR.nii.gz": nifti(img1),
        f"{p}sub-02/anat/sub-02_desc-lesion_mask.nii.gz": nifti(mask1),
        f"{p}sub-03/ses-1/anat/sub-03_ses-1_T1w.nii": nifti(img2, gz=False),
        f"{p}derivatives/lesions/sub-03/ses-1/anat/sub-03_ses-1_label-lesion_roi.nii.gz": nifti(
            mask2
        ),
    }


def _check_bids(resp) -> None:  # type: ignore[no-untyped-def]
    assert resp.status_code == 201, resp.text
    assert resp.json()["layout"] == "bids"
    got = {s["subject_key"]: s for s in resp.json()["data"]}
    assert sorted(got) == ["sub-01", "sub-02", "sub-03"]
    assert [got[k]["label"] for k in sorted(got)] == [0, 1, 1]
    assert [got[k]["has_mask"] for k in sorted(got)] == [False, True, True]
    assert [got[k]["split"] for k in sorted(got)] == ["train", "val", "train"]
    assert got["sub-01"]["site"] == "A" and got["sub-03"]["site"] == ""


def test_bids_zip(api: TestClient, dataset_id: int, app_env: Path) -> None:
    resp = post_import(api, dataset_id, {"bids.zip": zipped(bids_tree("ds001"))}, None)
    _check_bids(resp)
    assert files_under(app_env / "tmp") == []


def test_bids_folder_as_files_with_relative_names(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    # What a browser sends for a folder: every file, named by its webkitRelativePath.
    resp = post_import(api, dataset_id, bids_tree("ds001"), None)
    _check_bids(resp)
    assert files_under(app_env / "tmp") == []


def test_bids_subject_with_two_modalities_needs_a_choice(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    tree = bids_tree()
    tree["sub-01/anat/sub-01_FLAIR.nii.gz"] = nifti(brain_volume(seed=5)[0])
    resp = post_import(api, dataset_id, tree, None)
    assert resp.status_code == 422
    [error] = resp.json()["errors"]
    assert error["row"] == 2 and "several images" in error["problem"]
    assert_nothing_stored(api, dataset_id, app_env)
    parts = [("files", (n, d)) for n, d in tree.items()]
    chosen = api.post(f"/api/v1/datasets/{dataset_id}/imports?modality=FLAIR", files=parts)
    assert chosen.status_code == 422  # sub-03 has no FLAIR
    assert "no FLAIR image found for sub-03" in chosen.json()["detail"]
    del tree["sub-03/ses-1/anat/sub-03_ses-1_T1w.nii"]
    tree["participants.tsv"] = tree["participants.tsv"].rsplit(b"sub-03", 1)[0]
    tree["sub-02/anat/sub-02_T1w.nii.gz"] = nifti(brain_volume(seed=6)[0])
    chosen = post_import(api, dataset_id, tree, None)
    assert chosen.status_code == 422
    parts = [("files", (n, d)) for n, d in tree.items()]
    ok = api.post(f"/api/v1/datasets/{dataset_id}/imports?modality=FLAIR", files=parts)
    assert ok.status_code == 201, ok.text


def test_deidentification_keeps_voxels_and_drops_extensions(
    api: TestClient, dataset_id: int
) -> None:
    image, _ = brain_volume(seed=3)
    img = nib.Nifti2Image(image[..., None], AFFINE)  # NIfTI-2, 4D with one volume
    img.header["descrip"] = b"Jane Doe"
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"patient: Jane Doe"))
    files = {"a.nii": img.to_bytes()}
    manifest = ("m.csv", table([["subject", "image", "label"], ["s1", "a.nii", "0"]]))
    resp = post_import(api, dataset_id, files, manifest)
    assert resp.status_code == 201, resp.text
    subject = resp.json()["data"][0]
    assert subject["shape"] == [16, 20, 16]
    raw = api.get(f"/api/v1/subjects/{subject['id']}/image.nii.gz").content
    stored = nib.Nifti2Image.from_bytes(gzip.decompress(raw))
    assert stored.shape == (16, 20, 16) and len(stored.header.extensions) == 0
    assert b"Jane" not in gzip.decompress(raw)
    np.testing.assert_array_equal(stored.get_fdata(), image)
    np.testing.assert_allclose(stored.affine, AFFINE)


# --------------------------------------------------------------------------- chunked uploads


def _cut_chunk(app, token: str, upload_id: str, start: int, data: bytes, total: int, cut: int):  # type: ignore[no-untyped-def]
    """Send a chunk whose connection drops after ``cut`` bytes (an ASGI disconnect)."""

    async def run() -> list[dict]:
        messages: list[dict] = []
        pieces = [
            {"type": "http.request", "body": data[:cut], "more_body": True},
            {"type": "http.disconnect"},
        ]

        async def receive() -> dict:
            return pieces.pop(0) if len(pieces) > 1 else pieces[0]

        async def send(message: dict) -> None:
            messages.append(message)

        end = start + len(data) - 1
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "PUT",
            "scheme": "http",
            "path": f"/api/v1/uploads/{upload_id}",
            "raw_path": f"/api/v1/uploads/{upload_id}".encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"authorization", f"Bearer {token}".encode()),
                (b"content-range", f"bytes {start}-{end}/{total}".encode()),
                (b"content-length", str(len(data)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        await app(scope, receive, send)
        return messages

    return asyncio.run(run())


def upload_file(api: TestClient, project_id: int, name: str, data: bytes) -> str:
    created = api.post(
        "/api/v1/uploads", json={"project_id": project_id, "filename": name, "size": len(data)}
    )
    assert created.status_code == 201, created.text
    upload_id = created.json()["id"]
    resp = api.put(f"/api/v1/uploads/{upload_id}?offset=0", content=data)
    assert resp.status_code == 200 and resp.json()["status"] == "complete", resp.text
    return upload_id


def test_chunked_upload_resumes_after_a_cut_then_imports(
    api: TestClient, dataset_id: int, project_id: int, app_env: Path
) -> None:
    image, mask = brain_volume((40, 48, 40), seed=4, lesion=True)
    data = nifti(image.astype(np.float64), gz=False)  # ~600 kB, sent in three goes
    size = len(data)
    created = api.post(
        "/api/v1/uploads", json={"project_id": project_id, "filename": "big.nii", "size": size}
    )
    assert created.status_code == 201 and created.json()["received"] == 0
    upload_id = created.json()["id"]
    first = 200_000
    resp = api.put(
        f"/api/v1/uploads/{upload_id}",
        content=data[:first],
        headers={"Content-Range": f"bytes 0-{first - 1}/{size}"},
    )
    assert resp.status_code == 200 and resp.json()["received"] == first
    # The second chunk's connection drops after 150 kB: what arrived is kept.
    token = api.headers["Authorization"].split()[1]
    _cut_chunk(api.app, token, upload_id, first, data[first:], size, cut=150_000)
    assert api.get(f"/api/v1/uploads/{upload_id}").json()["received"] == first + 150_000
    head = api.head(f"/api/v1/uploads/{upload_id}")
    received = int(head.headers["Upload-Offset"])
    assert received == first + 150_000 and int(head.headers["Upload-Length"]) == size
    # A chunk past what arrived is refused: the client must resume at `received`.
    gap = api.put(f"/api/v1/uploads/{upload_id}?offset={received + 10}", content=b"x")
    assert gap.status_code == 409 and str(received) in gap.json()["detail"]
    rest = api.put(f"/api/v1/uploads/{upload_id}?offset={received}", content=data[received:])
    assert rest.json()["status"] == "complete" and rest.json()["received"] == size
    listed = api.get("/api/v1/uploads").json()
    assert [u["id"] for u in listed["data"]] == [upload_id]

    mask_id = upload_file(api, project_id, "big_mask.nii.gz", nifti(mask))
    rows = [["subject", "image", "mask", "label"], ["big", "big.nii", "big_mask.nii.gz", "1"]]
    manifest_id = upload_file(api, project_id, "manifest.csv", table(rows))
    resp = api.post(
        f"/api/v1/datasets/{dataset_id}/imports",
        json={"upload_ids": [upload_id, mask_id, manifest_id]},
    )
    assert resp.status_code == 201, resp.text
    stored = api.get(f"/api/v1/subjects/{resp.json()['data'][0]['id']}/image.nii.gz")
    got = nib.Nifti1Image.from_bytes(gzip.decompress(stored.content)).get_fdata()
    np.testing.assert_array_equal(got, image.astype(np.float64))
    # The uploads were used up: no row, no part file.
    assert api.get(f"/api/v1/uploads/{upload_id}").status_code == 404
    assert files_under(app_env / "tmp") == []


def test_chunk_limits_and_a_failed_import_keeps_the_uploads(
    api: TestClient, dataset_id: int, project_id: int, app_env: Path
) -> None:
    from backend.core.config import get_settings

    limit = get_settings().max_upload_bytes
    too_big = api.post(
        "/api/v1/uploads", json={"project_id": project_id, "filename": "a.nii", "size": limit + 1}
    )
    assert too_big.status_code == 413
    slip = api.post(
        "/api/v1/uploads", json={"project_id": project_id, "filename": "../a.nii", "size": 10}
    )
    assert slip.status_code == 422
    upload_id = api.post(
        "/api/v1/uploads", json={"project_id": project_id, "filename": "a.nii", "size": 10}
    ).json()["id"]
    over = api.put(f"/api/v1/uploads/{upload_id}?offset=0", content=b"x" * 11)
    assert over.status_code == 413
    assert api.get(f"/api/v1/uploads/{upload_id}").json()["received"] == 0
    assert api.put(f"/api/v1/uploads/{upload_id}", content=b"x").status_code == 422  # no offset
    api.put(f"/api/v1/uploads/{upload_id}?offset=0", content=b"not nifti!")
    manifest_id = upload_file(
        api, project_id, "manifest.csv", table([["subject", "image", "label"], ["a", "a.nii", "0"]])
    )
    resp = api.post(
        f"/api/v1/datasets/{dataset_id}/imports", json={"upload_ids": [upload_id, manifest_id]}
    )
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["file"] == "a.nii"
    assert api.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["count"] == 0
    # The uploads stay so that a corrected manifest needs no second transfer of large files.
    assert len(files_under(app_env / "tmp")) == 2
    for uid in (upload_id, manifest_id):
        assert api.delete(f"/api/v1/uploads/{uid}").status_code == 204
    assert_nothing_stored(api, dataset_id, app_env)


def test_cancelled_upload_is_deleted_and_an_unfinished_one_is_listed_to_resume(
    api: TestClient, project_id: int, app_env: Path
) -> None:
    """The browser's cancel (DELETE mid-way) and resume (GET /uploads, then PUT from received)."""
    data = bytes(range(256)) * 400  # 102400 bytes
    ids = []
    for name in ("cancel-me.nii", "resume-me.nii"):
        created = api.post(
            "/api/v1/uploads",
            json={"project_id": project_id, "filename": name, "size": len(data)},
        )
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
        half = api.put(
            f"/api/v1/uploads/{ids[-1]}",
            content=data[:40_000],
            headers={"Content-Range": f"bytes 0-39999/{len(data)}"},
        )
        assert half.json()["received"] == 40_000
    cancel_id, resume_id = ids
    assert len(files_under(app_env / "tmp")) == 2

    assert api.delete(f"/api/v1/uploads/{cancel_id}").status_code == 204
    assert api.get(f"/api/v1/uploads/{cancel_id}").status_code == 404
    assert api.put(f"/api/v1/uploads/{cancel_id}?offset=40000", content=b"x").status_code == 404
    assert api.delete(f"/api/v1/uploads/{cancel_id}").status_code == 404
    assert len(files_under(app_env / "tmp")) == 1  # its bytes are gone

    listed = api.get("/api/v1/uploads", params={"project_id": project_id}).json()["data"]
    assert [(u["id"], u["filename"], u["received"], u["status"]) for u in listed] == [
        (resume_id, "resume-me.nii", 40_000, "open")
    ]
    assert api.get("/api/v1/uploads", params={"project_id": project_id + 999}).json()["count"] == 0
    rest = api.put(
        f"/api/v1/uploads/{resume_id}",
        content=data[40_000:],
        headers={"Content-Range": f"bytes 40000-{len(data) - 1}/{len(data)}"},
    )
    assert rest.json()["status"] == "complete" and rest.json()["received"] == len(data)
    part = files_under(app_env / "tmp")
    assert len(part) == 1 and part[0].read_bytes() == data


def test_a_zip_sent_as_a_chunked_upload_is_imported(
    api: TestClient, dataset_id: int, project_id: int, app_env: Path
) -> None:
    archive = zipped({**subject_files(2), "manifest.csv": table(manifest_rows(2))})
    upload_id = upload_file(api, project_id, "dataset.zip", archive)
    resp = api.post(f"/api/v1/datasets/{dataset_id}/imports", json={"upload_ids": [upload_id]})
    assert resp.status_code == 201, resp.text
    assert resp.json()["count"] == 2
    assert files_under(app_env / "tmp") == []


def test_uploads_untouched_for_a_day_are_swept(
    api: TestClient, project_id: int, app_env: Path
) -> None:
    from datetime import timedelta

    from backend.core.db import session_scope
    from backend.models import UploadSession
    from backend.models.base import utcnow

    old = upload_file(api, project_id, "old.nii.gz", b"x" * 10)
    with session_scope() as session:
        session.get(UploadSession, old).updated_at = utcnow() - timedelta(hours=25)
    fresh = upload_file(api, project_id, "fresh.nii.gz", b"x" * 10)
    assert api.get(f"/api/v1/uploads/{old}").status_code == 404
    assert api.get(f"/api/v1/uploads/{fresh}").status_code == 200
    assert [p.name for p in files_under(app_env / "tmp")] == [f"{fresh}.part"]


# --------------------------------------------------------------------------- refusals


def _nan_volume() -> bytes:
    image, _ = brain_volume()
    image[3, 3, 3] = np.nan
    return nifti(image)


def _truncated() -> bytes:
    data = nifti(brain_volume()[0])
    return data[: len(data) // 2]


def _with_image(name: str, data: bytes, label: str = "0") -> tuple[dict[str, bytes], bytes]:
    files = subject_files(2)
    files[name] = data
    rows = manifest_rows(2) + [["bad", name, "", label, "", "", ""]]
    return files, table(rows)


Case = Callable[[], tuple[dict[str, bytes], bytes]]


def _mismatched_mask() -> tuple[dict[str, bytes], bytes]:
    files = subject_files(2)
    files["sub-01_mask.nii.gz"] = nifti(brain_volume((16, 20, 15), lesion=True)[1])
    return files, table(manifest_rows(2))


def _duplicate_subject() -> tuple[dict[str, bytes], bytes]:
    rows = manifest_rows(2)
    rows.append(["sub-00", "sub-01.nii.gz", "", "0", "", "", ""])
    return subject_files(2), table(rows)


def _missing_file() -> tuple[dict[str, bytes], bytes]:
    rows = manifest_rows(2) + [["sub-09", "sub-09.nii.gz", "", "0", "", "", ""]]
    return subject_files(2), table(rows)


# (name, case, file named in the error, row, words of the problem)
REFUSALS: list[tuple[str, Case, str, int | None, str]] = [
    ("corrupt gzip", lambda: _with_image("bad.nii.gz", _truncated()), "bad.nii.gz", 4, "corrupt"),
    (
        "4D with several volumes",
        lambda: _with_image("bad.nii.gz", nifti(np.zeros((8, 8, 8, 3), np.float32))),
        "bad.nii.gz",
        4,
        "4D image with 3 volumes",
    ),
    ("NaN voxels", lambda: _with_image("bad.nii.gz", _nan_volume()), "bad.nii.gz", 4, "NaN"),
    ("mismatched mask", _mismatched_mask, "sub-01_mask.nii.gz", 3, "differs from image shape"),
    ("duplicate subject", _duplicate_subject, "manifest.csv", 4, "'sub-00' also on row 2"),
    ("missing file", _missing_file, "sub-09.nii.gz", 4, "no uploaded file has this name"),
    (
        "bad label",
        lambda: _with_image("ok.nii.gz", nifti(brain_volume()[0]), label="maybe"),
        "manifest.csv",
        4,
        "label 'maybe'",
    ),
    (
        "not NIfTI",
        lambda: _with_image("notes.nii.gz", b"patient notes"),
        "notes.nii.gz",
        4,
        "NIfTI",
    ),
]


@pytest.mark.parametrize(
    ("name", "case", "file", "row", "words"), REFUSALS, ids=[r[0] for r in REFUSALS]
)
def test_refused_manifest_import_names_the_problem_and_stores_nothing(
    api: TestClient,
    dataset_id: int,
    app_env: Path,
    name: str,
    case: Case,
    file: str,
    row: int | None,
    words: str,
) -> None:
    files, manifest = case()
    resp = post_import(api, dataset_id, files, ("manifest.csv", manifest))
    assert 400 <= resp.status_code < 500, resp.text
    body = resp.json()
    assert isinstance(body["detail"], str) and words in body["detail"]
    assert any(
        e["file"] == file and e["row"] == row and words in e["problem"] for e in body["errors"]
    ), body
    assert_nothing_stored(api, dataset_id, app_env)


def test_every_problem_is_named_at_once(api: TestClient, dataset_id: int, app_env: Path) -> None:
    files = subject_files(2)
    files["nan.nii.gz"] = _nan_volume()
    rows = manifest_rows(2) + [
        ["s-nan", "nan.nii.gz", "", "1", "", "", ""],
        ["s-label", "sub-00.nii.gz", "", "7", "", "", ""],
        ["s-split", "sub-01.nii.gz", "", "1", "", "holdout", ""],
        ["s-gone", "gone.nii.gz", "", "1", "", "", ""],
        ["bad key!", "x.nii.gz", "", "1", "", "", ""],
    ]
    resp = post_import(api, dataset_id, files, ("manifest.csv", table(rows)))
    assert resp.status_code == 422
    errors = {(e["file"], e["row"]) for e in resp.json()["errors"]}
    assert {
        ("nan.nii.gz", 4),
        ("manifest.csv", 5),
        ("manifest.csv", 6),
        ("gone.nii.gz", 7),
        ("manifest.csv", 8),
    } <= errors
    assert "and 2 more" in resp.json()["detail"] or len(errors) <= 3
    assert_nothing_stored(api, dataset_id, app_env)


def test_a_subject_already_in_the_dataset_is_a_conflict(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    manifest = ("manifest.csv", table(manifest_rows(2)))
    assert post_import(api, dataset_id, subject_files(2), manifest).status_code == 201
    again = post_import(api, dataset_id, subject_files(2), manifest)
    assert again.status_code == 409
    assert {e["row"] for e in again.json()["errors"]} == {2, 3}
    assert api.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["count"] == 2
    assert files_under(app_env / "tmp") == []


def _zip_with(entry: zipfile.ZipInfo | str, data: bytes) -> bytes:
    files = subject_files(2)
    entries = {**files, "manifest.csv": table(manifest_rows(2))}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in entries.items():
            zf.writestr(name, content)
        zf.writestr(entry, data)
    return buf.getvalue()


def _symlink_entry() -> bytes:
    info = zipfile.ZipInfo("sub-02.nii.gz")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return _zip_with(info, b"/etc/passwd")


def _non_utf8_name() -> bytes:
    archive = _zip_with("notes-\u00e9t\u00e9.txt", b"x")  # stored with the UTF-8 flag
    return archive.replace("\u00e9".encode(), b"\xe9\xe9")  # now invalid UTF-8


ZIP_REFUSALS = [
    ("zip slip", lambda: _zip_with("../../evil.nii.gz", b"x"), "../../evil.nii.gz", "'..'"),
    ("absolute path", lambda: _zip_with("/etc/cron.d/evil", b"x"), "/etc/cron.d/evil", "absolute"),
    ("symlink", _symlink_entry, "sub-02.nii.gz", "symbolic link"),
    ("nested archive", lambda: _zip_with("more.zip", zipped({"a": b"b"})), "more.zip", "inside"),
    ("non-UTF-8 name", _non_utf8_name, "archive.zip", "UTF-8"),
]


@pytest.mark.parametrize(
    ("name", "build", "file", "words"), ZIP_REFUSALS, ids=[r[0] for r in ZIP_REFUSALS]
)
def test_unsafe_zip_is_refused(
    api: TestClient,
    dataset_id: int,
    app_env: Path,
    name: str,
    build: Callable[[], bytes],
    file: str,
    words: str,
) -> None:
    resp = post_import(api, dataset_id, {"archive.zip": build()}, None)
    assert 400 <= resp.status_code < 500, resp.text
    assert any(e["file"] == file and words in e["problem"] for e in resp.json()["errors"])
    assert_nothing_stored(api, dataset_id, app_env)


def _bomb(declared: int) -> bytes:
    """A manifest whose image is ``declared`` bytes of zeros, compressed to almost nothing."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.csv", table([["subject", "image", "label"], ["s", "s.nii", "0"]]))
        with zf.open("s.nii", "w", force_zip64=True) as entry:
            zeros = bytes(1024 * 1024)
            for _ in range(declared // len(zeros)):
                entry.write(zeros)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("declared", "words"),
    [(200 * 1024**2, "compressed"), (8 * 1024**2, "over the limit")],
    ids=["ratio", "declared size"],
)
def test_zip_bomb_stops_at_the_limits(
    api: TestClient,
    dataset_id: int,
    app_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    declared: int,
    words: str,
) -> None:
    from backend.core.config import get_settings

    monkeypatch.setattr(get_settings(), "max_upload_bytes", 1024**2)
    archive = _bomb(declared)
    assert len(archive) < 1024**2
    resp = post_import(api, dataset_id, {"bomb.zip": archive}, None)
    assert resp.status_code == 413, resp.text
    assert any(e["file"] == "s.nii" and words in e["problem"] for e in resp.json()["errors"])
    assert_nothing_stored(api, dataset_id, app_env)


def test_zip_whose_header_lies_about_a_size_is_refused(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    image = nifti(brain_volume()[0], gz=False)
    archive = bytearray(
        zipped(
            {
                "manifest.csv": table([["subject", "image", "label"], ["s", "s.nii", "0"]]),
                "s.nii": image,
            }
        )
    )
    with zipfile.ZipFile(io.BytesIO(bytes(archive))) as zf:
        info = zf.getinfo("s.nii")
    # Claim a tenth of the real size, in the local header and in the central directory.
    real = info.file_size.to_bytes(4, "little")
    assert archive.count(real) == 2
    archive = archive.replace(real, (info.file_size // 10).to_bytes(4, "little"))
    resp = post_import(api, dataset_id, {"liar.zip": bytes(archive)}, None)
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.json()["errors"][0]["file"] == "s.nii"
    assert_nothing_stored(api, dataset_id, app_env)


def test_multipart_file_over_the_limit_stops_the_request(
    api: TestClient, dataset_id: int, app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.core.config import get_settings

    monkeypatch.setattr(get_settings(), "max_upload_bytes", 100_000)
    files = {"big.nii": nifti(np.zeros((64, 64, 16), np.float32), gz=False)}
    manifest = ("manifest.csv", table([["subject", "image", "label"], ["s", "big.nii", "0"]]))
    resp = post_import(api, dataset_id, files, manifest)
    assert resp.status_code == 413
    assert resp.json()["errors"][0]["file"] == "big.nii"
    assert_nothing_stored(api, dataset_id, app_env)


def test_no_manifest_and_bad_bodies(api: TestClient, dataset_id: int, app_env: Path) -> None:
    resp = post_import(api, dataset_id, subject_files(1), None)
    assert resp.status_code == 422 and "no manifest" in resp.json()["detail"]
    resp = api.post(
        f"/api/v1/datasets/{dataset_id}/imports",
        content=b"x",
        headers={"Content-Type": "text/plain"},
    )
    assert resp.status_code == 422 and resp.json()["errors"]
    resp = api.post(f"/api/v1/datasets/{dataset_id}/imports", json={"upload_ids": ["nope"]})
    assert resp.status_code == 422 and resp.json()["errors"][0]["file"] == "nope"
    tar = post_import(api, dataset_id, {"data.tar.gz": b"x"}, None)
    assert tar.status_code == 422 and "only zip" in tar.json()["detail"]
    assert_nothing_stored(api, dataset_id, app_env)


# --------------------------------------------------------------------------- permissions


def _client_for(api: TestClient, username: str, project: int, role: str | None) -> TestClient:
    password = f"{username}-password-1"
    created = api.post(
        "/api/v1/users", json={"username": username, "password": password, "role": "researcher"}
    )
    assert created.status_code == 201, created.text
    if role is not None:
        member = api.put(
            f"/api/v1/projects/{project}/members", json={"username": username, "role": role}
        )
        assert member.status_code == 200, member.text
    token = api.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    ).json()["access_token"]
    api.cookies.clear()
    return TestClient(api.app, headers={"Authorization": f"Bearer {token}"})


def test_only_writers_import_and_only_owners_touch_uploads(
    api: TestClient, dataset_id: int, project_id: int, app_env: Path
) -> None:
    clinician = _client_for(api, "doc", project_id, "clinician")
    outsider = _client_for(api, "stranger", project_id, None)
    researcher = _client_for(api, "res", project_id, "researcher")
    manifest = ("manifest.csv", table(manifest_rows(2)))
    assert post_import(clinician, dataset_id, subject_files(2), manifest).status_code == 403
    assert post_import(outsider, dataset_id, subject_files(2), manifest).status_code == 404
    new = {"project_id": project_id, "filename": "a.nii.gz", "size": 10}
    assert clinician.post("/api/v1/uploads", json=new).status_code == 403
    assert outsider.post("/api/v1/uploads", json=new).status_code == 404

    mine = upload_file(api, project_id, "sub-00.nii.gz", subject_files(1)["sub-00.nii.gz"])
    for other in (researcher, clinician, outsider):
        assert other.get(f"/api/v1/uploads/{mine}").status_code == 404
        assert other.head(f"/api/v1/uploads/{mine}").status_code == 404
        assert other.put(f"/api/v1/uploads/{mine}?offset=0", content=b"x").status_code == 404
        assert other.delete(f"/api/v1/uploads/{mine}").status_code == 404
        assert other.get("/api/v1/uploads").json()["count"] == 0
    # Another writer cannot import someone else's upload either.
    stolen = researcher.post(f"/api/v1/datasets/{dataset_id}/imports", json={"upload_ids": [mine]})
    assert stolen.status_code == 422 and stolen.json()["errors"][0]["problem"] == "no such upload"
    assert api.get(f"/api/v1/uploads/{mine}").json()["status"] == "complete"
    assert api.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["count"] == 0


# --------------------------------------------------------------------------- benchmark smoke


def test_upload_benchmark_quick_runs(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\n<!-- other:begin -->\nkept\n<!-- other:end -->\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench_upload", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "<!-- upload:begin -->" in text and "<!-- upload:end -->" in text
    assert "MB/s" in text and "kept" in text
    # The import, measured in the same run: its ratio to the upload and both of its goals.
    assert "| ratio to upload |" in text and "| import (validate, de-identify, store" in text
    assert "of the upload's throughput: " in text and "during the import: " in text


def test_skip_invalid_stores_the_valid_rows_and_reports_the_others(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    files = subject_files(2)
    files["nan.nii.gz"] = _nan_volume()
    rows = manifest_rows(2) + [
        ["s-nan", "nan.nii.gz", "", "1", "", "", ""],
        ["s-gone", "gone.nii.gz", "", "1", "", "", ""],
    ]
    manifest = ("manifest.csv", table(rows))
    # By default a bad row refuses the whole import.
    assert post_import(api, dataset_id, files, manifest).status_code == 422
    assert_nothing_stored(api, dataset_id, app_env)

    parts: Files = [("files", (name, data)) for name, data in files.items()]
    parts.append(("manifest", manifest))
    resp = api.post(
        f"/api/v1/datasets/{dataset_id}/imports", files=parts, data={"skip_invalid": "true"}
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert sorted(s["subject_key"] for s in body["data"]) == ["sub-00", "sub-01"]
    assert {(e["file"], e["row"]) for e in body["rejected"]} == {
        ("nan.nii.gz", 4),
        ("gone.nii.gz", 5),
    }
    keys = [
        s["subject_key"] for s in api.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["data"]
    ]
    assert sorted(keys) == ["sub-00", "sub-01"]


def test_skip_invalid_still_refuses_table_problems_and_all_bad_tables(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    files = {"nan.nii.gz": _nan_volume()}
    rows = [HEADER, ["s-nan", "nan.nii.gz", "", "1", "", "", ""]]
    parts: Files = [("files", (name, data)) for name, data in files.items()]
    parts.append(("manifest", ("manifest.csv", table(rows))))
    resp = api.post(
        f"/api/v1/datasets/{dataset_id}/imports", files=parts, data={"skip_invalid": "true"}
    )
    assert resp.status_code == 422, resp.text  # no valid row: nothing to import
    assert_nothing_stored(api, dataset_id, app_env)
