"""Issue 17 item 7 (in part): account, projects and members, and users, without the API.

Against the stub API, as a site admin: the account page creates a personal token (its secret
shown once) and revokes it, and says how a password changes (the API has no endpoint for
it); the projects page creates a project; the members page adds a member, changes a role and
removes the member; the users page lists users and creates one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e import stub_api
from tests.e2e.browser import DIST_INDEX, chromium_page, login, save_screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stub_api.RunningStub]:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    case = stub_api.write_synthetic_case(tmp_path_factory.mktemp("stub-volumes"))
    running = stub_api.start_stub(DIST_INDEX.parent, case)
    api = running.api
    api.user["role"] = "admin"
    created = api.created
    tokens: list[dict] = []
    projects = [
        {"id": 1, "name": "stub project", "description": "", "role": "admin", "created_at": created}
    ]
    members = {1: {"user_id": 1, "username": stub_api.USERNAME, "role": "admin"}}
    users = [
        {"id": 1, "username": stub_api.USERNAME, "role": "admin"},
        {"id": 2, "username": "dr-b", "role": "clinician"},
    ]
    api.state = {"tokens": tokens, "projects": projects, "members": members, "users": users}  # type: ignore[attr-defined]

    def create_token(body: dict) -> tuple[int, dict]:
        token = {
            "id": len(tokens) + 1,
            "name": body["name"],
            "kind": "personal",
            "created_at": created,
            "expires_at": None,
            "revoked_at": None,
        }
        tokens.append(token)
        api.delete_routes[f"/api/v1/auth/tokens/{token['id']}"] = lambda: revoke(token)
        return 201, {**token, "token": "avt_secret_123"}

    def revoke(token: dict) -> tuple[int, dict]:
        token["revoked_at"] = created
        return 200, token

    def create_project(body: dict) -> tuple[int, dict]:
        project = {**projects[0], "id": len(projects) + 1, "name": body["name"]}
        projects.append(project)
        return 201, project

    def set_member(body: dict) -> tuple[int, dict]:
        user = next((u for u in users if u["username"] == body["username"]), None)
        if user is None:
            return 404, {"detail": f"no user named {body['username']!r}"}
        members[user["id"]] = {
            "user_id": user["id"],
            "username": user["username"],
            "role": body["role"],
        }
        api.delete_routes[f"/api/v1/projects/1/members/{user['id']}"] = lambda: (
            200,
            members.pop(user["id"]),
        )
        return 200, members[user["id"]]

    def create_user(body: dict) -> tuple[int, dict]:
        user = {"id": len(users) + 1, "username": body["username"], "role": body["role"]}
        users.append(user)
        return 201, user

    api.extra_json["/api/v1/auth/tokens"] = lambda _q: tokens
    api.extra_json["/api/v1/projects"] = lambda _q: {"data": projects, "count": len(projects)}
    api.extra_json["/api/v1/projects/1"] = projects[0]
    api.extra_json["/api/v1/projects/1/members"] = lambda _q: {
        "data": list(members.values()),
        "count": len(members),
    }
    api.extra_json["/api/v1/users"] = lambda _q: {"data": users, "count": len(users)}
    api.post_routes["/api/v1/auth/tokens"] = create_token
    api.post_routes["/api/v1/projects"] = create_project
    api.put_routes["/api/v1/projects/1/members"] = lambda raw: set_member(json.loads(raw))
    api.post_routes["/api/v1/users"] = create_user

    def change_password(body: dict) -> tuple[int, dict]:
        if body.get("current_password") != stub_api.PASSWORD:
            return 403, {"detail": "the current password is wrong"}
        api.state["password_changes"] = api.state.get("password_changes", 0) + 1  # type: ignore[attr-defined]
        return 200, {"access_token": "t2", "token_type": "bearer", "user": api.user}

    api.post_routes["/api/v1/auth/password"] = change_password
    yield running
    running.close()


@pytest.fixture
def page(stub: stub_api.RunningStub, tmp_path: Path) -> Iterator[Page]:
    with chromium_page(tmp_path / "profile") as page:
        login(page, stub.base_url, stub_api.USERNAME, stub_api.PASSWORD)
        yield page


def test_account_tokens_and_password(stub: stub_api.RunningStub, page: Page) -> None:
    state = stub.api.state  # type: ignore[attr-defined]
    page.locator(".topbar-user").get_by_role("link", name=stub_api.USERNAME, exact=False).click()
    account = page.get_by_test_id("account-page")
    account.wait_for(timeout=30_000)
    # The password changes here (POST /auth/password): a wrong current password is said so.
    page.locator("input[name=current-password]").fill("not it")
    page.locator("input[name=new-password]").fill("a new long password")
    page.locator("input[name=new-password-again]").fill("a new long password")
    page.get_by_role("button", name="Change password").click()
    page.get_by_text("the current password is wrong").wait_for(timeout=10_000)
    page.locator("input[name=current-password]").fill(stub_api.PASSWORD)
    page.get_by_role("button", name="Change password").click()
    page.get_by_test_id("password-changed").wait_for(timeout=10_000)
    assert state.get("password_changes") == 1
    page.locator("input[name=token-name]").fill("ci script")
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_test_id("new-token")
    secret.wait_for(timeout=10_000)
    assert "avt_secret_123" in secret.inner_text() and "not shown again" in secret.inner_text()
    row = page.locator("tr[data-token-id='1']")
    row.wait_for(timeout=10_000)
    assert "active" in row.inner_text()
    save_screenshot(page, "account")
    row.get_by_role("button", name="Revoke").click()
    page.wait_for_function(
        "() => document.querySelector(\"tr[data-token-id='1']\")?.textContent.includes('revoked')"
    )
    assert state["tokens"][0]["revoked_at"] is not None


def test_projects_members_and_users(stub: stub_api.RunningStub, page: Page) -> None:
    state = stub.api.state  # type: ignore[attr-defined]
    page.locator(".topnav").get_by_role("link", name="Projects").click()
    page.get_by_test_id("projects-page").wait_for(timeout=30_000)
    page.locator("input[name=project-name]").fill("second study")
    page.get_by_role("button", name="Create project").click()
    page.locator("tr[data-project-id='2']").wait_for(timeout=10_000)
    assert state["projects"][-1]["name"] == "second study"

    page.locator("tr[data-project-id='1']").get_by_role("link", name="Members").click()
    members = page.get_by_test_id("members-page")
    members.wait_for(timeout=30_000)
    page.locator("input[name=member-username]").fill("dr-b")
    page.locator("select[name=member-role]").select_option("clinician")
    page.get_by_role("button", name="Add or change").click()
    page.locator("tr[data-member='dr-b']").wait_for(timeout=10_000)
    page.get_by_label("Role of dr-b").select_option("researcher")
    for _ in range(20):
        if state["members"][2]["role"] == "researcher":
            break
        page.wait_for_timeout(250)
    assert state["members"][2]["role"] == "researcher"
    save_screenshot(page, "members")
    page.locator("tr[data-member='dr-b']").get_by_role("button", name="Remove").click()
    page.locator("tr[data-member='dr-b']").wait_for(state="detached", timeout=10_000)
    assert 2 not in state["members"]
    # An unknown user: the server's message is shown.
    page.locator("input[name=member-username]").fill("nobody")
    page.get_by_role("button", name="Add or change").click()
    assert "no user named 'nobody'" in members.get_by_role("alert").inner_text()

    page.locator(".topnav").get_by_role("link", name="Users").click()
    page.get_by_test_id("users-page").wait_for(timeout=30_000)
    page.locator("tr[data-user]").first.wait_for(timeout=30_000)  # the list has loaded
    assert page.locator("tr[data-user]").count() == 2
    page.locator("input[name=new-username]").fill("dr-c")
    page.locator("input[name=new-password]").fill("a long password")
    page.locator("select[name=new-role]").select_option("clinician")
    page.get_by_role("button", name="Create user").click()
    page.locator("tr[data-user='dr-c']").wait_for(timeout=10_000)
    assert state["users"][-1] == {"id": 3, "username": "dr-c", "role": "clinician"}
    save_screenshot(page, "users")
