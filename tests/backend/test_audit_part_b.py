"""Issue 16, part B: blinding, accounts, login limits, existence leaks, CSV, deployment defaults.

One test (or a few) per item of the audit, named after it; each failed on the code before its fix.
docs/reliability.md lists them with their results.
"""

from __future__ import annotations

import csv
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD
from tests.helpers import AFFINE, brain_volume, write_nifti

API = "/api/v1"


@dataclass
class World:
    admin: TestClient
    clients: dict[str, TestClient]
    passwords: dict[str, str]
    user_ids: dict[str, int]
    project: int
    dataset: int
    subject: int
    run: int
    job: int
    maps: list[int]
    eve_project: int
    eve_run: int


def _user(api: TestClient, username: str, role: str = "researcher") -> tuple[int, str]:
    password = f"{username}-password-1"
    resp = api.post(f"{API}/users", json={"username": username, "password": password, "role": role})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"], password


def _login(app: object, username: str, password: str, **kwargs: object) -> TestClient:
    client = TestClient(app, **kwargs)  # type: ignore[arg-type]
    resp = client.post(f"{API}/auth/login", json={"username": username, "password": password})
    assert resp.status_code == 200, resp.text
    client.cookies.clear()
    client.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
    return client


def _upload_subject(client: TestClient, dataset: int, tmp_path: Path, key: str) -> int:
    image, mask = brain_volume(lesion=True)
    resp = client.post(
        f"{API}/datasets/{dataset}/subjects",
        data={"subject_key": key, "label": "1"},
        files={
            "image": ("i.nii.gz", write_nifti(tmp_path / f"{key}-i.nii.gz", image).read_bytes()),
            "mask": ("m.nii.gz", write_nifti(tmp_path / f"{key}-m.nii.gz", mask).read_bytes()),
        },
    )
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


@pytest.fixture
def world(api: TestClient, app_env: Path, tmp_path: Path) -> World:
    """A project with a clinician, a researcher, a succeeded run and three maps; and Eve, a
    researcher with a project of her own who is not a member of the first."""
    from attrivue_core.io import save_nifti
    from backend.core.db import session_scope
    from backend.models import AttributionMap, Run
    from backend.storage import get_storage

    passwords = {"admin": ADMIN_PASSWORD}
    user_ids = {"admin": 1}
    clients = {}
    for name, role in (("clin", "clinician"), ("res", "researcher"), ("eve", "researcher")):
        user_ids[name], passwords[name] = _user(api, name, role)
        clients[name] = _login(api.app, name, passwords[name])
    project = api.get(f"{API}/projects").json()["data"][0]["id"]
    for name, role in (("clin", "clinician"), ("res", "researcher")):
        resp = api.put(f"{API}/projects/{project}/members", json={"username": name, "role": role})
        assert resp.status_code == 200, resp.text
    dataset = api.post(f"{API}/datasets", json={"name": "d", "project_id": project}).json()["id"]
    subject = _upload_subject(api, dataset, tmp_path, "s0")
    run = api.post(
        f"{API}/runs", json={"dataset_id": dataset, "name": "secret-run", "config": {}}
    ).json()
    eve = clients["eve"]
    eve_project = eve.post(f"{API}/projects", json={"name": "eve's"}).json()["id"]
    eve_dataset = eve.post(f"{API}/datasets", json={"name": "e", "project_id": eve_project}).json()[
        "id"
    ]
    _upload_subject(eve, eve_dataset, tmp_path, "e0")
    eve_run = eve.post(
        f"{API}/runs", json={"dataset_id": eve_dataset, "name": "eve-run", "config": {}}
    ).json()["id"]
    image, _ = brain_volume(lesion=True)
    maps = []
    with session_scope() as session:
        for run_id in (run["id"], eve_run):
            session.get(Run, run_id).status = "succeeded"
        for i in range(3):
            row = AttributionMap(
                run_id=run["id"],
                subject_id=subject,
                method="saliency",
                params={"i": i},
                status="succeeded",
                stats={"min": -1.0, "max": 2.0, "mean_abs": 0.5, "convergence_delta": 0.1},
            )
            session.add(row)
            session.flush()
            path = get_storage().map_path(run["id"], row.id)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_nifti(path, image, AFFINE)
            row.path = get_storage().relative(path)
            maps.append(row.id)
    return World(
        admin=api,
        clients=clients,
        passwords=passwords,
        user_ids=user_ids,
        project=project,
        dataset=dataset,
        subject=subject,
        run=run["id"],
        job=run["job_id"],
        maps=maps,
        eve_project=eve_project,
        eve_run=eve_run,
    )


