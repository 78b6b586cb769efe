"""Issue 16 (also): every timestamp the API answers is ISO 8601 in UTC with ``Z``, whichever
database stored it (SQLite hands back naive times, PostgreSQL aware ones)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.helpers import brain_volume, write_nifti

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def _timestamps(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every (path, value) of a key ending in ``_at`` in a JSON document."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key.endswith("_at") and isinstance(item, str):
                found.append((f"{path}.{key}", item))
            found += _timestamps(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _timestamps(item, f"{path}[{index}]")
    return found


def test_also_timestamps_are_iso8601_utc_with_z(api: TestClient, tmp_path: Path) -> None:
    from backend.core.db import session_scope
    from backend.models import AttributionMap, Review, Run, User

    dataset = api.post("/api/v1/datasets", json={"name": "times"}).json()
    image = write_nifti(tmp_path / "i.nii.gz", brain_volume()[0]).read_bytes()
    subject = api.post(
        f"/api/v1/datasets/{dataset['id']}/subjects",
        data={"subject_key": "s1", "label": "0"},
        files={"image": ("i.nii.gz", image)},
    ).json()
    project = dataset["project_id"]
    upload = api.post(
        "/api/v1/uploads", json={"project_id": project, "filename": "a.nii.gz", "size": 10}
    )
    assert upload.status_code == 201, upload.text
    api.post("/api/v1/auth/tokens", json={"name": "script"})
    with session_scope() as session:
        admin = session.query(User).filter_by(username="admin").one()
        run = Run(name="r", dataset_id=dataset["id"], config={}, created_by_id=admin.id)
        session.add(run)
        session.flush()
        attribution = AttributionMap(
            run_id=run.id, subject_id=subject["id"], method="saliency", status="succeeded"
        )
        session.add(attribution)
        session.flush()
        session.add(
            Review(attribution_id=attribution.id, reviewer_id=admin.id, rating=3, trust=True)
        )
    answers = {
        path: api.get(path).json()
        for path in (
            "/api/v1/datasets",
            f"/api/v1/datasets/{dataset['id']}/subjects",
            f"/api/v1/datasets/{dataset['id']}",
            "/api/v1/projects",
            "/api/v1/uploads",
            "/api/v1/auth/tokens",
            "/api/v1/runs",
            "/api/v1/reviews",
            "/api/v1/audit",
        )
    }
    seen = [
        (f"{path}{where}", value)
        for path, body in answers.items()
        for where, value in _timestamps(body)
    ]
    assert len(seen) >= 8, seen
    wrong = [(where, value) for where, value in seen if not ISO_Z.match(value)]
    assert not wrong, wrong
    exported = list(csv.DictReader(io.StringIO(api.get("/api/v1/reviews/export.csv").text)))
    assert exported and all(ISO_Z.match(row["created_at"]) for row in exported), exported
