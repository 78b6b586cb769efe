"""The `attrivue` command: serve starts the API and a worker and stops both; demo data loads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.helpers import free_port, wait_for


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "ATTRIVUE_DATA_DIR": str(tmp_path / "data")}
    for name in ("ATTRIVUE_DATABASE_URL", "ATTRIVUE_BROKER_URL"):
        env.pop(name, None)
    return env


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_prints_a_login_once_and_stopping_it_stops_api_and_worker(
    tmp_path: Path, stop: signal.Signals
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "serve", "--port", str(port)],
            env=_env(tmp_path),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:

            def up() -> bool:
                assert server.poll() is None, log.read_text()
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(up, timeout=60, what="the server")
            workers = _children(server.pid)
            assert workers, "serve starts a worker process"
            server.send_signal(stop)
            server.wait(timeout=60)
            wait_for(lambda: not any(_alive(w) for w in workers), timeout=90, what="the worker")
        finally:
            if server.poll() is None:
                server.kill()
    text = log.read_text()
    assert "username: admin" in text and "password: " in text
    password = text.split("password: ")[1].split()[0]
    assert len(password) >= 12

    # A second start creates no second admin and prints no password.
    again = subprocess.run(
        [sys.executable, "-m", "backend.cli", "migrate"],
        env=_env(tmp_path),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0 and "password" not in again.stdout


def test_demo_data_generates_and_imports_once(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "backend.cli", "demo-data", "--subjects", "4"]
    first = subprocess.run(cmd, env=_env(tmp_path), cwd=REPO, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "imported as dataset 1" in first.stdout
    second = subprocess.run(cmd, env=_env(tmp_path), cwd=REPO, capture_output=True, text=True)
    assert "already loaded (dataset 1)" in second.stdout

    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'attrivue.db'}")
    with engine.connect() as conn:
        labels = conn.execute(text("SELECT label, mask_path FROM subjects")).all()
    engine.dispose()
    assert len(labels) == 4
    assert {label for label, _ in labels} == {0, 1}
    assert all((mask is not None) == (label == 1) for label, mask in labels)


def test_serve_workers_setting_and_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ATTRIVUE_API_WORKERS sets the API processes, --workers overrides it; below 1 is refused."""
    import uvicorn

    from backend import cli
    from backend.core.config import get_settings

    monkeypatch.setenv("ATTRIVUE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ATTRIVUE_API_WORKERS", "3")
    for name in ("ATTRIVUE_DATABASE_URL", "ATTRIVUE_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    seen: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.append(kw))
    try:
        assert cli.main(["serve", "--no-worker", "--port", "8123"]) == 0
        assert cli.main(["serve", "--no-worker", "--port", "8123", "--workers", "2"]) == 0
        assert cli.main(["serve", "--no-worker", "--port", "8123", "--workers", "-1"]) == 2
    finally:
        get_settings.cache_clear()
    assert [kw["workers"] for kw in seen] == [3, 2]
    assert all(kw["factory"] is True and kw["proxy_headers"] is False for kw in seen)


def test_two_api_processes_share_sessions_csrf_and_logout(tmp_path: Path) -> None:
    """`serve --workers 2`: nothing a request needs lives in one process. A cookie login's CSRF
    token (signed with the data directory's key, made by whichever process comes first) is
    accepted on fresh connections, which the kernel spreads over both processes; a logout
    applies to every later request, wherever it lands."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**_env(tmp_path), "ATTRIVUE_NEW_PASSWORD": "multi-process-1"}
    subprocess.run(
        [sys.executable, "-m", "backend.cli", "create-user", "multi", "--role", "admin"],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "serve", "--no-worker", "--port", str(port)]
            + ["--workers", "2"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def up() -> bool:
            assert server.poll() is None, log.read_text()
            if log.read_text().count("Application startup complete") < 2:
                return False
            try:
                return httpx.get(f"{base}/api/v1/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=90, what="two API processes")
        assert log.read_text().count("Started server process") == 2
        login = httpx.post(
            f"{base}/api/v1/auth/login",
            json={"username": "multi", "password": "multi-process-1"},
        )
        assert login.status_code == 200, login.text
        cookies = dict(login.cookies)
        csrf = cookies["attrivue_csrf"]
        for i in range(12):  # each on a new connection
            made = httpx.post(
                f"{base}/api/v1/projects",
                json={"name": f"p{i}"},
                cookies=cookies,
                headers={"X-CSRF-Token": csrf},
            )
            assert made.status_code == 201, made.text
        out_ = httpx.post(
            f"{base}/api/v1/auth/logout", cookies=cookies, headers={"X-CSRF-Token": csrf}
        )
        assert out_.status_code == 204, out_.text
        token = login.json()["access_token"]
        for _ in range(12):
            answer = httpx.get(
                f"{base}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
            )
            assert answer.status_code == 401
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
