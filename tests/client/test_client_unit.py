"""The client and CLI without a server: errors, tokens, manifests, configs, exit codes."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from attrivue_client import ApiError, Client, cli, load_config, read_manifest
from attrivue_client.client import load_token, save_token, token_path

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real token file or server settings leak into these tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("ATTRIVUE_URL", "ATTRIVUE_TOKEN", "ATTRIVUE_USERNAME", "ATTRIVUE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def _mock(handler) -> Client:  # type: ignore[no-untyped-def]
    return Client("http://server", "t0", progress=False, transport=httpx.MockTransport(handler))


def test_the_api_detail_becomes_the_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/runs/7"):
            return httpx.Response(404, json={"detail": "run 7 not found"})
        return httpx.Response(
            422,
            json={"detail": [{"loc": ["body", "subject_ids"], "msg": "too short", "type": "x"}]},
        )

    api = _mock(handler)
    with pytest.raises(ApiError) as missing:
        api.run(7)
    assert (missing.value.status, str(missing.value)) == (404, "HTTP 404: run 7 not found")
    with pytest.raises(ApiError, match="HTTP 422: subject_ids: too short"):
        api.attribute(1, subject_ids=[])


def test_an_unreachable_server_is_named() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ApiError, match="cannot reach http://server"):
        _mock(handler).projects()


def test_bearer_token_is_sent_and_login_replaces_it() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if request.url.path.endswith("/auth/login"):
            assert json.loads(request.content) == {"username": "u", "password": "p"}
            return httpx.Response(200, json={"access_token": "t1"}, headers={"set-cookie": "a=b"})
        return httpx.Response(200, json={"data": [], "count": 0})

    api = _mock(handler)
    api.projects()
    assert api.login("u", "p") == "t1"
    api.projects()
    assert seen == ["Bearer t0", "Bearer t0", "Bearer t1"]
    assert not api._http.cookies, "scripts authenticate by header, never by cookie"


def test_token_file_is_private_and_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = save_token("secret")
    assert path == tmp_path / "config" / "attrivue" / "token" == token_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_token() == "secret"
    assert Client("http://server").token == "secret"
    monkeypatch.setenv("ATTRIVUE_TOKEN", "from-env")
    assert Client("http://server").token == "from-env", "the environment wins over the file"
    assert Client("http://server", "given").token == "given"
    path.chmod(0o644)
    save_token("again")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_manifest_is_checked_before_upload(tmp_path: Path) -> None:
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "manifest.csv").write_text(
        "subject,image,mask,label,target,split,site\n"
        "s1,a.nii.gz,,1,,test,\n"
        "s2,missing.nii.gz,,0,,train,\n"
        "s3,a.nii.gz,,2,,train,\n"
    )
    with pytest.raises(ValueError) as error:
        read_manifest(tmp_path)
    assert "line 3: no such file missing.nii.gz" in str(error.value)
    assert "line 4: label '2': expected 0, 1, healthy" in str(error.value)
    with pytest.raises(ValueError, match="no manifest.csv"):
        read_manifest(tmp_path / "nowhere")


def test_config_from_yaml_json_or_mapping(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("epochs: 2\ngrid: [24, 28, 24]\n")
    (tmp_path / "c.json").write_text('{"epochs": 3}')
    (tmp_path / "bad.yaml").write_text("- a list\n")
    assert load_config(tmp_path / "c.yaml") == {"epochs": 2, "grid": [24, 28, 24]}
    assert load_config(str(tmp_path / "c.json")) == {"epochs": 3}
    assert load_config({"seed": 1}) == {"seed": 1} and load_config(None) == {}
    with pytest.raises(ValueError, match="mapping"):
        load_config(tmp_path / "bad.yaml")


def _jobs_server(statuses: dict[int, list[str]]):  # type: ignore[no-untyped-def]
    """A fake GET /jobs/{id} whose status steps through ``statuses[id]``."""

    def handler(request: httpx.Request) -> httpx.Response:
        job_id = int(request.url.path.rsplit("/", 1)[1])
        sequence = statuses[job_id]
        status = sequence.pop(0) if len(sequence) > 1 else sequence[0]
        body = {"id": job_id, "status": status, "progress": 0.5, "message": "m", "error": None}
        if status == "failed":
            body["error"] = "RuntimeError: out of memory"
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handler)


def test_follow_all_and_the_exit_status(monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    transport = _jobs_server({1: ["queued", "running", "succeeded"], 2: ["running", "failed"]})
    monkeypatch.setattr(
        cli, "Client", lambda url, token, progress: Client(url, token, transport=transport)
    )
    assert cli.main(["--url", "http://server", "follow", "1", "2", "--interval", "0"]) == 3
    assert "job 2 failed: RuntimeError: out of memory" in capsys.readouterr().err

    transport = _jobs_server({3: ["running", "succeeded"]})
    assert cli.main(["--url", "http://server", "follow", "3", "--interval", "0"]) == 0


def test_cli_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"detail": "run 4 has not finished training"})

    monkeypatch.setattr(
        cli,
        "Client",
        lambda url, token, progress: Client(url, token, transport=httpx.MockTransport(handler)),
    )
    code = cli.main(["--url", "http://server", "attribute", "--run", "4", "--split", "test"])
    assert code == 1
    assert capsys.readouterr().err == "error: HTTP 409: run 4 has not finished training\n"
    code = cli.main(["attribute", "--run", "4", "--split", "test", "--params", "{oops"])
    assert code == 2


def test_client_imports_no_server_code() -> None:
    probe = (
        "import attrivue_client, attrivue_client.cli, sys\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    loaded = set(out.stdout.split())
    assert not loaded & {"backend", "worker", "torch", "fastapi", "sqlalchemy", "numpy"}


def test_also_client_manifest_accepts_the_servers_labels_and_names_the_problem(
    tmp_path: Path,
) -> None:
    """Issue 16 "Also": healthy/pathological (any case) were refused, with a message saying the
    subject and image were missing."""
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "manifest.csv").write_text(
        "subject,image,label\n"
        "s1,a.nii.gz,healthy\n"
        "s2,a.nii.gz,Pathological\n"
        "s3,a.nii.gz,control\n"
        "s4,a.nii.gz,patient\n"
        "s5,a.nii.gz,0\n"
    )
    rows = read_manifest(tmp_path)
    assert [r["label"] for r in rows] == ["0", "1", "0", "1", "0"]
    (tmp_path / "manifest.csv").write_text(
        "subject,image,label\ns1,a.nii.gz,sick\n,a.nii.gz,1\ns3,,1\n"
    )
    with pytest.raises(ValueError) as error:
        read_manifest(tmp_path)
    message = str(error.value)
    assert (
        "line 2: label 'sick': expected 0, 1, healthy, control, pathological or patient" in message
    )
    assert "line 2: no subject" not in message and "line 2: no image" not in message
    assert "line 3: no subject" in message and "line 4: no image" in message


def test_also_client_checks_the_manifest_before_creating_the_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    requests: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(f"{request.method} {request.url.path}")
        return httpx.Response(201, json={"id": 5, "name": "d"})

    monkeypatch.setattr(
        cli,
        "Client",
        lambda url, token, progress: Client(url, token, transport=httpx.MockTransport(handler)),
    )
    (tmp_path / "manifest.csv").write_text("subject,image,label\ns1,missing.nii.gz,1\n")
    code = cli.main(["--url", "http://server", "upload", str(tmp_path), "--name", "d"])
    assert code == 2 and "no such file missing.nii.gz" in capsys.readouterr().err
    assert requests == []  # no empty dataset left behind
