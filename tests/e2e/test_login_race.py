"""Logging in while the page's first "who am I?" request is still on its way.

The app asks GET /auth/me when it starts; without a session the answer is a 401. On a slow
network a user can log in before that answer arrives. The late 401 belongs to the time before
the login and must not log the user out again (it did: the app went to / and straight back to
/login, and the CI's CSP browser test timed out on it under load).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e import stub_api
from tests.e2e.browser import DIST_INDEX, chromium_page, login

pytestmark = pytest.mark.e2e

DELAY_S = 3.0


def test_a_late_401_from_before_the_login_does_not_log_the_user_out(tmp_path: Path) -> None:
    assert DIST_INDEX.is_file(), "make frontend builds the app"
    case = stub_api.write_synthetic_case(tmp_path / "volumes")
    stub = stub_api.start_stub(DIST_INDEX.parent, case)
    stub.api.unauthenticated_delay = DELAY_S
    try:
        with chromium_page(tmp_path / "profile") as page:
            login(page, stub.base_url, stub_api.USERNAME, stub_api.PASSWORD)
            # The 401 to the first /auth/me arrives after the login: wait it out, then look.
            page.wait_for_timeout(DELAY_S * 1000 + 1500)
            assert page.url == f"{stub.base_url}/", page.url
            assert page.get_by_role("button", name="Log in").count() == 0
            assert page.get_by_role("button", name="Log out").count() == 1
    finally:
        stub.close()
