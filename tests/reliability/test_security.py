"""Security: response headers, CORS closed by default, settings documented, no secrets in
logs, and the audit log of who viewed, downloaded, rated and exported what.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD, REPO
from tests.helpers import AFFINE, brain_volume, write_nifti

# ------------------------------------------------------------------ headers and CORS


def test_security_headers_on_api_and_app(api: TestClient) -> None:
    for path in ("/api/v1/auth/me", "/api/v1/health", "/api/v1/nope", "/"):
        headers = api.get(path).headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["x-frame-options"] == "DENY", path
        assert headers["referrer-policy"] == "no-referrer", path
        csp = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp, path
        script_src = re.search(r"script-src ([^;]*)", csp)[1]  # type: ignore[index]
        assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
        assert "blob:" in re.search(r"worker-src ([^;]*)", csp)[1]  # type: ignore[index]
    me = api.get("/api/v1/auth/me")
    assert me.headers["cache-control"] == "no-store", "API answers carry patient data"
    assert "no-store" not in api.get("/").headers.get("cache-control", "")


def test_built_app_has_no_inline_script_the_csp_would_block() -> None:
    index = REPO / "frontend" / "dist" / "index.html"
    assert index.is_file(), "make frontend builds the app"
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", index.read_text(), flags=re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)


def test_cors_is_closed_by_default(api: TestClient) -> None:
    origin = {"Origin": "https://evil.example"}
    assert "access-control-allow-origin" not in api.get("/api/v1/auth/me", headers=origin).headers
    preflight = api.options(
        "/api/v1/datasets",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code >= 400


def test_cors_opens_only_to_the_named_origins(api: TestClient, monkeypatch) -> None:
    from backend.core.config import get_settings
    from backend.main import create_app

    monkeypatch.setenv("ATTRIVUE_CORS_ORIGINS", "https://viewer.example.org")
    get_settings.cache_clear()
    client = TestClient(create_app(), headers=dict(api.headers))
    ok = client.options(
        "/api/v1/datasets",
        headers={
            "Origin": "https://viewer.example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://viewer.example.org"
    other = client.get("/api/v1/auth/me", headers={"Origin": "https://evil.example"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("value", ["*", "viewer.example.org"])
def test_cors_wildcards_and_bare_hosts_are_refused(value: str, monkeypatch) -> None:
    from backend.core.config import SettingsError, load_settings

    monkeypatch.setenv("ATTRIVUE_CORS_ORIGINS", value)
    with pytest.raises(SettingsError, match="ATTRIVUE_CORS_ORIGINS"):
        load_settings()


def test_env_example_lists_every_setting() -> None:
    from backend.core.config import Settings

    text = (REPO / ".env.example").read_text()
    listed = set(re.findall(r"^(ATTRIVUE_[A-Z_]+)=", text, flags=re.M))
    expected = {f"ATTRIVUE_{name.upper()}" for name in Settings.model_fields}
    assert expected - listed == set(), "settings missing from .env.example"
    assert listed - expected == set(), ".env.example lists settings that do not exist"


# ------------------------------------------------------------------ secrets in logs


def test_secrets_never_reach_the_logs(
    app_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Start-up, a failed and a good login, token use, a personal token, logout: every log
    record (all loggers at DEBUG, SQL echo included) is searched for the secrets."""
    from tests.conftest import clear_caches

    secret_key = "s3cret-key-that-must-never-be-logged-0123456789"
    monkeypatch.setenv("ATTRIVUE_SECRET_KEY", secret_key)
    clear_caches()
    caplog.set_level(logging.DEBUG)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.DEBUG)
    try:
        from backend.core.config import get_settings
        from backend.core.db import session_scope, upgrade_database
        from backend.main import create_app
        from backend.services.users import create_user

        upgrade_database()
        with session_scope() as session:
            create_user(session, username="admin", password=ADMIN_PASSWORD, role="admin")
        with TestClient(create_app()) as client:
            bad = client.post("/api/v1/auth/login", json={"username": "admin", "password": "x1"})
            assert bad.status_code == 401
            login = client.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            token = login.json()["access_token"]
            csrf = login.cookies.get("attrivue_csrf")
            client.cookies.clear()
            auth = {"Authorization": f"Bearer {token}"}
            assert client.get("/api/v1/auth/me", headers=auth).status_code == 200
            made = client.post("/api/v1/auth/tokens", json={"name": "script"}, headers=auth)
            personal = made.json()["token"]
            me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {personal}"})
            assert me.status_code == 200
            wrong = client.get("/api/v1/auth/me", headers={"Authorization": "Bearer atv_x"})
            assert wrong.status_code == 401
            assert client.post("/api/v1/auth/logout", headers=auth).status_code == 204
        # Whoever logs the settings object must not leak the key through it.
        logging.getLogger("attrivue.test").info("settings: %r", get_settings())
    finally:
        logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
        clear_caches()
    assert len(caplog.records) > 20, "the logs were captured"
    text = "\n".join(
        f"{r.getMessage()} {r.args!r} {getattr(r, 'exc_text', '')}" for r in caplog.records
    )
    for name, value in (
        ("admin password", ADMIN_PASSWORD),
        ("session token", token),
        ("personal token", personal),
        ("csrf token", csrf),
        ("secret key", secret_key),
    ):
        assert value and value not in text, f"the {name} appears in the logs"


