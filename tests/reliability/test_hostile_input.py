"""Hostile input: a corpus of malformed volumes sent through both upload paths (one subject,
and a manifest import), and malformed JSON bodies on every JSON route.

Each case must get a 4xx whose message names the problem, leave nothing stored (no subject
row, no file under datasets/ or tmp/), and leave the server answering. The archive cases (zip
slip, absolute paths, symlinks, nested archives, non-UTF-8 names, zip bombs, lying headers)
are in tests/backend/test_uploads.py; docs/reliability.md lists both.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.helpers import AFFINE, brain_volume

SHAPE = (16, 20, 16)
# Validation happens before any database write, so one flavour suffices here (the import and
# upload tests of tests/backend run on PostgreSQL too).
pytestmark = pytest.mark.parametrize("app_env", ["sqlite"], indirect=True)


def _nifti(data: np.ndarray, *, gz: bool = True, affine: np.ndarray = AFFINE) -> bytes:
    raw = nib.Nifti1Image(np.asarray(data), affine).to_bytes()
    return gzip.compress(raw, compresslevel=1) if gz else raw


def _image() -> np.ndarray:
    return brain_volume(SHAPE)[0]


def _absurd_dims() -> bytes:
    """A valid header that claims 30000^3 voxels (a 100 TB volume) over a few bytes."""
    raw = bytearray(_nifti(_image(), gz=False))
    struct.pack_into("<8h", raw, 40, 3, 30000, 30000, 30000, 1, 1, 1, 1)
    return gzip.compress(bytes(raw))


def _negative_dims() -> bytes:
    raw = bytearray(_nifti(_image(), gz=False))
    struct.pack_into("<4h", raw, 40, 3, -16, 20, 16)
    return bytes(raw)


def _wrong_magic() -> bytes:
    raw = bytearray(_nifti(_image(), gz=False))
    raw[344:348] = b"abc\x00"
    return bytes(raw)


def _nifti2(data: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti2Image(data, AFFINE).to_bytes())


def _with(value: float) -> bytes:
    image = _image()
    image[3, 3, 3] = value
    return _nifti(image)


def _corrupt_gzip() -> bytes:
    data = bytearray(_nifti(_image()))
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    return bytes(data)


def _singular_affine() -> bytes:
    """An sform that maps every voxel to one point (no qform to fall back on)."""
    raw = bytearray(_nifti(_image(), gz=False))
    struct.pack_into("<2h", raw, 252, 0, 1)  # qform_code 0, sform_code 1
    struct.pack_into("<12f", raw, 280, *([0.0] * 12))  # srow_x, srow_y, srow_z
    return bytes(raw)


def _huge_zeros() -> bytes:
    """A real gzip stream of 520^3 uint8 zeros: 140 MB inflated from ~140 kB sent."""
    header = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), AFFINE).header
    header.set_data_shape((520, 520, 520))
    stream = bytearray(header.binaryblock) + bytes(4)  # vox_offset 352
    plane = bytes(520 * 520)
    compressor = zlib.compressobj(1, wbits=31)
    out = bytearray(compressor.compress(bytes(stream)))
    for _ in range(520):
        out += compressor.compress(plane)
    return bytes(out + compressor.flush())


# name, image bytes, a regular expression the 4xx's message must match
VOLUMES = [
    ("truncated gzip", lambda: _nifti(_image())[:-300], "truncated"),
    ("corrupt gzip", _corrupt_gzip, "corrupt|NaN"),
    ("not gzip at all", lambda: b"\x1f\x8b" + b"\x00" * 500, "corrupt"),
    ("truncated nifti", lambda: _nifti(_image(), gz=False)[:2000], "truncated"),
    ("wrong magic", _wrong_magic, "NIfTI"),
    ("text file", lambda: b"patient,age\nJane,52\n" * 40, "NIfTI"),
    ("empty file", lambda: b"", "empty"),
    ("absurd dims", _absurd_dims, "voxels"),
    ("gzip bomb", _huge_zeros, "voxels"),
    ("negative dims", _negative_dims, "corrupt|invalid|dimension"),
    ("4D", lambda: _nifti(np.stack([_image()] * 3, axis=-1)), "3D"),
    ("2D", lambda: _nifti(_image()[:, :, 0]), "3D"),
    ("NaN", lambda: _with(float("nan")), "NaN"),
    ("+Inf", lambda: _with(float("inf")), "Inf"),
    ("-Inf", lambda: _with(float("-inf")), "Inf"),
    ("complex voxels", lambda: _nifti(_image().astype(np.complex64)), "voxel type"),
    ("singular affine", _singular_affine, "affine"),
    ("4D NIfTI-2", lambda: _nifti2(np.stack([_image()] * 2, axis=-1)), "3D"),
]


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _assert_nothing_stored_and_up(api: TestClient, dataset_id: int, data_dir: Path) -> None:
    from backend.core.db import session_scope
    from backend.models import Subject

    with session_scope() as session:
        assert session.query(Subject).filter_by(dataset_id=dataset_id).count() == 0
    assert _files_under(data_dir / "datasets") == []
    assert _files_under(data_dir / "tmp") == []
    assert api.get("/api/v1/health").status_code == 200


@pytest.fixture
def dataset_id(api: TestClient) -> int:
    resp = api.post("/api/v1/datasets", json={"name": "hostile"})
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def _upload(api: TestClient, dataset_id: int, image: bytes, name: str = "img.nii.gz", mask=None):
    files = {"image": (name, image)}
    if mask is not None:
        files["mask"] = ("mask.nii.gz", mask)
    return api.post(
        f"/api/v1/datasets/{dataset_id}/subjects",
        data={"subject_key": "s1", "label": "1"},
        files=files,
    )


def _import(api: TestClient, dataset_id: int, image: bytes, name: str = "img.nii.gz"):
    manifest = f"subject,image,label\ns1,{name},1\n".encode()
    return api.post(
        f"/api/v1/datasets/{dataset_id}/imports",
        files=[("files", (name, image)), ("manifest", ("manifest.csv", manifest))],
    )


def _problems(resp) -> str:  # type: ignore[no-untyped-def]
    body = resp.json()
    text = str(body.get("detail", ""))
    for error in body.get("errors", []) or []:
        text += f" | {error.get('file')}: {error.get('problem')}"
    return text


def test_malformed_volumes_are_refused_on_both_paths(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    """Every case of VOLUMES, one app for all (each case is checked in full before the next)."""
    failures = []
    for name, build, words in VOLUMES:
        data = build()
        filename = "img.nii.gz" if data[:2] == b"\x1f\x8b" else "img.nii"
        for send in (_upload, _import):
            resp = send(api, dataset_id, data, filename)
            if not (400 <= resp.status_code < 500 and re.search(words, _problems(resp), re.I)):
                failures.append(f"{name} via {send.__name__}: {resp.status_code} {resp.text}")
            _assert_nothing_stored_and_up(api, dataset_id, app_env)
    assert not failures, "\n".join(failures)


def test_mask_on_another_grid_and_non_binary_mask(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    image = _nifti(_image())
    shifted = AFFINE.copy()
    shifted[0, 3] += 8.0
    cases = [
        (_nifti(np.zeros((8, 8, 8), np.uint8)), "shape .* differs"),
        (_nifti(np.zeros(SHAPE, np.uint8), affine=shifted), "grid|affine"),
        (_nifti(np.full(SHAPE, 7, np.uint8)), "only the values 0 and 1"),
    ]
    for mask, words in cases:
        resp = _upload(api, dataset_id, image, mask=mask)
        assert 400 <= resp.status_code < 500, resp.text
        assert re.search(words, _problems(resp), re.I), resp.text
        _assert_nothing_stored_and_up(api, dataset_id, app_env)


def test_oversize_file_is_refused_while_it_streams(
    api: TestClient, dataset_id: int, app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.core.config import get_settings

    monkeypatch.setattr(get_settings(), "max_upload_bytes", 50_000)
    big = _nifti(np.random.default_rng(0).normal(size=(40, 40, 40)).astype(np.float32), gz=False)
    for send in (_upload, _import):
        resp = send(api, dataset_id, big, "big.nii")
        assert resp.status_code == 413, resp.text
        assert "limit" in _problems(resp), resp.text
        _assert_nothing_stored_and_up(api, dataset_id, app_env)


def test_a_valid_nifti2_volume_is_stored_exactly(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    """NIfTI-2 is a supported format (attrivue_core.io reads both): stored, voxels unchanged."""
    image = _image()
    resp = _upload(api, dataset_id, _nifti2(image))
    assert resp.status_code == 201, resp.text
    stored = api.get(f"/api/v1/subjects/{resp.json()['id']}/image.nii.gz")
    assert stored.status_code == 200
    path = app_env / "check.nii.gz"
    path.write_bytes(stored.content)
    np.testing.assert_allclose(np.asarray(nib.load(path).dataobj), image, rtol=1e-6)


def test_hostile_file_names_store_nothing_outside_the_dataset(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    """A valid volume under hostile names (non-UTF-8, traversal, very long, NUL): stored under
    the server's own names, or refused with a 4xx; never a file outside the data directory."""
    names = ["\udcff\udcfe.nii.gz", "../../../etc/passwd", "a" * 5000 + ".nii.gz", "c\x00.nii.gz"]
    for i, name in enumerate(names):
        encoded = name.encode("utf-8", "surrogateescape")
        resp = api.post(
            f"/api/v1/datasets/{dataset_id}/subjects",
            data={"subject_key": f"s{i}", "label": "0"},
            files={"image": (encoded.decode("latin-1"), _nifti(_image()))},
        )
        assert resp.status_code in (201, 400, 413, 422), f"{name[:20]!r}: {resp.text}"
        for path in _files_under(app_env):
            assert path.resolve().is_relative_to(app_env.resolve())
            assert "passwd" not in path.name and "\x00" not in str(path)
        assert api.get("/api/v1/health").status_code == 200