def _audit(api: TestClient, action: str) -> list[dict]:
    resp = api.get(f"{API}/audit", params={"action": action})
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


# --- item 8: blinding is enforced by the server ----------------------------------------------


def test_item8_blinded_reviewer_cannot_see_run(world: World) -> None:
    clin = world.clients["clin"]
    # Asking for an unblinded queue does not unblind a clinician of a blinded round.
    resp = clin.get(f"{API}/reviews/queue", params={"project_id": world.project, "blinded": False})
    assert resp.status_code == 200, resp.text
    queue = resp.json()
    assert queue["blinded"] is True and queue["enforced"] is True
    assert queue["count"] == 3
    text = resp.text
    assert "secret-run" not in text and "saliency" not in text and "convergence" not in text
    for item in queue["data"]:
        assert item["attribution_id"] is None and item["run_id"] is None
        assert item["run_name"] is None and item["method"] is None
        assert len(item["item"]) == 32
        assert item["stats"]["max"] == 2.0
    # No route hands out the run, the maps or their jobs: as for ids that do not exist.
    for path, noun, value in (
        (f"/runs/{world.run}", "run", world.run),
        (f"/attributions/{world.maps[0]}", "attribution", world.maps[0]),
        (f"/attributions/{world.maps[0]}/display.nii.gz", "attribution", world.maps[0]),
        (f"/jobs/{world.job}", "job", world.job),
        (f"/runs/{world.run}/corrections", "run", world.run),
    ):
        got = clin.get(API + path)
        assert got.status_code == 404, path
        assert got.json()["detail"] == f"{noun} {value} not found", path
    assert clin.get(f"{API}/runs").json()["count"] == 0
    assert clin.get(f"{API}/attributions").json()["count"] == 0
    assert clin.get(f"{API}/jobs").json()["count"] == 0
    got = clin.get(f"{API}/reviews/agreement", params={"run_id": world.run})
    assert got.status_code == 404
    # Rating by id is refused as for a missing map; the item token works.
    by_id = {"attribution_id": world.maps[0], "rating": 3, "trust": True}
    assert clin.post(f"{API}/reviews", json=by_id).status_code == 404
    item = queue["data"][0]
    display = clin.get(f"{API}/reviews/items/{item['item']}/display.nii.gz")
    assert display.status_code == 200 and "review-map" in display.headers["content-disposition"]
    assert clin.get(f"{API}/reviews/items/{item['item']}/map.nii.gz").status_code == 200
    created = clin.post(
        f"{API}/reviews",
        json={"item": item["item"], "rating": 4, "trust": True, "comment": "ok"},
    )
    assert created.status_code == 201, created.text
    review = created.json()
    assert review["attribution_id"] is None
    assert review["item"] == item["item"] and review["label"] == item["label"]
    listed = clin.get(f"{API}/reviews").json()["data"]
    assert [r["attribution_id"] for r in listed] == [None]
    for ident in world.maps:
        got = clin.get(f"{API}/reviews", params={"attribution_id": ident}).json()
        assert got["count"] == 0
    assert clin.get(f"{API}/reviews", params={"run_id": world.run}).json()["count"] == 0
    rows = list(csv.DictReader(io.StringIO(clin.get(f"{API}/reviews/export.csv").text)))
    assert len(rows) == 1
    assert rows[0]["attribution_id"] == rows[0]["run_id"] == rows[0]["method"] == ""
    assert rows[0]["map_label"] == item["label"]
    # Another user's token names nothing for this user.
    res_queue = world.clients["res"].get(
        f"{API}/reviews/queue", params={"project_id": world.project}
    )
    other = res_queue.json()["data"][0]["item"]
    assert clin.get(f"{API}/reviews/items/{other}/display.nii.gz").status_code == 404
    # The researcher, who launches runs, is not blinded; nor is anyone once the round opens.
    assert res_queue.json()["enforced"] is False
    opened = world.admin.patch(f"{API}/projects/{world.project}", json={"review_blinded": False})
    assert opened.status_code == 200 and opened.json()["review_blinded"] is False
    unblinded = clin.get(
        f"{API}/reviews/queue", params={"project_id": world.project, "blinded": False}
    ).json()
    assert unblinded["blinded"] is False
    shown = {m["attribution_id"] for m in unblinded["data"]}
    assert len(shown) == 2 and shown < set(world.maps)  # the one rated has left the queue
    assert clin.get(f"{API}/runs/{world.run}").status_code == 200
    assert _audit(world.admin, "review_blinding")[0]["detail"].startswith("review round opened")


