"""Issue 16, review corrections: the body streams to disk under a size cap (item 4), and the
stored correction is de-identified like a subject's images (item 7)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.backend.test_reviews import World, post_review, put_correction, world  # noqa: F401 (fixture)
from tests.helpers import AFFINE
from tests.reliability.test_request_limits import PIECE, drive


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_item4_correction_body_streams_to_disk_under_a_cap(
    world: World,  # noqa: F811 (the fixture imported above)
    app_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a correction arrives, what arrived is on disk (not gathered in memory); a body
    over ATTRIVUE_MAX_CORRECTION_BYTES is stopped at the cap; nothing stays in tmp/."""
    from backend.core.config import get_settings

    client = world.clients["clin1"]
    review = post_review(client, world.maps[0], 3, True)
    path = f"/api/v1/reviews/{review['id']}/correction"
    headers = {
        "authorization": client.headers["Authorization"],
        "content-type": "application/octet-stream",
    }
    total = 6 * 1024**2
    on_disk: list[int] = []

    def watched() -> Iterator[bytes]:
        sent = 0
        while sent < total:
            on_disk.append(sum(p.stat().st_size for p in _files_under(app_env / "tmp")))
            yield b"\x00" * PIECE
            sent += PIECE

    answer = drive(client.app, "PUT", path, watched(), headers=headers)
    assert answer.status == 422, answer.body  # zeros are no NIfTI: read whole, then refused
    assert answer.consumed == total
    assert max(on_disk) >= total - 2 * 1024**2, "the body was not written to disk as it came"
    assert _files_under(app_env / "tmp") == []

    cap = 300_000
    monkeypatch.setattr(get_settings(), "max_correction_bytes", cap)
    over = drive(client.app, "PUT", path, watched(), headers=headers)
    assert over.status == 413, over.body
    assert str(cap) in over.body.decode()
    assert over.consumed <= cap + PIECE
    assert _files_under(app_env / "tmp") == []
    assert client.get(f"{path}.nii.gz").status_code == 404


def test_item7_correction_is_deidentified_like_subject_images(
    world: World,  # noqa: F811 (the fixture imported above)
) -> None:
    """descrip, aux_file, intent_name and a comment extension carrying a name are not stored
    or served; the labels and the grid are."""
    client = world.clients["clin1"]
    review = post_review(client, world.maps[1], 2, False)
    labels = np.zeros(world.shape, np.uint8)
    labels[3:5, 4:6, 5] = 1
    labels[6, 6, 6] = 2
    img = nib.Nifti1Image(labels, AFFINE)
    img.header["descrip"] = b"Jane Doe 1970-01-01"
    img.header["aux_file"] = b"Jane.txt"
    img.header["intent_name"] = b"Jane"
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"patient: Jane Doe, MRN 1234"))
    for body in (img.to_bytes(), gzip.compress(img.to_bytes())):
        resp = put_correction(client, review["id"], body)
        assert resp.status_code == 200, resp.text
        served = client.get(f"/api/v1/reviews/{review['id']}/correction.nii.gz")
        assert served.status_code == 200
        raw = gzip.decompress(served.content)
        assert b"Jane" not in raw and b"MRN" not in raw
        stored = nib.Nifti1Image.from_bytes(raw)
        assert len(stored.header.extensions) == 0
        assert stored.header["descrip"].tobytes().strip(b"\x00") == b""
        np.testing.assert_array_equal(np.asarray(stored.dataobj), labels)
        assert stored.get_data_dtype() == np.uint8
        np.testing.assert_allclose(stored.affine, AFFINE, atol=1e-4)