# --------------------------------------------------------------------------- JSON bodies

JSON_ROUTES = [
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/tokens"),
    ("POST", "/api/v1/users"),
    ("POST", "/api/v1/projects"),
    ("POST", "/api/v1/datasets"),
    ("POST", "/api/v1/runs"),
    ("POST", "/api/v1/attributions"),
    ("POST", "/api/v1/attributions/batch"),
    ("POST", "/api/v1/reviews"),
    ("POST", "/api/v1/uploads"),
    ("PUT", "/api/v1/projects/1/members"),
    ("PATCH", "/api/v1/subjects/1"),
    ("POST", "/api/v1/datasets/1/imports"),
]
BODIES = [
    ("syntax", b'{"name": "x",', "json"),
    ("not UTF-8", b'{"name": "\xff\xfe"}', ""),
    ("array", b"[1, 2, 3]", ""),
    ("null", b"null", ""),
    ("deep nesting", b'{"a":' * 5000 + b"1" + b"}" * 5000, ""),
    ("huge number", b'{"dataset_id": 1' + b"0" * 5000 + b', "name": "x"}', ""),
    ("wrong types", b'{"name": ["x"], "dataset_id": "one", "rating": {}}', ""),
]


def test_malformed_json_bodies_get_4xx_with_a_reason(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    from backend.core.db import session_scope
    from backend.models import Dataset, Project, Run, User

    def counts() -> tuple[int, ...]:
        with session_scope() as session:
            return tuple(session.query(m).count() for m in (Dataset, Project, Run, User))

    before = counts()
    failures = []
    for case, body, words in BODIES:
        for method, path in JSON_ROUTES:
            resp = api.request(
                method, path, content=body, headers={"Content-Type": "application/json"}
            )
            is_json = resp.headers["content-type"].startswith("application/json")
            reason = _problems(resp) if is_json else ""
            if not (400 <= resp.status_code < 500 and reason and words in reason.lower()):
                failures.append(f"{case}: {method} {path}: {resp.status_code} {resp.text[:200]}")
    assert not failures, "\n".join(failures)
    assert counts() == before
    assert api.get("/api/v1/health").status_code == 200