def test_item8_reopening_a_review_goes_by_the_reviewers_token(world: World) -> None:
    """Issue 17 item 12 under blinding: a reviewer's own reviews carry their token of the map,
    and GET /reviews/items/{item} describes it (blinded as the queue is) after it left the queue,
    so the review can be reopened and amended without a map id."""
    clin = world.clients["clin"]
    item = clin.get(f"{API}/reviews/queue", params={"project_id": world.project}).json()["data"][0]
    first = clin.post(f"{API}/reviews", json={"item": item["item"], "rating": 2, "trust": False})
    assert first.status_code == 201, first.text
    described = clin.get(f"{API}/reviews/items/{item['item']}", params={"blinded": False})
    assert described.status_code == 200, described.text
    body = described.json()
    assert body["item"] == item["item"] and body["label"] == item["label"]
    assert body["subject_id"] == world.subject and body["stats"]["max"] == 2.0
    assert body["attribution_id"] is None and body["run_id"] is None and body["method"] is None
    assert "secret-run" not in described.text
    again = clin.post(f"{API}/reviews", json={"item": item["item"], "rating": 4, "trust": True})
    assert again.status_code == 201, again.text
    mine = [r for r in clin.get(f"{API}/reviews").json()["data"] if r["item"] == item["item"]]
    assert [r["rating"] for r in mine] == [2, 4]
    # Another user's token names nothing here; nor does a made-up one.
    other = world.clients["res"].get(f"{API}/reviews/queue", params={"project_id": world.project})
    assert clin.get(f"{API}/reviews/items/{other.json()['data'][0]['item']}").status_code == 404
    assert clin.get(f"{API}/reviews/items/{'0' * 32}").status_code == 404
    # Unblinded (the researcher), the own review's token is there too, beside the map id.
    res = world.clients["res"]
    res_item = other.json()["data"][0]
    made = res.post(f"{API}/reviews", json={"item": res_item["item"], "rating": 3, "trust": True})
    assert made.status_code == 201, made.text
    assert made.json()["item"] == res_item["item"] and made.json()["attribution_id"] in world.maps
    shown = res.get(f"{API}/reviews/items/{res_item['item']}", params={"blinded": False}).json()
    assert shown["attribution_id"] == made.json()["attribution_id"] and shown["run_id"] == world.run
    # Others' reviews do not carry the researcher's token of the map.
    others = [
        r
        for r in res.get(f"{API}/reviews").json()["data"]
        if r["reviewer_id"] != made.json()["reviewer_id"]
    ]
    assert others and all(r["item"] is None for r in others)


def test_item8_a_clinician_cannot_reopen_the_round(world: World) -> None:
    clin = world.clients["clin"]
    resp = clin.patch(f"{API}/projects/{world.project}", json={"review_blinded": False})
    assert resp.status_code == 403
    assert world.admin.get(f"{API}/projects/{world.project}").json()["review_blinded"] is True


def test_item8_blind_labels_are_keyed_with_the_server_secret(world: World) -> None:
    import hashlib

    from backend.core.config import get_settings
    from backend.services.reviews import blinded_label

    clin = world.clients["clin"]
    uid = world.user_ids["clin"]
    labels = {
        m["label"]
        for m in clin.get(f"{API}/reviews/queue", params={"project_id": world.project}).json()[
            "data"
        ]
    }
    secret = get_settings().secret()
    assert labels == {blinded_label(secret, uid, m) for m in world.maps}
    for m in world.maps:  # the old, unkeyed label can no longer be recomputed
        unkeyed = hashlib.sha256(f"attrivue-label:{uid}:{m}".encode()).hexdigest()
        assert f"Map {unkeyed[:6].upper()}" not in labels
        assert blinded_label(b"another secret", uid, m) != blinded_label(secret, uid, m)


# --- item 9: membership changes --------------------------------------------------------------


