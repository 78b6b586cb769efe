"""getJob's fast path (issue 21): the job and its access check in one query, token and user in
another. Nothing is cached, so every change of access applies to the very next request: a
member removed, a review round blinded, a session logged out, a user deactivated. The project
of a job found through the SQL of ``project_of`` is the one its run, or its cohort map's run,
belongs to; a job of no project is not found.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from backend.services.errors import NotFound


def _queued_job(project_id: int) -> tuple[int, int]:
    """A dataset of the project with a run whose job is queued: (run id, job id)."""
    from backend.core.db import session_scope
    from backend.models import Dataset, Job, Run

    with session_scope() as session:
        dataset = Dataset(project_id=project_id, name=f"d{project_id}")
        job = Job(kind="train")
        session.add_all([dataset, job])
        session.flush()
        run = Run(name="r", dataset_id=dataset.id, config={}, job_id=job.id)
        session.add(run)
        session.flush()
        return run.id, job.id


def _login(api: TestClient, username: str, role: str = "researcher") -> TestClient:
    password = f"{username}-password-1"
    created = api.post(
        "/api/v1/users", json={"username": username, "password": password, "role": role}
    )
    assert created.status_code == 201, created.text
    token = api.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    ).json()["access_token"]
    api.cookies.clear()
    return TestClient(api.app, headers={"Authorization": f"Bearer {token}"})


def test_access_changes_apply_to_the_next_poll(api: TestClient) -> None:
    project = api.get("/api/v1/projects").json()["data"][0]["id"]
    _, job_id = _queued_job(project)
    clinician = _login(api, "clin")
    researcher = _login(api, "res")
    outsider = _login(api, "out")
    path = f"/api/v1/jobs/{job_id}"
    for username, role in (("clin", "clinician"), ("res", "researcher")):
        added = api.put(
            f"/api/v1/projects/{project}/members", json={"username": username, "role": role}
        )
        assert added.status_code == 200, added.text

    # Blinded review round (the default): the clinician sees no job, as if it did not exist.
    assert researcher.get(path).json()["id"] == job_id
    hidden = clinician.get(path)
    assert hidden.status_code == 404
    assert hidden.json()["detail"] == f"job {job_id} not found"
    assert outsider.get(path).json() == hidden.json()
    assert outsider.get(path).status_code == 404
    assert api.get("/api/v1/jobs/999999").json() == {"detail": "job 999999 not found"}
    assert api.get(f"/api/v1/jobs/{2**70}").status_code in (404, 422)  # beyond the column

    opened = api.patch(f"/api/v1/projects/{project}", json={"review_blinded": False})
    assert opened.status_code == 200, opened.text
    assert clinician.get(path).status_code == 200  # open round: the clinician sees it
    blinded = api.patch(f"/api/v1/projects/{project}", json={"review_blinded": True})
    assert blinded.status_code == 200, blinded.text
    assert clinician.get(path).status_code == 404  # blinded again: at once

    # A member removed loses the job at the next request.
    res_id = researcher.get("/api/v1/auth/me").json()["id"]
    assert researcher.get(path).status_code == 200
    assert api.delete(f"/api/v1/projects/{project}/members/{res_id}").status_code == 204
    assert researcher.get(path).status_code == 404

    # Logged out, or deactivated: the token stops working at once.
    api.put(f"/api/v1/projects/{project}/members", json={"username": "res", "role": "researcher"})
    assert researcher.get(path).status_code == 200
    assert researcher.post("/api/v1/auth/logout").status_code == 204
    assert researcher.get(path).status_code == 401
    api.put(f"/api/v1/projects/{project}/members", json={"username": "out", "role": "researcher"})
    assert outsider.get(path).status_code == 200
    out_id = outsider.get("/api/v1/auth/me").json()["id"]
    assert api.patch(f"/api/v1/users/{out_id}", json={"is_active": False}).status_code == 200
    assert outsider.get(path).status_code == 401


def test_require_job_finds_the_project_through_each_owner(api: TestClient) -> None:
    from backend.core.db import session_scope
    from backend.models import CohortMap, Job, User
    from backend.services.projects import create_project, project_of, require_job

    project = api.get("/api/v1/projects").json()["data"][0]["id"]
    run_id, run_job = _queued_job(project)
    with session_scope() as session:
        owner = _login(api, "owner").get("/api/v1/auth/me").json()["id"]
        owner_user = session.get(User, owner)
        assert owner_user is not None
        other = create_project(session, name="other", description="", user=owner_user).id
        cohort_job, orphan = Job(kind="cohort"), Job(kind="train")
        session.add_all([cohort_job, orphan])
        session.flush()
        session.add(
            CohortMap(run_id=run_id, job_id=cohort_job.id, split="test", label=1, method="ig")
        )
        ids = cohort_job.id, orphan.id
    cohort_id, orphan_id = ids
    _, foreign_job = _queued_job(other)
    with session_scope() as session:
        admin = session.query(User).filter_by(username="admin").one()
        for job_id in (run_job, cohort_id):
            job = require_job(session, admin, job_id)
            assert job.id == job_id
            assert project_of(session, job) == project
        assert project_of(session, session.get(Job, foreign_job)) == other
        with pytest.raises(NotFound, match=f"job {orphan_id} not found"):
            require_job(session, admin, orphan_id)
        with pytest.raises(NotFound, match=f"job {orphan_id} not found"):
            project_of(session, session.get(Job, orphan_id))
        # The site admin is not a member of the other project: its job is not found for them.
        with pytest.raises(NotFound, match=f"job {foreign_job} not found"):
            require_job(session, admin, foreign_job)
