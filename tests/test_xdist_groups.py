"""`make test` runs pytest-xdist with ``--dist loadgroup``: the groups of tests/conftest.py must
reach its scheduler, or a module's tests and the live server's tests are spread over workers."""

from __future__ import annotations

import os

import pytest


def test_the_group_of_this_file_reaches_the_scheduler(request: pytest.FixtureRequest) -> None:
    # xdist sets this option on its workers under --dist loadgroup (their own --dist is "no").
    grouped = bool(getattr(request.config.option, "loadgroup", False))
    on_a_worker = os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw")
    # Under `make test` xdist appends the group to the nodeid; run alone, there is no group.
    group = "@tests/test_xdist_groups.py" if grouped and on_a_worker else ""
    name = "test_the_group_of_this_file_reaches_the_scheduler"
    assert request.node.nodeid == f"tests/test_xdist_groups.py::{name}{group}"