def test_item9_membership_changes_are_audited_and_the_last_admin_stays(world: World) -> None:
    api = world.admin
    root_id, root_pw = _user(api, "root2", "admin")
    root = _login(api.app, "root2", root_pw)
    # A site admin who is not a member may manage the project (policy), and it is audited.
    made = root.put(
        f"{API}/projects/{world.project}/members", json={"username": "root2", "role": "admin"}
    )
    assert made.status_code == 200, made.text
    added = [e for e in _audit(api, "member_add") if e["object_id"] == root_id]
    assert added and "site admin override" in added[0]["detail"]
    assert added[0]["project_id"] == world.project and added[0]["username"] == "root2"
    role = root.put(
        f"{API}/projects/{world.project}/members", json={"username": "res", "role": "clinician"}
    )
    assert role.status_code == 200
    changed = _audit(api, "member_role")
    assert changed and changed[0]["detail"] == "res researcher -> clinician"
    assert (
        root.delete(f"{API}/projects/{world.project}/members/{world.user_ids['admin']}").status_code
        == 204
    )
    removed = _audit(api, "member_remove")
    assert removed and removed[0]["detail"] == "admin (was admin)"
    # root2 is now the only admin: it can be neither demoted nor removed.
    demote = root.put(
        f"{API}/projects/{world.project}/members", json={"username": "root2", "role": "researcher"}
    )
    assert demote.status_code == 409 and "at least one admin" in demote.json()["detail"]
    assert root.delete(f"{API}/projects/{world.project}/members/{root_id}").status_code == 409


# --- item 10: password changes revoke, users can be deactivated ------------------------------


def test_item10_password_change_revokes_sessions_and_tokens(world: World) -> None:
    app = world.admin.app
    old_pw = world.passwords["res"]
    first = world.clients["res"]
    second = _login(app, "res", old_pw)
    personal = second.post(f"{API}/auth/tokens", json={"name": "script"}).json()["token"]
    scripted = TestClient(app, headers={"Authorization": f"Bearer {personal}"})
    assert scripted.get(f"{API}/auth/me").status_code == 200
    wrong = second.post(
        f"{API}/auth/password", json={"current_password": "nope", "new_password": "x" * 12}
    )
    assert wrong.status_code == 403
    resp = second.post(
        f"{API}/auth/password",
        json={"current_password": old_pw, "new_password": "a-brand-new-password"},
    )
    assert resp.status_code == 200, resp.text
    for client in (first, second, scripted):
        assert client.get(f"{API}/auth/me").status_code == 401
    fresh = TestClient(app, headers={"Authorization": f"Bearer {resp.json()['access_token']}"})
    assert fresh.get(f"{API}/auth/me").json()["username"] == "res"
    login = TestClient(app).post(f"{API}/auth/login", json={"username": "res", "password": old_pw})
    assert login.status_code == 401
    assert _audit(world.admin, "password_change")[0]["object_id"] == world.user_ids["res"]


def test_item10_admin_deactivates_a_user(world: World) -> None:
    api, uid = world.admin, world.user_ids["clin"]
    clin = world.clients["clin"]
    assert clin.get(f"{API}/auth/me").status_code == 200
    assert (
        world.clients["res"].patch(f"{API}/users/{uid}", json={"is_active": False}).status_code
        == 403
    )
    resp = api.patch(f"{API}/users/{uid}", json={"is_active": False})
    assert resp.status_code == 200 and resp.json()["is_active"] is False
    assert clin.get(f"{API}/auth/me").status_code == 401
    pw = world.passwords["clin"]
    login = TestClient(api.app).post(f"{API}/auth/login", json={"username": "clin", "password": pw})
    assert login.status_code == 401
    assert _audit(api, "user_deactivate")[0]["object_id"] == uid
    assert api.patch(f"{API}/users/{uid}", json={"is_active": True}).json()["is_active"] is True
    assert _login(api.app, "clin", pw).get(f"{API}/auth/me").status_code == 200
    # an admin cannot lock themselves out
    assert api.patch(f"{API}/users/1", json={"is_active": False}).status_code == 409


# --- item 11: login timing ----------------------------------------------------------------


