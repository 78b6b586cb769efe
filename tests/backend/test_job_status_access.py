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


def test_get_job_answers_as_current_user_and_the_response_model_would(api: TestClient) -> None:
    """getJob authenticates in its own body (one query for token, user, job and access): its
    401s carry current_user's messages and header, cookies work as tokens do, and its body is
    JobPublic's JSON of the row."""
    from datetime import UTC, datetime, timedelta

    from backend.api.deps import SESSION_COOKIE
    from backend.core.db import session_scope
    from backend.models import ApiToken, Job
    from backend.schemas.job import JobPublic

    project = api.get("/api/v1/projects").json()["data"][0]["id"]
    _, job_id = _queued_job(project)
    path = f"/api/v1/jobs/{job_id}"
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.message, job.progress = 'épocha 2 "done"', 0.25
        job.started_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with session_scope() as session:
        expected = JobPublic.model_validate(session.get(Job, job_id)).model_dump(mode="json")
    answer = api.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == expected
    assert answer.json()["started_at"] == "2026-01-02T03:04:05Z"

    anonymous = TestClient(api.app)
    refusals = {
        "not logged in": anonymous.get(path),
        "the Authorization header must be 'Bearer <token>'": anonymous.get(
            path, headers={"Authorization": "Basic abc"}
        ),
        "the token is invalid, expired or revoked": anonymous.get(
            path, headers={"Authorization": "Bearer not-a-token"}
        ),
    }
    for detail, refused in refusals.items():
        assert refused.status_code == 401, refused.text
        assert refused.json() == {"detail": detail}
        assert refused.headers["www-authenticate"] == "Bearer"
    # An unknown token is refused before the job is looked up: 401, not 404.
    missing = anonymous.get("/api/v1/jobs/999999", headers={"Authorization": "Bearer nope"})
    assert missing.status_code == 401

    # An expired token: 401 at once.
    token = api.headers["Authorization"].split(" ", 1)[1]
    from backend.core.security import hash_token

    with session_scope() as session:
        row = session.query(ApiToken).filter_by(token_hash=hash_token(token)).one()
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    expired = api.get(path)
    assert expired.status_code == 401
    assert expired.json() == {"detail": "the token is invalid, expired or revoked"}

    # The browser's session cookie works as a bearer token does.
    login = anonymous.post(
        "/api/v1/auth/login", json={"username": "admin", "password": "admin-password-for-tests"}
    )
    assert login.status_code == 200, login.text
    browser = TestClient(api.app, cookies={SESSION_COOKIE: login.cookies[SESSION_COOKIE]})
    assert browser.get(path).json() == expected