# ------------------------------------------------------------------ audit log


def _client(api: TestClient, username: str, role: str = "researcher") -> TestClient:
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


def test_audit_log_records_views_downloads_ratings_and_exports(
    api: TestClient, tmp_path: Path
) -> None:
    from attrivue_core.io import save_nifti
    from backend.core.db import session_scope
    from backend.models import AttributionMap, Run
    from backend.storage import get_storage

    clinician = _client(api, "clin")
    outsider = _client(api, "outsider")
    project = api.get("/api/v1/projects").json()["data"][0]["id"]
    api.put(f"/api/v1/projects/{project}/members", json={"username": "clin", "role": "clinician"})
    # An open review round: the clinician fetches maps by id (blinded rounds: test_audit_part_b)
    api.patch(f"/api/v1/projects/{project}", json={"review_blinded": False})
    dataset = api.post("/api/v1/datasets", json={"name": "d", "project_id": project}).json()["id"]
    image, mask = brain_volume(lesion=True)
    subject = api.post(
        f"/api/v1/datasets/{dataset}/subjects",
        data={"subject_key": "s1", "label": "1", "split": "test"},
        files={
            "image": ("i.nii.gz", write_nifti(tmp_path / "i.nii.gz", image).read_bytes()),
            "mask": ("m.nii.gz", write_nifti(tmp_path / "m.nii.gz", mask).read_bytes()),
        },
    ).json()["id"]
    run = api.post("/api/v1/runs", json={"dataset_id": dataset, "name": "r"}).json()["id"]
    with session_scope() as session:
        session.get(Run, run).status = "succeeded"
        row = AttributionMap(run_id=run, subject_id=subject, method="saliency", status="succeeded")
        session.add(row)
        session.flush()
        path = get_storage().map_path(run, row.id)
        save_nifti(
            path, np.random.default_rng(0).normal(size=image.shape).astype(np.float32), AFFINE
        )
        row.path = get_storage().relative(path)
        attribution = row.id

    assert clinician.get(f"/api/v1/subjects/{subject}/image.nii.gz").status_code == 200
    assert clinician.get(f"/api/v1/subjects/{subject}/mask.nii.gz").status_code == 200
    assert clinician.get(f"/api/v1/attributions/{attribution}/display.nii.gz").status_code == 200
    assert clinician.get(f"/api/v1/attributions/{attribution}/map.nii.gz").status_code == 200
    review = clinician.post(
        "/api/v1/reviews", json={"attribution_id": attribution, "rating": 4, "trust": True}
    )
    assert review.status_code == 201
    assert clinician.get("/api/v1/reviews/export.csv").status_code == 200
    # Refused requests leave no event: the outsider sees nothing, a bad id is a 404.
    assert outsider.get(f"/api/v1/subjects/{subject}/image.nii.gz").status_code == 404
    assert clinician.get("/api/v1/attributions/999999/map.nii.gz").status_code == 404

    log = api.get("/api/v1/audit", params={"username": "clin"})
    assert log.status_code == 200, log.text
    events = [
        (e["action"], e["object_type"], e["object_id"], e["project_id"], e["detail"])
        for e in reversed(log.json()["data"])
    ]
    assert events == [
        ("download", "subject", subject, project, "image"),
        ("download", "subject", subject, project, "mask"),
        ("view", "attribution", attribution, project, "display map"),
        ("download", "attribution", attribution, project, "map"),
        ("rate", "attribution", attribution, project, f"review {review.json()['id']}: rating 4"),
        ("export", "reviews", None, None, "1 reviews (attribution_id=None, run_id=None)"),
    ]
    assert log.json()["count"] == 6
    assert all(e["username"] == "clin" and e["client_ip"] for e in log.json()["data"])
    assert api.get("/api/v1/audit", params={"username": "outsider"}).json()["count"] == 0

    # Filters: action, object, project, time window, paging.
    downloads = api.get("/api/v1/audit", params={"action": "download"}).json()
    assert downloads["count"] == 3
    by_object = api.get(
        "/api/v1/audit", params={"object_type": "attribution", "object_id": attribution}
    ).json()
    assert {e["action"] for e in by_object["data"]} == {"view", "download", "rate"}
    in_project = {"project_id": project, "username": "clin"}
    assert api.get("/api/v1/audit", params=in_project).json()["count"] == 5
    # the admin's membership change and opening of the round are logged too (issue 16, item 9)
    assert api.get("/api/v1/audit", params={"project_id": project}).json()["count"] == 7
    newest = log.json()["data"][0]["created_at"]
    assert api.get("/api/v1/audit", params={"since": newest}).json()["count"] >= 1
    assert api.get("/api/v1/audit", params={"until": "2000-01-01T00:00:00Z"}).json()["count"] == 0
    page = api.get("/api/v1/audit", params={"username": "clin", "limit": 2, "offset": 1}).json()
    assert page["count"] == 6 and len(page["data"]) == 2
    assert api.get("/api/v1/audit", params={"action": "delete"}).status_code == 422

    # Only site admins read the log.
    assert clinician.get("/api/v1/audit").status_code == 403
    assert outsider.get("/api/v1/audit").status_code == 403