def test_item11_unknown_username_verifies_one_dummy_hash(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.core.db import session_scope
    from backend.models import User
    from backend.services import users

    calls: list[str] = []
    real_verify = users.verify_password

    def spy(password: str, password_hash: str) -> bool:
        calls.append(password_hash)
        return real_verify(password, password_hash)

    def no_hashing(password: str) -> str:
        raise AssertionError("a login must not hash a password (that doubles its time)")

    monkeypatch.setattr(users, "verify_password", spy)
    monkeypatch.setattr(users, "hash_password", no_hashing)
    with session_scope() as session:
        assert users.authenticate(session, username="nobody", password="guess-1") is None
        assert users.authenticate(session, username="also-nobody", password="guess-2") is None
        assert len(calls) == 2 and calls[0] == calls[1] and calls[0].startswith("$argon2")
        # a deactivated user's check costs one verification too
        session.get(User, world.user_ids["res"]).is_active = False
        session.flush()
        assert users.authenticate(session, username="res", password=world.passwords["res"]) is None
        assert len(calls) == 3 and calls[2] != calls[0]
        assert users.authenticate(session, username="clin", password="wrong") is None
        assert len(calls) == 4


# --- item 12: forwarded addresses and the login limit -----------------------------------------


def _app(monkeypatch: pytest.MonkeyPatch, **env: str):  # type: ignore[no-untyped-def]
    from backend.core.config import get_settings
    from backend.main import create_app

    for key, value in env.items():
        monkeypatch.setenv(f"ATTRIVUE_{key.upper()}", value)
    get_settings.cache_clear()
    return create_app()


def _fail_login(client: TestClient, username: str, **headers: str) -> int:
    resp = client.post(
        f"{API}/auth/login", json={"username": username, "password": "wrong-guess"}, headers=headers
    )
    return resp.status_code


def _login_ips() -> list[str]:
    from sqlalchemy import select

    from backend.core.db import session_scope
    from backend.models import LoginAttempt

    with session_scope() as session:
        return list(session.scalars(select(LoginAttempt.client_ip).order_by(LoginAttempt.id)))


def test_item12_forwarded_for_is_ignored_unless_from_a_configured_proxy(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = TestClient(_app(monkeypatch), client=("127.0.0.1", 5000))
    assert _fail_login(plain, "x", **{"X-Forwarded-For": "203.0.113.9"}) == 401
    assert _login_ips()[-1] == "127.0.0.1"  # not the spoofed address
    proxied = TestClient(_app(monkeypatch, trusted_proxies="10.0.0.0/8"), client=("10.1.2.3", 1))
    # the client forged the first hop; the proxy appended the real one
    assert _fail_login(proxied, "x", **{"X-Forwarded-For": "1.2.3.4, 198.51.100.7"}) == 401
    assert _login_ips()[-1] == "198.51.100.7"
    stranger = TestClient(_app(monkeypatch, trusted_proxies="10.0.0.0/8"), client=("192.0.2.1", 1))
    assert _fail_login(stranger, "x", **{"X-Forwarded-For": "198.51.100.8"}) == 401
    assert _login_ips()[-1] == "192.0.2.1"


def test_item12_serve_leaves_forwarded_headers_to_the_app(
    app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from backend import cli

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.update(kw))
    assert cli.main(["serve", "--no-worker", "--port", "8123"]) == 0
    assert seen["proxy_headers"] is False  # uvicorn would trust 127.0.0.1


def test_item12_failures_from_one_address_do_not_lock_out_others(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(monkeypatch)
    shared = TestClient(app, client=("192.0.2.10", 1))
    for i in range(20):
        assert _fail_login(shared, f"user{i % 10}") == 401
    ok = shared.post(
        f"{API}/auth/login", json={"username": "clin", "password": world.passwords["clin"]}
    )
    assert ok.status_code == 200, ok.text
    # Guessing one account from one address stops there, not for the account elsewhere.
    for _ in range(5):
        assert _fail_login(shared, "res") == 401
    blocked = shared.post(
        f"{API}/auth/login", json={"username": "res", "password": world.passwords["res"]}
    )
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    _login(app, "res", world.passwords["res"], client=("192.0.2.99", 1))


def test_item12_a_noisy_address_backs_off(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(monkeypatch, login_address_max_failures="3")
    noisy = TestClient(app, client=("192.0.2.20", 1))
    for i in range(3):
        assert _fail_login(noisy, f"user{i}") == 401
    resp = noisy.post(f"{API}/auth/login", json={"username": "clin", "password": "x"})
    assert resp.status_code == 429 and 1 <= int(resp.headers["retry-after"]) <= 1
    other = TestClient(app, client=("192.0.2.21", 1))
    assert (
        other.post(
            f"{API}/auth/login", json={"username": "clin", "password": world.passwords["clin"]}
        ).status_code
        == 200
    )


# --- item 13: other projects' objects answer as missing -----------------------------------------


def test_item13_other_projects_objects_answer_as_missing(world: World) -> None:
    eve = world.clients["eve"]
    review = world.admin.post(
        f"{API}/reviews", json={"attribution_id": world.maps[0], "rating": 2, "trust": False}
    ).json()["id"]
    missing = 987654
    for template in (
        "/datasets/{}",
        "/datasets/{}/subjects",
        "/subjects/{}",
        "/subjects/{}/image.nii.gz",
        "/runs/{}",
        "/runs/{}/metrics",
        "/attributions/{}",
        "/jobs/{}",
        "/reviews/{}/correction.nii.gz",
    ):
        ident = {
            "/datasets": world.dataset,
            "/subjects": world.subject,
            "/runs": world.run,
            "/attributions": world.maps[0],
            "/jobs": world.job,
            "/reviews": review,
        }["/" + template.split("/")[1]]
        theirs = eve.get(API + template.format(ident))
        none = eve.get(API + template.format(missing))
        assert theirs.status_code == none.status_code == 404, template
        assert theirs.json()["detail"] == none.json()["detail"].replace(str(missing), str(ident))
    # Naming another project's subject with one's own run: as for a subject that does not exist.
    body = {"run_id": world.eve_run, "method": "saliency"}
    theirs = eve.post(f"{API}/attributions", json={**body, "subject_id": world.subject})
    none = eve.post(f"{API}/attributions", json={**body, "subject_id": missing})
    assert theirs.status_code == none.status_code == 404
    assert theirs.json()["detail"] == f"subject {world.subject} not found"
    theirs = eve.post(f"{API}/runs", json={"dataset_id": world.dataset, "name": "x", "config": {}})
    assert theirs.status_code == 404
    assert theirs.json()["detail"] == f"dataset {world.dataset} not found"


# --- item 14: CSV formula injection ------------------------------------------------------------


def test_item14_csv_export_neutralises_formulas(world: World) -> None:
    api = world.admin
    comments = [
        '=HYPERLINK("http://evil.example","x")',
        "+1",
        "-2",
        "@SUM(A1)",
        "\tx",
        "\rx",
        "fine",
    ]
    for i, comment in enumerate(comments):
        resp = api.post(
            f"{API}/reviews",
            json={
                "attribution_id": world.maps[i % 3],
                "rating": 3,
                "trust": True,
                "comment": comment,
            },
        )
        assert resp.status_code == 201
    rows = list(csv.DictReader(io.StringIO(api.get(f"{API}/reviews/export.csv").text)))
    got = [r["comment"] for r in rows]
    assert got[:-1] == ["'" + c for c in comments[:-1]]
    assert got[-1] == "fine"


# --- item 15: deployment defaults --------------------------------------------------------------


def test_item15_production_needs_secure_cookies() -> None:
    from pydantic import ValidationError

    from backend.core.config import Settings

    base = {"environment": "production", "secret_key": "k" * 40}
    with pytest.raises(ValidationError, match="ATTRIVUE_COOKIE_SECURE"):
        Settings(_env_file=None, **base)  # type: ignore[call-arg]
    assert Settings(_env_file=None, cookie_secure=True, **base).secure_cookies  # type: ignore[call-arg]
    behind = Settings(_env_file=None, trusted_proxies="10.0.0.2", **base)  # type: ignore[call-arg]
    assert behind.secure_cookies  # cookies are Secure in production whatever the setting
    assert not Settings(_env_file=None, environment="development").secure_cookies  # type: ignore[call-arg]


def test_item15_database_and_data_dir_are_owner_only(api: TestClient, app_env: Path) -> None:
    from backend.core.config import get_settings

    private = [app_env, app_env / ".secret_key"]
    url = get_settings().database_url
    if url.startswith("sqlite"):  # a PostgreSQL server keeps its own files
        db = Path(url.removeprefix("sqlite:///"))
        assert db.is_file() and db.parent == app_env
        private.append(db)
    for path in private:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode & 0o077 == 0, f"{path} is mode {oct(mode)}"


# --- also: /docs under the CSP -------------------------------------------------------------------


def test_also_docs_are_served_locally_under_the_csp(api: TestClient) -> None:
    import re

    from backend.api.middleware import CONTENT_SECURITY_POLICY

    page = api.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "cdn." not in page.text and "http" not in page.text  # nothing from elsewhere
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, flags=re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    for src in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert src.startswith("/"), src
        assert api.get(src).status_code == 200, src
    assert "SwaggerUIBundle" in api.get("/docs/init.js").text
