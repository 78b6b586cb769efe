"""The hostile-input corpus (tests/reliability/hostile_corpus.py) through every upload path.

Volumes go through the single-subject upload, a manifest import, a zip import, a BIDS
import, a chunked upload imported by id, and a review's correction. A valid file is stored
with the values a reader sees in it and without its identifying text; a hostile one gets a
4xx naming the problem, never a 5xx, and leaves nothing stored: no subject row, no file
under datasets/, nothing under tmp/, no correction. Damaged archives go through the zip
import, sent whole and as a chunked upload.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from tests.helpers import brain_volume
from tests.reliability.hostile_corpus import (
    AFFINE,
    ARCHIVES,
    SHAPE,
    VOLUMES,
    Archive,
    Volume,
    fdata,
    zipped,
)

pytestmark = pytest.mark.parametrize("app_env", ["sqlite"], indirect=True)

MANIFEST = "subject,image,label\n{key},{name},1\n"


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _name(data: bytes) -> str:
    return "img.nii.gz" if data[:2] == b"\x1f\x8b" else "img.nii"


def _problems(resp: Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text
    text = str(body.get("detail", ""))
    for error in body.get("errors", []) or []:
        text += f" | {error.get('file')}: {error.get('problem')}"
    return text


# --------------------------------------------------------------------------- the paths


def _single(api: TestClient, dataset: int, key: str, data: bytes) -> Response:
    return api.post(
        f"/api/v1/datasets/{dataset}/subjects",
        data={"subject_key": key, "label": "1"},
        files={"image": (_name(data), data)},
    )


def _manifest(api: TestClient, dataset: int, key: str, data: bytes) -> Response:
    manifest = MANIFEST.format(key=key, name=_name(data)).encode()
    return api.post(
        f"/api/v1/datasets/{dataset}/imports",
        files=[("files", (_name(data), data)), ("manifest", ("manifest.csv", manifest))],
    )


def _zip(api: TestClient, dataset: int, key: str, data: bytes) -> Response:
    archive = zipped(
        {_name(data): data, "manifest.csv": MANIFEST.format(key=key, name=_name(data)).encode()}
    )
    return api.post(f"/api/v1/datasets/{dataset}/imports", files=[("files", ("a.zip", archive))])


def _bids(api: TestClient, dataset: int, key: str, data: bytes) -> Response:
    sub = "sub-" + re.sub(r"[^A-Za-z0-9]", "", key)
    suffix = ".nii.gz" if data[:2] == b"\x1f\x8b" else ".nii"
    files = {
        "participants.tsv": f"participant_id\tgroup\n{sub}\tpatient\n".encode(),
        f"{sub}/anat/{sub}_T1w{suffix}": data,
    }
    return api.post(
        f"/api/v1/datasets/{dataset}/imports",
        files=[("files", (name, body)) for name, body in files.items()],
    )


def _chunked_files(api: TestClient, dataset: int, files: dict[str, bytes]) -> Response:
    """Each file as a resumable upload (two chunks), imported by id; the uploads are then
    deleted, so that a refused import leaves nothing either."""
    project = api.get(f"/api/v1/datasets/{dataset}").json()["project_id"]
    ids = []
    for name, body in files.items():
        created = api.post(
            "/api/v1/uploads", json={"project_id": project, "filename": name, "size": len(body)}
        )
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
        half = len(body) // 2
        for start, piece in ((0, body[:half]), (half, body[half:])):
            sent = api.put(f"/api/v1/uploads/{ids[-1]}?offset={start}", content=piece)
            assert sent.status_code == 200, sent.text
    resp = api.post(f"/api/v1/datasets/{dataset}/imports", json={"upload_ids": ids})
    for upload in ids:
        api.delete(f"/api/v1/uploads/{upload}")
    return resp


def _chunked(api: TestClient, dataset: int, key: str, data: bytes) -> Response:
    manifest = MANIFEST.format(key=key, name=_name(data)).encode()
    return _chunked_files(api, dataset, {_name(data): data, "manifest.csv": manifest})


SUBJECT_PATHS: dict[str, Callable[[TestClient, int, str, bytes], Response]] = {
    "single upload": _single,
    "manifest import": _manifest,
    "zip import": _zip,
    "BIDS import": _bids,
    "chunked upload": _chunked,
}


# --------------------------------------------------------------------------- fixtures


@dataclass
class Review:
    """A map of a subject on the corpus grid, and a way to start a fresh review of it."""

    attribution_id: int

    def new(self, api: TestClient) -> int:
        resp = api.post(
            "/api/v1/reviews",
            json={"attribution_id": self.attribution_id, "rating": 3, "trust": True},
        )
        assert resp.status_code == 201, resp.text
        return int(resp.json()["id"])


@pytest.fixture
def review(api: TestClient, app_env: Path) -> Review:
    from attrivue_core.io import save_nifti
    from backend.core.db import session_scope
    from backend.models import AttributionMap, Run
    from backend.storage import get_storage

    dataset = api.post("/api/v1/datasets", json={"name": "corrections"}).json()["id"]
    image = _image()
    sent = _single(api, dataset, "grid", gzip.compress(_nifti1(image)))
    assert sent.status_code == 201, sent.text
    run = api.post("/api/v1/runs", json={"dataset_id": dataset, "name": "r", "config": {}})
    assert run.status_code == 201, run.text
    with session_scope() as session:
        session.get(Run, run.json()["id"]).status = "succeeded"
        row = AttributionMap(
            run_id=run.json()["id"],
            subject_id=sent.json()["id"],
            method="saliency",
            params={},
            status="succeeded",
        )
        session.add(row)
        session.flush()
        path = get_storage().map_path(row.run_id, row.id)
        save_nifti(path, image, AFFINE)
        row.path = get_storage().relative(path)
        return Review(row.id)


def _nifti1(data: np.ndarray) -> bytes:
    import nibabel as nib

    return nib.Nifti1Image(data.astype(np.float32), AFFINE).to_bytes()


def _image() -> np.ndarray:
    """Intensities within what int16 * 0.001 can hold."""
    return (brain_volume(SHAPE, seed=16)[0] / 10).astype(np.float32)


def _labels() -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:5, 3:6, 2:4] = 1
    labels[7:9, 8:10, 5:7] = 2
    return labels


# --------------------------------------------------------------------------- the tests


def test_hostile_volumes_through_every_subject_path(api: TestClient, app_env: Path) -> None:
    failures: list[str] = []
    for n, case in enumerate(VOLUMES):
        data = case.build(_image())
        dataset = api.post("/api/v1/datasets", json={"name": f"corpus {n}"}).json()["id"]
        for m, (path, send) in enumerate(SUBJECT_PATHS.items()):
            where = f"{case.name} via {path}"
            resp = send(api, dataset, f"c{n}p{m}", data)
            failures += _check_subject(api, app_env, case, data, dataset, resp, where)
    assert not failures, "\n".join(failures)


def _check_subject(
    api: TestClient,
    app_env: Path,
    case: Volume,
    data: bytes,
    dataset: int,
    resp: Response,
    where: str,
) -> list[str]:
    if resp.status_code >= 500:
        return [f"{where}: {resp.status_code} {resp.text[:300]}"]
    if case.refusal is None:
        if resp.status_code != 201:
            return [f"{where}: refused a valid file: {resp.status_code} {_problems(resp)}"]
        body = resp.json()
        subject = body["data"][0]["id"] if "data" in body else body["id"]
        stored = api.get(f"/api/v1/subjects/{subject}/image.nii.gz").content
        problems = []
        if not np.allclose(fdata(stored), fdata(data), rtol=1e-6, atol=1e-9):
            problems.append(f"{where}: the stored values differ from the sent ones")
        if case.text and case.text in gzip.decompress(stored):
            problems.append(f"{where}: identifying text was stored")
        return problems
    problems = []
    if not (400 <= resp.status_code < 500 and re.search(case.refusal, _problems(resp), re.I)):
        problems.append(
            f"{where}: expected a 4xx matching {case.refusal!r}: "
            f"{resp.status_code} {_problems(resp)[:300]}"
        )
    if api.get(f"/api/v1/datasets/{dataset}/subjects").json()["count"] != 0:
        problems.append(f"{where}: a subject row was stored")
    if _files_under(app_env / "datasets" / str(dataset)):
        problems.append(f"{where}: files were stored under datasets/")
    if _files_under(app_env / "tmp"):
        problems.append(f"{where}: files stayed under tmp/: {_files_under(app_env / 'tmp')}")
    return problems


def test_hostile_volumes_as_review_corrections(
    api: TestClient, app_env: Path, review: Review
) -> None:
    failures: list[str] = []
    for case in VOLUMES:
        data = case.build(_labels().astype(np.float32))
        review_id = review.new(api)
        resp = api.put(
            f"/api/v1/reviews/{review_id}/correction",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        where = f"{case.name} as a correction"
        stored = api.get(f"/api/v1/reviews/{review_id}/correction.nii.gz")
        if resp.status_code >= 500:
            failures.append(f"{where}: {resp.status_code} {resp.text[:300]}")
        elif case.refusal is None:
            if resp.status_code != 200:
                failures.append(f"{where}: refused: {resp.status_code} {_problems(resp)}")
                continue
            if not np.array_equal(fdata(stored.content), np.rint(fdata(data))):
                failures.append(f"{where}: the stored labels differ from the sent ones")
            if case.text and case.text in gzip.decompress(stored.content):
                failures.append(f"{where}: identifying text was stored")
        else:
            if not (400 <= resp.status_code < 500 and re.search(case.refusal, resp.text, re.I)):
                failures.append(f"{where}: {resp.status_code} {resp.text[:300]}")
            if stored.status_code != 404:
                failures.append(f"{where}: a correction was stored")
        if _files_under(app_env / "tmp"):
            failures.append(f"{where}: files stayed under tmp/")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("archive", ARCHIVES, ids=[a.name for a in ARCHIVES])
def test_damaged_archives_are_refused(api: TestClient, app_env: Path, archive: Archive) -> None:
    image = gzip.compress(_nifti1(_image()))
    valid = zipped(
        {"img.nii.gz": image, "manifest.csv": MANIFEST.format(key="z", name="img.nii.gz").encode()}
    )
    data = archive.build(valid)
    dataset = api.post("/api/v1/datasets", json={"name": "archives"}).json()["id"]
    answers = {
        "zip import": api.post(
            f"/api/v1/datasets/{dataset}/imports", files=[("files", ("a.zip", data))]
        ),
        "chunked zip": _chunked_files(api, dataset, {"a.zip": data}),
    }
    for path, resp in answers.items():
        assert 400 <= resp.status_code < 500, f"{path}: {resp.status_code} {resp.text[:300]}"
        assert re.search(archive.refusal, _problems(resp), re.I), f"{path}: {_problems(resp)}"
    assert api.get(f"/api/v1/datasets/{dataset}/subjects").json()["count"] == 0
    assert _files_under(app_env / "datasets") == []
    assert _files_under(app_env / "tmp") == []
