"""``attrivue-client export`` and ``import-model`` against a mock server: the routes, the
form fields, the file written (or none, on an error), a bundle folder zipped on the way."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import httpx
import pytest

from attrivue_client import Client, cli


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("ATTRIVUE_URL", "ATTRIVUE_TOKEN", "ATTRIVUE_USERNAME", "ATTRIVUE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def _serve(monkeypatch: pytest.MonkeyPatch, handler) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(
        cli,
        "Client",
        lambda url, token, progress: Client(url, "t", transport=httpx.MockTransport(handler)),
    )


def test_export_saves_the_bundle_or_the_checkpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/runs/5/bundle":
            return httpx.Response(200, content=b"PK-bundle")
        if request.url.path == "/api/v1/runs/5/checkpoint":
            return httpx.Response(200, content=b"best-pt")
        return httpx.Response(404, json={"detail": "run 6 not found"})

    _serve(monkeypatch, handler)
    out = tmp_path / "run5.zip"
    assert cli.main(["--url", "http://server", "export", "5", "-o", str(out)]) == 0
    assert out.read_bytes() == b"PK-bundle"
    assert capsys.readouterr().out == f"{out}\n"
    best = tmp_path / "best.pt"
    assert cli.main(["export", "5", "--checkpoint", "-o", str(best)]) == 0
    assert best.read_bytes() == b"best-pt"
    missing = tmp_path / "run6.zip"
    assert cli.main(["export", "6", "-o", str(missing)]) == 1
    assert "HTTP 404: run 6 not found" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["best.pt", "run5.zip"]


def test_import_model_sends_the_spec_and_zips_a_bundle_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, object] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/runs/import"
        body = request.read()
        seen["body"] = body
        return httpx.Response(201, json={"id": 12, "model_format": "monai_bundle"})

    _serve(monkeypatch, handler)
    bundle = tmp_path / "mybundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text("{}")
    argv = [
        "import-model",
        str(bundle),
        "--dataset",
        "3",
        "--name",
        "b",
        "--grid",
        "16",
        "20",
        "16",
    ]
    assert (
        cli.main([*argv, "--logit-index", "1", "--brain", "nonzero", "--task", "regression"]) == 0
    )
    assert capsys.readouterr().out == "12\n"
    body = bytes(seen["body"])  # type: ignore[arg-type]
    sent = [("dataset_id", "3"), ("logit_index", "1"), ("brain", "nonzero"), ("task", "regression")]
    for field, value in sent:
        assert f'name="{field}"\r\n\r\n{value}\r\n'.encode() in body
    assert body.count(b'name="grid"') == 3
    start = body.index(b"PK\x03\x04")  # the folder arrives as a zip with configs/metadata.json
    names = zipfile.ZipFile(io.BytesIO(body[start:].rsplit(b"\r\n--", 1)[0])).namelist()
    assert "configs/metadata.json" in names
